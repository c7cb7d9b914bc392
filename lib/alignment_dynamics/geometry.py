"""The geometry of preferences: how far apart the embeddings of Yes- and No-preferred prompts lie.

For one behaviour, h are the frozen last-token embeddings of its prompts and ``labels`` say which are
*positive* (the matching answer is " Yes") and which *negative* (" No"). With μ₊, μ₋ the class means
and Σ₊, Σ₋ the sample covariances (ddof 1), the official code of Im & Li (2024) measures three
"embedding properties" (``data/embedding_properties.ipynb``):

* **distinguishability** ‖μ₊ − μ₋‖₂,
* **concentration** max(‖Σ₊‖₂, ‖Σ₋‖₂) (spectral norm),
* **trace** max(tr Σ₊, tr Σ₋),

and, for pairs of behaviours i, j with b_i = μ_i⁺ − μ_i⁻ and b̄ = (b_i + b_j)/2, the **priority level**
p_i = ⟨b̄, b_i⟩/‖b̄‖ and the **priority gap** (p_i − p_j)/max(‖b_i‖, ‖b_j‖)
(``data/priority_levels.ipynb``).

This module adds what a careful reading needs: scale-free variants (distinguishability over the mean
embedding norm; a one-dimensional d′ along μ₊ − μ₋; a shrunk Fisher / Mahalanobis distance), the
finite-sample bias of ‖μ̂₊ − μ̂₋‖² and its unbiased estimate, stratified bootstrap confidence intervals,
the constants c_v, c_n and β′ of the hypotheses of Theorem 4.1 of the paper, empirical directional
tails of ⟨v, h − μ⟩ (the α-subexponential modelling assumption), rank statistics, and 2-D maps
(UMAP, or PCA when UMAP is too slow).

Every computation runs in float64, whatever the input dtype (torch bf16 included). Inputs are checked:
a wrong shape, a class with fewer than two statements or a non-finite embedding is a
:class:`GeometryError` saying what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .stats import StatsError, generator, spearman
from .threads import one_thread

POSITIVE_ANSWER = " Yes"
NEGATIVE_ANSWER = " No"
DEFAULT_SHRINKAGE = 0.1  # λ of the Fisher distance: S_λ = (1 − λ) S + λ (tr S / d) I
PROPERTY_NAMES = ("distinguishability", "concentration", "trace")


class GeometryError(ValueError):
    """Embeddings or labels the geometry cannot be computed from."""




# ---------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------

def as_float64(h: Any, name: str = "h", *, ndim: int = 2) -> np.ndarray:
    """``h`` (NumPy array, list or torch tensor of any float dtype) as a finite float64 array.

    Raises :class:`GeometryError` for the wrong number of dimensions, an empty array or a NaN / inf.
    """
    if hasattr(h, "detach"):  # torch: numpy cannot read bfloat16, so convert on the torch side
        h = h.detach().cpu().double().numpy()
    try:
        a = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{name} must be an array of numbers, got {type(h).__name__}: {exc}") from exc
    if a.ndim != ndim:
        shape = "(n, d): one row per statement" if ndim == 2 else f"{ndim}-D"
        raise GeometryError(f"{name} must be {shape}, got shape {a.shape}")
    if a.size == 0:
        raise GeometryError(f"{name} is empty (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0]) if a.ndim == 2 else np.nonzero(bad)[0]
        raise GeometryError(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf), first in row(s) "
                            f"{rows[:5].tolist()}; embeddings must be finite")
    return a


def positive_mask(labels: Any, n: int | None = None) -> np.ndarray:
    """Which statements are positive, as a bool array.

    ``labels`` may be bools (True = positive), integers or floats in {0, 1} or {−1, +1}, or the answer
    strings " Yes" / " No" (``answer_matching_behavior``). ``n`` is the expected length.
    """
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise GeometryError(f"labels must be 1-D (one per statement), got shape {lab.shape}")
    if n is not None and lab.shape[0] != n:
        raise GeometryError(f"labels has {lab.shape[0]} entries but there are {n} embeddings")
    if lab.dtype == bool:
        return lab.copy()
    if lab.dtype.kind in "US":
        values = set(np.unique(lab).tolist())
        if not values <= {POSITIVE_ANSWER, NEGATIVE_ANSWER}:
            raise GeometryError(f"string labels must be {POSITIVE_ANSWER!r} or {NEGATIVE_ANSWER!r} (with the "
                                f"leading space), got {sorted(values)[:5]}")
        return lab == POSITIVE_ANSWER
    if lab.dtype.kind in "iuf":
        values = set(np.unique(lab).tolist())
        if values <= {0, 1}:
            return lab == 1
        if values <= {-1, 1}:
            return lab == 1
        raise GeometryError(f"numeric labels must be in {{0, 1}} or {{-1, +1}}, got values {sorted(values)[:5]}")
    raise GeometryError(f"labels must be bool, 0/1, ±1 or ' Yes'/' No', got dtype {lab.dtype}")


def split_classes(h: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The positive and negative rows of ``h`` (float64), each with at least two statements."""
    x = as_float64(h)
    pos = positive_mask(labels, x.shape[0])
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos < 2 or n_neg < 2:
        raise GeometryError(f"each class needs at least 2 statements to estimate a covariance; got {n_pos} "
                            f"positive and {n_neg} negative")
    return x[pos], x[~pos]


# ---------------------------------------------------------------------------------------------------
# Moments of one class
# ---------------------------------------------------------------------------------------------------

