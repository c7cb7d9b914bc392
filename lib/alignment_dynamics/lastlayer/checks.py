"""Shared pieces of the last-layer experiments: their error, the positive-number check and ``LN2``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LN2 = math.log(2.0)  # ln 2: the DPO loss at the reference model


class DynamicsError(ValueError):
    """An input the experiments cannot use (an empty set, a wrong shape, an invalid setting).
    """


def require_positive(name: str, value: Any) -> float:
    """``value`` as a float; a :class:`DynamicsError` naming ``name`` unless it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise DynamicsError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def closer_prediction(ratio_a: float, ratio_b: float) -> str:
    """Which of two predictions lies closer to a measurement, from the ratios measured/prediction:
    ``"a"`` or ``"b"`` by the distance |ln ratio| (a ratio that is not positive, or not finite, is
    infinitely far), ``"tie"`` when they are equally close."""
    def dist(r: Any) -> float:
        r = float(r)
        return abs(math.log(r)) if math.isfinite(r) and r > 0 else math.inf

    da, db = dist(ratio_a), dist(ratio_b)
    return "tie" if da == db else ("a" if da < db else "b")
