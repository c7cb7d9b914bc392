"""General statistics for the verdicts: intervals for shares, means and rank correlations.

Kept libraries do the work where they can: Wilson intervals come from
``scipy.stats.binomtest(...).proportion_ci(method="wilson")``, t intervals from
``scipy.stats.ttest_1samp(...).confidence_interval``, permutation distributions from
``scipy.stats.permutation_test``, bootstrap intervals of a mean, a Spearman ρ and a paired ratio
(:func:`mean_ci`, :func:`spearman_ci`, :func:`paired_ratio`) from ``scipy.stats.bootstrap``. What is
written here is what scipy does not offer: a bootstrap
*by behaviour* of quantities defined over pairs of behaviours (each behaviour appears in several
pairs, so pairs are not independent) and of a rank correlation averaged over cross-fitting folds.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .validate import InputError

__all__ = ["StatsError", "wilson", "t_interval", "spearman", "permutation_spearman", "pair_share_by_behaviour",
           "crossfit_spearman", "stratified_folds", "spearman_rows", "first_reaching", "generator",
           "mean_ci", "spearman_ci", "paired_ratio"]


class StatsError(InputError):
    """Input a statistic cannot use (wrong shapes, too few observations)."""


def _level(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise StatsError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def _count(name: str, value: Any, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise StatsError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def wilson(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float, float]:
    """The share ``successes / n`` with its Wilson score interval, ``(p, lo, hi)`` (scipy's binomtest)."""
    from scipy.stats import binomtest

    n = _count("n", n, 1)
    k = _count("successes", successes)
    if k > n:
        raise StatsError(f"successes must be at most n = {n}, got {k}")
    ci = binomtest(k, n).proportion_ci(confidence_level=_level(level), method="wilson")
    return k / n, float(ci.low), float(ci.high)


def t_interval(values: Any, *, level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` with its Student-t interval, ``(mean, lo, hi)``.

    With one value the interval is unbounded (``(x, -inf, inf)``): one observation resolves nothing.
    With identical values the interval collapses to the value.
    """
    from scipy.stats import ttest_1samp

    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise StatsError(f"values must be a non-empty array of finite numbers, got {values!r}")
    m = float(x.mean())
    if x.size == 1:
        return m, -math.inf, math.inf
    if np.ptp(x) == 0:
        return m, m, m
    ci = ttest_1samp(x, 0.0).confidence_interval(confidence_level=_level(level))
    return m, float(ci.low), float(ci.high)


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two 1-D samples of one length >= 3 (average ranks for ties).

    A constant variable (all ranks tied, ρ undefined) or a non-finite value is a :class:`StatsError`."""
    a, b = _xy(x, y, 3)
    for name, z in (("x", a), ("y", b)):
        if np.all(z == z[0]):
            raise StatsError(f"{name} is constant (every value is {z[0]!r}): its ranks are all tied and "
                             f"Spearman's rho is undefined")
    return float(_pearson_rows(_ranks(a), _ranks(b)))


def spearman_rows(a: Any, b: Any) -> np.ndarray:
    """Spearman's ρ of each row of ``a`` with the same row of ``b`` (NaN for a constant row): the
    vectorised form bootstrap replicates use."""
    return _pearson_rows(_ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64)))


def first_reaching(curve: Any, level: float) -> np.ndarray | float:
    """The first step t at which ``curve[..., t] >= level`` (``inf`` where it never does): an array over
    the leading axes, a float for a 1-D curve."""
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim < 1 or c.shape[-1] < 1:
        raise StatsError(f"curve must have a non-empty step axis, got shape {c.shape}")
    hit = c >= level
    first = np.argmax(hit, axis=-1).astype(np.float64)
    first = np.where(hit.any(axis=-1), first, np.inf)
    return float(first) if c.ndim == 1 else first


def _xy(x: Any, y: Any, least: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise StatsError(f"x and y must be 1-D of one length, got shapes {a.shape} and {b.shape}")
    if a.shape[0] < least:
        raise StatsError(f"need at least {least} observations, got {a.shape[0]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise StatsError(f"x and y must be finite: x has {int((~np.isfinite(a)).sum())} and y has "
                         f"{int((~np.isfinite(b)).sum())} non-finite values")
    return a, b


def permutation_spearman(x: Any, y: Any, *, n_resamples: int = 9999, seed: int = 0) -> dict[str, float]:
    """Spearman's ρ with its permutation distribution (scipy's ``permutation_test``; exact for n ≤ 8).

    Returns ``rho``, ``p_greater`` (the share of permutations with ρ at least the observed one) and
    ``p_less`` (at most it), and ``n``.
    """
    from scipy.stats import permutation_test

    a, b = _xy(x, y, 3)

    ra = _ranks(a)

    def stat(u, axis=-1):
        return _pearson_rows(ra, _ranks(u))

    kw = dict(permutation_type="pairings", vectorized=True, n_resamples=n_resamples,
              random_state=np.random.default_rng(seed))
    hi = permutation_test((b,), stat, alternative="greater", **kw)
    lo = permutation_test((b,), stat, alternative="less", **kw)
    return {"rho": float(hi.statistic), "p_greater": float(hi.pvalue), "p_less": float(lo.pvalue), "n": int(a.size)}


def _group_shares(agree: Any, members: Sequence[Sequence[str]], n_boot: int) -> np.ndarray:
    """``agree`` as a float array, checked: 1-D, one share in [0, 1] per group of ``members``."""
    a = np.asarray(agree, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] != len(members) or a.shape[0] == 0:
        raise StatsError(f"agree must be 1-D with one entry per group ({len(members)}), got shape {a.shape}")
    if np.any((a < 0) | (a > 1)) or not np.all(np.isfinite(a)):
        raise StatsError("agree must hold shares in [0, 1]")
    _count("n_boot", n_boot, 10)
    return a


def pair_share_by_behaviour(agree: Any, members: Sequence[Sequence[str]], *, n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float, float]:
    """The share of groups (pairs, triples) where a prediction is right, with a bootstrap interval that
    resamples *behaviours*, not groups.

    ``agree[g]`` is 0/1 (or a share in [0, 1], e.g. over cross-fitting folds) for group g whose
    behaviours are ``members[g]``. Each replicate draws the behaviours with replacement; a group counts
    with the product of its members' multiplicities (a group with an undrawn member drops out). This
    respects that each behaviour sits in several groups, which a Wilson interval over groups ignores.
    Returns ``(share, lo, hi)`` (a percentile interval).
    """
    a = _group_shares(agree, members, n_boot)
    names = sorted({b for g in members for b in g})
    pos = {b: i for i, b in enumerate(names)}
    idx = np.array([[pos[b] for b in g] for g in members])  # [G, k]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB0B]))
    counts = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)  # [R, B]
    w = np.prod(counts[:, idx], axis=2).astype(np.float64)  # [R, G]
    tot = w.sum(1)
    keep = tot > 0
    reps = (w[keep] @ a) / tot[keep]
    q = _level(level)
    lo, hi = np.quantile(reps, [(1 - q) / 2, (1 + q) / 2])
    p = float(a.mean())
    return p, float(min(lo, p)), float(max(hi, p))


def crossfit_spearman(x: Any, y: Any, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Spearman's ρ of x and y over behaviours, averaged over cross-fitting folds, with a bootstrap
    interval by behaviour.

    ``x`` and ``y`` are ``[F, B]``: fold f's predictor and outcome for each of B behaviours, measured on
    disjoint statements within the fold. The estimate is the mean over folds of each fold's ρ; each
    replicate resamples the behaviours (the same draw in every fold) and re-ranks. Returns
    ``(rho, lo, hi)``.
    """
    a = np.atleast_2d(np.asarray(x, dtype=np.float64))
    b = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 4:
        raise StatsError(f"x and y must be [folds, behaviours >= 4] of one shape, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise StatsError("x and y must be finite")
    _count("n_boot", n_boot, 10)
    if np.any(np.ptp(a, axis=1) == 0) or np.any(np.ptp(b, axis=1) == 0):
        raise StatsError("x or y is constant over the behaviours (in some fold): Spearman's rho is undefined")
    rho = float(np.nanmean(_pearson_rows(_ranks(a), _ranks(b))))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0F1]))
    nb = a.shape[1]
    reps = np.empty(n_boot)
    for start in range(0, n_boot, 200):
        idx = rng.integers(0, nb, size=(min(200, n_boot - start), nb))  # [R, B]
        ra, rb = _ranks(a[:, idx]), _ranks(b[:, idx])  # [F, R, B]
        reps[start:start + idx.shape[0]] = np.nanmean(_pearson_rows(ra, rb), axis=0)
    reps = reps[np.isfinite(reps)]
    q = _level(level)
    lo, hi = np.quantile(reps, [(1 - q) / 2, (1 + q) / 2])
    return rho, float(min(lo, rho)), float(max(hi, rho))


def stratified_folds(labels: Any, n_folds: int, *, seed: int) -> np.ndarray:
    """A fold number in 0..n_folds−1 for each observation, balanced within each class of ``labels``.

    Each class is shuffled (stream ``seed``) and dealt round-robin, so the folds' class counts differ
    by at most one.
    """
    s = np.asarray(labels)
    k = _count("n_folds", n_folds, 2)
    if s.ndim != 1:
        raise StatsError(f"labels must be 1-D, got shape {s.shape}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF01D]))
    out = np.empty(s.shape[0], dtype=np.int64)
    offset = 0
    for c in np.unique(s):
        where = np.flatnonzero(s == c)
        if where.size < k:
            raise StatsError(f"class {c!r} has {where.size} observations, fewer than the {k} folds")
        where = rng.permutation(where)
        out[where] = (np.arange(where.size) + offset) % k
        offset += where.size
    return out


# ---------------------------------------------------------------------------------------------------
# Bootstrap intervals (scipy.stats.bootstrap)
# ---------------------------------------------------------------------------------------------------

def generator(seed: Any) -> np.random.Generator:
    """A numpy Generator from ``seed``: an int, a tuple of ints (one ``SeedSequence``, so ``(seed, k)``
    gives behaviour k its own stream) or a Generator (returned as it is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    if isinstance(seed, (tuple, list)) and seed and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                                        for s in seed):
        return np.random.default_rng(np.random.SeedSequence([int(s) for s in seed]))
    raise StatsError(f"seed must be an int, a tuple of ints or a numpy Generator, got {seed!r}")


def _bootstrap_interval(data: tuple[np.ndarray, ...], statistic, *, paired: bool, n_boot: int, seed: Any,
                        level: float, method: str) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` of a vectorised ``statistic(*samples, axis=-1)``: its interval.

    A replicate can be undefined (NaN): a resample in which x or y is constant has no Spearman ρ.
    scipy's interval is then NaN; for the percentile method the interval is instead taken over the
    defined replicates of scipy's bootstrap distribution (the same quantile rule), as this library
    always did. BCa and basic intervals need every replicate and raise a :class:`StatsError`.
    """
    import warnings

    from scipy.stats import DegenerateDataWarning, bootstrap

    if method not in ("percentile", "BCa", "basic"):
        raise StatsError(f"method must be 'percentile', 'BCa' or 'basic', got {method!r}")
    q = _level(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        res = bootstrap(data, statistic, n_resamples=_count("n_boot", n_boot, 10), vectorized=True, paired=paired,
                        axis=-1, confidence_level=q, method=method, rng=generator(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    reps = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if method != "percentile" or reps.size < 2:
        raise StatsError(f"the {method} interval is undefined: {reps.size} of {n_boot} bootstrap replicates are "
                         f"defined (a sample this small or tied resamples to constants; use more observations"
                         f"{'' if method == 'percentile' else ' or method=percentile'})")
    lo, hi = np.quantile(reps, [(1 - q) / 2, (1 + q) / 2])
    return float(lo), float(hi)


def mean_ci(values: Any, *, n_boot: int = 2000, seed: Any = 0, level: float = 0.95,
            method: str = "percentile") -> tuple[float, float, float]:
    """The mean of ``values`` (1-D, at least 2, finite) with a bootstrap interval: ``(mean, lo, hi)``.

    ``scipy.stats.bootstrap``, percentile method by default (``method="BCa"`` for the bias-corrected
    and accelerated one); ``seed`` as in :func:`generator`."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] < 2:
        raise StatsError(f"values must be 1-D with at least 2 values, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise StatsError(f"values must be finite: {int((~np.isfinite(v)).sum())} are not")
    lo, hi = _bootstrap_interval((v,), np.mean, paired=False, n_boot=n_boot, seed=seed, level=level, method=method)
    return float(v.mean()), lo, hi


def _spearman_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return spearman_rows(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1))


def spearman_ci(x: Any, y: Any, *, n_boot: int = 2000, seed: Any = 0, level: float = 0.95,
                method: str = "percentile") -> tuple[float, float, float]:
    """Spearman's ρ of paired samples with a bootstrap interval over the pairs: ``(rho, lo, hi)``.

    ``scipy.stats.bootstrap`` with ``paired=True``. A resample in which x or y is constant (ρ
    undefined, frequent for small samples) is left out of the percentile interval."""
    a, b = _xy(x, y, 3)
    rho = spearman(a, b)
    lo, hi = _bootstrap_interval((a, b), _spearman_stat, paired=True, n_boot=n_boot, seed=seed, level=level,
                                 method=method)
    return rho, lo, hi


def _median_log_ratio(la: np.ndarray, lb: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(la - lb, axis=axis)


def paired_ratio(x: Any, y: Any, *, n_boot: int = 2000, seed: Any = 0, level: float = 0.95,
                 method: str = "percentile") -> dict[str, float]:
    """How much larger ``x`` is than ``y`` over paired observations (behaviours), on a log scale.

    Returns ``ratio`` = exp(median log(x/y)) with a paired bootstrap interval (``lo``, ``hi``;
    ``scipy.stats.bootstrap``, ``paired=True``) and ``frac_greater``, the share of pairs with x > y.
    Values must be positive and finite, at least 2 pairs."""
    a, b = _xy(x, y, 2)
    if (a <= 0).any() or (b <= 0).any():
        raise StatsError("paired_ratio needs positive values (it compares logarithms)")
    la, lb = np.log(a), np.log(b)
    lo, hi = _bootstrap_interval((la, lb), _median_log_ratio, paired=True, n_boot=n_boot, seed=seed, level=level,
                                 method=method)
    return {"ratio": float(np.exp(np.median(la - lb))), "lo": float(np.exp(lo)), "hi": float(np.exp(hi)),
            "frac_greater": float((a > b).mean())}


def cluster_mean_ci(values: Any, clusters: Sequence[Any], *, n_boot: int = 2000, seed: Any = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` with a two-level bootstrap interval: ``(mean, lo, hi)``.

    Observations come in clusters (``clusters[i]`` names the cluster of ``values[i]``: a behaviour, say,
    with one value per seed). Each replicate draws clusters with replacement, then values within each
    drawn cluster with replacement, and averages the cluster means (each cluster counts once, however
    many values it has). With a single cluster only the within-cluster level is resampled, so the
    interval says nothing about other clusters; callers report the number of clusters beside it.
    Percentile interval.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] < 2:
        raise StatsError(f"values must be 1-D with at least 2 values, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise StatsError(f"values must be finite: {int((~np.isfinite(v)).sum())} are not")
    if len(clusters) != v.shape[0]:
        raise StatsError(f"need one cluster label per value: {len(clusters)} labels for {v.shape[0]} values")
    _count("n_boot", n_boot, 10)
    names = list(dict.fromkeys(clusters))
    groups = [v[[i for i, c in enumerate(clusters) if c == name]] for name in names]
    rng = generator(seed)
    k = len(groups)
    reps = np.empty(int(n_boot))
    for r in range(int(n_boot)):
        pick = rng.integers(0, k, size=k) if k > 1 else np.zeros(1, dtype=int)
        reps[r] = np.mean([rng.choice(groups[j], size=groups[j].size, replace=True).mean() for j in pick])
    q = _level(level)
    lo, hi = np.quantile(reps, [(1 - q) / 2, (1 + q) / 2])
    est = float(np.mean([g.mean() for g in groups]))
    return est, float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------
# Intervals from a sample size (distinguishability's verdicts)
# ---------------------------------------------------------------------------------------------------

def spearman_z_interval(rho: float, n: int, *, level: float = 0.95) -> tuple[float, float, float]:
    """A Spearman ρ over ``n`` items with its Fisher-z interval, ``(rho, lo, hi)``.

    z = atanh ρ has standard error √((1 + ρ²/2)/(n − 3)) (Bonett & Wright 2000, for Spearman's ρ); the
    interval is tanh(z ± q·se) with q the normal quantile of ``level``. Needs n ≥ 4 and |ρ| < 1 (ρ = ±1
    gives the degenerate interval [ρ, ρ]).
    """
    from scipy.stats import norm

    n = _count("n", n, 4)
    r = float(rho)
    if not -1 <= r <= 1:
        raise StatsError(f"rho must lie in [-1, 1], got {rho!r}")
    if abs(r) == 1:
        return r, r, r
    se = math.sqrt((1 + r * r / 2) / (n - 3))
    q = float(norm.ppf((1 + _level(level)) / 2))
    z = math.atanh(r)
    return r, math.tanh(z - q * se), math.tanh(z + q * se)


def dprime_se(dprime: float, n_pos: int, n_neg: int) -> float:
    """The large-sample standard error of a standardised mean difference d′ between classes of
    ``n_pos`` and ``n_neg`` statements: √((n₊ + n₋)/(n₊ n₋) + d′²/(2(n₊ + n₋))) (Hedges & Olkin 1985).
    Approximate for our d′, whose direction μ̂₊ − μ̂₋ is fitted on the same statements."""
    a, b = _count("n_pos", n_pos, 2), _count("n_neg", n_neg, 2)
    d = float(dprime)
    if not math.isfinite(d):
        raise StatsError(f"dprime must be finite, got {dprime!r}")
    return math.sqrt((a + b) / (a * b) + d * d / (2 * (a + b)))


# ---------------------------------------------------------------------------------------------------
# Shares over groups of behaviours that share no member (the whole-model pair study)
# ---------------------------------------------------------------------------------------------------

def linked_components(members: Sequence[Sequence[str]]) -> list[int]:
    """For each group (pair, triple) the index of its connected component: groups that share a
    behaviour, directly or through others, are in one component; different components share none."""
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for g, names in enumerate(members):
        for b in names:
            if b in first:
                parent[root(g)] = root(first[b])
            else:
                first[b] = g
    roots = [root(g) for g in range(len(members))]
    order = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return [order[r] for r in roots]


def pair_share_by_component(agree: Any, members: Sequence[Sequence[str]], *, n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float, float, int]:
    """The share of groups where a prediction is right with a bootstrap interval that resamples
    *components* (:func:`linked_components`): groups linked by a shared behaviour are drawn together,
    groups in different components share no behaviour and are independent. Each replicate's share is
    right groups over groups drawn (the estimand stays the share of groups). With disjoint groups this
    is the ordinary bootstrap over groups; with every group linked it cannot resample (one component)
    and the interval is the point. Returns ``(share, lo, hi, components)``."""
    a = _group_shares(agree, members, n_boot)
    comp = np.asarray(linked_components(members))
    k = int(comp.max()) + 1
    right = np.bincount(comp, weights=a, minlength=k)
    size = np.bincount(comp, minlength=k).astype(np.float64)
    rng = generator((int(seed), 0xC0C))
    draws = rng.integers(0, k, size=(int(n_boot), k))
    reps = right[draws].sum(1) / size[draws].sum(1)
    q = _level(level)
    lo, hi = np.quantile(reps, [(1 - q) / 2, (1 + q) / 2])
    p = float(a.mean())
    return p, float(min(lo, p)), float(max(hi, p)), k