def _spectral_and_trace(xc: np.ndarray) -> tuple[float, float]:
    """‖S‖₂ and tr S of S = xcᵀxc/(n − 1) for centred rows ``xc``, via the smaller Gram matrix."""
    n, d = xc.shape
    gram = xc @ xc.T if n <= d else xc.T @ xc
    top = float(np.linalg.eigvalsh(gram)[-1])
    return max(top, 0.0) / (n - 1), float(np.einsum("ij,ij->", xc, xc)) / (n - 1)


@dataclass(frozen=True)
class ClassMoments:
    """Means, covariance summaries and counts of the two classes of one behaviour (float64)."""

    mean_pos: np.ndarray
    mean_neg: np.ndarray
    n_pos: int
    n_neg: int
    spectral_pos: float  # ‖Σ₊‖₂
    spectral_neg: float
    trace_pos: float  # tr Σ₊
    trace_neg: float
    centered: np.ndarray  # every statement minus its class mean, (n₊ + n₋) × d
    mean_norm: float  # mean ‖h‖ over all statements of both classes
    max_norm: float  # largest ‖h‖

    @property
    def d(self) -> int:
        return int(self.mean_pos.shape[0])

    @property
    def pooled(self) -> np.ndarray:
        """The pooled within-class covariance (d × d), ddof 2."""
        return self.centered.T @ self.centered / (self.n_pos + self.n_neg - 2)

    @property
    def b(self) -> np.ndarray:
        """b = μ₊ − μ₋."""
        return self.mean_pos - self.mean_neg

    @property
    def distinguishability(self) -> float:
        return float(np.linalg.norm(self.b))

    @property
    def concentration(self) -> float:
        return max(self.spectral_pos, self.spectral_neg)

    @property
    def trace(self) -> float:
        return max(self.trace_pos, self.trace_neg)


def class_moments(h: Any, labels: Any) -> ClassMoments:
    """The :class:`ClassMoments` of one behaviour's embeddings ``h`` (n × d) and ``labels``."""
    xp, xn = split_classes(h, labels)
    mp, mn = xp.mean(axis=0), xn.mean(axis=0)
    cp, cn = xp - mp, xn - mn
    sp, tp = _spectral_and_trace(cp)
    sn, tn = _spectral_and_trace(cn)
    norms = np.concatenate([np.linalg.norm(xp, axis=1), np.linalg.norm(xn, axis=1)])
    return ClassMoments(mp, mn, len(xp), len(xn), sp, sn, tp, tn, np.concatenate([cp, cn]), float(norms.mean()),
                        float(norms.max()))


# ---------------------------------------------------------------------------------------------------
# Properties of one behaviour
# ---------------------------------------------------------------------------------------------------

def fisher_distance(b: Any, cov: Any, shrinkage: float = DEFAULT_SHRINKAGE) -> float:
    """The shrunk Mahalanobis distance √(bᵀ S_λ⁻¹ b), S_λ = (1 − λ) S + λ (tr S / d) I.

    Shrinking towards the scaled identity keeps S_λ invertible when there are fewer statements than
    dimensions, and keeps the distance scale-free (invariant to h → c h). λ = ``shrinkage`` ∈ (0, 1].
    """
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0.0 < shrinkage <= 1.0:
        raise GeometryError(f"shrinkage must be a number in (0, 1], got {shrinkage!r}")
    b = as_float64(b, "b", ndim=1)
    s = as_float64(cov, "cov")
    d = b.shape[0]
    if s.shape != (d, d):
        raise GeometryError(f"cov must be {d} × {d} to match b, got shape {s.shape}")
    scale = np.trace(s) / d
    if scale <= 0:
        raise GeometryError("cov has zero trace: the statements of each class are identical")
    s_l = (1.0 - shrinkage) * s + shrinkage * scale * np.eye(d)
    c = np.linalg.cholesky(s_l)
    z = np.linalg.solve(c, b)
    return float(np.sqrt(z @ z))


def _fisher_from_centered(b: np.ndarray, u: np.ndarray, dof: int, shrinkage: float) -> float:
    """:func:`fisher_distance` with S = uᵀu/dof, through the n × n Gram matrix when n < d (Woodbury).

    S_λ = a I + c uᵀu with a = λ tr S/d and c = (1 − λ)/dof, so
    bᵀS_λ⁻¹b = ‖b‖²/a − (ub)ᵀ (a²/c I + a u uᵀ)⁻¹ (ub).
    """
    n, d = u.shape
    if n >= d:
        return fisher_distance(b, u.T @ u / dof, shrinkage)
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0.0 < shrinkage <= 1.0:
        raise GeometryError(f"shrinkage must be a number in (0, 1], got {shrinkage!r}")
    gram = u @ u.T
    a = shrinkage * np.trace(gram) / dof / d
    if a <= 0:
        raise GeometryError("cov has zero trace: the statements of each class are identical")
    if shrinkage == 1.0:
        return float(np.sqrt(b @ b / a))
    c = (1.0 - shrinkage) / dof
    ub = u @ b
    k = np.linalg.cholesky(a * a / c * np.eye(n) + a * gram)
    z = np.linalg.solve(k, ub)
    return float(np.sqrt(max(b @ b / a - z @ z, 0.0)))


