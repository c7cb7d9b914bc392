"""Reweighting: oversampling the less distinguishable behaviour of a pair so that the first-order
margin gains match, and what that did to the measured gains.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import stats
from .checks import DynamicsError
from .features import BehaviorSet


def balancing_replication(b_low: Any, b_high: Any, *, max_factor: int = 16) -> int:
    """The integer oversampling of the less distinguishable behaviour that makes the two behaviours'
    first-order margin gains equal.

    With weights w_l, w_h, ⟨b̄, b_l⟩ = ⟨b̄, b_h⟩ requires w_l/w_h = (‖b_h‖² − c)/(‖b_l‖² − c) with
    c = ⟨b_l, b_h⟩ (the priority theorem's first-order term). The ratio is rounded to an integer in
    1..``max_factor``; when ‖b_l‖² ≤ c no weighting equalises them and ``max_factor`` is returned.
    """
    bl = np.asarray(b_low, dtype=np.float64)
    bh = np.asarray(b_high, dtype=np.float64)
    if bl.ndim != 1 or bl.shape != bh.shape:
        raise DynamicsError(f"b_low and b_high must be vectors of one length, got {bl.shape} and {bh.shape}")
    if isinstance(max_factor, bool) or not isinstance(max_factor, int) or max_factor < 1:
        raise DynamicsError(f"max_factor must be a positive int, got {max_factor!r}")
    c = float(bl @ bh)
    den = float(bl @ bl) - c
    if den <= 0:
        return max_factor
    ratio = (float(bh @ bh) - c) / den
    return int(min(max_factor, max(1, round(ratio))))


def less_distinguishable(group: Sequence[BehaviorSet]) -> int:
    """The position in ``group`` of the behaviour with the smallest ‖b̂‖ on its training pairs.
    """
    if not group:
        raise DynamicsError("the group is empty")
    return int(np.argmin([np.linalg.norm(bs.b("train")) for bs in group]))


def reweighting_plan(groups: Sequence[Sequence[BehaviorSet]], *, max_factor: int = 16) -> list[tuple[int, int]]:
    """For each pair, the replication (r₁, r₂) that oversamples its less distinguishable member
    (:func:`less_distinguishable`) by :func:`balancing_replication`; the other member keeps 1.
    """
    out = []
    for group in groups:
        if len(group) != 2:
            raise DynamicsError(f"reweighting_plan needs pairs, got a group of {len(group)}")
        low = less_distinguishable(group)
        r = balancing_replication(group[low].b("train"), group[1 - low].b("train"), max_factor=max_factor)
        out.append((r, 1) if low == 0 else (1, r))
    return out


def reweighting_effect(groups: Sequence[Sequence[BehaviorSet]], before, after, *, metric: str = "loss",
                       level: float = 0.95) -> dict[str, Any]:
    """What oversampling did to each pair: the gains of its less and more distinguishable members.

    ``before`` and ``after`` are :func:`priority_outcomes` of the same pairs without and with the
    reweighting. Returns arrays ``low_before``, ``low_after``, ``high_before``, ``high_after`` (the
    members' gains by ``metric``), ``shrinks`` (the gap between the two gains got smaller), and
    numbers: ``shrinks_p``/``_lo``/``_hi`` (share with a Wilson interval), ``low_last_before`` and
    ``low_last_after`` (share of pairs where the less distinguishable member gained less),
    ``low_ratio``, ``high_ratio`` and ``total_ratio`` (medians of after/before).
    """
    if len(groups) != len(before) or len(groups) != len(after):
        raise DynamicsError(f"got {len(groups)} pairs, {len(before)} outcomes before and {len(after)} after")
    if any(len(g) != 2 for g in groups):
        raise DynamicsError("reweighting_effect needs pairs")
    if list(before["members"]) != list(after["members"]):
        raise DynamicsError("the outcomes before and after must describe the same pairs in the same order")
    low = np.array([less_distinguishable(g) for g in groups])
    idx = np.arange(len(groups))
    b = np.stack(before[f"gains_{metric}"])
    a = np.stack(after[f"gains_{metric}"])
    out: dict[str, Any] = {"low_before": b[idx, low], "low_after": a[idx, low],
                           "high_before": b[idx, 1 - low], "high_after": a[idx, 1 - low]}
    out["shrinks"] = np.abs(out["high_after"] - out["low_after"]) < np.abs(out["high_before"] - out["low_before"])
    p, lo, hi = stats.wilson(int(out["shrinks"].sum()), len(groups), level=level)
    out.update(shrinks_p=p, shrinks_lo=lo, shrinks_hi=hi,
               low_last_before=float(np.mean(out["low_before"] < out["high_before"])),
               low_last_after=float(np.mean(out["low_after"] < out["high_after"])),
               low_ratio=float(np.median(out["low_after"] / out["low_before"])),
               high_ratio=float(np.median(out["high_after"] / out["high_before"])),
               total_ratio=float(np.median((out["low_after"] + out["high_after"])
                                           / (out["low_before"] + out["high_before"]))))
    return out
