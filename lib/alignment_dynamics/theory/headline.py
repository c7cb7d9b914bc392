"""The headline-bound registry and the book's verdict rules: how a bound is measured against the
measurements (excess, tightness, mutation), the per-chapter summary rows, the goal a headline bound must
meet, and the rules that turn measurements into "agrees" / "partly agrees" / "differs".
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


# Relative slack for floating-point comparisons of deterministic bounds (the bounds themselves are exact).
FP_RTOL = 1e-9


def excess(measured, bound, *, upper: bool = True) -> float:
    """The worst violation of ``measured <= bound`` (``upper``) or ``measured >= bound``, relative to the
    size of the two, less the floating-point allowance ``FP_RTOL``: a value <= 0 means the bound holds.
    """
    measured = np.asarray(measured, dtype=np.float64)
    bound = np.asarray(bound, dtype=np.float64)
    gap = measured - bound if upper else bound - measured
    scale = np.maximum(np.maximum(np.abs(measured), np.abs(bound)), 1e-300)
    with np.errstate(invalid="ignore"):
        rel = np.where(np.isfinite(gap), gap / scale, -np.inf)
    return float(np.max(rel) - FP_RTOL)


def mc_margin(bound, mean, se, *, k: float = 5.0) -> float:
    """The smallest ``bound + k se - mean`` (plus the floating-point allowance): >= 0 means a Monte Carlo
    mean is consistent with the upper bound ``bound`` within ``k`` standard errors.
    """
    bound = np.asarray(bound, dtype=np.float64)
    return float(np.min(bound + k * np.asarray(se) - np.asarray(mean) + FP_RTOL * np.abs(bound)))


# The headline bounds of each theory chapter: (short name, kind). A chapter's bound summary and the build's
# theory_bounds.json list exactly these.
HEADLINE_BOUNDS: dict[str, tuple[tuple[str, str], ...]] = {
    "update_rate": (("energy_upper", "upper"), ("convexity_lower", "lower"), ("band_upper", "upper"),
                    ("band_lower", "lower"), ("scaling_lower", "lower"), ("sgd_fluctuation", "upper")),
    "accuracy": (("guarantee_horizon", "lower"), ("guarantee_post", "lower"), ("loss_prior", "upper")),
    "priority": (("gap_slowdown", "lower"), ("first_step_order", "lower")),
}


# Statements that stay in the chapters, measured like the headline bounds, but that provably cannot meet the
# goal on the chapter's sweep (each chapter says why, from its numbers) and have a stronger headline companion.
COMPANION_BOUNDS: dict[str, tuple[tuple[str, str], ...]] = {
    "update_rate": (("scaling_population", "lower"),),
    "accuracy": (("guarantee_prior", "lower"),),
    "priority": (),
}


def mutate_bound(bound, kind: str, factor: float = 1.0):
    """``bound`` moved by ``factor`` (in (0, 1]) in the direction of violation: an upper bound shrinks
    toward 0 (times ``factor`` where it is >= 0, divided where negative), a lower bound grows (divided by
    ``factor`` where it is > 0, times ``factor`` where negative). ``factor = 1`` returns it unchanged.

    The sweeps check every headline bound through this, so a test can mutate it (``factor = 0.5``) and
    assert that the check then fails.
    """
    if kind not in ("upper", "lower"):
        raise ValueError(f"kind must be 'upper' or 'lower', got {kind!r}")
    factor = float(factor)
    if not 0 < factor <= 1:
        raise ValueError(f"mutation factor must lie in (0, 1], got {factor!r}")
    b = np.asarray(bound, dtype=np.float64)
    if factor == 1.0:
        return b
    if kind == "upper":
        return np.where(b >= 0, b * factor, b / factor)
    return np.where(b > 0, b / factor, b * factor)


def tightness(measured, bound, kind: str, nonvacuous) -> np.ndarray:
    """Per-run tightness of a bound: ``measured / bound`` (upper) or ``bound / measured`` (lower) where the
    bound is non-vacuous, and 0 where it is vacuous (so a vacuous run counts as the loosest possible).
    """
    m = np.asarray(measured, dtype=np.float64)
    b = np.asarray(bound, dtype=np.float64)
    nv = np.asarray(nonvacuous, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = m / b if kind == "upper" else b / m
    return np.where(nv & np.isfinite(r), r, 0.0)


def headline_row(name: str, measured, bound, kind: str, nonvacuous) -> dict[str, float]:
    """The two per-instance columns of one headline bound: ``tight_<name>`` (mean per-run tightness, 0 for
    vacuous runs) and ``nonvac_<name>`` (the fraction of runs where the bound is non-vacuous)."""
    nv = np.asarray(nonvacuous, dtype=bool)
    if nv.size == 0:
        return {f"tight_{name}": float("nan"), f"nonvac_{name}": float("nan")}
    return {f"tight_{name}": float(np.mean(tightness(measured, bound, kind, nv))),
            f"nonvac_{name}": float(np.mean(nv))}


def bound_summary_rows(chapter: str, sweep, *, companions: bool = False) -> list[dict[str, Any]]:
    """One row per headline bound of ``chapter`` from its sweep: ``instances`` (instances where the bound
    applies), ``nonvacuous_share`` (share of them where the bound is non-vacuous on at least half the runs)
    and ``median_tightness`` (median over them of the mean per-run tightness, vacuous runs counted as 0).
    A bound that applies to no instance gets ``instances = 0`` and zeros. ``companions=True``: the same
    rows for :data:`COMPANION_BOUNDS` instead.
    """
    if chapter not in HEADLINE_BOUNDS:
        raise ValueError(f"no headline bounds for chapter {chapter!r}; chapters: {sorted(HEADLINE_BOUNDS)}")
    rows = []
    for name, kind in (COMPANION_BOUNDS if companions else HEADLINE_BOUNDS)[chapter]:
        tight = np.asarray(sweep[f"tight_{name}"], dtype=np.float64)
        nonvac = np.asarray(sweep[f"nonvac_{name}"], dtype=np.float64)
        ok = np.isfinite(tight) & np.isfinite(nonvac)
        if not ok.any():  # e.g. a small sweep without an equal-size pair: say so, with zeros
            rows.append({"chapter": chapter, "bound": name, "kind": kind, "instances": 0,
                         "nonvacuous_share": 0.0, "median_tightness": 0.0})
            continue
        rows.append({"chapter": chapter, "bound": name, "kind": kind, "instances": int(ok.sum()),
                     "nonvacuous_share": float(np.mean(nonvac[ok] >= 0.5)),
                     "median_tightness": float(np.median(tight[ok]))})
    return rows


def summarize_ratios(values) -> dict[str, float]:
    """``{"median", "worst", "best"}`` of a ratio column (worst = max for ratios that must stay <= 1)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite ratios to summarise")
    return {"median": float(np.median(x)), "worst": float(x.max()), "best": float(x.min())}


