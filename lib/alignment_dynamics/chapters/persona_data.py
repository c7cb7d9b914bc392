"""The specification of the chapter `book/persona_data.md`: parameters and settings."""

from __future__ import annotations

from ..config import ChapterSpec, Param, behavior_name, model_names, register, same, sized, typed
from .common import SEED, TINY, TINY_PAIR

register(ChapterSpec(
    slug="persona_data",
    params=(
        SEED,
        Param("MODELS", {"smoke": TINY_PAIR, "fast": ["smollm2-135m-instruct", "gemma-3-270m"],
                         "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
              "models whose tokens and embeddings the chapter shows", model_names, kind="models"),
        Param("BEHAVIOR", same("openness"), "behaviour of the Figure 1 examples and the embedding demo",
              behavior_name),
        Param("N_EXAMPLES", same(5), "positive and negative statements shown (each)", sized(1, 100)),
        Param("EMBED_PER_CLASS", {"smoke": 6, "fast": 32, "full": None},
              "statements per class in the embedding demo (None: all)", typed(int, allow_none=True, lo=1, hi=100_000)),
    ),
    settings={
        # prompts per class and behaviour whose token counts are summarised (None: every statement)
        "tokens_per_class": {"smoke": 2, "fast": 20, "full": None},
        # statements per class whose h @ W_U^T is checked against the model's own logits
        "check_per_class": {"smoke": 1, "fast": 1, "full": 8},
        # benchmark P1 at build time (python -m alignment_dynamics.bench embed): its sizes
        "bench": {"smoke": {"n": 8, "n_official": 2, "rounds": 1, "matmul_seconds": 0.1},
                  "fast": {"n": 96, "n_official": 12, "rounds": 2, "matmul_seconds": 0.5},
                  "full": {"n": 256, "n_official": 24, "rounds": 4, "matmul_seconds": 0.5}},
        "bench_models": {"smoke": [TINY], "fast": ["smollm2-135m-instruct"],
                         "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
    },
    datasets=("anthropic-persona",),
))
