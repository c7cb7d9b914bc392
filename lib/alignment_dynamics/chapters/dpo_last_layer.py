"""The specification of the chapter `book/dpo_last_layer.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, array_limit, positive_float, register, same, sized
from .common import SEED

register(ChapterSpec(slug="dpo_last_layer", check=array_limit("N", "V", what="the full-softmax logits"), params=(
    SEED,
    Param("D", same(16), "embedding dimension of the synthetic checks", sized(1, 4096)),
    Param("V", same(50), "vocabulary size of the full-softmax reference", sized(8, 262_144)),
    Param("N", {"smoke": 100, "fast": 400, "full": 400}, "number of preference pairs", sized(4, 100_000)),
    Param("BETA", same(0.5), "DPO temperature beta of the checks", positive_float),
    Param("LR", same(1.0), "SGD learning rate of the checks", positive_float),
    Param("STEPS", {"smoke": 10, "fast": 200, "full": 200}, "full-batch steps of the trajectory check", sized(1, 100_000)),
), settings={
    # the share of Yes-preferred pairs of the unbalanced first-step check
    "p_unbalanced": same(0.3),
    # the steps of the side-fact and break checks (at most STEPS)
    "side_steps": same(20),
}))
