"""Rank statistics of the speed measures over behaviours: Spearman's ρ with bootstrap intervals, the
partial ρ holding other properties fixed, and the behaviours farthest from the rank trend.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import stats
from ..threads import one_thread
from .checks import DynamicsError


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _check_xy(x, y, covariates=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DynamicsError(f"x and y must be 1-D of the same length, got shapes {a.shape} and {b.shape}")
    c = np.zeros((a.shape[0], 0)) if covariates is None else np.asarray(covariates, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] != a.shape[0]:
        raise DynamicsError(f"covariates must be (n, k) with n = {a.shape[0]}, got shape {c.shape}")
    if a.shape[0] < c.shape[1] + 4:
        raise DynamicsError(f"need at least {c.shape[1] + 4} observations for a partial correlation with "
                            f"{c.shape[1]} covariates, got {a.shape[0]}")
    if np.isnan(a).any() or np.isnan(b).any() or np.isnan(c).any():
        raise DynamicsError("x, y and covariates must not contain NaN (infinities are ranked last)")
    return a, b, c


def _partial_rows(ra: np.ndarray, rb: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """Pearson correlation of the residuals of ra and rb after regressing both on rc (batched rows)."""
    n = ra.shape[-1]
    X = np.concatenate([np.ones(ra.shape + (1,)), rc], axis=-1)  # [B, n, k+1]
    Y = np.stack([ra, rb], axis=-1)  # [B, n, 2]
    coef, *_ = _lstsq_batched(X, Y)
    res = Y - X @ coef
    res -= res.mean(axis=-2, keepdims=True)
    num = (res[..., 0] * res[..., 1]).sum(-1)
    den = np.sqrt((res[..., 0] ** 2).sum(-1) * (res[..., 1] ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den if n else num


def _lstsq_batched(X: np.ndarray, Y: np.ndarray):
    XtX = np.swapaxes(X, -1, -2) @ X
    XtY = np.swapaxes(X, -1, -2) @ Y
    return (np.linalg.pinv(XtX) @ XtY,)


def partial_spearman(x: Any, y: Any, covariates: Any = None) -> float:
    """Spearman's ρ of ``x`` and ``y`` with the ranks of ``covariates`` (n × k) partialled out.

    All variables are ranked (average ranks for ties); the ranks of x and y are regressed on the
    covariates' ranks (with an intercept) and the residuals correlated. With no covariates this is
    Spearman's ρ.
    """
    a, b, c = _check_xy(x, y, covariates)
    rc = _rank(c.T).T if c.shape[1] else c
    rho = _partial_rows(_rank(a)[None], _rank(b)[None], rc[None])[0]
    return float(rho)


def partial_spearman_ci(x: Any, y: Any, covariates: Any = None, *, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """:func:`partial_spearman` with a percentile bootstrap interval over the observations (behaviours):
    ``(rho, lo, hi)``. Each replicate re-ranks the resampled observations.
    """
    a, b, c = _check_xy(x, y, covariates)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise DynamicsError(f"n_boot must be an int >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise DynamicsError(f"level must be in (0, 1), got {level!r}")
    rho = partial_spearman(a, b, c)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    n = a.shape[0]
    reps = []
    for start in range(0, n_boot, 250):
        idx = rng.integers(0, n, size=(min(250, n_boot - start), n))
        rc = np.moveaxis(_rank(np.moveaxis(c[idx], 1, 2)), 1, 2) if c.shape[1] else c[idx]
        reps.append(_partial_rows(_rank(a[idx]), _rank(b[idx]), rc))
    r = np.concatenate(reps)
    r = r[np.isfinite(r)]
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return rho, float(lo), float(hi)


def speed_correlations(table, speeds: Sequence[str], properties: Sequence[str], *, n_boot: int, seed: int):
    """Spearman's ρ of each speed with each property over the rows (behaviours) of ``table``, with a
    bootstrap interval, and the partial ρ holding the other properties fixed (:func:`partial_spearman_ci`).

    Returns a DataFrame with columns ``speed``, ``property``, ``rho``, ``lo``, ``hi``, ``prho``, ``plo``,
    ``phi``; a speed or property that is constant over the behaviours gives NaN (undefined). The plain
    interval comes from :func:`alignment_dynamics.stats.spearman_ci`, stream ``(seed, j, i)``.
    """
    import pandas as pd

    from ..stats import spearman_ci

    missing = [c for c in list(speeds) + list(properties) if c not in table.columns]
    if missing:
        raise DynamicsError(f"columns {missing} are not in the table; it has {list(table.columns)}")
    rows = []
    with one_thread():  # many small rank regressions
        for j, key in enumerate(speeds):
            y = table[key].to_numpy(dtype=np.float64)
            for i, prop in enumerate(properties):
                x = table[prop].to_numpy(dtype=np.float64)
                others = table[[p for p in properties if p != prop]].to_numpy(dtype=np.float64)
                if np.ptp(x) == 0 or np.ptp(y) == 0:
                    vals = [math.nan] * 6
                else:
                    vals = [*spearman_ci(x, y, n_boot=n_boot, seed=(int(seed), j, i)),
                            *partial_spearman_ci(x, y, others, n_boot=n_boot, seed=int(seed) + 101 * j + i)]
                rows.append(dict(zip(("speed", "property", "rho", "lo", "hi", "prho", "plo", "phi"),
                                     [key, prop, *vals])))
    return pd.DataFrame(rows)


def rank_outliers(x: Any, y: Any, names: Sequence[str], k: int = 3):
    """The ``k`` observations farthest from the rank trend of y on x: residuals of rank(y) regressed
    on rank(x), largest |residual| first (a DataFrame with x, y, their ranks and the residual).
    """
    import pandas as pd

    a, b, _ = _check_xy(x, y)
    if len(names) != a.shape[0]:
        raise DynamicsError(f"names must have {a.shape[0]} entries, got {len(names)}")
    ra, rb = _rank(a), _rank(b)
    slope, icpt = np.polyfit(ra, rb, 1)
    res = rb - (slope * ra + icpt)
    order = np.argsort(-np.abs(res), kind="stable")[:k]
    return pd.DataFrame({"x": a[order], "y": b[order], "rank_x": ra[order], "rank_y": rb[order],
                         "residual": res[order]}, index=pd.Index([names[i] for i in order], name="behavior"))


def finite_spearman(x: Any, y: Any) -> float:
    """Spearman's ρ over the pairs where both values are finite; NaN when fewer than 3 remain
    (e.g. behaviours whose tiny test sample is empty).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DynamicsError(f"x and y must be 1-D of the same length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return math.nan
    return stats.spearman(a[keep], b[keep])
