"""The specification of the chapter `book/distinguishability.md`: parameters and settings.

Its ``per_class`` and ``behaviors`` settings are the shared sample of the all-behaviour sweeps
(:data:`~alignment_dynamics.chapters.common.SWEEP_PER_CLASS`, ``SWEEP_BEHAVIORS``), which
`training_dynamics` and `prioritization` read too.
"""

from __future__ import annotations

from ..config import ChapterSpec, Param, model_names, one_of, register, same
from .common import SEED, SWEEP_BEHAVIORS, SWEEP_PER_CLASS, TINY_PAIR

register(ChapterSpec(
    slug="distinguishability",
    reads_artifacts=True,  # artifacts/fullref (the full-data reference)
    params=(
        SEED,
        Param("MODELS", {"smoke": TINY_PAIR, "fast": ["smollm2-135m-instruct", "gemma-3-270m"],
                         "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
              "the models whose embeddings are measured (the first is the main one)", model_names, kind="models"),
        Param("NORM", same("model"), "embedding normalisation: 'model' (the logits' features) or 'double' "
              "(the official code's second RMSNorm)", one_of("model", "double")),
        Param("DTYPE", same("auto"), "dtype of the forward pass (embeddings are stored in float32): 'auto' "
              "(bfloat16 where this machine runs it natively, else float32), 'float32' or 'bfloat16'",
              one_of("auto", "float32", "bfloat16")),
    ),
    settings={
        # The shared sample of the all-behaviour sweeps (common.SWEEP_PER_CLASS, common.SWEEP_BEHAVIORS).
        "per_class": SWEEP_PER_CLASS,
        "behaviors": SWEEP_BEHAVIORS,
        # Figure 2: statements per class for the three mapped behaviours (a superset of per_class).
        "map_per_class": {"smoke": 6, "fast": 100, "full": None},
        "map_method": {"smoke": "pca", "fast": "umap", "full": "umap"},
        "n_boot": {"smoke": 50, "fast": 400, "full": 400},
        "shrinkage": same(0.1),  # λ of the shrunk Fisher distance
        "tail_directions": {"smoke": 4, "fast": 16, "full": 16},
        "tail_reps": {"smoke": 3, "fast": 10, "full": 20},  # repetitions of the simulated reference laws
        "beta": same(0.01),  # the official β, for β′ = β √d
        "eta": same(0.1),  # the official SGD learning rate of the last-layer runs
    },
    datasets=("anthropic-persona",),
))
