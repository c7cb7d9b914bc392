"""The specification of the chapter `book/priority.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, array_limit, positive_float, register, same, sized
from .common import SEED

register(ChapterSpec(slug="priority", check=array_limit("N_PER", "D", "REPEATS", factor=2, min_of={"REPEATS": 8}),
                     params=(
    SEED,
    Param("D", {"smoke": 16, "fast": 64, "full": 256}, "dimension of the illustrated pairs", sized(1, 4096)),
    Param("N_PER", {"smoke": 200, "fast": 200, "full": 1000}, "training pairs per behaviour (even)",
          sized(2, 1_000_000, even=True)),
    Param("BETA_PRIME", same(0.64), "beta' with beta = beta' / sqrt(d)", positive_float),
    Param("LR", same(0.5), "GD step", positive_float),
    Param("STEPS", {"smoke": 10, "fast": 60, "full": 100}, "GD steps", sized(1, 100_000)),
    Param("N_INSTANCES", {"smoke": 6, "fast": 100, "full": 800}, "random instances in the sweep", sized(1, 100_000)),
    Param("REPEATS", {"smoke": 3, "fast": 8, "full": 32}, "independent training sets per instance", sized(2, 4096)),
), settings={
    "sweep_steps": {"smoke": 10, "fast": 40, "full": 100},
    # the two illustrated pairs (distinguishability delta and cosine with the shared direction, per behaviour)
    # and their training sets; pair (b)'s weaker behaviour points against the stronger one
    "pair_a": same({"deltas": [0.4, 1.2], "cos": [0.3, 0.9]}),
    "pair_b": same({"deltas": [0.5, 1.2], "cos": [-0.7, 0.9]}),
    "pair_repeats": same(8),
    # the unequal-sizes counterexample (theory.unequal_sizes_example)
    "unequal": same({"n_i": 20, "n_j": 180, "norm_i": 4.42, "norm_j": 3.57, "cos": 0.1}),
}))
