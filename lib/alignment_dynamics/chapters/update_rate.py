"""The specification of the chapter `book/update_rate.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, array_limit, positive_float, register, same, sized
from .common import SEED

register(ChapterSpec(slug="update_rate", check=array_limit("N", "D", "REPEATS", min_of={"REPEATS": 8}), params=(
    SEED,
    Param("D", {"smoke": 16, "fast": 64, "full": 256}, "dimension of the illustrated instances", sized(1, 4096)),
    Param("N", {"smoke": 64, "fast": 512, "full": 2048}, "training pairs of the illustrated instances (even)",
          sized(4, 1_000_000, even=True)),
    Param("BETA_PRIME", same(0.64), "beta' with beta = beta' / sqrt(d) (0.64: the official beta 0.01 at d = 4096)", positive_float),
    Param("LR", same(0.1), "GD step of the illustrated instances (0.1: the official learning rate)", positive_float),
    Param("STEPS", {"smoke": 10, "fast": 100, "full": 100}, "GD steps of the illustrated instances", sized(1, 100_000)),
    Param("N_INSTANCES", {"smoke": 6, "fast": 120, "full": 1000}, "random instances in the sweep", sized(1, 100_000)),
    Param("REPEATS", {"smoke": 4, "fast": 16, "full": 64}, "independent training sets per instance", sized(2, 4096)),
), settings={
    "sweep_steps": {"smoke": 10, "fast": 40, "full": 100}, "eps": same(0.05),
    # the Bernstein check: draws per trial and trials
    "bern_n": same(50), "bern_trials": {"smoke": 2000, "fast": 20000, "full": 20000},
    # the concentration of the one-step margin change: dimensions, training pairs, distinguishability, fresh examples
    "margin_dims": {"smoke": [16, 64], "fast": [16, 64, 256], "full": [16, 64, 256]},
    "margin_n": same(256), "margin_delta": same(0.5), "margin_fresh": {"smoke": 1000, "fast": 2000, "full": 2000},
    # SGD against full batch on one small instance, on sgd_check_repeats training sets
    "sgd_check": same({"d": 16, "delta": 0.5, "per_class": 32, "lr": 1.0, "steps": 20, "batch": 8}),
    "sgd_check_repeats": {"smoke": 100, "fast": 400, "full": 400},
    # the illustrated instances: normalised distinguishabilities and training sets per instance
    "curve_deltas": same([0.25, 0.5, 1.0, 1.5]), "curve_repeats": same(8),
}))