def properties(h: Any, labels: Any, *, shrinkage: float = DEFAULT_SHRINKAGE) -> dict[str, float]:
    """Every per-behaviour quantity of the chapter, from embeddings ``h`` (n × d) and ``labels``.

    Keys: ``distinguishability`` ‖μ₊ − μ₋‖, ``concentration`` max ‖Σ±‖₂, ``trace`` max tr Σ± (the
    official three); ``mean_norm`` and ``max_norm`` (mean and largest ‖h‖);
    ``relative_distinguishability`` (distinguishability / mean_norm); ``distinguishability_sq_unbiased``
    = ‖μ̂₊ − μ̂₋‖² − tr Σ̂₊/n₊ − tr Σ̂₋/n₋ (unbiased for ‖μ₊ − μ₋‖², may be negative);
    ``noise_fraction`` = (tr Σ̂₊/n₊ + tr Σ̂₋/n₋)/‖μ̂₊ − μ̂₋‖², the expected share of sampling noise in the
    plug-in square; ``relative_distinguishability_debiased`` = √max(0, unbiased square) / mean_norm;
    ``dprime`` = ‖b‖ / √(vᵀ S v) with v = b/‖b‖ and S the pooled
    within-class covariance (d′ along μ₊ − μ₋); ``fisher`` (:func:`fisher_distance` with ``shrinkage``);
    ``c_v`` = concentration/√d and ``c_n`` = max± (‖μ±‖ + (tr Σ±)^½)/√d, the smallest constants for
    which the two hypotheses of Theorem 4.1 hold for this behaviour; ``n_pos``, ``n_neg``, ``d``.
    """
    return _properties(class_moments(h, labels), shrinkage)


def _properties(m: ClassMoments, shrinkage: float) -> dict[str, float]:
    b = m.b
    dist = float(np.linalg.norm(b))
    floor = m.trace_pos / m.n_pos + m.trace_neg / m.n_neg
    sq_unbiased = dist ** 2 - floor
    if dist > 0:
        v = b / dist
        along = float(np.sum((m.centered @ v) ** 2)) / (m.n_pos + m.n_neg - 2)
        dprime = dist / math.sqrt(along) if along > 0 else math.inf
    else:
        dprime = 0.0
    root_d = math.sqrt(m.d)
    c_n = max(np.linalg.norm(m.mean_pos) + math.sqrt(m.trace_pos),
              np.linalg.norm(m.mean_neg) + math.sqrt(m.trace_neg)) / root_d
    return {
        "distinguishability": dist,
        "concentration": m.concentration,
        "trace": m.trace,
        "mean_norm": m.mean_norm,
        "max_norm": m.max_norm,
        "relative_distinguishability": dist / m.mean_norm if m.mean_norm > 0 else math.nan,
        "distinguishability_sq_unbiased": float(sq_unbiased),
        "noise_fraction": floor / dist ** 2 if dist > 0 else math.inf,
        "relative_distinguishability_debiased": (math.sqrt(max(sq_unbiased, 0.0)) / m.mean_norm
                                                 if m.mean_norm > 0 else math.nan),
        "dprime": dprime,
        "fisher": _fisher_from_centered(b, m.centered, m.n_pos + m.n_neg - 2, shrinkage),
        "c_v": m.concentration / root_d,
        "c_n": float(c_n),
        "n_pos": m.n_pos,
        "n_neg": m.n_neg,
        "d": m.d,
    }


@one_thread()
def property_table(items: Iterable[tuple[str, Any, Any]], *, shrinkage: float = DEFAULT_SHRINKAGE):
    """A DataFrame of :func:`properties`, one row per ``(behaviour, h, labels)`` in ``items``.

    Also returns, as the second value, the (k × d) float64 matrix of b_i = μ_i⁺ − μ_i⁻ in the same
    row order (for :func:`priority_gaps`).
    """
    import pandas as pd

    rows, bs, names = [], [], []
    for name, h, labels in items:
        try:
            m = class_moments(h, labels)
            rows.append(_properties(m, shrinkage))
        except GeometryError as exc:
            raise GeometryError(f"behaviour {name!r}: {exc}") from exc
        bs.append(m.b)
        names.append(name)
    if not rows:
        raise GeometryError("property_table needs at least one behaviour")
    if len(set(names)) != len(names):
        raise GeometryError("behaviour names in property_table must be unique")
    dims = {len(b) for b in bs}
    if len(dims) != 1:
        raise GeometryError(f"all behaviours must have the same embedding dimension, got {sorted(dims)}")
    df = pd.DataFrame(rows, index=pd.Index(names, name="behavior"))
    return df, np.stack(bs)


def signed_margins(h: Any, labels: Any) -> np.ndarray:
    """s · ⟨b/‖b‖, h − (μ₊ + μ₋)/2⟩ for each statement, in the input order (s = +1 positive, −1 negative).

    Positive when a statement lies on its own class's side of the mid-plane between the class means:
    how clearly it is "placed" along the direction that distinguishes the classes.
    """
    x = as_float64(h)
    pos = positive_mask(labels, x.shape[0])
    m = class_moments(x, pos)
    nb = np.linalg.norm(m.b)
    if nb == 0:
        raise GeometryError("μ₊ = μ₋: the mean-difference direction is undefined")
    s = np.where(pos, 1.0, -1.0)
    return s * ((x - (m.mean_pos + m.mean_neg) / 2) @ (m.b / nb))


