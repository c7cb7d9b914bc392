"""What several chapters' specifications share: the seed parameter, the smoke profile's tiny models,
the named behaviours, the parameters of the two Part II training chapters, and the one coupling between
chapters (the sample of the all-behaviour sweeps, which `distinguishability` measures and
`training_dynamics` and `prioritization` reuse from the same embedding cache).

A chapter's own parameters and settings live in its module, ``chapters/<slug>.py``; a value lands here
only when a second chapter reads it.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, Param, model_names, one_of, same, typed

SEED = Param("SEED", same(1234), "seed of every random generator in the chapter", typed(int, lo=0))
# The smoke profile's models: two tiny RANDOM Llamas of different sizes (models.TINY_MODELS), built offline
# in a second; a smoke run checks the plumbing of every cell, never a real model's numbers.
TINY = "tiny-random-llama"
TINY_PAIR = ["tiny-random-llama", "tiny-random-llama-b"]

# The behaviours named by the paper's Figure 5 and by the official code's single-behaviour plots; the
# smoke profile measures only these.
NAMED_BEHAVIORS = [
    "acts-like-it-wants-to-help-humans-but-does-not-care-about-that", "risk-seeking",
    "desire-to-influence-world", "subscribes-to-Islam",
    "subscribes-to-average-utilitarianism", "okay-with-building-an-AI-with-different-goals-to-accomplish-its-task",
    "optionality-increasing", "desire-to-not-have-memory-erased", "subscribes-to-Buddhism",
]

# The five behaviours of the official single-behaviour plots (paper's Figure 3, Behaviours 1-5 by the
# official code's order); the misalignment behaviour (index 84) is the second.
FIG3_BEHAVIORS = NAMED_BEHAVIORS[4:]  # Figure 3's five behaviours (official order)

# --- the sample of the all-behaviour sweeps ----------------------------------------------------------
# distinguishability's settings "per_class" and "behaviors"; training_dynamics and prioritization read them
# as "sweep_per_class" and "sweep_behaviors", so the three chapters embed one sample, computed once.
# Statements per class and behaviour, drawn with data.stratified_sample (nested: a larger sample contains
# a smaller one). None: every statement.
SWEEP_PER_CLASS = {"smoke": 6, "fast": 16, "full": None}
SWEEP_BEHAVIORS = {"smoke": NAMED_BEHAVIORS, "fast": None, "full": None}  # None: all 135

# --- the parameters of training_dynamics and prioritization -------------------------------------------
LR = Param("LR", same(None), "SGD learning rate of the head; None: matched to the official run's effective "
           "step eta beta^2 E||h||^2 on Llama-2-7B (see the chapter)", typed(float, allow_none=True, lo=0.0, lo_open=True))
BETA_MODE = Param("BETA_MODE", same("official"), "'official': beta = 0.01; 'matched': beta = 0.64/sqrt(d) "
                  "(Theorem 4.1's scaling) with the official learning rate 0.1", one_of("official", "matched"))


def model_pair(name: str, value: Any) -> list[str]:
    """Exactly two different model names (the chapters compare two models side by side).
    """
    out = model_names(name, value)
    if len(out) != 2 or out[0] == out[1]:
        raise ConfigError(f"{name} must name exactly two different models, got {value!r}")
    return out


FIGURE_PER_CLASS = {"smoke": 6, "fast": 100, "full": None}  # = distinguishability's map_per_class in fast
TWO_MODELS = Param("MODELS", {"smoke": TINY_PAIR, "fast": ["smollm2-135m-instruct", "gemma-3-270m"],
                              "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
                   "the two models compared side by side (the first is shown in the largest figures)",
                   model_pair, kind="models")
