"""The specification of the chapter `book/kernels.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, one_of, register
from .common import SEED

register(ChapterSpec(
    slug="kernels",
    params=(
        SEED,
        Param("BENCH_SIZE", {"smoke": "tiny", "fast": "quick", "full": "full"},
              "size of the CPU benchmark measured in the build (alignment_dynamics.bench.dpo_common.SIZES)",
              one_of("tiny", "quick", "full")),
    ),
    settings={
        "demo_vocab": {"smoke": 300, "fast": 5000, "full": 32000},  # V of the two-row vs reference demo
        "demo_lr": {"smoke": 20.0, "fast": 20.0, "full": 20.0},
    },
    reads_artifacts=True,
))
