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
), settings={"sweep_steps": {"smoke": 10, "fast": 40, "full": 100}, "eps": same(0.05)}))