@one_thread()
def margin_correlations(items: Iterable[tuple[str, Any, Any]], values: Mapping[str, Any]) -> np.ndarray:
    """Per behaviour, Spearman's ρ between ``values[name]`` (one number per statement, e.g. the label
    confidence) and the statements' :func:`signed_margins` (NaN for a behaviour whose values are all
    equal: no ranks to correlate).
    """
    out = []
    for name, h, labels in items:
        if name not in values:
            raise GeometryError(f"no values for behaviour {name!r}")
        v = as_float64(values[name], f"values[{name!r}]", ndim=1)
        m = signed_margins(h, labels)
        # a behaviour whose values (or margins) are all equal has no rank correlation: NaN, on purpose
        out.append(np.nan if np.all(v == v[0]) or np.all(m == m[0]) else spearman(v, m))
    return np.array(out)


# ---------------------------------------------------------------------------------------------------
# Stratified bootstrap
# ---------------------------------------------------------------------------------------------------

BOOTSTRAP_PROPERTIES = ("distinguishability", "relative_distinguishability", "trace", "concentration", "b")


def _rng(seed: Any) -> np.random.Generator:
    try:
        return generator(seed)
    except StatsError as exc:
        raise GeometryError(str(exc)) from None


def bootstrap(h: Any, labels: Any, *, n_boot: int = 200, seed: Any = 0,
              which: Sequence[str] = ("distinguishability", "relative_distinguishability")) -> dict[str, np.ndarray]:
    """Stratified bootstrap replicates of per-behaviour properties.

    Each replicate resamples n₊ positives from the positives and n₋ negatives from the negatives, with
    replacement, and recomputes the properties in ``which`` (a subset of :data:`BOOTSTRAP_PROPERTIES`).
    Returns ``{name: array of n_boot replicates}`` (for ``"b"``, the n_boot × d replicates of μ₊ − μ₋).
    ``seed``: int, tuple of ints or a Generator.

    Cost: means and traces are matrix products; ``concentration`` needs one batched eigenvalue problem
    of size min(n_class, d) per class and replicate, so leave it out for large classes.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise GeometryError(f"n_boot must be an int >= 2, got {n_boot!r}")
    unknown = [w for w in which if w not in BOOTSTRAP_PROPERTIES]
    if unknown or not which:
        raise GeometryError(f"which must name some of {BOOTSTRAP_PROPERTIES}, got {list(which)}")
    rng = _rng(seed)
    xp, xn = split_classes(h, labels)
    out_parts = []
    for x in (xp, xn):
        n = x.shape[0]
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_boot)).astype(np.float64)  # B × n
        w = counts / n
        means = w @ x  # B × d
        sq = np.einsum("ij,ij->i", x, x)
        norms = np.sqrt(sq)
        part = {"mean": means, "norm_sum": counts @ norms, "n": n}
        if "trace" in which:
            part["trace"] = (counts @ sq - n * np.einsum("bj,bj->b", means, means)) / (n - 1)
        if "concentration" in which:
            xc = np.sqrt(counts)[:, :, None] * (x[None, :, :] - means[:, None, :])  # B × n × d
            gram = xc @ xc.transpose(0, 2, 1) if n <= x.shape[1] else xc.transpose(0, 2, 1) @ xc
            part["concentration"] = np.clip(np.linalg.eigvalsh(gram)[:, -1], 0, None) / (n - 1)
        out_parts.append(part)
    p, q = out_parts
    dist = np.linalg.norm(p["mean"] - q["mean"], axis=1)
    out: dict[str, np.ndarray] = {}
    if "b" in which:
        out["b"] = p["mean"] - q["mean"]
    if "distinguishability" in which:
        out["distinguishability"] = dist
    if "relative_distinguishability" in which:
        out["relative_distinguishability"] = dist / ((p["norm_sum"] + q["norm_sum"]) / (p["n"] + q["n"]))
    if "trace" in which:
        out["trace"] = np.maximum(p["trace"], q["trace"])
    if "concentration" in which:
        out["concentration"] = np.maximum(p["concentration"], q["concentration"])
    return out


def percentile_ci(replicates: Any, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap ``replicates`` at confidence ``level``."""
    if not 0.0 < level < 1.0:
        raise GeometryError(f"level must be in (0, 1), got {level!r}")
    r = as_float64(replicates, "replicates", ndim=1)
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@one_thread()
def bootstrap_table(items: Iterable[tuple[str, Any, Any]], *, n_boot: int = 200, seed: int = 0,
                    level: float = 0.95, which: Sequence[str] = ("distinguishability", "relative_distinguishability")):
    """Bootstrap intervals for many behaviours, and the replicates for rank statistics.

    Behaviour k gets its own stream ``SeedSequence([seed, k])``. Returns ``(ci, reps)``: ``ci`` is a
    DataFrame with ``<name>_lo`` and ``<name>_hi`` columns per property, indexed by behaviour, and
    ``reps[name]`` a (k × n_boot) array of replicates in the same order.
    """
    import pandas as pd

    names, reps = [], {w: [] for w in which}
    for k, (name, h, labels) in enumerate(items):
        r = bootstrap(h, labels, n_boot=n_boot, seed=(int(seed), k), which=which)
        names.append(name)
        for w in which:
            reps[w].append(r[w])
    stacked = {w: np.stack(v) for w, v in reps.items()}
    cols = {}
    for w, arr in stacked.items():
        lohi = np.quantile(arr, [(1 - level) / 2, (1 + level) / 2], axis=1)
        cols[f"{w}_lo"], cols[f"{w}_hi"] = lohi[0], lohi[1]
    return pd.DataFrame(cols, index=pd.Index(names, name="behavior")), stacked


# ---------------------------------------------------------------------------------------------------
# Rank statistics
# ---------------------------------------------------------------------------------------------------

