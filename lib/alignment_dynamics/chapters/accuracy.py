"""The specification of the chapter `book/accuracy.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, array_limit, positive_float, register, same, sized, typed
from .common import SEED

register(ChapterSpec(slug="accuracy", check=array_limit("N", "D", "REPEATS", min_of={"REPEATS": 8}), params=(
    SEED,
    Param("D", {"smoke": 16, "fast": 64, "full": 256}, "dimension of the illustrated instances", sized(1, 4096)),
    Param("N", {"smoke": 64, "fast": 256, "full": 1024}, "training pairs of the illustrated instances", sized(8, 1_000_000)),
    Param("BETA_PRIME", same(0.64), "beta' with beta = beta' / sqrt(d)", positive_float),
    Param("LR_FRAC", same(0.5), "step as a fraction of the step condition's limit 2 / (beta^2 E||h||^2)", typed(float, lo=0.0, hi=1.0, lo_open=True)),
    Param("STEPS", {"smoke": 10, "fast": 100, "full": 200}, "GD steps", sized(1, 100_000)),
    Param("N_INSTANCES", {"smoke": 6, "fast": 60, "full": 500}, "random instances in the sweep", sized(1, 100_000)),
    Param("REPEATS", {"smoke": 4, "fast": 16, "full": 64}, "independent training sets per instance", sized(2, 4096)),
), settings={
    "sweep_steps": {"smoke": 10, "fast": 100, "full": 200}, "eps": same(0.1),
    # the illustrated instances: normalised distinguishabilities, and what they share (training sets per
    # instance, a reference offset that leans against the preferences, the noise scale)
    "curve_deltas": same([0.25, 0.5, 1.0, 2.0]),
    "curve_instance": same({"repeats": 8, "a_rel": 0.5, "a_cos": -0.3, "trace_per_dim": 1.0}),
}))
