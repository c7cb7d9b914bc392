"""Shared helpers of the theory modules: argument checks, the random-generator coercion, the one-thread
decorator, the logistic sigmoid and ``LN2``.
"""

from __future__ import annotations

import math

import numpy as np


LN2 = math.log(2.0)  # ln 2: the DPO loss at the reference model


def require_positive(name: str, value: float) -> float:
    """``value`` as a float; a ``ValueError`` naming ``name`` unless it is positive and finite."""
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def require_nonneg(name: str, value: float) -> float:
    """``value`` as a float; a ``ValueError`` naming ``name`` unless it is non-negative and finite."""
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return value


def require_prob(name: str, value: float) -> float:
    """``value`` as a float; a ``ValueError`` naming ``name`` unless it lies strictly between 0 and 1."""
    value = float(value)
    if not (0 < value < 1):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return value


def as_rng(rng) -> np.random.Generator:
    """``rng`` itself if it is a numpy ``Generator``, a new one seeded with it if it is an int; else ``TypeError``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise and without overflow (``scipy.special.expit``)."""
    from scipy.special import expit

    return expit(x)


def require_config(cfg, slug: str) -> None:
    """A ``ValueError`` unless ``cfg`` is the resolved configuration of the chapter ``slug``
    (``ad.config.resolve(slug, ...)``): a chapter's section functions read its own parameters and settings."""
    got = getattr(cfg, "slug", None)
    if got != slug:
        raise ValueError(f"needs the {slug} configuration (ad.config.resolve({slug!r}, PROFILE, ...)), "
                         f"got {got if got is not None else type(cfg).__name__!r}")