def rank_intervals(replicates: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of each behaviour's rank (1 = smallest) across bootstrap replicates.

    ``replicates`` is (k behaviours × B replicates), e.g. from :func:`bootstrap_table`; in each
    replicate the k values are ranked, and each behaviour's B ranks give its interval.
    """
    from scipy.stats import rankdata

    r = as_float64(replicates, "replicates")
    if not 0.0 < level < 1.0:
        raise GeometryError(f"level must be in (0, 1), got {level!r}")
    ranks = rankdata(r, axis=0)
    lo, hi = np.quantile(ranks, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return lo, hi


def stratified_halves(labels: Any, *, seed: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets, each with half of the positives and half of the negatives."""
    pos = positive_mask(labels)
    rng = _rng(seed)
    first, second = [], []
    for cls in (np.nonzero(pos)[0], np.nonzero(~pos)[0]):
        if len(cls) < 4:
            raise GeometryError(f"each class needs at least 4 statements to split in halves, got {len(cls)}")
        perm = rng.permutation(cls)
        half = len(perm) // 2
        first.append(perm[:half])
        second.append(perm[half:2 * half])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


@one_thread()
def split_half_stability(items: Iterable[tuple[str, Any, Any]], *, seed: int = 0,
                         keys: Sequence[str] = ("distinguishability",),
                         shrinkage: float = DEFAULT_SHRINKAGE) -> tuple[dict[str, float], Any, Any]:
    """How stable the ranking of behaviours is: Spearman's ρ between two disjoint half-samples.

    Each behaviour's statements are split into two disjoint, class-stratified halves
    (:func:`stratified_halves`, stream ``SeedSequence([seed, k])``), and :func:`properties` is computed
    on each half. Returns ``(rho, half_1, half_2)``: ``rho[key]`` for each of ``keys``, and the two
    halves' property tables (DataFrames, one row per behaviour). Each half has half the sample, so ρ
    is a conservative estimate of the stability of the full sample's ranking (see
    :func:`spearman_brown`).
    """
    import pandas as pd

    r1, r2, names = [], [], []
    for k, (name, h, labels) in enumerate(items):
        x = as_float64(h)
        lab = positive_mask(labels, x.shape[0])
        a, b = stratified_halves(lab, seed=(int(seed), k))
        r1.append(properties(x[a], lab[a], shrinkage=shrinkage))
        r2.append(properties(x[b], lab[b], shrinkage=shrinkage))
        names.append(name)
    idx = pd.Index(names, name="behavior")
    t1, t2 = pd.DataFrame(r1, index=idx), pd.DataFrame(r2, index=idx)
    unknown = [key for key in keys if key not in t1.columns]
    if unknown:
        raise GeometryError(f"unknown properties {unknown}; valid: {list(t1.columns)}")
    return {key: spearman(t1[key], t2[key]) for key in keys}, t1, t2


def spearman_brown(rho: float, factor: float = 2.0) -> float:
    """The Spearman–Brown prediction fρ/(1 + (f − 1)ρ) of a ranking's reliability when the sample
    behind it grows f-fold (f = 2: from two half samples to the full one). A ρ ≤ 0 predicts no
    stability and gives 0.

    (Derived for Pearson reliabilities; for rank correlations it is an approximation.)
    """
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating)) or not -1.0 <= rho <= 1.0:
        raise GeometryError(f"rho must be a correlation in [-1, 1], got {rho!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float, np.floating)) or not factor > 0:
        raise GeometryError(f"factor must be a positive number, got {factor!r}")
    if rho <= 0:
        return 0.0
    return float(factor) * float(rho) / (1.0 + (float(factor) - 1.0) * float(rho))


def spearman_brown_factor(rho: float, target: float) -> float:
    """How many times larger a sample must be for a ranking of reliability ``rho`` to reach ``target``
    (the inverse of :func:`spearman_brown`): f = target(1 − ρ) / (ρ(1 − target)).
    """
    for name, v in (("rho", rho), ("target", target)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 < v < 1.0:
            raise GeometryError(f"{name} must be in (0, 1), got {v!r}")
    return float(target) * (1.0 - float(rho)) / (float(rho) * (1.0 - float(target)))


def pick_by_quantile(values: Mapping[str, float] | Any, quantiles: Sequence[float] = (0.0, 0.5, 1.0)) -> list[str]:
    """The names whose values sit at the given quantiles (lowest rank at 0, highest at 1).

    ``values`` is a mapping or a pandas Series from name to value. Ties are broken by name.
    """
    items = sorted(dict(values).items(), key=lambda kv: (kv[1], kv[0]))
    if not items:
        raise GeometryError("pick_by_quantile needs at least one value")
    out = []
    for q in quantiles:
        if not 0.0 <= q <= 1.0:
            raise GeometryError(f"quantiles must be in [0, 1], got {q!r}")
        out.append(items[int(round(q * (len(items) - 1)))][0])
    return out


# ---------------------------------------------------------------------------------------------------
# Priority levels and gaps
# ---------------------------------------------------------------------------------------------------

def _pair_levels(kii, kjj, kij, rtol: float):
    """(p_i, p_j, max(‖b_i‖, ‖b_j‖)) of pairs given ‖b_i‖², ‖b_j‖² and ⟨b_i, b_j⟩ (arrays that broadcast);
    NaN levels where ‖b̄‖ ≤ rtol · max(‖b_i‖, ‖b_j‖)."""
    bar = np.sqrt(np.clip((kii + kjj + 2 * kij) / 4, 0, None))
    big = np.sqrt(np.maximum(kii, kjj))
    bad = bar <= rtol * big
    with np.errstate(invalid="ignore", divide="ignore"):
        p_i = np.where(bad, np.nan, (kii + kij) / 2 / bar)
        p_j = np.where(bad, np.nan, (kjj + kij) / 2 / bar)
    return p_i, p_j, big


def priority_levels(b: Any, *, rtol: float = 1e-8) -> np.ndarray:
    """P[i, j] = p_i in the pair (i, j): ⟨b̄, b_i⟩/‖b̄‖ with b̄ = (b_i + b_j)/2, for all ordered pairs.

    ``b`` is the (k × d) matrix of b_i = μ_i⁺ − μ_i⁻. Where ‖b̄‖ ≤ ``rtol`` · max(‖b_i‖, ‖b_j‖)
    (b_i ≈ −b_j, or both zero) the level is undefined and P is NaN.
    """
    bb = as_float64(b, "b")
    k = bb @ bb.T
    diag = np.diag(k)
    return _pair_levels(diag[:, None], diag[None, :], k, rtol)[0]


def priority_gaps(b: Any, *, rtol: float = 1e-8) -> np.ndarray:
    """G[i, j] = (p_i − p_j)/max(‖b_i‖, ‖b_j‖) for every ordered pair, as in the official code.

    The official code flattens this matrix row by row (``G.ravel()``). G is antisymmetric, zero on the
    diagonal and has the sign of ‖b_i‖ − ‖b_j‖; it is NaN where the levels are undefined
    (:func:`priority_levels`).
    """
    bb = as_float64(b, "b")
    k = bb @ bb.T
    diag = np.diag(k)
    p_i, p_j, big = _pair_levels(diag[:, None], diag[None, :], k, rtol)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p_i - p_j) / big


def bootstrap_gaps(data: Mapping[str, tuple[Any, Any]], pairs: Sequence[tuple[str, str]], *, n_boot: int = 400,
                   seed: int = 0, rtol: float = 1e-8) -> dict[tuple[str, str], np.ndarray]:
    """Stratified-bootstrap replicates of the priority gap of each ordered pair in ``pairs``.

    ``data`` maps a behaviour to its ``(h, labels)``. Each behaviour named in ``pairs`` gets n_boot
    replicates of b = μ₊ − μ₋ (:func:`bootstrap`, stream ``(seed, k)`` for the k-th behaviour in sorted
    order), shared by every pair it belongs to; replicate r of G[i, j] uses replicate r of both.
    """
    names = sorted({n for pair in pairs for n in pair})
    missing = [n for n in names if n not in data]
    if missing:
        raise GeometryError(f"no embeddings for behaviour(s) {missing}")
    reps = {n: bootstrap(*data[n], n_boot=n_boot, seed=(int(seed), k), which=("b",))["b"]
            for k, n in enumerate(names)}
    out = {}
    for i, j in pairs:
        bi, bj = reps[i], reps[j]
        p_i, p_j, big = _pair_levels(np.einsum("rd,rd->r", bi, bi), np.einsum("rd,rd->r", bj, bj),
                                     np.einsum("rd,rd->r", bi, bj), rtol)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[(i, j)] = (p_i - p_j) / big
    return out


def priority_gap(b_i: Any, b_j: Any, *, rtol: float = 1e-8) -> float:
    """The priority gap of one ordered pair (i, j); raises where it is undefined (‖b̄‖ ≈ 0)."""
    bi, bj = as_float64(b_i, "b_i", ndim=1), as_float64(b_j, "b_j", ndim=1)
    if bi.shape != bj.shape:
        raise GeometryError(f"b_i and b_j must have the same shape, got {bi.shape} and {bj.shape}")
    g = priority_gaps(np.stack([bi, bj]), rtol=rtol)[0, 1]
    if not np.isfinite(g):
        raise GeometryError("the priority gap is undefined: b_i + b_j is (almost) zero, so b̄ has no direction")
    return float(g)


# ---------------------------------------------------------------------------------------------------
# Theorem 4.1's hypotheses
# ---------------------------------------------------------------------------------------------------

def theorem41_constants(c_v: Any, c_n: Any, *, d: int, beta: float, eta: float | None = None,
                        norm_weight: Any = None) -> dict[str, float]:
    """The constants of Theorem 4.1's hypotheses over a set of behaviours.

    ``c_v`` and ``c_n`` are the per-behaviour values of :func:`properties`; the hypotheses
    max±‖Σ±‖ ≤ c_v √d and max±(‖μ±‖ + (tr Σ±)^½) ≤ c_n √d hold for all behaviours at once with the
    maxima returned here. β′ = β √d (the theorem writes β = β′ d^(−1/2)). With ``eta`` also
    ``step`` = η β′² c_n², which our reading of the cut-off step-size condition compares with 4. With
    the final-norm weight g (``norm_weight``), ``c_n_bound`` = √2 max|g_k|, which bounds c_n for
    RMS-normalised features.
    """
    cv = as_float64(c_v, "c_v", ndim=1)
    cn = as_float64(c_n, "c_n", ndim=1)
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise GeometryError(f"d must be a positive int, got {d!r}")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > 0:
        raise GeometryError(f"beta must be a positive number, got {beta!r}")
    out = {"c_v": float(cv.max()), "c_n": float(cn.max()), "beta_prime": float(beta) * math.sqrt(int(d))}
    if eta is not None:
        if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not eta > 0:
            raise GeometryError(f"eta must be a positive number, got {eta!r}")
        out["step"] = float(eta) * out["beta_prime"] ** 2 * out["c_n"] ** 2
    if norm_weight is not None:
        g = as_float64(norm_weight, "norm_weight", ndim=1)
        out["c_n_bound"] = math.sqrt(2.0) * float(np.abs(g).max())
    return out


# ---------------------------------------------------------------------------------------------------
# Directional tails (the α-subexponential assumption)
# ---------------------------------------------------------------------------------------------------

def unit_directions(d: int, n: int, *, seed: Any = 0) -> np.ndarray:
    """``n`` independent uniformly random unit vectors in R^d (rows), from a seeded Gaussian."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 or n < 1:
        raise GeometryError(f"need d >= 1 and n >= 1, got d={d!r}, n={n!r}")
    g = _rng(seed).standard_normal((int(n), int(d)))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def directional_projections(h: Any, labels: Any, directions: Any, *, standardize: bool = True,
                            cross_fit_seed: Any = None) -> dict[str, np.ndarray]:
    """⟨v, h − μ_class⟩ for random unit directions ``directions`` (m × d) and along b = μ₊ − μ₋.

    Each statement is centred on its own class mean. Returns ``{"random": (m, n) array, "mean_difference":
    (n',) array}``, positives first; with ``standardize`` every direction's projections (per class) are
    divided by their standard deviation, so that tails of different behaviours and directions can be
    pooled. With ``cross_fit_seed`` the direction b is estimated on one class-stratified half
    (:func:`stratified_halves`) and applied to the other half, and vice versa, so that no statement is
    projected on a direction fitted to itself (with few statements per dimension, b̂ leans towards its
    own sample); n' is then the size of the two halves.
    """
    x = as_float64(h)
    pos = positive_mask(labels, x.shape[0])
    xp, xn = split_classes(x, pos)
    v = as_float64(directions, "directions")
    if v.shape[1] != xp.shape[1]:
        raise GeometryError(f"directions must have d = {xp.shape[1]} columns, got {v.shape[1]}")

    def unit_b(xx, pp):
        b = xx[pp].mean(0) - xx[~pp].mean(0)
        nb = np.linalg.norm(b)
        if nb == 0:
            raise GeometryError("μ₊ = μ₋: the mean-difference direction is undefined")
        return b / nb

    def project(xx, vv):
        r = vv @ (xx - xx.mean(0)).T
        if not standardize:
            return r
        sd = r.std(axis=1, ddof=1, keepdims=True)
        if (sd == 0).any():
            raise GeometryError("the statements of a class do not vary along a direction: cannot standardise")
        return r / sd

    rand = [project(c, v) for c in (xp, xn)]
    if cross_fit_seed is None:
        u = unit_b(x, pos)
        along = [project(c, u[None])[0] for c in (xp, xn)]
    else:
        ha, hb = stratified_halves(pos, seed=cross_fit_seed)
        parts = {True: [], False: []}
        for fit, use in ((ha, hb), (hb, ha)):
            u = unit_b(x[fit], pos[fit])
            for cls in (True, False):
                rows = use[pos[use] == cls]
                parts[cls].append(project(x[rows], u[None])[0])
        along = [np.concatenate(parts[True]), np.concatenate(parts[False])]
    return {"random": np.concatenate(rand, axis=1), "mean_difference": np.concatenate(along)}


def survival(x: Any, t: Any) -> np.ndarray:
    """The empirical P(|X| ≥ t) of a sample ``x`` at each threshold ``t``."""
    a = np.sort(np.abs(as_float64(x, "x", ndim=1)))
    tt = as_float64(np.atleast_1d(t), "t", ndim=1)
    return (a.shape[0] - np.searchsorted(a, tt, side="left")) / a.shape[0]


def subexponential_scale(x: Any) -> float:
    """The smallest α with empirical P(|X| ≥ t) ≤ 2 exp(−t/α) for every t (candidate (a) of paper.md §5.2).

    For a sample of n values this is max_k t_k / log(2/S(t_k)) over the sorted |x|, with S the
    empirical survival; beyond the largest value S = 0 and the bound holds for any α.
    """
    a = np.sort(np.abs(as_float64(x, "x", ndim=1)))
    n = a.shape[0]
    s = (n - np.arange(n)) / n  # S(a_k) = P(|X| >= a_k) for the k-th smallest (ties: conservative)
    return float(np.max(a / np.log(2.0 / s)))


def weibull_tail_exponent(x: Any, *, lower: float = 0.5, upper: float = 0.999) -> float:
    """The tail exponent k of −log P(|X| ≥ t) ≈ (t/K)^k, fitted between two quantiles of |X|.

    Least squares of log(−log S(t)) on log t over the sample points whose survival lies in
    [1 − upper, 1 − lower]. k ≈ 1 for exponential (Laplace) tails, k → 2 for Gaussian tails (slowly:
    compare with :func:`reference_tail_exponents` at the same sample size).
    """
    if not 0.0 <= lower < upper < 1.0:
        raise GeometryError(f"need 0 <= lower < upper < 1, got lower={lower!r}, upper={upper!r}")
    a = np.sort(np.abs(as_float64(x, "x", ndim=1)))
    n = a.shape[0]
    s = (n - np.arange(n)) / n
    keep = (s <= 1 - lower) & (s >= 1 - upper) & (a > 0)
    if keep.sum() < 10:
        raise GeometryError(f"too few points ({int(keep.sum())}) in the tail range to fit an exponent; "
                            "use a larger sample or a wider range")
    lx, ly = np.log(a[keep]), np.log(-np.log(s[keep]))
    slope = np.polyfit(lx, ly, 1)[0]
    return float(slope)


def _group_sizes(group_sizes: Any) -> np.ndarray:
    g = np.atleast_1d(np.asarray(group_sizes))
    if g.ndim != 1 or g.size == 0 or g.dtype.kind not in "iu" or (g < 3).any():
        raise GeometryError(f"group_sizes must be an int or a list of ints >= 3, got {group_sizes!r}")
    return g.astype(np.int64)


def reference_samples(group_sizes: Any, law: str, *, seed: Any = 0) -> np.ndarray:
    """A pooled sample from ``law`` ("gaussian" or "laplace") with the grouping of measured projections.

    For each group size g, g values are drawn, centred on their own mean and divided by their own
    standard deviation (ddof 1), exactly as :func:`directional_projections` standardises; the groups
    are pooled. Standardising small groups caps |x| at (g − 1)/√g, so a measured tail must be read
    against references made the same way.
    """
    g = _group_sizes(group_sizes)
    if law not in ("gaussian", "laplace"):
        raise GeometryError(f"law must be 'gaussian' or 'laplace', got {law!r}")
    rng = _rng(seed)
    out = []
    for size in np.unique(g):
        count = int((g == size).sum())
        x = rng.standard_normal((count, size)) if law == "gaussian" else rng.laplace(size=(count, size))
        x = x - x.mean(axis=1, keepdims=True)
        out.append((x / x.std(axis=1, ddof=1, keepdims=True)).ravel())
    return np.concatenate(out)


def reference_tail_exponents(group_sizes: Any, *, seed: Any = 0, n_rep: int = 20, lower: float = 0.5,
                             upper: float = 0.999) -> dict[str, tuple[float, float]]:
    """What :func:`weibull_tail_exponent` returns on Gaussian and Laplace data grouped like the measurement.

    ``group_sizes`` is one int (a single group) or the list of group sizes of the measured, pooled
    projections (see :func:`reference_samples`). Returns ``{"gaussian": (mean, sd), "laplace":
    (mean, sd)}`` over ``n_rep`` seeded repetitions: the yardstick for a measured exponent.
    """
    rng = _rng(seed)
    out = {}
    for law in ("gaussian", "laplace"):
        ks = [weibull_tail_exponent(reference_samples(group_sizes, law, seed=rng), lower=lower, upper=upper)
              for _ in range(int(n_rep))]
        out[law] = (float(np.mean(ks)), float(np.std(ks, ddof=1)))
    return out


@one_thread()
def pooled_projections(items: Iterable[tuple[str, Any, Any]], *, n_directions: int, seed: int = 0,
                       cross_fit: bool = True) -> dict[str, Any]:
    """Standardised directional projections of many behaviours, pooled (for tail plots and fits).

    Behaviour k uses ``n_directions`` random unit directions from stream ``(seed, k)`` and, with
    ``cross_fit``, the class-stratified halves of stream ``(seed, k)`` for the mean-difference direction
    (:func:`directional_projections`). Returns ``{"random": 1-D array, "mean_difference": 1-D array,
    "random_groups": list of group sizes, "mean_difference_groups": list of group sizes}``; a group is
    one (behaviour, class, direction[, half]) standardised on its own.
    """
    rand, along, g_rand, g_along = [], [], [], []
    for k, (name, h, labels) in enumerate(items):
        x = as_float64(h)
        pos = positive_mask(labels, x.shape[0])
        v = unit_directions(x.shape[1], n_directions, seed=(int(seed), k))
        try:
            p = directional_projections(x, pos, v, cross_fit_seed=(int(seed), k) if cross_fit else None)
        except GeometryError as exc:
            raise GeometryError(f"behaviour {name!r}: {exc}") from exc
        rand.append(p["random"].ravel())
        along.append(p["mean_difference"])
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        g_rand += [n_pos, n_neg] * n_directions
        if cross_fit:
            g_along += [n_pos // 2, n_neg // 2] * 2
        else:
            g_along += [n_pos, n_neg]
    return {"random": np.concatenate(rand), "mean_difference": np.concatenate(along),
            "random_groups": g_rand, "mean_difference_groups": g_along}


# ---------------------------------------------------------------------------------------------------
# 2-D maps
# ---------------------------------------------------------------------------------------------------

def map_2d(h: Any, *, method: str = "umap", random_state: int = 1234, n_neighbors: int = 15,
           min_dist: float = 0.1) -> np.ndarray:
    """A 2-D map of the embeddings ``h`` (n × d): UMAP with a fixed ``random_state``, or PCA.

    UMAP with a fixed seed runs single-threaded and is deterministic; its first import in a fresh
    environment takes ~20 s (numba). PCA (``method="pca"``) is the exact top-2 principal components with
    a fixed sign (the largest-magnitude loading of each component is positive).
    """
    x = as_float64(h)
    if method == "pca":
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        vt = vt[:2]
        signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
        return xc @ (vt * signs[:, None]).T
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*", category=UserWarning)
            reducer = umap.UMAP(n_components=2, random_state=int(random_state), n_neighbors=n_neighbors,
                                min_dist=min_dist)
            return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    raise GeometryError(f"method must be 'umap' or 'pca', got {method!r}")