def goal_met(row: dict[str, Any], *, share: float = 0.5, tightness: float = 0.3) -> bool:
    """The book's goal for a headline bound: non-vacuous on at least ``share`` of the instances, with median
    tightness at least ``tightness`` (measured / bound for an upper bound, bound / measured for a lower).
    """
    return bool(row["nonvacuous_share"] >= share and row["median_tightness"] >= tightness)


def bound_verdict(holds: bool, rows: Sequence[dict[str, Any]]) -> str:
    """The verdict of a claim carried by bounds: "differs" if a statement failed, "agrees" if it held and
    every headline bound meets :func:`goal_met`, "partly agrees" if it held but some bound does not bind.
    """
    if not holds:
        return "differs"
    return "agrees" if all(goal_met(r) for r in rows) else "partly agrees"


def bound_sentence(row: dict[str, Any]) -> str:
    """One generated sentence for a headline bound: its share of non-vacuous instances, its median
    tightness, and whether it meets :func:`goal_met`.
    """
    ratio = "measured / bound" if row["kind"] == "upper" else "bound / measured"
    return (f"{row['bound']} ({row['kind']}): non-vacuous on {row['nonvacuous_share']:.0%} of "
            f"{row['instances']} instances, median tightness ({ratio}) {row['median_tightness']:.2f}; "
            + ("meets" if goal_met(row) else "misses") + " the goal (>= 50 %, >= 0.30)")


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y``."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)).statistic)


def rank_agrees(rho: float, threshold: float = 0.5) -> bool:
    """The book's rule for "a quantity ranks the instances": a rank correlation above ``threshold``."""
    return bool(rho > threshold)


def strictly_increasing(values) -> bool:
    """Whether ``values`` increase strictly (the book's rule for "ordered by distinguishability")."""
    x = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.diff(x) > 0))


def always_lower(x, y) -> bool:
    """Whether ``x < y`` at every step (the book's rule for "learned first")."""
    return bool(np.all(np.asarray(x, dtype=np.float64) < np.asarray(y, dtype=np.float64)))


def order_verdict(measured_order: bool, bound_order: bool) -> str:
    """"agrees" when both the measurements and the guarantees are ordered, "partly agrees" when only the
    measurements are, "differs" otherwise.
    """
    return "agrees" if measured_order and bound_order else "partly agrees" if measured_order else "differs"
