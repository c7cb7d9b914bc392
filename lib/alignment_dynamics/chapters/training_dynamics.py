"""The specification of the chapter `book/training_dynamics.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, one_of, register, same, sized
from .common import (
    BETA_MODE, FIGURE_PER_CLASS, LR, NAMED_BEHAVIORS, SEED, SWEEP_BEHAVIORS, SWEEP_PER_CLASS, TINY,
    TWO_MODELS,
)

register(ChapterSpec(
    slug="training_dynamics",
    reads_artifacts=True,  # artifacts/fullref (the full-data reference)
    params=(
        SEED,
        TWO_MODELS,
        BETA_MODE,
        LR,
        Param("NORM", same("model"), "embedding normalisation: 'model' or 'double' (the official code's second "
              "RMSNorm)", one_of("model", "double")),
        Param("STEPS", {"smoke": 10, "fast": 100, "full": 100}, "SGD steps (official: 100)", sized(1, 100_000)),
        Param("BATCH_SIZE", {"smoke": 4, "fast": 128, "full": 128}, "pairs per step in the figure runs "
              "(official: 128)", sized(1, 65_536)),
    ),
    settings={
        "dtype": same("auto"),  # as the distinguishability chapter's DTYPE (shared embedding cache)
        # Figures 3-4: statements per class of each shown behaviour, split by the official split.
        "per_class": FIGURE_PER_CLASS,
        # The all-behaviour sweep: the distinguishability chapter's sample (embeddings computed once).
        "sweep_per_class": SWEEP_PER_CLASS,
        "sweep_behaviors": SWEEP_BEHAVIORS,
        "sweep_batch": {"smoke": 4, "fast": 16, "full": 128},
        "seeds": {"smoke": 2, "fast": 5, "full": 10},
        # The cross-fitted sweep (ad.crossfit): folds of each behaviour's sample, and seeds per rotation.
        "crossfit_folds": same(3),
        "crossfit_seeds": {"smoke": 1, "fast": 2, "full": 5},
        "quantiles": same([0.1, 0.3, 0.5, 0.7, 0.9]),  # Behaviors 1-5 by distinguishability
        "official_five": same(NAMED_BEHAVIORS[4:]),
        "k_early": {"smoke": 3, "fast": 20, "full": 20},
        "acc_level": same(0.9),
        "n_boot": {"smoke": 100, "fast": 2000, "full": 5000},
        "lr_grid": {"smoke": [0.1, 1.0, 10.0], "fast": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
                    "full": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]},
        # Llama-2-7B's per-coordinate feature scale is taken from this Llama-architecture model.
        "proxy": {"smoke": TINY, "fast": "smollm2-135m-instruct", "full": "smollm2-135m-instruct"},
    },
    datasets=("anthropic-persona",),
))
