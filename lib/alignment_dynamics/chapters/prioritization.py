"""The specification of the chapter `book/prioritization.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, one_of, register, same, sized
from .common import (
    BETA_MODE, FIGURE_PER_CLASS, LR, NAMED_BEHAVIORS, SEED, SWEEP_BEHAVIORS, SWEEP_PER_CLASS, TINY,
    TWO_MODELS,
)

register(ChapterSpec(
    slug="prioritization",
    params=(
        SEED,
        TWO_MODELS,
        BETA_MODE,
        LR,
        Param("NORM", same("model"), "embedding normalisation: 'model' or 'double'", one_of("model", "double")),
        Param("STEPS", {"smoke": 10, "fast": 100, "full": 100}, "SGD steps (official: 100)", sized(1, 100_000)),
        Param("BATCH_SIZE", {"smoke": 8, "fast": 128, "full": 128}, "pairs per step in the Figure 5 runs "
              "(official: 128)", sized(1, 65_536)),
    ),
    settings={
        "dtype": same("auto"),
        "per_class": FIGURE_PER_CLASS,
        "figure_models": {"smoke": 2, "fast": 2, "full": 2},  # how many of MODELS train the Figure 5 pairs
        "pair_a": same(NAMED_BEHAVIORS[0:2]),
        "pair_b": same(NAMED_BEHAVIORS[2:4]),
        "sweep_per_class": SWEEP_PER_CLASS,
        "sweep_behaviors": SWEEP_BEHAVIORS,
        "pair_batch": {"smoke": 8, "fast": 32, "full": 128},
        "triple_batch": {"smoke": 12, "fast": 48, "full": 128},
        "n_pairs": {"smoke": 6, "fast": 300, "full": 2000},
        "n_triples": {"smoke": 4, "fast": 100, "full": 500},
        "seeds": {"smoke": 1, "fast": 3, "full": 5},
        # The cross-fitted pair test (ad.crossfit): folds of each behaviour's sample, seeds per rotation.
        "crossfit_folds": same(3),
        "crossfit_seeds": {"smoke": 1, "fast": 1, "full": 3},
        "max_replication": same(16),
        "gap_bins": same([0.0, 0.05, 0.1, 0.2, 0.4, 1.0]),
        "n_boot": {"smoke": 50, "fast": 1000, "full": 2000},  # bootstrap of the Figure 5 gap comparison
        # Figure 5 on the whole model (ad.wholemodel.pair_study): stored artefact in fast and full; a tiny
        # live study in smoke (plumbing only).
        "wm_live": {"smoke": {"named": [NAMED_BEHAVIORS[0:2]],
                              "random": [NAMED_BEHAVIORS[2:4], NAMED_BEHAVIORS[4:6], NAMED_BEHAVIORS[6:8]],
                              "seeds": (0,), "n_predict": 8, "n_train": 8, "n_test": 6, "batch_size": 4,
                              "micro_batch": 4, "k": 2, "top_blocks": 1}, "fast": None, "full": None},
        "wm_n_boot": {"smoke": 200, "fast": 4000, "full": 4000},
        "proxy": {"smoke": TINY, "fast": "smollm2-135m-instruct", "full": "smollm2-135m-instruct"},
    },
    datasets=("anthropic-persona",),
    reads_artifacts=True,  # artifacts/whole-model-pairs (Figure 5 on the whole model)
))
