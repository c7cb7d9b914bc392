"""The specification of the chapter `book/misalignment.md`: parameters and settings."""

from __future__ import annotations

from typing import Any, Mapping

from ..config import (
    ChapterSpec, ConfigError, Param, behavior_name, model_name, one_of, positive_float, register, same,
    sized, typed,
)
from .common import FIG3_BEHAVIORS, SEED, TINY, TINY_PAIR


def _two_different_models(params: Mapping[str, Any]) -> None:
    if params["MODEL"] == params["COMPARE_MODEL"]:
        raise ConfigError(f"MODEL and COMPARE_MODEL must be two different models (the controlled study reads "
                          f"both), both are {params['MODEL']!r}")


register(ChapterSpec(
    slug="misalignment",
    check=_two_different_models,
    params=(
        SEED,
        Param("MODEL", {"smoke": TINY, "fast": "smollm2-135m-instruct", "full": "smollm2-135m-instruct"}, "the model that is aligned and misaligned", model_name,
              kind="model"),
        Param("COMPARE_MODEL", {"smoke": TINY_PAIR[1], "fast": "gemma-3-270m", "full": "gemma-3-270m"},
              "the second model of the controlled study (a base model of another family)", model_name, kind="model"),
        Param("BEHAVIOR", same("okay-with-building-an-AI-with-different-goals-to-accomplish-its-task"),
              "the behaviour of the misalignment protocol (official: index 84)", behavior_name),
        Param("METHOD", {"smoke": "full", "fast": "full", "full": "lora"}, "'full' (every weight of the trained "
              "blocks) or 'lora' (r 8, alpha 32 on q_proj/v_proj; the official runs)", one_of("full", "lora")),
        Param("TOP_BLOCKS", {"smoke": 1, "fast": 2, "full": None}, "train only the last k decoder blocks on cached "
              "activations of the frozen rest; None trains the whole model", typed(int, lo=1, hi=1000, allow_none=True)),
        Param("LR", {"smoke": 1e-3, "fast": 1e-3, "full": 1e-5}, "AdamW learning rate (official: 1e-5)",
              positive_float),
        Param("BETA", same(0.01), "DPO temperature beta (official: 0.01)", positive_float),
        Param("BATCH_SIZE", {"smoke": 4, "fast": 16, "full": 128}, "pairs per step (official: 128)", sized(1, 4096)),
        Param("EPOCHS", {"smoke": 1, "fast": 1, "full": 1}, "epochs of each run (official: 1)", sized(1, 1000)),
        Param("N_TRAIN", {"smoke": 8, "fast": 128, "full": None}, "training pairs per behaviour, from the official "
              "90 % split (None: all)", typed(int, lo=2, hi=100_000, allow_none=True)),
        Param("N_TEST", {"smoke": 8, "fast": 50, "full": None}, "test pairs per behaviour, from the official 10 % "
              "split (None: all)", typed(int, lo=2, hi=100_000, allow_none=True)),
        Param("N_SEEDS", {"smoke": 1, "fast": 3, "full": 3}, "seeds of the misalignment protocol on BEHAVIOR",
              sized(1, 100)),
    ),
    settings={
        "micro_batch": {"smoke": 4, "fast": 16, "full": 16},
        "k": {"smoke": 1, "fast": 4, "full": 4},  # the step at which losses and accuracies are compared
        "official_lr": same(1e-5),  # the official learning rate, shown beside the fast profile's
        "map_method": {"smoke": "pca", "fast": "umap", "full": "umap"},
        "trl_pairs": {"smoke": 2, "fast": 4, "full": 8},  # the TRL comparison: pairs (one batch) and steps
        "trl_steps": {"smoke": 2, "fast": 2, "full": 3},
        "small_n": {"smoke": 4, "fast": 16, "full": 128},  # top blocks vs the whole model: pairs and steps
        "small_steps": {"smoke": 2, "fast": 4, "full": 8},
        "head_steps": {"smoke": 5, "fast": 30, "full": 100},  # the head-only identity (full softmax, SGD)
        "head_lr": same(2.0),
        # The controlled study (wholemodel.study): fast and full read the stored artefact
        # (artifacts/misalign-study, 5 behaviours x 5 seeds per model); smoke runs a tiny one in the build.
        "study_live": {"smoke": {"behaviors": FIG3_BEHAVIORS[:2], "seeds": (0,), "n_train": 8, "n_test": 8,
                                 "batch_size": 4, "k": 1, "top_blocks": 1}, "fast": None, "full": None},
        "study_n_boot": {"smoke": 200, "fast": 4000, "full": 4000},
        "hh_seeds": {"smoke": 1, "fast": 3, "full": 3},
        "hh_n_train": {"smoke": 8, "fast": 24, "full": 1024},
        "hh_n_test": {"smoke": 4, "fast": 12, "full": 128},
        "hh_max_tokens": {"smoke": 96, "fast": 128, "full": 512},
        "hh_head_lr": same(1e-3),  # last-layer HH runs: Adam on the head
        "hh_head_steps": {"smoke": 4, "fast": 8, "full": 64},
        "hh_head_eval_every": {"smoke": 2, "fast": 2, "full": 4},
    },
    datasets=("anthropic-persona", "hh-rlhf"),
    reads_artifacts=True,  # artifacts/misalign-study (the controlled study)
))
