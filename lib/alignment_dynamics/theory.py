"""The theory of Part I: last-layer DPO as logistic regression, and our bounds in the spirit of
Theorems 4.1-4.3 of Im & Li (ICML 2024).

Everything here is float64 NumPy on synthetic data. The module has five parts:

1. **Tail families and samplers.** Class-conditional embedding distributions that are
   α-subexponential in our sense (every one-dimensional projection ``<e, h - mu>`` has
   ``P(|.| >= x) <= 2 exp(-x / alpha)``), with a known, minimal α and closed-form projected CDFs:
   Gaussian, Laplace (an exponential scale mixture of Gaussians, so every projection is exactly
   Laplace) and a heavier two-scale Laplace mixture. :func:`make_two_class` sets the
   distinguishability ``||mu_+ - mu_-||`` exactly.
2. **Closed-form dynamics.** :func:`logistic_gd`, the logistic-regression recursion that last-layer
   DPO reduces to (``W_t - W_0 = u v_t^T``), vectorised over independent repetitions.
3. **Bounds**, each a plain function of its inputs: the update-rate bounds (``update_rate``), the
   accuracy bounds (``accuracy``) and the priority statements (``priority``).
4. **Checks** of the reduction against the float64 full-softmax reference
   (``alignment_dynamics.dpo.reference``), called by ``dpo_last_layer`` and by the tests.
5. **Sweeps** over random instances, returning tables of measured quantities next to their bounds.

The statements and proofs are in the chapters; the symbols below follow them.

Used in: `book/dpo_last_layer.md`, `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import validate as _v

FAMILIES: tuple[str, ...] = ("gaussian", "laplace", "mixture")
LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------

def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _nonneg(name: str, value: float) -> float:
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return value


def _prob(name: str, value: float) -> float:
    value = float(value)
    if not (0 < value < 1):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return value


def _family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown tail family {family!r}; valid families: {list(FAMILIES)}")
    return family


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _single_threaded(fn):
    """Run ``fn`` with one BLAS thread (threadpoolctl, when installed) and one torch thread, restored after.

    The problems of Part I are small; on a shared 2-core machine, multi-threaded BLAS and torch were
    measured 20-60 times *slower* than one thread (thread oversubscription), and one thread also keeps
    reductions in a fixed order.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import contextlib
        import sys

        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with the book environment
            threadpool_limits = None
        torch = sys.modules.get("torch")
        old = torch.get_num_threads() if torch is not None else None
        ctx = threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext()
        try:
            if torch is not None:
                torch.set_num_threads(1)
            with ctx:
                return fn(*args, **kwargs)
        finally:
            if torch is not None and old is not None:
                torch.set_num_threads(old)

    return wrapper


def _sigmoid(x):
    from scipy.special import expit

    return expit(x)


# ---------------------------------------------------------------------------------------------------
# 1. Tail families and samplers
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def gaussian_tail_constant() -> float:
    """``a_G = sup_{z>0} z / (-ln Q(z))`` (Q the standard normal tail), about 0.5568.

    ``N(0, s^2)`` satisfies ``P(|Y| >= x) <= 2 exp(-x / alpha)`` exactly when ``alpha >= a_G s``.

    Used in: `book/update_rate.md`.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_ndtr

    res = minimize_scalar(lambda z: z / log_ndtr(-z), bounds=(0.05, 8.0), method="bounded",
                          options={"xatol": 1e-12})
    return float(-res.fun)


def _laplace_cdf(x, b):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0) / b), 1.0 - 0.5 * np.exp(-np.maximum(x, 0) / b))


@dataclass(frozen=True, eq=False)
class ClassConditional:
    """One class-conditional distribution ``h = mean + sqrt(V) * factor @ z``, ``z ~ N(0, I_d)``.

    ``V`` is a scalar per example with ``E V = 1`` (so the covariance is ``factor @ factor.T``):
    ``V = 1`` (gaussian), ``V ~ Exp(1)`` (laplace: every projection is exactly Laplace) or
    ``V = E K`` with ``E ~ Exp(1)`` and ``K`` taking a large value ``kappa^2`` times a small one with
    probability ``q`` (mixture: a heavier-tailed two-scale Laplace mixture).

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """

    mean: np.ndarray
    factor: np.ndarray
    family: str = "gaussian"
    q: float = 0.1
    kappa: float = 4.0

    def __post_init__(self):
        mean = np.asarray(self.mean, dtype=np.float64)
        factor = np.asarray(self.factor, dtype=np.float64)
        if mean.ndim != 1:
            raise ValueError(f"mean must be a vector, got shape {mean.shape}")
        if factor.shape != (mean.size, mean.size):
            raise ValueError(f"factor must be {mean.size}x{mean.size} to match the mean, got {factor.shape}")
        _family(self.family)
        _prob("q", self.q)
        if not self.kappa >= 1:
            raise ValueError(f"kappa must be >= 1, got {self.kappa!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "factor", factor)

    @property
    def d(self) -> int:
        return self.mean.size

    @functools.cached_property
    def cov(self) -> np.ndarray:
        return self.factor @ self.factor.T

    @functools.cached_property
    def cov_norm(self) -> float:
        """Spectral norm ``||Sigma||`` (the official code's "concentration")."""
        return float(np.linalg.norm(self.factor, 2) ** 2)

    @functools.cached_property
    def trace(self) -> float:
        return float(np.sum(self.factor ** 2))

    @property
    def v_second_moment(self) -> float:
        """``E V^2`` of the scale variable (1, 2, or ``2 k1^2 ((1 - q) + q kappa^4)``)."""
        if self.family == "gaussian":
            return 1.0
        scales, probs = self._laplace_components()
        return float(np.sum(probs * (2.0 * scales ** 2) ** 2) * 2.0)

    @functools.cached_property
    def norm_sq_var(self) -> float:
        """``Var ||h||^2 = 4 mu^T Sigma mu + (E V^2 - 1) Tr(Sigma)^2 + 2 E V^2 ||Sigma||_F^2`` (exact)."""
        ev2 = self.v_second_moment
        return float(4 * self.mean @ self.cov @ self.mean + (ev2 - 1) * self.trace ** 2
                     + 2 * ev2 * np.sum(self.cov ** 2))

    def _laplace_components(self) -> tuple[np.ndarray, np.ndarray]:
        """(scales, probabilities) of the Laplace components of ``sqrt(V) Z`` (laplace, mixture)."""
        if self.family == "laplace":
            return np.array([math.sqrt(0.5)]), np.array([1.0])
        k1 = 1.0 / ((1.0 - self.q) + self.q * self.kappa ** 2)
        b1 = math.sqrt(k1 / 2.0)
        return np.array([b1, self.kappa * b1]), np.array([1.0 - self.q, self.q])

    @property
    def tail_constant(self) -> float:
        """The minimal α of ``sqrt(V) Z`` (a standardised projection) in our definition."""
        if self.family == "gaussian":
            return gaussian_tail_constant()
        scales, _ = self._laplace_components()
        return float(scales.max())

    @property
    def alpha(self) -> float:
        """The minimal α with ``P(|<e, h - mu>| >= x) <= 2 exp(-x/alpha)`` for all unit e, x >= 0."""
        return self.tail_constant * math.sqrt(self.cov_norm)

    def std_cdf(self, x):
        """CDF of the standardised projection ``sqrt(V) Z`` (symmetric, variance 1)."""
        from scipy.special import ndtr

        x = np.asarray(x, dtype=np.float64)
        if self.family == "gaussian":
            return ndtr(x)
        scales, probs = self._laplace_components()
        return sum(p * _laplace_cdf(x, b) for b, p in zip(scales, probs))

    def projection_tail(self, x, scale=1.0):
        """Exact ``P(|<e, h - mu>| >= x)`` for a direction with projected std ``scale``."""
        x = np.asarray(x, dtype=np.float64) / scale
        return 2.0 * self.std_cdf(-np.abs(x))

    def log_projection_tail(self, x, scale=1.0):
        """``log P(|<e, h - mu>| >= x)`` for projected std ``scale``, computed without underflow."""
        from scipy.special import log_ndtr, logsumexp

        z = np.abs(np.asarray(x, dtype=np.float64)) / scale
        if self.family == "gaussian":
            return LN2 + log_ndtr(-z)
        scales, probs = self._laplace_components()
        return logsumexp(-z[..., None] / scales, b=probs, axis=-1)

    def sample(self, rng, size) -> np.ndarray:
        """``size`` (an int or a shape) examples, shape ``(*size, d)``."""
        rng = _rng(rng)
        size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        z = rng.standard_normal(size + (self.d,))
        x = z @ self.factor.T
        if self.family != "gaussian":
            v = rng.exponential(1.0, size)
            if self.family == "mixture":
                k1 = 1.0 / ((1.0 - self.q) + self.q * self.kappa ** 2)
                k = np.where(rng.random(size) < self.q, self.kappa ** 2 * k1, k1)
                v = v * k
            x *= np.sqrt(v)[..., None]
        return x + self.mean

    def error(self, theta, sign: int, tau=0.0):
        """Exact ``P(sign * theta^T h <= tau)`` for ``theta`` of shape ``(..., d)``."""
        theta = np.asarray(theta, dtype=np.float64)
        loc = sign * theta @ self.mean
        scale = np.linalg.norm(theta @ self.factor, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (tau - loc) / scale
        out = self.std_cdf(x)
        degenerate = scale == 0
        if np.any(degenerate):
            out = np.where(degenerate, (loc <= tau).astype(np.float64), out)
        return out


@dataclass(frozen=True, eq=False)
class TwoClass:
    """A preference data distribution: positive (Yes preferred, s = +1) and negative (s = -1) classes.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """

    plus: ClassConditional
    minus: ClassConditional

    def __post_init__(self):
        if self.plus.d != self.minus.d:
            raise ValueError(f"classes have different dimensions {self.plus.d} and {self.minus.d}")

    @property
    def d(self) -> int:
        return self.plus.d

    @property
    def b(self) -> np.ndarray:
        """``mu_+ - mu_-``."""
        return self.plus.mean - self.minus.mean

    @property
    def distinguishability(self) -> float:
        return float(np.linalg.norm(self.b))

    @property
    def alpha(self) -> float:
        return max(self.plus.alpha, self.minus.alpha)

    @property
    def c_v(self) -> float:
        """The smallest ``c_v`` with ``max_i ||Sigma_i|| <= c_v sqrt(d)``."""
        return max(self.plus.cov_norm, self.minus.cov_norm) / math.sqrt(self.d)

    @property
    def c_n(self) -> float:
        """The smallest ``c_n`` with ``max_i (||mu_i|| + Tr(Sigma_i)^(1/2)) <= c_n sqrt(d)``."""
        return max(np.linalg.norm(c.mean) + math.sqrt(c.trace) for c in (self.plus, self.minus)) / math.sqrt(self.d)

    def classes(self):
        return ((+1, self.plus), (-1, self.minus))

    def sample(self, rng, n_plus: int, n_minus: int, repeats: int | None = None):
        """``(H, s)``: ``n_plus`` positive then ``n_minus`` negative examples (labels fixed).

        With ``repeats`` R, ``H`` has shape ``(R, n, d)`` (independent training sets).
        """
        rng = _rng(rng)
        lead = () if repeats is None else (int(repeats),)
        hp = self.plus.sample(rng, lead + (int(n_plus),))
        hm = self.minus.sample(rng, lead + (int(n_minus),))
        h = np.concatenate([hp, hm], axis=-2)
        s = np.concatenate([np.ones(int(n_plus)), -np.ones(int(n_minus))])
        return h, s


def random_orthogonal(rng, d: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix).

    Used in: `book/update_rate.md` (through :func:`make_two_class`).
    """
    rng = _rng(rng)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_unit(rng, d: int) -> np.ndarray:
    """A uniformly random unit vector in ``R^d``.

    Used in: `book/update_rate.md` (through :func:`make_two_class`).
    """
    rng = _rng(rng)
    x = rng.standard_normal(d)
    return x / np.linalg.norm(x)


def make_two_class(rng, d: int, *, delta: float, center_norm: float = 0.5, trace_per_dim: float = 1.0,
                   decay: float = 0.5, family: str = "gaussian", q: float = 0.1, kappa: float = 4.0,
                   b_dir: np.ndarray | None = None, center_dir: np.ndarray | None = None) -> TwoClass:
    """A :class:`TwoClass` with exactly ``||mu_+ - mu_-|| = delta sqrt(d)``.

    ``mu_+- = c +- b/2`` with ``||c|| = center_norm sqrt(d)`` (the common mean); each class has its own
    random rotation of the spectrum ``lambda_i ~ i^(-decay)`` scaled to ``Tr(Sigma) = trace_per_dim d``.
    ``b_dir`` and ``center_dir`` (unit vectors) fix the directions; random otherwise.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    rng = _rng(rng)
    d = int(d)
    if d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    _nonneg("delta", delta)
    _nonneg("center_norm", center_norm)
    _positive("trace_per_dim", trace_per_dim)
    _nonneg("decay", decay)
    _family(family)
    e_b = random_unit(rng, d) if b_dir is None else np.asarray(b_dir, float) / np.linalg.norm(b_dir)
    e_c = random_unit(rng, d) if center_dir is None else np.asarray(center_dir, float) / np.linalg.norm(center_dir)
    b = delta * math.sqrt(d) * e_b
    c = center_norm * math.sqrt(d) * e_c
    lam = np.arange(1, d + 1, dtype=np.float64) ** (-float(decay))
    lam *= trace_per_dim * d / lam.sum()
    classes = []
    for sign in (+1, -1):
        factor = random_orthogonal(rng, d) * np.sqrt(lam)
        classes.append(ClassConditional(c + sign * b / 2, factor, family, q, kappa))
    return TwoClass(*classes)


def check_tail_constants(rng, *, d: int = 8, n_dirs: int = 16) -> "Any":
    """For each tail family: along random directions and the worst one, the exact two-sided projected
    tail against ``2 exp(-x / alpha)`` for ``0 <= x <= 2000 alpha``. Returns a DataFrame with, per
    family, alpha, the largest log-excess of the tail over the bound at alpha (<= 0: the bound holds)
    and at 0.99 alpha (> 0: alpha is minimal).

    Used in: `book/update_rate.md`.
    """
    import pandas as pd

    rng = _rng(rng)
    rows = []
    z = np.concatenate([np.linspace(0, 20, 20001), np.geomspace(20, 2000, 4000)])  # in units of alpha
    for fam in FAMILIES:
        A = random_orthogonal(rng, d) * np.sqrt(np.linspace(0.2, 2.0, d))
        cls = ClassConditional(np.zeros(d), A, fam)
        x = z * cls.alpha
        dirs = [random_unit(rng, d) for _ in range(n_dirs)] + [np.linalg.eigh(cls.cov)[1][:, -1]]
        excess, excess_small = -np.inf, -np.inf
        for e in dirs:
            lt = cls.log_projection_tail(x, scale=float(np.linalg.norm(A.T @ e)))
            excess = max(excess, float(np.max(lt - LN2 + x / cls.alpha)))
            excess_small = max(excess_small, float(np.max(lt - LN2 + x / (0.99 * cls.alpha))))
        rows.append({"family": fam, "alpha / sqrt(||Sigma||)": cls.tail_constant, "log-excess at alpha": excess,
                     "log-excess at 0.99 alpha": excess_small})
    return pd.DataFrame(rows)


def check_bernstein(rng, *, n: int = 50, trials: int = 20000, levels: Sequence[float] = (0.5, 0.1, 0.01)) -> "Any":
    """Monte Carlo check of our Bernstein lemma for means of n independent alpha-subexponential
    variables: the empirical ``P(|mean| >= y_eps)`` (with its standard error) against ``eps``, where
    ``y_eps`` is :func:`bernstein_radius`. One row per (family, eps).

    Used in: `book/update_rate.md`.
    """
    import pandas as pd

    rng = _rng(rng)
    rows = []
    for fam in FAMILIES:
        cls = ClassConditional(np.zeros(1), np.ones((1, 1)), fam)
        means = cls.sample(rng, (trials, n))[..., 0].mean(-1)
        for eps in levels:
            y = bernstein_radius(eps, n, cls.alpha)
            p = float(np.mean(np.abs(means) >= y))
            rows.append({"family": fam, "eps": eps, "radius": y, "empirical": p,
                         "se": math.sqrt(max(p * (1 - p), 1.0 / trials) / trials), "std of mean": float(means.std())})
    return pd.DataFrame(rows)


def bernstein_looseness(n: int, eps: float) -> float:
    """For means of n standard Gaussians (alpha = ``gaussian_tail_constant()``): our Bernstein radius
    divided by the exact radius ``z_{1 - eps/2} / sqrt(n)``. At least 1 exactly when the lemma holds for
    this law; its size is how loose the lemma's constants are.

    Used in: `book/update_rate.md`.
    """
    from scipy.special import ndtri

    _prob("eps", eps)
    exact = float(ndtri(1.0 - eps / 2.0)) / math.sqrt(n)
    return bernstein_radius(eps, n, gaussian_tail_constant()) / exact


def goal_met(row: dict[str, Any], *, share: float = 0.5, tightness: float = 0.3) -> bool:
    """The book's goal for a headline bound: non-vacuous on at least ``share`` of the instances, with median
    tightness at least ``tightness`` (measured / bound for an upper bound, bound / measured for a lower).

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    return bool(row["nonvacuous_share"] >= share and row["median_tightness"] >= tightness)


def bound_verdict(holds: bool, rows: Sequence[dict[str, Any]]) -> str:
    """The verdict of a claim carried by bounds: "differs" if a statement failed, "agrees" if it held and
    every headline bound meets :func:`goal_met`, "partly agrees" if it held but some bound does not bind.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    if not holds:
        return "differs"
    return "agrees" if all(goal_met(r) for r in rows) else "partly agrees"


def bound_sentence(row: dict[str, Any]) -> str:
    """One generated sentence for a headline bound: its share of non-vacuous instances, its median
    tightness, and whether it meets :func:`goal_met`.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    ratio = "measured / bound" if row["kind"] == "upper" else "bound / measured"
    return (f"{row['bound']} ({row['kind']}): non-vacuous on {row['nonvacuous_share']:.0%} of "
            f"{row['instances']} instances, median tightness ({ratio}) {row['median_tightness']:.2f}; "
            + ("meets" if goal_met(row) else "misses") + " the goal (>= 50 %, >= 0.30)")


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y``.

    Used in: `book/update_rate.md`.
    """
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)).statistic)


def rank_agrees(rho: float, threshold: float = 0.5) -> bool:
    """The book's rule for "a quantity ranks the instances": a rank correlation above ``threshold``.

    Used in: `book/update_rate.md`.
    """
    return bool(rho > threshold)


def strictly_increasing(values) -> bool:
    """Whether ``values`` increase strictly (the book's rule for "ordered by distinguishability").

    Used in: `book/accuracy.md`, `book/priority.md`.
    """
    x = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.diff(x) > 0))


def always_lower(x, y) -> bool:
    """Whether ``x < y`` at every step (the book's rule for "learned first").

    Used in: `book/priority.md`.
    """
    return bool(np.all(np.asarray(x, dtype=np.float64) < np.asarray(y, dtype=np.float64)))


def order_verdict(measured_order: bool, bound_order: bool) -> str:
    """"agrees" when both the measurements and the guarantees are ordered, "partly agrees" when only the
    measurements are, "differs" otherwise.

    Used in: `book/accuracy.md`.
    """
    return "agrees" if measured_order and bound_order else "partly agrees" if measured_order else "differs"


# ---------------------------------------------------------------------------------------------------
# 2. Closed-form dynamics: last-layer DPO is logistic regression
# ---------------------------------------------------------------------------------------------------

def answer_direction(V: int, yes: int, no: int) -> np.ndarray:
    """``u = e_yes - e_no`` in ``R^V``.

    Used in: `book/dpo_last_layer.md`.
    """
    if not (0 <= yes < V and 0 <= no < V) or yes == no:
        raise ValueError(f"need two distinct token ids in [0, {V}), got yes={yes}, no={no}")
    u = np.zeros(V)
    u[yes], u[no] = 1.0, -1.0
    return u


def logistic_gradient(v, H, s, beta: float):
    """``g(v) = mean_k[s_k sigma(-2 beta s_k v^T h_k) h_k]``; one GD step is ``v + lr beta g(v)``.

    ``H`` has shape ``(..., n, d)``, ``v`` ``(..., d)``, ``s`` ``(n,)`` or ``(..., n)``.

    Used in: `book/dpo_last_layer.md`.
    """
    z = np.einsum("...nd,...d->...n", H, v)
    w = s * _sigmoid(-2.0 * beta * s * z)
    return np.einsum("...n,...nd->...d", w, H) / H.shape[-2]


def logistic_gd(H, s, *, beta: float, lr: float, steps: int, v0=None, momentum: float = 0.0) -> np.ndarray:
    """The closed-form last-layer DPO dynamics: full-batch GD on logistic regression.

    ``v_{t+1} = v_t + lr * beta * g(v_t)``, ``v_0 = 0`` (the reference is the initial model), and
    ``W_t = W_0 + u v_t^T``. With ``momentum`` mu, PyTorch's heavy ball
    (``buf = mu buf + grad``, ``v -= lr buf``, with ``grad = -beta g``). Returns ``v`` of shape
    ``(..., steps + 1, d)``.

    Used in: `book/dpo_last_layer.md`, `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    H = _v.finite_array("H", H, min_ndim=2)
    s = _v.finite_array("s", s)
    beta = _v.positive("beta", beta)
    lr = _v.positive("lr", lr)
    steps = _v.count("steps", steps, lo=0)
    if v0 is not None:
        v0 = _v.finite_array("v0", v0)
    if s.shape[-1] != H.shape[-2]:
        raise ValueError(f"s has {s.shape[-1]} labels but H has {H.shape[-2]} examples")
    if not np.all(np.abs(s) == 1):
        raise ValueError("labels s must be +1 or -1")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    v = np.zeros(H.shape[:-2] + (H.shape[-1],)) if v0 is None else np.array(v0, dtype=np.float64)
    out = np.empty(H.shape[:-2] + (int(steps) + 1, H.shape[-1]))
    out[..., 0, :] = v
    buf = None
    for t in range(int(steps)):
        grad = -beta * logistic_gradient(v, H, s, beta)
        buf = grad if (buf is None or momentum == 0) else momentum * buf + grad
        v = v - lr * buf
        out[..., t + 1, :] = v
    return out


def head_change(v) -> np.ndarray:
    """``||W_t - W_0||_F = ||u|| ||v_t|| = sqrt(2) ||v_t||`` (also the operator norm).

    Used in: `book/dpo_last_layer.md`, `book/update_rate.md`.
    """
    return math.sqrt(2.0) * np.linalg.norm(np.asarray(v), axis=-1)


def dpo_loss_from_v(v, H, s, beta: float):
    """The DPO loss ``mean_k -log sigma(2 beta s_k v^T h_k)`` of the reduced model (any leading shape).

    Used in: `book/dpo_last_layer.md`, `book/priority.md`.
    """
    from scipy.special import log_expit

    beta = _v.positive("beta", beta)
    H = _v.finite_array("H", H, min_ndim=2)
    v = _v.finite_array("v", v)
    s = _v.labels("s", s, H.shape[-2])
    z = np.einsum("...nd,...d->...n", H, v) if np.ndim(v) == np.ndim(H) - 1 else np.einsum("...nd,...td->...tn", H, v)
    return -np.mean(log_expit(2.0 * beta * s * z), axis=-1)


def first_step_v(H, s, *, beta: float, lr: float) -> np.ndarray:
    """``v_1 = (lr beta / 2) mean_k s_k h_k = (lr beta / 2)(p mu_+ - (1 - p) mu_-)`` (batch statistics).

    Used in: `book/dpo_last_layer.md`, `book/update_rate.md`.
    """
    beta, lr = _v.positive("beta", beta), _v.positive("lr", lr)
    H = _v.finite_array("H", H, min_ndim=2)
    s = _v.labels("s", s, H.shape[-2])
    return 0.5 * lr * beta * np.einsum("...n,...nd->...d", np.broadcast_to(s, H.shape[:-1]), H) / H.shape[-2]


def first_step_norm_balanced(lr: float, beta: float, distinguishability) -> np.ndarray:
    """``||W_1 - W_0|| = (sqrt(2) lr beta / 4) ||mu_+ - mu_-||`` for a class-balanced batch.

    Used in: `book/dpo_last_layer.md`, `book/update_rate.md`.
    """
    return math.sqrt(2.0) * lr * beta / 4.0 * np.asarray(distinguishability, dtype=np.float64)


def decision_direction(a, v) -> np.ndarray:
    """``theta_t = W_0^T u + 2 v_t``: the policy prefers Yes on h exactly when ``theta_t^T h > 0``.

    Used in: `book/dpo_last_layer.md`, `book/accuracy.md`.
    """
    return np.asarray(a, dtype=np.float64) + 2.0 * np.asarray(v, dtype=np.float64)


def linear_accuracy(theta, H, s) -> np.ndarray:
    """Fraction of examples with ``s theta^T h > 0`` (ties count as wrong), for ``theta (..., [T,] d)``.

    Used in: `book/dpo_last_layer.md`, `book/accuracy.md`.
    """
    theta = np.asarray(theta)
    if theta.ndim == np.ndim(H) - 1:
        z = np.einsum("...nd,...d->...n", H, theta)
    else:
        z = np.einsum("...nd,...td->...tn", H, theta)
    return np.mean(s * z > 0, axis=-1)


def _class_mean(H: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the rows ``mask`` selects (leading axes kept); NaN, without a warning, for an empty class."""
    if not mask.any():
        return np.full(H.shape[:-2] + H.shape[-1:], np.nan)
    return H[..., mask, :].mean(-2)


def sample_statistics(H, s) -> dict[str, np.ndarray]:
    """The empirical quantities the bounds use, per training set (leading axes kept).

    ``m_hat = mean s h``, ``M1 = mean ||h||``, ``M2 = mean ||h||^2``, ``G_norm = ||mean h h^T||``,
    ``max_norm = max ||h||``, the class means (NaN for an empty class) and counts.

    Used in: `book/update_rate.md`, `book/accuracy.md`.
    """
    H = _v.finite_array("H", H, min_ndim=2)
    s = _v.labels("s", s, H.shape[-2])
    n = H.shape[-2]
    norms = np.linalg.norm(H, axis=-1)
    plus = s > 0
    G = np.matmul(np.swapaxes(H, -1, -2), H) / n
    return {
        "m_hat": np.einsum("...n,...nd->...d", np.broadcast_to(s, H.shape[:-1]), H) / n,
        "M1": norms.mean(-1),
        "M2": (norms ** 2).mean(-1),
        "G_norm": np.linalg.eigvalsh(G)[..., -1],
        "max_norm": norms.max(-1),
        "mu_plus": _class_mean(H, plus),
        "mu_minus": _class_mean(H, ~plus),
        "n_plus": int(plus.sum()),
        "n_minus": int((~plus).sum()),
    }


# ---------------------------------------------------------------------------------------------------
# 3a. Update-rate bounds (book/update_rate.md)
# ---------------------------------------------------------------------------------------------------

def phi(kappa, t):
    """``phi_kappa(t) = ((1 + kappa)^t - 1 - kappa t) / kappa`` (0 at kappa = 0; about kappa t^2 / 2).

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if np.any(kappa < 0):
        raise ValueError("kappa must be non-negative")
    kt = kappa * t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exact = (np.expm1(t * np.log1p(kappa)) - kt) / kappa
    series = kt * (t - 1) / 2 + kappa * kt * (t - 1) * (t - 2) / 6
    return np.where(kt < 1e-6, series, exact)


def kappa_of(lr: float, beta: float, G_norm) -> np.ndarray:
    """``kappa = lr beta^2 ||G_hat|| / 2``, the curvature factor of one step (``G_hat = mean h h^T``).

    Used in: `book/update_rate.md`.
    """
    lr, beta = _v.positive("lr", lr), _v.positive("beta", beta)
    G_norm = _v.finite_array("G_norm", G_norm)
    if np.any(G_norm < 0):
        raise _v.InputError("G_norm (the largest eigenvalue of mean h h^T) must be >= 0")
    return lr * beta ** 2 * G_norm / 2.0


def remainder_bound(t, *, lr: float, beta: float, mhat_norm, G_norm, M1=None):
    """``rho_t``: a bound on ``||v_t - (lr beta t / 2) m_hat||`` for full-batch GD.

    ``rho_t = (lr beta ||m_hat|| / 2) phi_kappa(t)``, and, when ``M1 = mean ||h||`` is given, the minimum
    with ``kappa lr beta M1 t (t - 1) / 2``.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    kappa = kappa_of(lr, beta, G_norm)
    t = np.asarray(t, dtype=np.float64)
    rho = 0.5 * lr * beta * np.asarray(mhat_norm) * phi(kappa, t)
    if M1 is not None:
        rho = np.minimum(rho, kappa * lr * beta * np.asarray(M1) * t * (t - 1) / 2.0)
    return rho


def linear_upper_bound(t, *, lr: float, beta: float, M1):
    """``||W_t - W_0||_F <= sqrt(2) lr beta M1 t`` (``M1`` the mean embedding norm).

    For SGD, pass ``M1`` as the largest batch-mean norm (or the largest norm).

    Used in: `book/update_rate.md`.
    """
    return math.sqrt(2.0) * lr * beta * np.asarray(M1) * np.asarray(t, dtype=np.float64)


def first_order_band(t, *, lr: float, beta: float, mhat_norm, G_norm, M1):
    """``(lower, first_order, upper)`` for ``||W_t - W_0||_F``: ``sqrt(2)|lr beta t ||m_hat||/2 +- rho_t|``,
    the upper side also capped by :func:`linear_upper_bound`.

    Used in: `book/update_rate.md`.
    """
    t = np.asarray(t, dtype=np.float64)
    main = math.sqrt(2.0) * lr * beta * t * np.asarray(mhat_norm) / 2.0
    rho = math.sqrt(2.0) * remainder_bound(t, lr=lr, beta=beta, mhat_norm=mhat_norm, G_norm=G_norm, M1=M1)
    upper = np.minimum(main + rho, linear_upper_bound(t, lr=lr, beta=beta, M1=M1))
    return np.maximum(main - rho, 0.0), main, upper


def bernstein_radius(eps: float, n: int, alpha: float):
    """``y`` with ``P(|mean of n independent alpha-subexponential| >= y) <= eps``:
    ``4 alpha max(sqrt(L/n), L/n)``, ``L = ln(2/eps)`` (our Lemma on sums).

    Used in: `book/update_rate.md`, `book/accuracy.md`.
    """
    _prob("eps", eps)
    n = _v.count("n", n, lo=1)
    alpha = _v.positive("alpha", alpha)
    L = math.log(2.0 / eps)
    return 4.0 * alpha * max(math.sqrt(L / n), L / n)


def scaled_upper_expected(t, *, lr: float, beta_prime: float, c_n: float):
    """``E ||W_t - W_0||_F <= sqrt(2) lr beta' c_n t`` under (H2) and ``beta = beta' / sqrt(d)``.

    Used in: `book/update_rate.md`.
    """
    return math.sqrt(2.0) * lr * beta_prime * c_n * np.asarray(t, dtype=np.float64)


def scaled_bounds(t, *, lr: float, beta_prime: float, delta: float, c_v: float, c_n: float, n: int,
                  d: int, alpha: float | None = None, eps1: float = 0.05, eps2: float = 0.05,
                  kappa=None):
    """The high-probability two-sided bounds of our update-rate theorem, balanced classes.

    With probability at least ``1 - eps1 - eps2``, for every t,
    ``lower(t) <= ||W_t - W_0||_F <= upper(t)`` where
    ``lower = (sqrt(2)/4) lr beta' [delta - omega]_+ [t - phi_kbar(t)]_+``,
    ``upper = sqrt(2) lr beta' c_n t / sqrt(eps2)``, ``kbar = lr beta'^2 c_n^2 / (2 eps2)``,
    ``omega = min(2 sqrt(c_v / (gamma d eps1)), 8 alpha max(sqrt(L/n), L/n) / sqrt(d))``,
    ``gamma = n / sqrt(d)``, ``L = ln(2 / eps1)``. Returns ``(lower, upper, omega, kbar)``.

    With ``kappa`` given (the realised ``lr beta^2 ||G_hat|| / 2``, known before training), ``lower`` uses
    it instead of ``kbar`` and then holds with probability at least ``1 - eps1``.

    Used in: `book/update_rate.md`.
    """
    _prob("eps1", eps1)
    _prob("eps2", eps2)
    gamma = n / math.sqrt(d)
    omega = 2.0 * math.sqrt(c_v / (gamma * d * eps1))
    if alpha is not None:
        omega = min(omega, 2.0 * bernstein_radius(eps1, n, alpha) / math.sqrt(d))
    kbar = lr * beta_prime ** 2 * c_n ** 2 / (2.0 * eps2)
    t = np.asarray(t, dtype=np.float64)
    k = kbar if kappa is None else np.asarray(kappa, dtype=np.float64)
    lower = math.sqrt(2.0) / 4.0 * lr * beta_prime * max(delta - omega, 0.0) * np.maximum(t - phi(k, t), 0.0)
    upper = math.sqrt(2.0) * lr * beta_prime * c_n * t / math.sqrt(eps2)
    return lower, upper, omega, kbar


def energy_upper_bound(loss0, loss_t, t, *, lr: float, kappa):
    """``sqrt(lr t (L_0 - L_t) / (1 - kappa / 2))``: our energy bound on ``||W_t - W_0||_F`` for full-batch
    GD with ``kappa = lr beta^2 ||G_hat|| / 2 < 2`` (``inf`` where ``kappa >= 2``). It ties the loss drop
    (the paper's Figure 3) to the head change (Figure 4). Broadcasts over its inputs.

    Used in: `book/update_rate.md`.
    """
    t = np.asarray(t, dtype=np.float64)
    kappa = np.asarray(kappa, dtype=np.float64)
    drop = np.maximum(np.asarray(loss0, dtype=np.float64) - np.asarray(loss_t, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.sqrt(lr * t * drop / (1.0 - kappa / 2.0))
    return np.where(kappa < 2.0, val, np.inf)


def convexity_lower_bound(loss0, loss_t, *, beta: float, mhat_norm):
    """``sqrt(2) (L_0 - L_t) / (beta ||m_hat||)``: our convexity bound from below on ``||W_t - W_0||_F``
    (any training that starts at the reference; ``m_hat = mean s h``).

    Used in: `book/update_rate.md`.
    """
    drop = np.asarray(loss0, dtype=np.float64) - np.asarray(loss_t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(math.sqrt(2.0) * drop / (beta * np.asarray(mhat_norm, dtype=np.float64)), 0.0)


def smoothness_step_limit(beta: float, G_norm: float) -> float:
    """The largest step with guaranteed descent, ``lr < 4 / (beta^2 ||G_hat||)`` (``L`` is
    ``beta^2 ||G_hat|| / 2``-smooth in W).

    Used in: `book/update_rate.md`.
    """
    return 4.0 / (beta ** 2 * G_norm)


def propagated_window(kappa, t):
    """``ell_kappa(t) = max{[t - phi_kappa(t)]_+, max_{1 <= t' <= t} (1 - kappa/2) [t' - phi_kappa(t')]_+^2 / t'}``:
    the effective number of first-order steps in our a-priori lower bound. The first term is the
    first-order window; the second carries it past ``kappa t ~ 1`` through the descent lemma and
    convexity (only for ``kappa < 2``; it never falls as t grows). ``t`` is the step grid ``0, 1, ..., T``
    on the last axis; ``kappa`` broadcasts against ``t[..., None]`` minus the last axis.

    Used in: `book/update_rate.md`.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    win = np.maximum(t - phi(kappa, t), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prop = np.where(t > 0, (1.0 - kappa / 2.0) * win ** 2 / np.where(t > 0, t, 1.0), 0.0)
    prop = np.where(kappa < 2.0, np.maximum.accumulate(np.maximum(prop, 0.0), axis=-1), 0.0)
    return np.maximum(win, prop)


def scaling_lower_bound(t, *, lr: float, beta_prime: float, delta_hat, kappa):
    """Item 3 of our update-rate theorem: ``||W_t - W_0||_F >= (sqrt(2)/4) lr beta' delta_hat ell_kappa(t)``
    for balanced full-batch GD, with ``delta_hat = ||mu_hat_+ - mu_hat_-|| / sqrt(d)`` the sample's
    normalised distinguishability and ``kappa`` the realised curvature factor (both known before
    training); :func:`propagated_window` gives ``ell``. Deterministic.

    Used in: `book/update_rate.md`.
    """
    return (math.sqrt(2.0) / 4.0 * lr * beta_prime * np.asarray(delta_hat, dtype=np.float64)
            * propagated_window(kappa, t))


def _projected_noise(cls: "ClassConditional", P: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """``(tr S, ||S||_F^2, Var ||P (h - mu)||^2, S)`` with ``S = P Sigma P`` (exact for our scale mixtures)."""
    S = P @ cls.cov @ P
    ev2 = cls.v_second_moment
    tr, fr = float(np.trace(S)), float(np.sum(S ** 2))
    return tr, fr, (ev2 - 1.0) * tr ** 2 + 2.0 * ev2 * fr, S


def population_distinguishability_bound(model: "TwoClass", n_plus: int, n_minus: int, eps: float) -> dict[str, float]:
    """Item 4 of our update-rate theorem: a lower bound ``delta_eps`` on the sample's normalised
    distinguishability ``||mu_hat_+ - mu_hat_-|| / sqrt(d)`` that holds with probability at least
    ``1 - eps``, from the distribution alone.

    ``delta_eps^2 d = [||b|| - x_1]_+^2 + [tau_perp - x_3]_+`` where, with ``e = b / ||b||`` and
    ``P = I - e e^T``: ``x_1 = sigma_e sqrt(2/eps - 1)`` (Cantelli at ``eps/2``),
    ``sigma_e^2 = e^T Sigma_+ e / n_+ + e^T Sigma_- e / n_-``; ``tau_perp = sum_i tr(P Sigma_i P) / n_i``
    (the sampling noise orthogonal to b, which *adds* to the norm); ``x_3 = s_perp sqrt(2/eps - 1)`` with
    ``s_perp^2 = sum_i [nu_i + 2 (n_i - 1) ||P Sigma_i P||_F^2] / n_i^3 + 4 tr(P Sigma_+ P Sigma_- P) / (n_+ n_-)``
    (the exact variance of ``||P (Z_+ - Z_-)||^2``), ``nu_i = Var ||P (h - mu_i)||^2``. Returns the parts.

    Used in: `book/update_rate.md`.
    """
    _prob("eps", eps)
    d = model.d
    b = model.b
    nb = float(np.linalg.norm(b))
    e = b / nb if nb > 0 else np.eye(d)[0]
    P = np.eye(d) - np.outer(e, e)
    n = {+1: int(n_plus), -1: int(n_minus)}
    k = math.sqrt(2.0 / eps - 1.0)
    sig_e2 = sum(float(e @ c.cov @ e) / n[j] for j, c in model.classes())
    parts = {j: _projected_noise(c, P) for j, c in model.classes()}
    tau = sum(parts[j][0] / n[j] for j in n)
    s2 = sum((parts[j][2] + 2.0 * (n[j] - 1) * parts[j][1]) / n[j] ** 3 for j in n)
    s2 += 4.0 * float(np.sum(parts[+1][3] * parts[-1][3])) / (n[+1] * n[-1])
    x1, x3 = k * math.sqrt(sig_e2), k * math.sqrt(s2)
    d2 = max(nb - x1, 0.0) ** 2 + max(tau - x3, 0.0)
    return {"delta_eps": math.sqrt(d2 / d), "x1": x1, "tau_perp": tau, "x3": x3, "sigma_e": math.sqrt(sig_e2),
            "s_perp": math.sqrt(s2), "along_b_vacuous": float(nb <= x1), "noise_vacuous": float(tau <= x3)}


def logistic_sgd(H, s, *, beta: float, lr: float, steps: int, batch: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch SGD on the logistic recursion: each step draws ``batch`` distinct examples uniformly (a
    fresh draw per step and per training set, independent of the data, as the official code does) and
    sets ``v <- v + lr beta mean_batch[s sigma(-2 beta s v^T h) h]``. ``H (R, n, d)``.

    Returns ``(v (R, steps + 1, d), var (R, steps))`` where ``var[:, t]`` is the conditional variance
    ``E[||g_B - g||^2 | v_t] = (n - B) / ((n - 1) B) * (mean_k ||s_k sigma_k h_k||^2 - ||g(v_t)||^2)``
    of the batch gradient at the SGD iterate (exact, for sampling without replacement).

    Used in: `book/update_rate.md`.
    """
    from scipy.special import expit

    H = _v.finite_array("H", H, min_ndim=3)
    rng = _rng(rng)
    R, n, d = H.shape
    B = _v.count("batch", batch, lo=1)
    if B > n:
        raise _v.InputError(f"batch {B} exceeds the {n} training examples")
    s = np.asarray(s, dtype=np.float64)
    hn2 = np.sum(H ** 2, -1)  # (R, n)
    v = np.zeros((R, d))
    out = np.empty((R, int(steps) + 1, d))
    var = np.empty((R, int(steps)))
    out[:, 0] = v
    fpc = (n - B) / ((n - 1) * B) if n > 1 else 0.0
    rows = np.arange(R)[:, None]
    for t in range(int(steps)):
        w = s * expit(-2.0 * beta * s * np.einsum("rnd,rd->rn", H, v))  # (R, n): s_k sigma_k
        g = np.einsum("rn,rnd->rd", w, H) / n
        var[:, t] = fpc * (np.mean(w ** 2 * hn2, -1) - np.sum(g ** 2, -1))
        idx = np.argsort(rng.random((R, n)), axis=1)[:, :B]
        gb = np.einsum("rn,rnd->rd", w[rows, idx], H[rows, idx]) / B
        v = v + lr * beta * gb
        out[:, t + 1] = v
    return out, var


def sgd_fluctuation_bound(var, *, lr: float, beta: float):
    """Our SGD statement: ``E ||W^SGD_t - W^GD_t||_F^2 <= 2 lr^2 beta^2 sum_{t' < t} E V_t'`` when
    ``kappa <= 2``, with ``V_t'`` the conditional batch-gradient variance at the SGD iterate
    (:func:`logistic_sgd`). ``var (..., T)``; returns the bound on the RMS distance, ``(..., T + 1)``
    (0 at t = 0). Averaging ``var`` over training sets first gives the bound on the mean square.

    Used in: `book/update_rate.md`.
    """
    var = np.asarray(var, dtype=np.float64)
    cum = np.concatenate([np.zeros(var.shape[:-1] + (1,)), np.cumsum(var, -1)], -1)
    return math.sqrt(2.0) * lr * beta * np.sqrt(cum)


def sgd_rate_bound(t, *, lr: float, beta: float, M2, n: int, batch: int):
    """The a-priori corollary: ``E ||W^SGD_t - W^GD_t||_F^2 <= 2 lr^2 beta^2 M2 (n - B) / ((n - 1) B) t``
    (``M2 = mean ||h||^2``), i.e. an RMS fluctuation of order ``lr beta sqrt(M2 t / B)``.

    Used in: `book/update_rate.md`.
    """
    fpc = (n - batch) / ((n - 1) * batch) if n > 1 else 0.0
    return math.sqrt(2.0) * lr * beta * np.sqrt(np.asarray(M2, dtype=np.float64) * fpc * np.asarray(t, dtype=np.float64))


@_single_threaded
def _spiked_two_class(rng, d: int, *, delta: float, center_norm: float, trace_per_dim: float,
                      decay: float = 0.5) -> TwoClass:
    """Gaussian classes sharing the spectrum ``lambda_i ~ i^(-decay)`` (``||Sigma|| = c_v sqrt(d)`` with c_v
    about constant in d for decay 1/2) whose top eigenvector is ``mu_+ - mu_-``: the construction that
    attains our margin-change bound."""
    e_b = random_unit(rng, d)
    Q = random_orthogonal(rng, d)
    Q[:, 0] = e_b
    Q, _ = np.linalg.qr(Q)
    Q[:, 0] *= np.sign(Q[:, 0] @ e_b)
    lam = np.arange(1, d + 1, dtype=np.float64) ** (-float(decay))
    lam *= trace_per_dim * d / lam.sum()
    c = center_norm * math.sqrt(d) * random_unit(rng, d)
    b = delta * math.sqrt(d) * Q[:, 0]
    factor = Q * np.sqrt(lam)
    return TwoClass(ClassConditional(c + b / 2, factor), ClassConditional(c - b / 2, factor))


MARGIN_CASES: tuple[str, ...] = ("isotropic", "spiked", "random")


def check_margin_concentration(rng, *, dims: Sequence[int] = (16, 64, 256, 512), n: int = 256,
                               delta: float = 0.5, beta_prime: float = 0.64, lr: float = 0.1,
                               trace_per_dim: float = 1.0, cases: Sequence[str] = MARGIN_CASES,
                               center_norm: float = 0.5, n_fresh: int = 2000, mutate: float = 1.0):
    """Our per-example margin-change statement, checked: for each ``d`` and covariance case, one balanced
    Gaussian training set of ``n`` pairs, one full-batch step, and ``n_fresh`` fresh examples per class.
    Cases: ``isotropic`` (``Sigma = tau I``), ``spiked`` (spectrum ``i^(-1/2)``, so ``c_v`` is about
    constant in d, with ``mu_+ - mu_-`` along the top eigenvector: the bound's worst case) and ``random``
    (the same spectrum, randomly rotated per class).

    Columns: the measured standard deviation over fresh examples of the one-step change of the reward
    margin ``Delta r(x) = 2 beta s v_1^T x`` (pooled over the classes), its exact value given the training
    set ``(lr beta^2 / 2) sqrt(D^T Sigma_i D)`` (``D = mu_hat_+ - mu_hat_-``), our bound
    ``(lr beta'^2 delta_hat / 2) sqrt(c_v) d^(-1/4)`` (moved by ``mutate`` in the direction of violation),
    the population bound on its root mean square ``(lr beta'^2 / 2) sqrt(c_v) d^(-1/4) sqrt(delta^2 +
    (tr Sigma_+ / n_+ + tr Sigma_- / n_-) / d)``, the mean change per class, and ``margin`` (the bound
    plus 5 standard errors minus the measured SD; >= 0 means the check passes).

    Used in: `book/update_rate.md`.
    """
    import pandas as pd

    rng = _rng(rng)
    rows = []
    for d in dims:
        for case in cases:
            if case == "spiked":
                model = _spiked_two_class(rng, int(d), delta=delta, center_norm=center_norm,
                                          trace_per_dim=trace_per_dim)
            elif case in ("isotropic", "random"):
                model = make_two_class(rng, int(d), delta=delta, center_norm=center_norm,
                                       trace_per_dim=trace_per_dim, decay=0.0 if case == "isotropic" else 0.5)
            else:
                raise ValueError(f"unknown case {case!r}; cases: {list(MARGIN_CASES)}")
            beta = beta_prime / math.sqrt(d)
            H, s = model.sample(rng, n // 2, n // 2)
            v1 = first_step_v(H, s, beta=beta, lr=lr)
            st = sample_statistics(H, s)
            D = st["mu_plus"] - st["mu_minus"]
            delta_hat = float(np.linalg.norm(D)) / math.sqrt(d)
            sds, exact, means, ses = [], [], {}, []
            for j, cls in model.classes():
                x = cls.sample(rng, n_fresh)
                dr = 2.0 * beta * j * (x @ v1)
                sd = float(dr.std(ddof=1))
                sds.append(sd)
                ses.append(sd / math.sqrt(2.0 * (n_fresh - 1)))
                exact.append(lr * beta ** 2 / 2.0 * math.sqrt(float(D @ cls.cov @ D)))
                means[j] = float(dr.mean())
            bound = lr * beta_prime ** 2 * delta_hat / 2.0 * math.sqrt(model.c_v) * d ** -0.25
            pop = (lr * beta_prime ** 2 / 2.0 * math.sqrt(model.c_v) * d ** -0.25
                   * math.sqrt(delta ** 2 + (model.plus.trace + model.minus.trace) * 2.0 / (n * d)))
            b_m = float(mutate_bound(bound, "upper", mutate))
            k = int(np.argmax(sds))
            rows.append({"d": int(d), "case": case, "c_v": model.c_v, "measured_sd": max(sds), "exact_sd": max(exact),
                         "bound_sd": bound, "population_rms_bound": pop, "tightness": max(sds) / bound,
                         "sd_times_d_quarter": max(sds) * d ** 0.25, "mean_plus": means[+1], "mean_minus": means[-1],
                         "exact_rel_err": float(np.max(np.abs(np.array(sds) - np.array(exact)) / np.array(exact))),
                         "exact_tolerance": 5.0 * ses[k] / sds[k],
                         "margin": b_m + 5.0 * ses[k] - sds[k], "exact_excess": excess(max(exact), bound)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# 3b. Accuracy bounds (book/accuracy.md)
# ---------------------------------------------------------------------------------------------------

def tail_error_bound(margin, norm, alpha: float, tau=0.0):
    """``min(1, 2 exp(-(margin - tau) / (alpha norm)))`` if ``margin > tau`` else 1: a bound on
    ``P(s theta^T h <= tau)`` when ``s theta^T mu >= margin`` and ``||theta|| <= norm``.

    Used in: `book/accuracy.md`.
    """
    margin = np.asarray(margin, dtype=np.float64) - np.asarray(tau, dtype=np.float64)
    norm = np.asarray(norm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        val = 2.0 * np.exp(-margin / (alpha * norm))
    return np.where(margin > 0, np.minimum(1.0, val), 1.0)


@dataclass(frozen=True)
class AccuracyProblem:
    """Everything the accuracy bounds need: the distribution, the offset, the class counts, β, η.

    ``a = W_0^T u`` is the reference model's Yes-minus-No direction; ``n_plus, n_minus`` the training
    counts (the class balance ``pi_+ = n_plus / n``).

    Used in: `book/accuracy.md`.
    """

    model: TwoClass
    a: np.ndarray
    n_plus: int
    n_minus: int
    beta: float
    lr: float

    def __post_init__(self):
        if self.n_plus < 1 or self.n_minus < 1:
            raise ValueError(f"need examples of both classes, got n_plus={self.n_plus}, n_minus={self.n_minus}")
        _positive("beta", self.beta)
        _positive("lr", self.lr)
        a = np.asarray(self.a, dtype=np.float64)
        if a.shape != (self.model.d,):
            raise ValueError(f"offset a must have shape ({self.model.d},), got {a.shape}")
        object.__setattr__(self, "a", a)

    @property
    def n(self) -> int:
        return self.n_plus + self.n_minus

    @property
    def pi(self) -> dict[int, float]:
        return {+1: self.n_plus / self.n, -1: self.n_minus / self.n}

    @property
    def m(self) -> np.ndarray:
        """``E m_hat = pi_+ mu_+ - pi_- mu_-``."""
        return self.pi[+1] * self.model.plus.mean - self.pi[-1] * self.model.minus.mean

    def directions(self) -> dict[str, np.ndarray]:
        """The fixed comparator directions the bounds try: ``mu_+ - mu_-`` and ``m``, normalised."""
        out = {}
        for name, w in (("b", self.model.b), ("m", self.m)):
            nw = np.linalg.norm(w)
            if nw > 0:
                out[name] = w / nw
        if not out:
            raise ValueError("mu_+ = mu_- and m = 0: no comparator direction")
        return out

    def x_max(self, variance: bool = False) -> float:
        """The largest admissible ``x``: ``1/(2 alpha)`` (``1/(4 alpha)`` for the variance term)."""
        return 1.0 / ((4.0 if variance else 2.0) * self.model.alpha)


def population_error(model: TwoClass, theta, pi: dict[int, float]):
    """Exact fresh-example error ``sum_j pi_j P_j(s_j theta^T h <= 0)`` of the classifier ``theta``.

    Used in: `book/accuracy.md`.
    """
    return sum(pi[j] * cls.error(theta, j) for j, cls in model.classes())


def lemma_error_bound(model: TwoClass, theta, pi: dict[int, float]):
    """Our tail lemma for a fixed classifier: ``sum_j pi_j min(1, 2 exp(-[s_j theta^T mu_j]_+ / (alpha_j ||theta||)))``.

    Used in: `book/accuracy.md`.
    """
    theta = np.asarray(theta, dtype=np.float64)
    nt = np.linalg.norm(theta, axis=-1)
    return sum(pi[j] * tail_error_bound(j * theta @ cls.mean, nt, cls.alpha) for j, cls in model.classes())


def first_order_direction(problem: AccuracyProblem, t, m=None):
    """``a + lr beta t m``: the decision direction to first order (exact at t = 1 with ``m = m_hat``).

    ``m`` defaults to the population ``pi_+ mu_+ - pi_- mu_-``. Returns shape ``(T, d)``.

    Used in: `book/accuracy.md`.
    """
    m = problem.m if m is None else np.asarray(m, dtype=np.float64)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    return problem.a[None, :] + problem.lr * problem.beta * t[:, None] * m[None, :]


def comparator_loss(problem: AccuracyProblem, w, x):
    """``(C, C2)``: ``C = sum_j pi_j exp(-x M_j + 4 x^2 alpha_j^2) >= E L_S(u)`` and
    ``C2 = sum_j pi_j exp(-2 x M_j + 16 x^2 alpha_j^2) >= n Var L_S(u)`` for the comparator
    ``u = x w / (2 beta)``, ``M_j = s_j w^T mu_j`` (``C2`` is ``inf`` above ``x = 1/(4 alpha)``).

    Used in: `book/accuracy.md`.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.any(x <= 0) or np.any(x > problem.x_max() * (1 + 1e-12)):
        raise ValueError(f"x must lie in (0, 1/(2 alpha)] = (0, {problem.x_max():.4g}]")
    C = np.zeros_like(x)
    C2 = np.zeros_like(x)
    for j, cls in problem.model.classes():
        M = j * float(np.dot(w, cls.mean))
        al = cls.alpha
        C = C + problem.pi[j] * np.exp(-x * M + 4 * x ** 2 * al ** 2)
        C2 = C2 + problem.pi[j] * np.exp(-2 * x * M + 16 * x ** 2 * al ** 2)
    C2 = np.where(x <= problem.x_max(variance=True) * (1 + 1e-12), C2, np.inf)
    return C, C2


def offset_tail(problem: AccuracyProblem, y):
    """``sum_j pi_j min(1, 2 exp(-[y + s_j a^T mu_j]_+ / (alpha_j ||a||)))``: a bound on the expected
    fraction of examples with ``-s a^T h > y`` (where the reference offset outvotes a DPO margin).

    Used in: `book/accuracy.md`.
    """
    y = np.asarray(y, dtype=np.float64)
    na = float(np.linalg.norm(problem.a))
    out = np.zeros_like(y)
    for j, cls in problem.model.classes():
        off = j * float(problem.a @ cls.mean)
        if na == 0:
            out = out + problem.pi[j] * (y < 0)
        else:
            out = out + problem.pi[j] * tail_error_bound(y + off, na, cls.alpha)
    return out


def loss_threshold(beta: float, y):
    """``ell(beta y) = log(1 + exp(-beta y))``: the DPO loss at margin ``r = beta y``.

    Used in: `book/accuracy.md`.
    """
    return np.logaddexp(0.0, -beta * np.asarray(y, dtype=np.float64))


def _x_grid(problem: AccuracyProblem, variance: bool, n: int = 80) -> np.ndarray:
    hi = problem.x_max(variance)
    return np.geomspace(hi * 1e-4, hi, n)


def _y_grid(problem: AccuracyProblem, n: int = 81) -> np.ndarray:
    na = float(np.linalg.norm(problem.a))
    scale = max(na * problem.model.alpha + max(abs(float(problem.a @ c.mean)) for _, c in problem.model.classes()), 1e-12)
    return np.concatenate([[0.0], np.linspace(-4 * scale, 12 * scale, n)])


def comparator_choice(problem: AccuracyProblem, t, *, eps: float | None = None):
    """The comparator ``u_t = x w / (2 beta)`` minimising our loss bound at each t, and that bound.

    ``eps=None``: minimise ``C(x, w) + x^2 / (4 beta^2 lr t)``, a bound on ``E[L_S(v_t) 1{kappa <= 1}]``.
    ``eps`` given: minimise ``C + sqrt(C2 / (n eps)) + x^2 / (4 beta^2 lr t)``, a bound on ``L_S(v_t)``
    that holds with probability at least ``1 - eps`` when ``kappa <= 1`` (the choice depends only on
    the distribution, so no union bound is needed for one t). The comparator ``u = 0`` (loss exactly
    ``ln 2``) is always among the candidates. Returns ``(u (T, d), bound (T,))``.

    Used in: `book/accuracy.md`.
    """
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    variance = eps is not None
    if variance:
        _prob("eps", eps)
    xs = _x_grid(problem, variance)
    best = np.full(t.shape, np.inf)
    u = np.zeros(t.shape + (problem.model.d,))
    tt = np.where(t > 0, t, 1.0)
    for w in problem.directions().values():
        C, C2 = comparator_loss(problem, w, xs)
        extra = np.sqrt(C2 / (problem.n * eps)) if variance else 0.0
        val = (C + extra)[None, :] + xs[None, :] ** 2 / (4 * problem.beta ** 2 * problem.lr * tt[:, None])
        k = val.argmin(axis=1)
        better = val[np.arange(t.size), k] < best
        best = np.where(better, val[np.arange(t.size), k], best)
        u[better] = (xs[k] / (2 * problem.beta))[better, None] * w[None, :]
    # the comparator u = 0 gives L_S(0) = ln 2 exactly (the loss never rises above it when kappa <= 1)
    zero = (t == 0) | (best >= LN2)
    u[zero] = 0.0
    return u, np.where(zero, LN2, best)


def expected_loss_bound(problem: AccuracyProblem, t, *, eps: float | None = None):
    """The value of :func:`comparator_choice`: our bound on the training loss after t GD steps.

    Used in: `book/accuracy.md`.
    """
    return comparator_choice(problem, t, eps=eps)[1]


def expected_error_bound(problem: AccuracyProblem, t, kind: str = "official"):
    """Our bound on ``E[(1 - A_t) 1{kappa <= 1}]`` after t GD steps (the accuracy theorem, part (iii)).

    ``kind="reward"``: TRL's reward accuracy ``1{r > 0}``: ``loss_bound / ln 2``.
    ``kind="official"``: the official accuracy ``1{s theta_t^T h > 0}`` with the reference offset:
    ``min_y loss_bound / ell(beta y) + offset_tail(y)``.

    Used in: `book/accuracy.md`.
    """
    L = expected_loss_bound(problem, t)
    if kind == "reward":
        return np.minimum(L / LN2, 1.0)
    if kind != "official":
        raise ValueError(f"kind must be 'official' or 'reward', got {kind!r}")
    ys = _y_grid(problem)
    val = L[:, None] / loss_threshold(problem.beta, ys)[None, :] + offset_tail(problem, ys)[None, :]
    return np.minimum(val.min(axis=1), 1.0)


def realised_error_bound(loss, *, beta: float, a, H, s, y_grid=None):
    """The deterministic part (i) of the accuracy theorem on a realised training set: the official
    error is at most ``min_y loss / ell(beta y) + F_a(y)``, with ``F_a(y)`` the fraction of training
    examples with ``-s a^T h > y`` (a property of the reference model, known before training).

    ``loss`` has shape ``(..., T)``; ``H`` ``(..., n, d)``. Returns shape ``(..., T)``.

    Used in: `book/accuracy.md`.
    """
    z = -np.asarray(s) * np.einsum("...nd,d->...n", H, np.asarray(a, dtype=np.float64))  # -s a^T h
    if y_grid is None:
        y_grid = np.concatenate([[0.0], np.quantile(z, np.linspace(0, 1, 41)), [np.max(np.abs(z)) + 1.0]])
    y_grid = np.asarray(y_grid, dtype=np.float64)
    frac = np.mean(z[..., :, None] > y_grid, axis=-2)  # (..., Y)
    loss = np.asarray(loss)
    val = loss[..., :, None] / loss_threshold(beta, y_grid) + frac[..., None, :]
    return np.minimum(val.min(-1), 1.0)


def margin_remainder(H, m_hat, t, *, lr: float, beta: float, rho):
    """Per example, a bound on ``|2 R_t^T h_k|`` with ``R_t = v_t - (lr beta t / 2) m_hat`` (full-batch GD):
    the smaller of ``2 rho_t ||h_k||`` (Cauchy-Schwarz with :func:`remainder_bound`) and our sharper
    ``lr beta phi_kappa(t) sqrt(h_k^T G h_k) sqrt(m_hat^T G m_hat) / ||G||`` (``G = mean h h^T``), which sees
    how little of the curvature lies along ``m_hat`` and along ``h_k``. ``H (..., n, d)``, ``m_hat (..., d)``,
    ``rho (..., T)``; returns ``(..., T, n)``.

    Used in: `book/accuracy.md`.
    """
    H = np.asarray(H, dtype=np.float64)
    m_hat = np.asarray(m_hat, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    n = H.shape[-2]
    G = np.matmul(np.swapaxes(H, -1, -2), H) / n
    g_norm = np.linalg.eigvalsh(G)[..., -1]
    kap = kappa_of(lr, beta, g_norm)
    hGh = np.sqrt(np.maximum(np.einsum("...nd,...de,...ne->...n", H, G, H), 0.0))
    mGm = np.sqrt(np.maximum(np.einsum("...d,...de,...e->...", m_hat, G, m_hat), 0.0))
    ph = phi(np.asarray(kap)[..., None], t)  # (..., T)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(g_norm > 0, mGm / g_norm, 0.0)
    sharp = lr * beta * (scale[..., None] * ph)[..., :, None] * hGh[..., None, :]
    cs = 2.0 * np.asarray(rho, dtype=np.float64)[..., :, None] * np.linalg.norm(H, axis=-1)[..., None, :]
    return np.minimum(sharp, cs)


def boundary_guarantee(a, m_hat, H, s, t, *, lr: float, beta: float, rho, sharp: bool = True):
    """Our decision-boundary guarantee on the official training accuracy after t full-batch steps: the
    fraction of training pairs with ``s (a + lr beta t m_hat)^T h_k > r_k(t)``, where ``r_k(t)`` bounds
    ``|2 R_t^T h_k|`` (:func:`margin_remainder`; with ``sharp=False`` only ``2 rho_t ||h_k||``, ``rho_t``
    from :func:`remainder_bound`). Computed from the data alone, before training. ``H (..., n, d)``,
    ``m_hat (..., d)``, ``rho (..., T)``; returns ``(..., T)``.

    Used in: `book/accuracy.md`.
    """
    H = np.asarray(H, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    base = s * np.einsum("...nd,d->...n", H, np.asarray(a, dtype=np.float64))  # s a^T h
    lin = s * np.einsum("...nd,...d->...n", H, np.asarray(m_hat, dtype=np.float64))  # s m_hat^T h
    rho = np.asarray(rho, dtype=np.float64)
    if sharp:
        rem = margin_remainder(H, m_hat, t, lr=lr, beta=beta, rho=rho)
    else:
        rem = 2.0 * rho[..., :, None] * np.linalg.norm(H, axis=-1)[..., None, :]
    margin = base[..., None, :] + lr * beta * t[:, None] * lin[..., None, :]
    return np.mean(margin > rem, axis=-1)


def guarantee_horizon(guarantee, t_min: int = 1):
    """The horizon our a-priori guarantee picks for itself: per training set, the first step
    ``t* >= t_min`` where the decision-boundary guarantee (computed before training) is largest, and
    that guarantee. ``guarantee (..., T + 1)``; returns ``(t_star (...), value (...))``.

    Used in: `book/accuracy.md`.
    """
    g = np.asarray(guarantee, dtype=np.float64)[..., t_min:]
    k = np.argmax(g, axis=-1)
    return k + t_min, np.take_along_axis(g, k[..., None], -1)[..., 0]


def realised_comparator_loss(H, s, t, *, beta: float, lr: float, n_x: int = 200):
    """A bound on the training loss after t full-batch steps that holds whenever ``kappa <= 1``, computed
    from the data before training: ``min(ln 2, min_u [L_S(u) + ||u||^2 / (lr t)])`` over comparators
    ``u = x w / (2 beta)`` with ``w`` along the sample ``mu_+ - mu_-`` or along ``m_hat`` and ``x`` on a
    log grid (item 2 of the accuracy theorem). ``H (R, n, d)`` or ``(n, d)``; returns ``(R, T)`` or ``(T,)``.

    Used in: `book/accuracy.md`.
    """
    from scipy.special import log_expit

    H = np.asarray(H, dtype=np.float64)
    single = H.ndim == 2
    H = H[None] if single else H
    s = np.asarray(s, dtype=np.float64)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    xs = np.geomspace(1e-3, 1e3, int(n_x))
    with np.errstate(divide="ignore"):
        pen = xs[None, :] ** 2 / (4.0 * beta ** 2 * lr * t[:, None])  # (T, X); inf at t = 0
    out = np.full((H.shape[0], t.size), LN2)
    st = sample_statistics(H, s)
    dirs = [st["mu_plus"] - st["mu_minus"], st["m_hat"]]
    for w in dirs:
        nw = np.linalg.norm(w, axis=-1, keepdims=True)
        w = np.where(nw > 0, w / np.where(nw > 0, nw, 1.0), 0.0)
        z = s * np.einsum("rnd,rd->rn", H, w)  # (R, n)
        Lu = -np.mean(log_expit(xs[None, :, None] * z[:, None, :]), axis=-1)  # (R, X)
        out = np.minimum(out, np.min(Lu[:, None, :] + pen[None], axis=-1))
    return out[0] if single else out


def kappa_tail_bound(problem: AccuracyProblem) -> float:
    """A bound on ``P(kappa > 1)`` under the hypotheses of part (iii) of the accuracy theorem (independent
    embeddings, fixed labels): ``kappa <= lr beta^2 M2_hat / 2`` with ``M2_hat = mean ||h||^2``, and
    Cantelli's inequality with the exact mean and variance of ``M2_hat``; 1 when the step exceeds the
    limit ``2 / (beta^2 E M2_hat)``.

    Used in: `book/accuracy.md`.
    """
    limit = 2.0 / (problem.lr * problem.beta ** 2)
    n = {+1: problem.n_plus, -1: problem.n_minus}
    mean = sum(problem.pi[j] * (c.mean @ c.mean + c.trace) for j, c in problem.model.classes())
    var = sum(n[j] * c.norm_sq_var for j, c in problem.model.classes()) / problem.n ** 2
    gap = limit - mean
    if gap <= 0:
        return 1.0
    return float(var / (var + gap ** 2))


def unconditional_error_bound(problem: AccuracyProblem, t, kind: str = "official"):
    """Our bound on the *unconditional* expected training error ``E[1 - A_t]``: the truncated bound of
    :func:`expected_error_bound` (on ``E[(1 - A_t) 1{kappa <= 1}]``) plus :func:`kappa_tail_bound`
    (``1 - A_t <= 1`` on ``kappa > 1``), capped at 1.

    Used in: `book/accuracy.md`.
    """
    return np.minimum(expected_error_bound(problem, t, kind) + kappa_tail_bound(problem), 1.0)


# ---------------------------------------------------------------------------------------------------
# 3c. Priority (book/priority.md)
# ---------------------------------------------------------------------------------------------------

def priority_levels(bs: Sequence[np.ndarray], weights: Sequence[float] | None = None, *, rtol: float = 1e-8):
    """Priority levels ``p_i = <b_bar, b_i> / ||b_bar||`` with ``b_bar = sum_i w_i b_i`` (equal weights by
    default; for two behaviours ``b_bar = (b_i + b_j)/2``, the official code's definition).

    Raises when ``||b_bar||`` is below ``rtol * max ||b_i||`` (e.g. ``b_i = -b_j``): the levels are then
    undefined.

    Used in: `book/priority.md`.
    """
    B = np.asarray(bs, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] < 2:
        raise ValueError(f"need at least two behaviour vectors b_i of equal length, got shape {B.shape}")
    w = np.full(B.shape[0], 1.0 / B.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (B.shape[0],) or np.any(w < 0) or not math.isclose(w.sum(), 1.0, rel_tol=1e-9):
        raise ValueError(f"weights must be {B.shape[0]} non-negative numbers summing to 1, got {w!r}")
    bbar = w @ B
    nb = np.linalg.norm(bbar)
    scale = np.linalg.norm(B, axis=1).max()
    if not nb > rtol * scale:
        raise ValueError(f"||b_bar|| = {nb:.3g} is (numerically) zero: the behaviours cancel (b_i ~ -b_j), "
                         "so priority levels are undefined")
    return B @ bbar / nb


def priority_gap(b_i, b_j) -> float:
    """The official priority gap ``(p_i - p_j) / max(||b_i||, ||b_j||)`` of behaviour i over j.

    Used in: `book/priority.md`.
    """
    p = priority_levels([b_i, b_j])
    return float((p[0] - p[1]) / max(np.linalg.norm(b_i), np.linalg.norm(b_j)))


def sign_identity(b_i, b_j) -> tuple[float, float]:
    """``(p_i - p_j, (||b_i||^2 - ||b_j||^2) / (2 ||b_bar||))``: equal (the sign identity).

    Used in: `book/priority.md`.
    """
    b_i, b_j = np.asarray(b_i, float), np.asarray(b_j, float)
    p = priority_levels([b_i, b_j])
    return float(p[0] - p[1]), float((b_i @ b_i - b_j @ b_j) / (2 * np.linalg.norm((b_i + b_j) / 2)))


def margin_change_prediction(t, *, lr: float, beta: float, bbar, b_i):
    """``(lr beta t / 4) <b_bar, b_i>``: the first-order change of behaviour i's mean signed log-odds
    margin after t joint steps (exact at t = 1).

    Used in: `book/priority.md`.
    """
    return lr * beta * np.asarray(t, dtype=np.float64) / 4.0 * float(np.dot(bbar, b_i))


def loss_bounds_from_v(v, *, beta: float, b_i, G_i):
    """``(lower, upper)`` on behaviour i's DPO loss at ``v``: ``ln2 - (beta/2) v^T b_i`` and that plus
    ``(beta^2/2) v^T G_i v`` (G_i = mean h h^T over behaviour i; classes balanced).

    Used in: `book/priority.md`.
    """
    v = np.asarray(v, dtype=np.float64)
    lin = LN2 - 0.5 * beta * v @ b_i
    quad = 0.5 * beta ** 2 * np.einsum("...d,de,...e->...", v, G_i, v)
    return lin, lin + quad


def loss_order_margin(t, *, lr: float, beta: float, bbar, b_i, b_j, G_i_norm: float, G_norm: float):
    """A lower bound on ``L_j(t) - L_i(t)`` for behaviours i, j trained jointly (full batch,
    each balanced): positive means behaviour i's loss is strictly lower at step t.

    ``(beta/2)[(lr beta t/4)<b_bar, b_i - b_j> - rho_t ||b_i - b_j||] - (beta^2/2)||G_i|| (lr beta t ||b_bar||/4 + rho_t)^2``
    with ``rho_t = (lr beta ||b_bar|| / 4) phi_kappa(t)``, ``kappa = lr beta^2 ||G|| / 2``.

    Used in: `book/priority.md`.
    """
    t = np.asarray(t, dtype=np.float64)
    bbar, b_i, b_j = (np.asarray(x, dtype=np.float64) for x in (bbar, b_i, b_j))
    nb = float(np.linalg.norm(bbar))
    rho = remainder_bound(t, lr=lr, beta=beta, mhat_norm=nb / 2.0, G_norm=G_norm)
    lin = 0.5 * beta * (lr * beta * t / 4.0 * float(bbar @ (b_i - b_j)) - rho * float(np.linalg.norm(b_i - b_j)))
    return lin - 0.5 * beta ** 2 * G_i_norm * (lr * beta * t * nb / 4.0 + rho) ** 2


def pair_condition(b_i, b_j, w_i: float, w_j: float) -> float:
    """``<b_bar, b_i - b_j> = w_i ||b_i||^2 - w_j ||b_j||^2 + (w_j - w_i) <b_i, b_j>`` for two behaviours
    mixed with weights ``w_i, w_j`` (``b_bar = w_i b_i + w_j b_j``): the first-order lead of behaviour i's
    loss over j's is ``(lr beta^2 / 8)`` times this. With equal weights it is ``(||b_i||^2 - ||b_j||^2) / 2``;
    with unequal weights it is *not* a function of the norms alone.

    Used in: `book/priority.md`.
    """
    b_i, b_j = np.asarray(b_i, dtype=np.float64), np.asarray(b_j, dtype=np.float64)
    for name, w in (("w_i", w_i), ("w_j", w_j)):
        if not (0 <= w <= 1 and math.isfinite(w)):
            raise ValueError(f"{name} must lie in [0, 1], got {w!r}")
    if not math.isclose(w_i + w_j, 1.0, rel_tol=1e-9):
        raise ValueError(f"weights must sum to 1, got {w_i!r} + {w_j!r}")
    return float(w_i * (b_i @ b_i) - w_j * (b_j @ b_j) + (w_j - w_i) * (b_i @ b_j))


def first_step_slowdown(b_i, b_j) -> float:
    """``1 - p_j / p_i`` for two equally weighted behaviours: how much slower, relative to behaviour i,
    behaviour j's margin moves in the first joint step (exactly ``1 - dM_j(1) / dM_i(1)``). Our bound
    (ours): ``gap_ij <= 1 - p_j / p_i`` when ``||b_i|| >= ||b_j||``, with equality iff ``b_j`` is a
    non-negative multiple of ``b_i``.

    Used in: `book/priority.md`.
    """
    p = priority_levels([b_i, b_j])
    if not p[0] > 0:
        raise ValueError(f"p_i = {p[0]:.3g} must be positive (behaviour i the more distinguishable one)")
    return float(1.0 - p[1] / p[0])


def first_step_order_bound(v1, *, beta: float, b_i, b_j, G_i) -> float:
    """Lower bound on ``L_j(1) - L_i(1)`` after the first joint step ``v_1``:
    ``(beta/2) v_1^T (b_i - b_j) - (beta^2/2) v_1^T G_i v_1`` (item 2 of the priority theorem).

    Used in: `book/priority.md`.
    """
    v1 = np.asarray(v1, dtype=np.float64)
    return float(0.5 * beta * v1 @ (np.asarray(b_i) - np.asarray(b_j)) - 0.5 * beta ** 2 * v1 @ np.asarray(G_i) @ v1)


@_single_threaded
def unequal_sizes_example(*, n_i: int = 20, n_j: int = 180, norm_i: float = 4.42, norm_j: float = 3.57,
                          cos: float = 0.1, beta_prime: float = 0.64, lr: float = 0.1,
                          steps: int = 20) -> dict[str, Any]:
    """Two behaviours of unequal sizes where the *more* distinguishable one (i) is learned *second*: each
    behaviour is two points ``+- b/2`` (class-balanced, no noise) in ``d = 2``, trained jointly with
    full-batch GD. Returns both conditions (equal-weight reading and the weighted one) and both losses
    over steps.

    Used in: `book/priority.md`.
    """
    d = 2
    b_i = np.array([norm_i, 0.0])
    b_j = norm_j * np.array([cos, math.sqrt(1 - cos ** 2)])
    n = n_i + n_j
    Hs, ss = [], []
    for b, m in ((b_i, n_i), (b_j, n_j)):
        Hs.append(np.concatenate([np.tile(b / 2, (m // 2, 1)), np.tile(-b / 2, (m // 2, 1))]))
        ss.append(np.concatenate([np.ones(m // 2), -np.ones(m // 2)]))
    beta = beta_prime / math.sqrt(d)
    v = logistic_gd(np.concatenate(Hs), np.concatenate(ss), beta=beta, lr=lr, steps=steps)
    return {"b_i": b_i, "b_j": b_j, "w_i": n_i / n, "w_j": n_j / n,
            "equal_weight_condition": pair_condition(b_i, b_j, 0.5, 0.5),
            "weighted_condition": pair_condition(b_i, b_j, n_i / n, n_j / n),
            "loss_i": dpo_loss_from_v(v, Hs[0], ss[0], beta), "loss_j": dpo_loss_from_v(v, Hs[1], ss[1], beta)}


# ---------------------------------------------------------------------------------------------------
# 4. Checks of the reduction against the float64 full-softmax reference (book/dpo_last_layer.md)
# ---------------------------------------------------------------------------------------------------

YES, NO = 3, 7  # the two answer tokens of the synthetic checks


@dataclass(frozen=True, eq=False)
class ReductionProblem:
    """A small synthetic last-layer DPO problem in float64 torch tensors: features ``H`` (n x d), labels
    ``s`` (+1: Yes preferred), the head ``W0`` (V x d), token ids and the chosen / rejected tokens.

    Used in: `book/dpo_last_layer.md`.
    """

    H: Any
    s: Any
    W0: Any
    chosen: Any
    rejected: Any
    yes: int = YES
    no: int = NO

    @property
    def u(self):
        import torch

        u = torch.zeros(self.W0.shape[0], dtype=torch.float64)
        u[self.yes], u[self.no] = 1.0, -1.0
        return u

    @property
    def a(self):
        """The reference offset ``W_0^T u``."""
        return self.W0.T @ self.u


def reduction_problem(rng, *, d: int = 16, V: int = 50, n: int = 400, p_yes: float = 0.5, delta: float = 0.8,
                      family: str = "laplace", w_scale: float = 1.0) -> ReductionProblem:
    """A :class:`ReductionProblem` with embeddings from :func:`make_two_class` (Laplace noise by default)
    and a random head ``W0`` with entries ``N(0, w_scale^2 / d)``.

    Used in: `book/dpo_last_layer.md`.
    """
    import torch

    rng = _rng(rng)
    if V < 3 or max(YES, NO) >= V:
        raise ValueError(f"V must exceed {max(YES, NO)} (the answer tokens are {YES} and {NO}), got {V}")
    _prob("p_yes", p_yes)
    model = make_two_class(rng, d, delta=delta, family=family)
    n_plus = int(round(p_yes * n))
    H, s = model.sample(rng, n_plus, n - n_plus)
    perm = rng.permutation(n)
    H, s = H[perm], s[perm]
    W0 = rng.standard_normal((V, d)) * w_scale / math.sqrt(d)
    st = torch.from_numpy(s)
    chosen = torch.where(st > 0, YES, NO).long()
    rejected = torch.where(st > 0, NO, YES).long()
    return ReductionProblem(torch.from_numpy(H), st, torch.from_numpy(W0), chosen, rejected)


def _reference_loss(problem: ReductionProblem, W, beta: float, H_rejected=None):
    """The float64 full-softmax DPO loss at W (reference = W0), through ``dpo.reference``."""
    import torch

    from .dpo import reference as ref

    if H_rejected is None:
        lp, _ = ref.logprobs_naive(problem.H, W, torch.stack([problem.chosen, problem.rejected], 1))
        lp0, _ = ref.logprobs_naive(problem.H, problem.W0, torch.stack([problem.chosen, problem.rejected], 1))
        pc, pr, rc, rr = lp[:, 0], lp[:, 1], lp0[:, 0], lp0[:, 1]
    else:
        pc, _ = ref.logprobs_naive(problem.H, W, problem.chosen)
        pr, _ = ref.logprobs_naive(H_rejected, W, problem.rejected)
        rc, _ = ref.logprobs_naive(problem.H, problem.W0, problem.chosen)
        rr, _ = ref.logprobs_naive(H_rejected, problem.W0, problem.rejected)
    return ref.dpo_loss(pc, pr, rc, rr, beta)


@_single_threaded
def check_normaliser(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1) -> dict[str, float]:
    """At a random *dense* head W (not only two rows moved), the full-softmax DPO margin equals the
    closed form ``beta s u^T (W - W_0) h``, and the answer log-odds equal ``s u^T W h``: the
    log-sum-exp cancels. Returns the largest absolute differences and the size of the log-sum-exp.

    Used in: `book/dpo_last_layer.md`.
    """
    import torch

    from .dpo import reference as ref

    rng = _rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    W = pb.W0 + torch.from_numpy(rng.standard_normal((V, d))) / math.sqrt(d)
    _, per_pair, rew_c, rew_r = _reference_loss(pb, W, beta)
    closed = beta * pb.s * (pb.H @ ((W - pb.W0).T @ pb.u))
    lp, lse = ref.logprobs_naive(pb.H, W, torch.stack([pb.chosen, pb.rejected], 1))
    odds = pb.s * (pb.H @ (W.T @ pb.u))
    return {
        "margin_max_abs_diff": float((rew_c - rew_r - closed).abs().max()),
        "log_odds_max_abs_diff": float((lp[:, 0] - lp[:, 1] - odds).abs().max()),
        "lse_mean_abs": float(lse.abs().mean()),
    }


@_single_threaded
def check_gradient_structure(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1) -> dict[str, float]:
    """Autograd through the full-softmax reference at a random dense W: the gradient is zero outside the
    Yes and No rows, the two rows are opposite, it has rank one, and it equals the closed form
    ``-beta u (mean_k s_k sigma(-r_k) h_k)^T``. Returns the largest deviations.

    Used in: `book/dpo_last_layer.md`.
    """
    import torch

    rng = _rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    W = (pb.W0 + torch.from_numpy(rng.standard_normal((V, d))) / math.sqrt(d)).requires_grad_(True)
    loss, per_pair, rc, rr = _reference_loss(pb, W, beta)
    (grad,) = torch.autograd.grad(loss, W)
    others = [k for k in range(V) if k not in (pb.yes, pb.no)]
    r = (rc - rr)  # beta * Delta
    closed = -beta * torch.outer(pb.u, ((pb.s * torch.sigmoid(-r))[:, None] * pb.H).mean(0))
    sv = torch.linalg.svdvals(grad)
    return {
        "other_rows_max_abs": float(grad[others].abs().max()),
        "yes_plus_no_max_abs": float((grad[pb.yes] + grad[pb.no]).abs().max()),
        "second_singular_ratio": float(sv[1] / sv[0]),
        "closed_form_max_abs_diff": float((grad - closed).abs().max()),
        "grad_max_abs": float(grad.abs().max()),
    }


@_single_threaded
def check_loss_at_start(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1) -> float:
    """``|L(W_0) - ln 2|`` for the full-softmax reference loss (every margin is exactly 0 at W_0).

    Used in: `book/dpo_last_layer.md`.
    """
    pb = reduction_problem(_rng(rng), d=d, V=V, n=n)
    loss = _reference_loss(pb, pb.W0, beta)[0]
    return float(abs(float(loss) - LN2))


def _train_reference(pb: ReductionProblem, *, beta, lr, steps, **kw):
    from .dpo import reference as ref

    # full batch: the logged training metrics of step t are those of the whole set at W_t
    return ref.train_reference(pb.H, pb.W0, pb.chosen, pb.rejected, beta=beta, lr=lr, steps=steps,
                               batch_size=None, generator=0, **kw)


@_single_threaded
def check_trajectory(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.5, lr: float = 1.0,
                     steps: int = 200, momentum: float = 0.0) -> dict[str, Any]:
    """Full-batch DPO on the full softmax (``dpo.reference.train_reference``, float64, autograd) against
    the logistic-regression recursion :func:`logistic_gd`: the head change at every step and the final
    head, and the loss and both accuracies at steps ``0 .. steps - 1`` (those the reference logs).
    Returns the largest differences and the trajectories.

    Used in: `book/dpo_last_layer.md`.
    """
    import torch

    rng = _rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    tr = _train_reference(pb, beta=beta, lr=lr, steps=steps, momentum=momentum)
    H, s = pb.H.numpy(), pb.s.numpy()
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps, momentum=momentum)
    ev = tr.train  # steps 0 .. steps - 1
    W_closed = pb.W0 + torch.outer(pb.u, torch.from_numpy(v[-1]))
    loss_closed = dpo_loss_from_v(v, H, s, beta)[:steps]
    acc_closed = linear_accuracy(decision_direction(pb.a.numpy(), v), H, s)[:steps]
    rew_closed = linear_accuracy(v, H, s)[:steps]
    moved = (tr.W - pb.W0).abs().amax(1) > 0
    return {
        "head_change_max_abs_diff": float(np.max(np.abs(tr.head_change[0].numpy() - head_change(v)))),
        "final_head_max_abs_diff": float((tr.W - W_closed).abs().max()),
        "loss_max_abs_diff": float(np.max(np.abs(ev["loss"][0].numpy() - loss_closed))),
        "accuracy_max_abs_diff": float(np.max(np.abs(ev["outputs/accuracies"][0].numpy() - acc_closed))),
        "reward_accuracy_max_abs_diff": float(np.max(np.abs(ev["rewards/accuracies"][0].numpy() - rew_closed))),
        "rows_moved": int(moved.sum()),
        "head_change": head_change(v), "loss": loss_closed, "accuracy": acc_closed, "reward_accuracy": rew_closed,
        "head_change_reference": tr.head_change[0].numpy(), "loss_reference": ev["loss"][0].numpy(),
        "accuracy_reference": ev["outputs/accuracies"][0].numpy(),
    }


@_single_threaded
def check_first_step(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1, lr: float = 0.5,
                     p_yes: float = 0.5) -> dict[str, float]:
    """One full-softmax SGD step from W_0 against the first-step formula:
    ``W_1 - W_0 = u v_1^T`` with ``v_1 = (lr beta / 2)(p mu_+ - (1 - p) mu_-)`` (batch statistics), so
    ``||W_1 - W_0|| = (sqrt(2) lr beta / 4) ||mu_+ - mu_-||`` when ``p = 1/2``. Returns the measured norm,
    both predictions and relative errors.

    Used in: `book/dpo_last_layer.md`.
    """
    import torch

    rng = _rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n, p_yes=p_yes)
    tr = _train_reference(pb, beta=beta, lr=lr, steps=1)
    H, s = pb.H.numpy(), pb.s.numpy()
    v1 = first_step_v(H, s, beta=beta, lr=lr)
    measured = float(torch.linalg.norm(tr.W - pb.W0))
    general = float(head_change(v1))
    dist = float(np.linalg.norm(H[s > 0].mean(0) - H[s < 0].mean(0)))
    balanced = float(first_step_norm_balanced(lr, beta, dist))
    return {"measured": measured, "predicted": general, "predicted_balanced": balanced,
            "rel_err": abs(measured - general) / general, "rel_err_balanced": abs(measured - balanced) / balanced,
            "p": float(np.mean(s > 0)), "distinguishability": dist,
            "W1_minus_closed_max_abs": float((tr.W - pb.W0 - torch.outer(pb.u, torch.from_numpy(v1))).abs().max())}


@_single_threaded
def check_side_facts(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.5, lr: float = 1.0,
                     steps: int = 20) -> dict[str, float]:
    """Side facts of the reduction on a full-softmax trajectory: log-ratios between non-answer tokens do
    not change; the mean logit over the vocabulary does not change; on every example the chosen answer's
    log-prob rises above the reference exactly when that example's DPO margin is positive.

    Used in: `book/dpo_last_layer.md`.
    """
    import torch

    rng = _rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    tr = _train_reference(pb, beta=beta, lr=lr, steps=steps)
    others = [k for k in range(V) if k not in (pb.yes, pb.no)]
    z0, z1 = pb.H @ pb.W0.T, pb.H @ tr.W.T
    lp0 = torch.log_softmax(z0, -1)[:, others]
    lp1 = torch.log_softmax(z1, -1)[:, others]
    ratio_change = ((lp1 - lp1[:, :1]) - (lp0 - lp0[:, :1])).abs().max()
    _, _, rew_c, rew_r = _reference_loss(pb, tr.W, beta)
    agree = ((rew_c > 0) == (rew_c - rew_r > 0)).double().mean()
    return {"other_log_ratio_max_change": float(ratio_change),
            "mean_logit_max_change": float((z1.mean(1) - z0.mean(1)).abs().max()),
            "chosen_up_iff_margin_positive": float(agree),
            "frac_margin_positive": float((rew_c - rew_r > 0).double().mean())}


@_single_threaded
def check_breaks(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.5, lr: float = 1.0,
                 steps: int = 20) -> "Any":
    """When the reduction breaks, measured on the full-softmax reference. One row per scenario:
    rows of the head with a non-zero gradient (or that moved), the rank of ``W - W_0`` (or of the
    gradient) and the largest distance from the plain logistic-regression recursion.

    Scenarios: the paper's setting; distinct contexts for chosen and rejected; two-token responses
    (answer then EOS, each EOS scored after its own answer); weight decay; momentum; Adam.

    Used in: `book/dpo_last_layer.md`.
    """
    import pandas as pd
    import torch

    from .dpo import reference as ref

    rng = _rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    H, s = pb.H.numpy(), pb.s.numpy()
    v_plain = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)
    tol = 1e-12

    def rank(M):
        sv = torch.linalg.svdvals(M)
        return int((sv > tol * max(float(sv[0]), 1e-300)).sum())

    def grad_row(name, grad, note):
        return {"scenario": name, "rows_touched": int((grad.abs().amax(1) > tol).sum()), "rank": rank(grad),
                "max_dev_from_logistic": float("nan"), "what": note}

    rows = []
    W = pb.W0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_reference_loss(pb, W, beta)[0], W)
    rows.append(grad_row("paper setting (shared context, one token)", g, "gradient at W_0"))
    # distinct contexts: the rejected answer is scored from another embedding
    H_rej = pb.H + torch.from_numpy(rng.standard_normal(pb.H.shape)) * 0.5
    W = pb.W0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_reference_loss(pb, W, beta, H_rejected=H_rej)[0], W)
    rows.append(grad_row("distinct contexts for chosen and rejected", g, "gradient at W_0"))
    # two-token responses: answer, then EOS scored from an answer-dependent context
    eos = V - 1
    h_after = {tok: pb.H + torch.from_numpy(rng.standard_normal(pb.H.shape)) * 0.5 for tok in (pb.yes, pb.no)}
    W = pb.W0.clone().requires_grad_(True)

    def seq_logp(Wm, answer):
        lp1, _ = ref.logprobs_naive(pb.H, Wm, answer)
        ctx = torch.where((answer == pb.yes)[:, None], h_after[pb.yes], h_after[pb.no])
        lp2, _ = ref.logprobs_naive(ctx, Wm, torch.full_like(answer, eos))
        return lp1 + lp2

    with torch.no_grad():
        r0c, r0r = seq_logp(pb.W0, pb.chosen), seq_logp(pb.W0, pb.rejected)
    loss = ref.dpo_loss(seq_logp(W, pb.chosen), seq_logp(W, pb.rejected), r0c, r0r, beta)[0]
    (g,) = torch.autograd.grad(loss, W)
    rows.append(grad_row("two-token responses (answer + EOS)", g, "gradient at W_0"))
    # optimiser variants: train, then look at W_T - W_0
    for name, kw, closed in (
        ("weight decay 0.01", {"weight_decay": 0.01}, v_plain),
        ("momentum 0.9", {"momentum": 0.9}, logistic_gd(H, s, beta=beta, lr=lr, steps=steps, momentum=0.9)),
        ("Adam (lr / 100)", {"optimizer": "adam", "lr": lr / 100}, v_plain),
    ):
        kw = dict(kw)
        lr_k = kw.pop("lr", lr)
        tr = _train_reference(pb, beta=beta, lr=lr_k, steps=steps, **kw)
        dW = tr.W - pb.W0
        dev = float((dW - torch.outer(pb.u, torch.from_numpy(closed[-1]))).abs().max())
        rows.append({"scenario": name, "rows_touched": int((dW.abs().amax(1) > tol).sum()), "rank": rank(dW),
                     "max_dev_from_logistic": dev,
                     "what": f"W_T - W_0 after {steps} steps" + (" (vs heavy-ball recursion)" if "momentum" in name else "")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# 5. Sweeps over random instances
# ---------------------------------------------------------------------------------------------------

# Relative slack for floating-point comparisons of deterministic bounds (the bounds themselves are exact).
FP_RTOL = 1e-9


def excess(measured, bound, *, upper: bool = True) -> float:
    """The worst violation of ``measured <= bound`` (``upper``) or ``measured >= bound``, relative to the
    size of the two, less the floating-point allowance ``FP_RTOL``: a value <= 0 means the bound holds.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
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

    Used in: `book/update_rate.md`, `book/accuracy.md`.
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

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
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

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    m = np.asarray(measured, dtype=np.float64)
    b = np.asarray(bound, dtype=np.float64)
    nv = np.asarray(nonvacuous, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = m / b if kind == "upper" else b / m
    return np.where(nv & np.isfinite(r), r, 0.0)


def _headline(name: str, measured, bound, kind: str, nonvacuous) -> dict[str, float]:
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

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
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


def _seeds(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(int(n))]


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


@dataclass(frozen=True)
class InstanceRanges:
    """Ranges of a random instance of the sweeps (the paper's scaling: ``beta = beta' / sqrt(d)``).

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """

    dims: tuple[int, ...] = (8, 16, 32, 64, 128)
    n_range: tuple[int, int] = (32, 512)
    max_nd: int = 32768
    delta_range: tuple[float, float] = (0.05, 1.5)
    center_range: tuple[float, float] = (0.0, 1.5)
    trace_range: tuple[float, float] = (0.25, 2.0)
    decay_range: tuple[float, float] = (0.0, 1.0)
    beta_prime_range: tuple[float, float] = (0.1, 2.0)
    lr_range: tuple[float, float] = (0.01, 1.0)
    families: tuple[str, ...] = FAMILIES

    def draw(self, rng) -> dict[str, Any]:
        d = int(rng.choice(self.dims))
        n_hi = max(self.n_range[0], min(self.n_range[1], self.max_nd // d))
        n = 2 * int(round(_loguniform(rng, self.n_range[0], n_hi) / 2))
        return {
            "d": d, "n": n,
            "delta": _loguniform(rng, *self.delta_range),
            "center_norm": float(rng.uniform(*self.center_range)),
            "trace_per_dim": _loguniform(rng, *self.trace_range),
            "decay": float(rng.uniform(*self.decay_range)),
            "family": str(rng.choice(self.families)),
            "beta_prime": _loguniform(rng, *self.beta_prime_range),
            "lr": _loguniform(rng, *self.lr_range),
        }


def _model_from(params: dict[str, Any], rng, **kw) -> TwoClass:
    return make_two_class(rng, params["d"], delta=params["delta"], center_norm=params["center_norm"],
                          trace_per_dim=params["trace_per_dim"], decay=params["decay"],
                          family=params["family"], **kw)


def _progress(iterable, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=total < 20)


def _run_sweep(instance, ranges: "InstanceRanges", seed: int, n_instances: int, desc: str, **kw) -> list:
    """``instance(params, rng, **kw)`` on ``n_instances`` random instances, each with its own child seed."""
    return [instance(ranges.draw(rng), rng, **kw) for rng in _progress(_seeds(seed, n_instances), n_instances, desc)]


def _run_curves(instance, seed: int, base: dict[str, Any], deltas: Sequence[float], **kw) -> list[dict[str, Any]]:
    """``instance`` once per distinguishability in ``deltas`` (the rest of the parameters in ``base``), each
    with the seed ``[seed, k]``; returns the curves with the instance's row under ``"row"``."""
    out = []
    for k, delta in enumerate(deltas):
        row, curves = instance({**base, "delta": float(delta)}, np.random.default_rng([int(seed), k]), **kw)
        curves.update(row=row)
        out.append(curves)
    return out


@_single_threaded
def update_rate_instance(params: dict[str, Any], rng, *, steps: int, repeats: int,
                         eps1: float = 0.05, eps2: float = 0.05,
                         mutate: float = 1.0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run one random instance of the update-rate sweep: ``repeats`` independent balanced training sets,
    ``steps`` full-batch GD steps each. Returns ``(row, curves)``.

    ``row`` holds the instance's constants, the worst violation of every deterministic bound (<= 0
    means it holds), the Monte Carlo margins of the probabilistic statements, tightness ratios at
    the last step, and ``tight_<name>`` / ``nonvac_<name>`` for each headline bound
    (:data:`HEADLINE_BOUNDS`). ``mutate`` < 1 moves every headline bound by that factor in the direction
    of violation before it is checked (:func:`mutate_bound`; for the mutation tests). ``curves`` holds
    mean measured and bound trajectories.

    Used in: `book/update_rate.md`.
    """
    d, n = params["d"], _v.count("n", params["n"], lo=4, even=True)
    model = _model_from(params, rng)
    beta = params["beta_prime"] / math.sqrt(d)
    lr = params["lr"]
    H, s = model.sample(rng, n // 2, n // 2, repeats)
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)
    meas = head_change(v)  # (R, T+1)
    st = sample_statistics(H, s)
    t = np.arange(steps + 1, dtype=np.float64)
    mhat_norm = np.linalg.norm(st["m_hat"], axis=-1)
    lin = linear_upper_bound(t[None], lr=lr, beta=beta, M1=st["M1"][:, None])
    lo, main, up = first_order_band(t[None], lr=lr, beta=beta, mhat_norm=mhat_norm[:, None],
                                    G_norm=st["G_norm"][:, None], M1=st["M1"][:, None])
    first = first_step_norm_balanced(lr, beta, np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1))
    exp_up = scaled_upper_expected(t, lr=lr, beta_prime=params["beta_prime"], c_n=model.c_n)
    s_lo, s_up, omega, kbar = scaled_bounds(t, lr=lr, beta_prime=params["beta_prime"],
                                            delta=model.distinguishability / math.sqrt(d), c_v=model.c_v,
                                            c_n=model.c_n, n=n, d=d, alpha=model.alpha, eps1=eps1, eps2=eps2)
    kap = kappa_of(lr, beta, st["G_norm"])[:, None]
    # item 3 (deterministic, a priori): the sample's normalised distinguishability and the propagated window
    delta_hat = np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1) / math.sqrt(d)
    r_lo = scaling_lower_bound(t[None], lr=lr, beta_prime=params["beta_prime"], delta_hat=delta_hat[:, None],
                               kappa=kap)
    # item 4 (probability >= 1 - eps1): the same with delta_hat replaced by its population lower bound
    pop = population_distinguishability_bound(model, n // 2, n // 2, eps1)
    p_lo = scaling_lower_bound(t[None], lr=lr, beta_prime=params["beta_prime"], delta_hat=pop["delta_eps"],
                               kappa=kap)
    r_fail = np.mean(np.any(meas < mutate_bound(p_lo, "lower", mutate) * (1 - FP_RTOL), axis=1))
    # the a-posteriori sandwich: convexity (below) and energy (above), from the loss drop
    loss = dpo_loss_from_v(v, H, s, beta)  # (R, T+1)
    en = energy_upper_bound(loss[:, :1], loss, t[None], lr=lr, kappa=kap)
    cv = convexity_lower_bound(loss[:, :1], loss, beta=beta, mhat_norm=mhat_norm[:, None])
    mean_meas = meas.mean(0)
    se = meas.std(0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros_like(mean_meas)
    hp_fail = np.mean(np.any((meas < s_lo * (1 - FP_RTOL)) | (meas > s_up * (1 + FP_RTOL)), axis=1))
    p_hp = eps1 + eps2
    T = steps
    rho = np.maximum(up - main, main - lo)
    row = dict(params)
    row.update({
        "beta": beta, "alpha": model.alpha, "c_v": model.c_v, "c_n": model.c_n,
        "gamma": n / math.sqrt(d), "delta_hat": float(np.mean(np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1))) / math.sqrt(d),
        "kappa": float(np.mean(kappa_of(lr, beta, st["G_norm"]))), "omega": omega, "kbar": kbar,
        # deterministic statements (violation <= 0 means the bound holds on every run and step)
        "viol_linear": excess(meas, lin),
        "viol_band_upper": excess(meas, mutate_bound(up, "upper", mutate)),
        "viol_band_lower": excess(meas, mutate_bound(lo, "lower", mutate), upper=False),
        "viol_energy_upper": excess(meas, mutate_bound(en, "upper", mutate)),
        "viol_convexity_lower": excess(meas, mutate_bound(cv, "lower", mutate), upper=False),
        "viol_scaling_lower": excess(meas, mutate_bound(r_lo, "lower", mutate), upper=False),
        "delta_eps": pop["delta_eps"], "pop_along_b_vacuous": pop["along_b_vacuous"],
        "pop_noise_vacuous": pop["noise_vacuous"],
        "first_step_rel_err": float(np.max(np.abs(meas[:, 1] - first) / first)),
        # probabilistic statements (Monte Carlo; margin >= 0 means consistent within 5 standard errors)
        "mc_expected_upper_margin": mc_margin(exp_up[1:], mean_meas[1:], se[1:]),
        "hp_fail_rate": float(hp_fail),
        "hp_fail_allowed": float(p_hp + 5 * math.sqrt(p_hp * (1 - p_hp) / repeats)),
        "realised_fail_rate": float(r_fail),
        "realised_fail_allowed": float(eps1 + 5 * math.sqrt(eps1 * (1 - eps1) / repeats)),
        # tightness at the last step
        "ratio_linear": float(np.mean(meas[:, T] / lin[:, T])),
        "ratio_expected": float(mean_meas[T] / exp_up[T]),
        "ratio_first_order": float(np.mean(meas[:, T] / main[:, T])),
        "band_use": float(np.max(np.abs(meas[:, T] - main[:, T]) / np.maximum(rho[:, T], 1e-300))),
        "ratio_scaled_lower": float(s_lo[T] / mean_meas[T]) if mean_meas[T] > 0 else 0.0,
        "ratio_realised_lower": float(np.mean(r_lo[:, T] / np.maximum(meas[:, T], 1e-300))),
        "ratio_population_lower": float(np.mean(p_lo[:, T] / np.maximum(meas[:, T], 1e-300))),
        "measured_T": float(mean_meas[T]),
        "first_step": float(meas[:, 1].mean()),
        "first_step_pred": float(first.mean()),
        "dist_hat": float(np.mean(np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1))),
        "loss_drop_T": float(np.mean(loss[:, 0] - loss[:, T])),
    })
    # headline bounds at the last step; an upper bound on the head change says something when it is
    # below the label-blind linear bound, a lower bound when it is positive
    mT, linT = meas[:, T], lin[:, T]
    row.update(_headline("energy_upper", mT, en[:, T], "upper", en[:, T] < linT))
    row.update(_headline("convexity_lower", mT, cv[:, T], "lower", cv[:, T] > 0))
    row.update(_headline("band_upper", mT, up[:, T], "upper", up[:, T] < linT * (1 - FP_RTOL)))
    row.update(_headline("band_lower", mT, lo[:, T], "lower", lo[:, T] > 0))
    row.update(_headline("scaling_lower", mT, r_lo[:, T], "lower", r_lo[:, T] > 0))
    row.update(_headline("scaling_population", mT, p_lo[:, T], "lower", p_lo[:, T] > 0))
    # SGD beyond the first step (drawn last, so the full-batch quantities above keep their random streams)
    batch = min(128, max(4, n // 8))
    v_sgd, var = logistic_sgd(H, s, beta=beta, lr=lr, steps=steps, batch=batch, rng=rng)
    dist2 = 2.0 * np.sum((v_sgd - v) ** 2, -1)  # ||W^SGD_t - W^GD_t||_F^2, (R, T+1)
    b_sgd = sgd_fluctuation_bound(var, lr=lr, beta=beta)  # per run, (R, T+1)
    b_sgd_m = mutate_bound(b_sgd, "upper", mutate)
    diff = dist2 - b_sgd_m ** 2
    se_d = diff.std(0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros(steps + 1)
    sgd_applies = bool(np.all(kap < 2.0))
    rms = np.sqrt(dist2.mean(0))
    rms_bound = np.sqrt(np.mean(b_sgd ** 2, 0))
    rate = sgd_rate_bound(t, lr=lr, beta=beta, M2=st["M2"].mean(), n=n, batch=batch)
    trivial = math.sqrt(2.0) * lr * beta * T * float(np.mean(st["max_norm"] + st["M1"]))
    row.update({"batch": batch, "sgd_applies": float(sgd_applies),
                "mc_sgd_margin": float(np.min(5.0 * se_d[1:] - diff.mean(0)[1:])) if sgd_applies else float("inf"),
                "sgd_rms_T": float(rms[T]), "sgd_ratio_rate": float(rms[T] / rate[T]) if sgd_applies else float("nan"),
                "sgd_ratio_first": float(rms[1] / rms_bound[1]) if sgd_applies else float("nan")})
    if sgd_applies:
        row.update(_headline("sgd_fluctuation", [rms[T]], [rms_bound[T]], "upper", [rms_bound[T] < trivial]))
    else:
        row.update({"tight_sgd_fluctuation": float("nan"), "nonvac_sgd_fluctuation": float("nan")})
    curves = {"t": t, "measured": mean_meas, "linear": lin.mean(0), "first_order": main.mean(0),
              "band_lower": lo.mean(0), "band_upper": up.mean(0), "expected_upper": exp_up,
              "scaled_lower": s_lo, "scaled_upper": s_up, "realised_lower": r_lo.mean(0),
              "energy_upper": en.mean(0), "convexity_lower": cv.mean(0), "loss": loss.mean(0),
              "population_lower": p_lo.mean(0), "sgd_rms": rms, "sgd_bound": rms_bound, "sgd_rate": rate,
              "sgd_head_change": np.sqrt(2.0) * np.linalg.norm(v_sgd, axis=-1).mean(0)}
    return row, curves


@_single_threaded
def sweep_update_rate(seed: int, n_instances: int, *, steps: int = 40, repeats: int = 16,
                      ranges: InstanceRanges | None = None, eps1: float = 0.05, eps2: float = 0.05,
                      mutate: float = 1.0):
    """The update-rate sweep: a DataFrame with one row per random instance (see
    :func:`update_rate_instance`; ``mutate`` < 1 only in the mutation tests).

    Used in: `book/update_rate.md`.
    """
    import pandas as pd

    out = _run_sweep(update_rate_instance, ranges or InstanceRanges(), seed, n_instances, "update-rate sweep",
                     steps=steps, repeats=repeats, eps1=eps1, eps2=eps2, mutate=mutate)
    return pd.DataFrame([row for row, _ in out])


@_single_threaded
def update_rate_curves(seed: int, *, d: int, n: int, beta_prime: float, lr: float, steps: int,
                       deltas: Sequence[float], family: str = "gaussian", repeats: int = 8,
                       center_norm: float = 0.5, trace_per_dim: float = 1.0, decay: float = 0.5,
                       eps1: float = 0.05, eps2: float = 0.05) -> list[dict[str, Any]]:
    """Mean ``||W_t - W_0||`` and every bound over steps, one entry per distinguishability in ``deltas``
    (same directions and spectra; only ``delta`` changes).

    Used in: `book/update_rate.md`.
    """
    n = _v.count("n", n, lo=4, even=True)  # two equal classes of n / 2: the bounds use this n
    d = _v.count("d", d, lo=1)
    steps = _v.count("steps", steps, lo=1)
    repeats = _v.count("repeats", repeats, lo=2)
    beta_prime, lr = _v.positive("beta_prime", beta_prime), _v.positive("lr", lr)
    if len(deltas) == 0:
        raise _v.InputError("deltas is empty: give at least one distinguishability")
    deltas = [_v.positive("delta", x) for x in deltas]
    base = {"d": d, "n": n, "center_norm": center_norm, "trace_per_dim": trace_per_dim, "decay": decay,
            "family": family, "beta_prime": beta_prime, "lr": lr}
    return _run_curves(update_rate_instance, seed, base, deltas, steps=steps, repeats=repeats, eps1=eps1, eps2=eps2)


def summarize_ratios(values) -> dict[str, float]:
    """``{"median", "worst", "best"}`` of a ratio column (worst = max for ratios that must stay <= 1).

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no finite ratios to summarise")
    return {"median": float(np.median(x)), "worst": float(x.max()), "best": float(x.min())}


def random_offset(rng, model: TwoClass, norm: float, cos: float) -> np.ndarray:
    """A reference offset ``a = W_0^T u`` of norm ``norm`` whose cosine with ``mu_+ - mu_-`` is ``cos``
    (negative: the reference model leans the wrong way).

    Used in: `book/accuracy.md`.
    """
    rng = _rng(rng)
    if not -1 <= cos <= 1:
        raise ValueError(f"cos must lie in [-1, 1], got {cos!r}")
    e_b = model.b / np.linalg.norm(model.b)
    x = rng.standard_normal(model.d)
    x -= (x @ e_b) * e_b
    e_p = x / np.linalg.norm(x)
    return norm * (cos * e_b + math.sqrt(1 - cos ** 2) * e_p)


@_single_threaded
def accuracy_instance(params: dict[str, Any], rng, *, steps: int, repeats: int, eps: float = 0.1,
                      mutate: float = 1.0):
    """Run one random instance of the accuracy sweep. ``params`` adds to :class:`InstanceRanges`'s keys
    ``p_plus`` (class balance), ``a_rel`` and ``a_cos`` (the offset's norm, in units of
    ``2 / (beta ||mu_+ - mu_-||)``, where its margin matches a DPO margin of order 1, and its cosine
    with ``mu_+ - mu_-``) and ``lr_frac``: the step is
    ``lr_frac`` times the largest step the condition ``kappa <= 1`` allows on average
    (``2 / (beta^2 E M2)``). Returns ``(row, curves)``. ``mutate`` < 1 moves every headline bound in the
    direction of violation before it is checked (:func:`mutate_bound`; for the mutation tests).

    Used in: `book/accuracy.md`.
    """
    d, n = params["d"], params["n"]
    model = _model_from(params, rng)
    beta = params["beta_prime"] / math.sqrt(d)
    n_plus = min(max(int(round(params["p_plus"] * n)), 2), n - 2)
    pi = {+1: n_plus / n, -1: (n - n_plus) / n}
    m2 = sum(pi[j] * (c.mean @ c.mean + c.trace) for j, c in model.classes())
    lr = params["lr_frac"] * 2.0 / (beta ** 2 * m2)
    a = random_offset(rng, model, params["a_rel"] * 2.0 / (beta * model.distinguishability), params["a_cos"])
    problem = AccuracyProblem(model, a, n_plus, n - n_plus, beta, lr)
    H, s = model.sample(rng, n_plus, n - n_plus, repeats)
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)
    t = np.arange(steps + 1, dtype=np.float64)
    st = sample_statistics(H, s)
    kap = kappa_of(lr, beta, st["G_norm"])
    ok = kap <= 1.0  # the step condition, per run
    loss = dpo_loss_from_v(v, H, s, beta)  # (R, T+1)
    theta = decision_direction(a, v)
    acc = linear_accuracy(theta, H, s)
    acc_r = linear_accuracy(v, H, s)
    # first step: theta_1 = a + lr beta m_hat exactly; its fresh error obeys the tail lemma
    theta1 = a + lr * beta * st["m_hat"]
    first_exact = float(np.max(np.abs(theta[:, 1] - theta1)) / max(np.max(np.abs(theta1)), 1e-300))
    viol_lemma = excess(population_error(model, theta[:, 1], pi), lemma_error_bound(model, theta[:, 1], pi))
    # (i) deterministic: error <= loss-based bound, on every run and step
    viol_reward = excess(1 - acc_r, np.minimum(loss / LN2, 1.0))
    viol_official = excess(1 - acc, realised_error_bound(loss, beta=beta, a=a, H=H, s=s))
    # (ii) deterministic under kappa <= 1: L_S(v_t) <= L_S(u_t) + ||u_t||^2 / (lr t)
    u, _ = comparator_choice(problem, t)
    lu = dpo_loss_from_v(u[None], H, s, beta)  # (R, T+1): L_S(u_t)
    slack = lu + np.sum(u ** 2, -1) / (lr * np.where(t > 0, t, np.inf))
    sel = ok[:, None] & (t > 0)
    viol_comp = excess(loss[sel], np.broadcast_to(slack, loss.shape)[sel]) if sel.any() else -np.inf
    # (iii) expectations (Monte Carlo, 5 standard errors)
    b_loss = expected_loss_bound(problem, t)
    b_off = expected_error_bound(problem, t, "official")
    b_rew = expected_error_bound(problem, t, "reward")

    def mean_se(x):
        return x.mean(0), (x.std(0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros(x.shape[1]))

    ml, sl = mean_se(loss * ok[:, None])
    me, se = mean_se((1 - acc) * ok[:, None])
    mr, sr = mean_se((1 - acc_r) * ok[:, None])
    # (iv) probability: failure frequency of the eps-bound on the loss, per step
    b_prob = expected_loss_bound(problem, t, eps=eps)
    fail = np.mean(ok[:, None] & (loss > b_prob * (1 + FP_RTOL)), axis=0)
    # first-order prediction of the decision direction (population m) and its tail-lemma accuracy
    fo = first_order_direction(problem, t)
    T = steps
    # the headline guarantees: decision boundary (before training), comparator loss (before training,
    # kappa <= 1) and the loss route (after training, from the measured loss)
    rho = remainder_bound(t[None], lr=lr, beta=beta, mhat_norm=np.linalg.norm(st["m_hat"], axis=-1)[:, None],
                          G_norm=st["G_norm"][:, None], M1=st["M1"][:, None])
    g_bd = boundary_guarantee(a, st["m_hat"], H, s, t, lr=lr, beta=beta, rho=rho)
    comp = realised_comparator_loss(H, s, t, beta=beta, lr=lr)
    g_cmp = np.where(ok[:, None], 1.0 - realised_error_bound(comp, beta=beta, a=a, H=H, s=s), 0.0)
    g_post = 1.0 - realised_error_bound(loss, beta=beta, a=a, H=H, s=s)
    g_prior = np.maximum(g_bd, g_cmp)
    g_post = np.maximum(g_bd, g_post)
    comp_ok = np.where(ok[:, None], comp, np.inf)
    # the guarantee at the horizon it picks for itself (before training): t* = argmax_t g_bd(t), t >= 1
    t_star, g_hor = guarantee_horizon(g_bd, t_min=2)  # t = 1 is exact by construction (rho_1 = 0)
    acc_star = acc[np.arange(acc.shape[0]), t_star]
    g_bd_cs = boundary_guarantee(a, st["m_hat"], H, s, t, lr=lr, beta=beta, rho=rho, sharp=False)
    b_unc = unconditional_error_bound(problem, t)
    mu_, su_ = mean_se(1 - acc)
    row = dict(params)
    row.update({
        "lr": lr, "beta": beta, "alpha": model.alpha, "c_n": model.c_n, "c_v": model.c_v, "n_plus": n_plus,
        "a_norm": float(np.linalg.norm(a)), "kappa_max": float(kap.max()), "frac_step_ok": float(ok.mean()),
        "first_step_rel_err": first_exact, "viol_lemma": viol_lemma,
        "viol_reward": viol_reward, "viol_official": viol_official, "viol_comparator": viol_comp,
        # t >= 1 only: at t = 0 the boundary guarantee is the reference accuracy itself
        "viol_guarantee_prior": excess(acc[:, 1:], mutate_bound(g_prior[:, 1:], "lower", mutate), upper=False),
        "viol_guarantee_post": excess(acc[:, 1:], mutate_bound(g_post[:, 1:], "lower", mutate), upper=False),
        "viol_loss_prior": excess(loss[:, 1:], mutate_bound(comp_ok[:, 1:], "upper", mutate)),
        "viol_guarantee_horizon": excess(acc_star, mutate_bound(g_hor, "lower", mutate), upper=False),
        "t_star_median": float(np.median(t_star)), "guarantee_horizon": float(g_hor.mean()),
        "certified_gain": float(np.median(np.where(acc[:, T] > acc[:, 0], (g_hor - acc[:, 0]) / np.maximum(acc[:, T] - acc[:, 0], 1e-12), np.nan))) if np.any(acc[:, T] > acc[:, 0]) else float("nan"),
        "acc_star": float(acc_star.mean()), "boundary_cs_best": float(g_bd_cs[:, 1:].max(1).mean()),
        "boundary_cs_T": float(g_bd_cs[:, T].mean()),
        "phi_exceeds_T": float(np.mean(phi(kap, T) >= T)),
        "mc_unconditional_margin": mc_margin(b_unc, mu_, su_),
        "p_kappa_bound": kappa_tail_bound(problem),
        "unconditional_nonvacuous": float(b_unc[T] < 1),
        "guarantee_prior_T": float(g_prior[:, T].mean()), "guarantee_post_T": float(g_post[:, T].mean()),
        "boundary_T": float(g_bd[:, T].mean()), "boundary_best": float(g_bd.max(1).mean()),
        "mc_loss_margin": mc_margin(b_loss, ml, sl),
        "mc_official_margin": mc_margin(b_off, me, se),
        "mc_reward_margin": mc_margin(b_rew, mr, sr),
        "prob_fail_max": float(fail.max()),
        "prob_fail_allowed": float(eps + 5 * math.sqrt(eps * (1 - eps) / repeats)),
        "acc_0": float(acc.mean(0)[0]), "acc_T": float(acc.mean(0)[T]), "reward_acc_T": float(acc_r.mean(0)[T]),
        "loss_T": float(loss.mean(0)[T]),
        "bound_acc_T": float(1 - b_off[T]), "bound_reward_acc_T": float(1 - b_rew[T]),
        "bound_loss_T": float(b_loss[T]),
        # tightness at the last step: measured / bound (<= 1 when the bound holds)
        "ratio_loss": float(ml[T] / b_loss[T]),
        "ratio_error_official": float(me[T] / b_off[T]),
        "ratio_error_reward": float(mr[T] / b_rew[T]),
    })
    accT = acc[:, T]
    row.update(_headline("guarantee_prior", accT, g_prior[:, T], "lower", g_prior[:, T] > 0))
    row.update(_headline("guarantee_horizon", acc_star, g_hor, "lower", g_hor > 0))
    row.update(_headline("guarantee_post", accT, g_post[:, T], "lower", g_post[:, T] > 0))
    row.update(_headline("loss_prior", loss[:, T], comp_ok[:, T], "upper", comp_ok[:, T] < LN2 * (1 - FP_RTOL)))
    curves = {"t": t, "loss": ml, "error": me, "error_reward": mr, "bound_loss": b_loss,
              "bound_error": b_off, "bound_error_reward": b_rew, "bound_loss_prob": b_prob,
              "first_order_error": population_error(model, fo, pi),
              "first_order_lemma": lemma_error_bound(model, fo, pi),
              "fresh_error": population_error(model, theta, pi).mean(0),
              "accuracy": acc.mean(0), "guarantee_boundary": g_bd.mean(0), "guarantee_comparator": g_cmp.mean(0),
              "guarantee_prior": g_prior.mean(0), "guarantee_post": g_post.mean(0),
              "loss_prior": np.where(ok[:, None], comp, LN2).mean(0), "bound_error_unconditional": b_unc}
    return row, curves


@dataclass(frozen=True)
class AccuracyRanges(InstanceRanges):
    """:class:`InstanceRanges` plus the class balance, the reference offset and the step as a fraction of
    the step condition's limit.

    Used in: `book/accuracy.md`.
    """

    delta_range: tuple[float, float] = (0.2, 3.0)
    p_plus_range: tuple[float, float] = (0.3, 0.7)
    a_rel_range: tuple[float, float] = (0.0, 1.0)
    a_cos_range: tuple[float, float] = (-0.8, 0.8)
    lr_frac_range: tuple[float, float] = (0.05, 0.9)

    def draw(self, rng) -> dict[str, Any]:
        p = super().draw(rng)
        p.pop("lr")
        p.update(p_plus=float(rng.uniform(*self.p_plus_range)), a_rel=float(rng.uniform(*self.a_rel_range)),
                 a_cos=float(rng.uniform(*self.a_cos_range)), lr_frac=_loguniform(rng, *self.lr_frac_range))
        return p


@_single_threaded
def sweep_accuracy(seed: int, n_instances: int, *, steps: int = 100, repeats: int = 16,
                   ranges: AccuracyRanges | None = None, mutate: float = 1.0):
    """The accuracy sweep: a DataFrame with one row per random instance (see :func:`accuracy_instance`).

    Used in: `book/accuracy.md`.
    """
    import pandas as pd

    out = _run_sweep(accuracy_instance, ranges or AccuracyRanges(), seed, n_instances, "accuracy sweep",
                     steps=steps, repeats=repeats, mutate=mutate)
    return pd.DataFrame([row for row, _ in out])


def make_behaviours(rng, d: int, deltas: Sequence[float], *, cos: Sequence[float] | float = 0.0,
                    center_norm: float = 0.5, trace_per_dim: float = 1.0, decay: float = 0.5,
                    family: str = "gaussian") -> list[TwoClass]:
    """K behaviours in one embedding space: behaviour i has ``||b_i|| = deltas[i] sqrt(d)`` and its
    ``b_i`` has cosine ``cos[i]`` with a shared unit direction (so the behaviours can help or compete),
    and all share one common-mean direction.

    Used in: `book/priority.md`.
    """
    rng = _rng(rng)
    K = len(deltas)
    if K < 2:
        raise ValueError(f"need at least two behaviours, got {K}")
    cos = [float(cos)] * K if np.ndim(cos) == 0 else [float(c) for c in cos]
    if len(cos) != K or any(not -1 <= c <= 1 for c in cos):
        raise ValueError(f"cos must be one value or {K} values in [-1, 1], got {cos!r}")
    e0 = random_unit(rng, d)
    ec = random_unit(rng, d)
    out = []
    for delta, c in zip(deltas, cos):
        x = rng.standard_normal(d)
        x -= (x @ e0) * e0
        b_dir = c * e0 + math.sqrt(1 - c ** 2) * x / np.linalg.norm(x)
        out.append(make_two_class(rng, d, delta=delta, center_norm=center_norm, trace_per_dim=trace_per_dim,
                                  decay=decay, family=family, b_dir=b_dir, center_dir=ec))
    return out


@_single_threaded
def priority_run(behaviours: Sequence[TwoClass], rng, *, n_per, beta: float, lr: float, steps: int,
                 repeats: int) -> dict[str, np.ndarray]:
    """Joint full-batch DPO on K behaviours that share the Yes/No tokens (``n_per`` examples each, or a
    sequence of K sizes; each behaviour balanced), ``repeats`` independent training sets. Returns
    per-behaviour measured margin changes and losses, the empirical ``b_i``, the weights ``w_i = n_i / n``,
    ``b_bar = sum_i w_i b_i``, ``G_i`` norms and quadratic forms, and every prediction and bound of our
    priority theorem, all with shape ``(R, T+1, K)`` (or ``(R, K)``, ``(R, K, d)``).

    Used in: `book/priority.md`.
    """
    rng = _rng(rng)
    K = len(behaviours)
    sizes = [n_per] * K if np.ndim(n_per) == 0 else list(n_per)
    if len(sizes) != K:
        raise ValueError(f"n_per must be one size or {K} sizes, got {n_per!r}")
    for n_i in sizes:
        if int(n_i) != n_i or n_i < 2 or n_i % 2:
            raise ValueError(f"n_per must be an even number >= 2 (balanced behaviours), got {n_i}")
    sizes = [int(n_i) for n_i in sizes]
    weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)
    Hs, ss = [], []
    for m, n_i in zip(behaviours, sizes):
        H, s = m.sample(rng, n_i // 2, n_i // 2, repeats)
        Hs.append(H)
        ss.append(s)
    H = np.concatenate(Hs, axis=1)
    s = np.concatenate(ss)
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)  # (R, T+1, d)
    t = np.arange(steps + 1, dtype=np.float64)
    b = np.stack([(Hi[:, si > 0].mean(1) - Hi[:, si < 0].mean(1)) for Hi, si in zip(Hs, ss)], 1)  # (R, K, d)
    bbar = np.einsum("k,rkd->rd", weights, b)  # weights w_i = n_i / n
    G = np.matmul(np.swapaxes(H, 1, 2), H) / H.shape[1]
    G_norm = np.linalg.eigvalsh(G)[:, -1]
    Gi = [np.matmul(np.swapaxes(Hi, 1, 2), Hi) / Hi.shape[1] for Hi in Hs]
    Gi_norm = np.stack([np.linalg.eigvalsh(g)[:, -1] for g in Gi], 1)  # (R, K)
    a_margin = []
    loss = []
    for Hi, si in zip(Hs, ss):
        z = np.einsum("rnd,rtd->rtn", Hi, v)
        a_margin.append(np.mean(si * 2 * z, -1))  # change of the mean signed log-odds margin
        loss.append(dpo_loss_from_v(v, Hi, si, beta))
    dM = np.stack(a_margin, -1)  # (R, T+1, K)
    L = np.stack(loss, -1)
    inner = np.einsum("rd,rkd->rk", bbar, b)  # <b_bar, b_i>
    pred = lr * beta * t[None, :, None] / 4.0 * inner[:, None, :]
    nb = np.linalg.norm(bbar, axis=-1)
    rho = remainder_bound(t[None, :], lr=lr, beta=beta, mhat_norm=nb[:, None] / 2.0, G_norm=G_norm[:, None])
    band = rho[:, :, None] * np.linalg.norm(b, axis=-1)[:, None, :]
    quad = np.stack([np.einsum("rtd,rde,rte->rt", v, g, v) for g in Gi], -1)
    lin = LN2 - 0.5 * beta * np.einsum("rtd,rkd->rtk", v, b)
    return {"t": t, "v": v, "b": b, "bbar": bbar, "weights": weights, "G_norm": G_norm, "Gi_norm": Gi_norm,
            "Gi_bbar": np.stack([np.einsum("rd,rde,re->r", bbar, g, bbar) for g in Gi], 1),
            "Gi": np.stack(Gi, 1), "sizes": np.asarray(sizes),
            "margin_change": dM, "loss": L, "pred": pred, "band": band, "rho": rho,
            "loss_lower": lin, "loss_upper": lin + 0.5 * beta ** 2 * quad,
            "priority": inner / nb[:, None], "inner": inner}


@_single_threaded
def priority_instance(params: dict[str, Any], rng, *, steps: int, repeats: int, mutate: float = 1.0):
    """Run one random instance of the priority sweep (K behaviours, their sizes, distinguishabilities and
    alignments drawn at random). Returns ``(row, first_step)``: the worst violation of every statement
    of our priority theorem, tightness ratios, the headline columns ``tight_<name>`` / ``nonvac_<name>``,
    and the first-step rows (measured margin change, predicted, and for equal-size pairs the gap and the
    measured slowdown). ``mutate`` < 1 moves every headline bound in the direction of violation before it
    is checked (:func:`mutate_bound`).

    Used in: `book/priority.md`.
    """
    d = params["d"]
    beta = params["beta_prime"] / math.sqrt(d)
    lr = params["lr"]
    beh = make_behaviours(rng, d, params["deltas"], cos=params["cos"], center_norm=params["center_norm"],
                          trace_per_dim=params["trace_per_dim"], decay=params["decay"], family=params["family"])
    sizes = params.get("sizes") or params["n_per"]
    out = priority_run(beh, rng, n_per=sizes, beta=beta, lr=lr, steps=steps, repeats=repeats)
    K = len(beh)
    t = out["t"]
    w = out["weights"]
    equal = bool(np.all(out["sizes"] == out["sizes"][0]))
    # headline 1: the official gap is at most the first-step relative slowdown (two behaviours, equal sizes)
    gap_rows, g_viol, g_t, g_nv = [], -np.inf, [], []
    if K == 2 and equal:
        for r in range(repeats):
            nb = np.linalg.norm(out["b"][r], axis=-1)
            i = int(np.argmax(nb))
            j = 1 - i
            gap = priority_gap(out["b"][r, i], out["b"][r, j])
            dM = out["margin_change"][r, 1]
            slow = 1.0 - dM[j] / dM[i]  # measured
            g_viol = max(g_viol, excess(slow, mutate_bound(gap, "lower", mutate), upper=False))
            g_t.append((slow, gap))
            g_nv.append(gap > 0)
            gap_rows.append((gap, slow))
    # headline 2: the first-step loss order, every ordered pair the first-order term puts ahead
    o_viol, o_t, o_nv = -np.inf, [], []
    v1 = out["v"][:, 1]
    for r in range(repeats):
        for i in range(K):
            for j in range(K):
                if i == j or not out["bbar"][r] @ (out["b"][r, i] - out["b"][r, j]) > 0:
                    continue
                lb = first_step_order_bound(v1[r], beta=beta, b_i=out["b"][r, i], b_j=out["b"][r, j],
                                            G_i=out["Gi"][r, i])
                diff = float(out["loss"][r, 1, j] - out["loss"][r, 1, i])
                o_viol = max(o_viol, excess(diff, mutate_bound(lb, "lower", mutate), upper=False))
                o_t.append((diff, lb))
                o_nv.append(lb > 0)
    err = np.abs(out["margin_change"] - out["pred"])
    scale = np.maximum(np.abs(out["pred"][:, 1]).max(), 1e-300)
    # the loss ordering bound for every ordered pair (i, j)
    order_viol, order_ratio, first_ok, first_claims, rise_viol = -np.inf, [], 0, 0, -np.inf
    for r in range(repeats):
        for i in range(K):
            for j in range(K):
                if i == j:
                    continue
                lb = loss_order_margin(t, lr=lr, beta=beta, bbar=out["bbar"][r], b_i=out["b"][r, i],
                                       b_j=out["b"][r, j], G_i_norm=out["Gi_norm"][r, i], G_norm=out["G_norm"][r])
                diff = out["loss"][r, :, j] - out["loss"][r, :, i]
                order_viol = max(order_viol, excess(lb[1:], diff[1:]))
                pos = lb[1:] > 0
                if pos.any():
                    order_ratio.append(float(np.median(lb[1:][pos] / diff[1:][pos])))
                # first step: <b_bar, b_i - b_j> > (lr beta^2 / 4) b_bar^T G_i b_bar  =>  L_i(1) < L_j(1)
                if out["inner"][r, i] - out["inner"][r, j] > lr * beta ** 2 / 4 * out["Gi_bbar"][r, i]:
                    first_claims += 1
                    first_ok += int(out["loss"][r, 1, i] < out["loss"][r, 1, j])
        for j in range(K):
            if out["priority"][r, j] < 0:
                rise_viol = max(rise_viol, excess(LN2, out["loss"][r, 1, j]))
    sid = []
    for r in range(repeats):
        for i in range(K):
            for j in range(i + 1, K):
                lhs, rhs = sign_identity(out["b"][r, i], out["b"][r, j])
                sid.append(abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300))
    row = {k: v for k, v in params.items() if k not in ("deltas", "cos", "sizes")}
    row.update({
        "K": K, "beta": beta,
        "first_step_rel_err": float(err[:, 1].max() / scale),
        "viol_margin_band": excess(err[:, 1:], out["band"][:, 1:] + 1e-12 * scale),
        "viol_loss_lower": excess(out["loss_lower"], out["loss"]),
        "viol_loss_upper": excess(out["loss"], out["loss_upper"]),
        "viol_loss_order": order_viol,
        "first_order_claims": first_claims, "first_order_held": first_ok,
        "viol_loss_rise": rise_viol,
        "sign_identity_rel_err": float(max(sid)),
        "n_rise": int(np.sum(out["priority"] < 0)),
        "ratio_loss_order": float(np.median(order_ratio)) if order_ratio else float("nan"),
        "rel_pred_err_T": float(np.median(err[:, -1] / np.maximum(np.abs(out["pred"][:, -1]), 1e-300))),
        "band_use_T": float(np.max(err[:, -1] / np.maximum(out["band"][:, -1], 1e-300))),
        "equal_sizes": equal, "w_min": float(w.min()),
        "viol_gap_slowdown": g_viol, "viol_first_step_order": o_viol,
    })
    if g_t:
        m_, b_ = np.array(g_t).T
        row.update(_headline("gap_slowdown", m_, b_, "lower", np.array(g_nv)))
    else:
        row.update(_headline("gap_slowdown", [], [], "lower", np.array([], dtype=bool)))
    if o_t:
        m_, b_ = np.array(o_t).T
        row.update(_headline("first_step_order", m_, b_, "lower", np.array(o_nv)))
    else:
        row.update(_headline("first_step_order", [], [], "lower", np.array([], dtype=bool)))
    first = np.stack([out["margin_change"][:, 1].ravel(), out["pred"][:, 1].ravel()], -1)
    return row, {"first": first, "gap": np.array(gap_rows).reshape(-1, 2)}


@dataclass(frozen=True)
class PriorityRanges(InstanceRanges):
    """:class:`InstanceRanges` for several behaviours: their number, per-behaviour size and alignments.

    Used in: `book/priority.md`.
    """

    n_behaviours: tuple[int, ...] = (2, 2, 3, 4)
    cos_range: tuple[float, float] = (-0.6, 0.95)
    unequal_share: float = 0.5
    size_ratio_range: tuple[float, float] = (1.0 / 9.0, 9.0)

    def draw(self, rng) -> dict[str, Any]:
        p = super().draw(rng)
        K = int(rng.choice(self.n_behaviours))
        n_per = max(2, 2 * int(round(p.pop("n") / K / 2)))
        p.pop("delta")
        p.update(n_per=n_per, deltas=[_loguniform(rng, *self.delta_range) for _ in range(K)],
                 cos=[float(rng.uniform(*self.cos_range)) for _ in range(K)])
        # half of the instances mix behaviours of unequal sizes (the persona files have 518 to 1000 rows)
        if rng.random() < self.unequal_share:
            p["sizes"] = [max(2, 2 * int(round(n_per * _loguniform(rng, *self.size_ratio_range) ** 0.5 / 2)))
                          for _ in range(K)]
        else:
            p["sizes"] = None
        return p


@_single_threaded
def sweep_priority(seed: int, n_instances: int, *, steps: int = 40, repeats: int = 8,
                   ranges: PriorityRanges | None = None, mutate: float = 1.0):
    """The priority sweep: ``(DataFrame of instances, array of first-step (measured, predicted) margin
    changes, array of (gap, measured slowdown) of the equal-size pairs)``.

    Used in: `book/priority.md`.
    """
    import pandas as pd

    out = _run_sweep(priority_instance, ranges or PriorityRanges(), seed, n_instances, "priority sweep",
                     steps=steps, repeats=repeats, mutate=mutate)
    return (pd.DataFrame([row for row, _ in out]), np.concatenate([x["first"] for _, x in out]),
            np.concatenate([x["gap"] for _, x in out]))


@_single_threaded
def accuracy_curves(seed: int, *, d: int, n: int, beta_prime: float, lr_frac: float, steps: int,
                    deltas: Sequence[float], family: str = "gaussian", repeats: int = 8, p_plus: float = 0.5,
                    a_rel: float = 0.5, a_cos: float = -0.5, center_norm: float = 0.5, trace_per_dim: float = 0.5,
                    decay: float = 0.5) -> list[dict[str, Any]]:
    """Mean training loss and errors over steps, with our bounds, one entry per distinguishability in
    ``deltas`` (see :func:`accuracy_instance` for the parameters). Each entry also holds the instance's
    ``row``.

    Used in: `book/accuracy.md`.
    """
    base = {"d": d, "n": n, "center_norm": center_norm, "trace_per_dim": trace_per_dim, "decay": decay,
            "family": family, "beta_prime": beta_prime, "lr_frac": lr_frac, "p_plus": p_plus, "a_rel": a_rel,
            "a_cos": a_cos}
    return _run_curves(accuracy_instance, seed, base, deltas, steps=steps, repeats=repeats)


@_single_threaded
def priority_pair(seed: int, *, d: int, n_per: int, beta_prime: float, lr: float, steps: int,
                  deltas: Sequence[float], cos: Sequence[float], repeats: int = 8, family: str = "gaussian",
                  center_norm: float = 0.5, trace_per_dim: float = 1.0, decay: float = 0.5) -> dict[str, Any]:
    """Two (or more) behaviours trained jointly: mean curves over ``repeats`` training sets of each
    behaviour's margin change and loss with our predictions and bounds, and the empirical
    distinguishabilities, priority levels and gap (first repeat's and mean).

    Used in: `book/priority.md`.
    """
    rng = np.random.default_rng(int(seed))
    beta = beta_prime / math.sqrt(d)
    beh = make_behaviours(rng, d, deltas, cos=cos, center_norm=center_norm, trace_per_dim=trace_per_dim,
                          decay=decay, family=family)
    out = priority_run(beh, rng, n_per=n_per, beta=beta, lr=lr, steps=steps, repeats=repeats)
    b = out["b"]
    gaps = [priority_gap(b[r, 0], b[r, 1]) for r in range(repeats)] if len(deltas) == 2 else [float("nan")]
    res = {k: out[k].mean(0) for k in ("margin_change", "pred", "band", "loss", "loss_lower", "loss_upper")}
    res.update(t=out["t"], dist=np.linalg.norm(b, axis=-1).mean(0), priority=out["priority"].mean(0),
               gap=float(np.mean(gaps)), beta=beta,
               first_step_err=float(np.max(np.abs(out["margin_change"][:, 1] - out["pred"][:, 1]))),
               rise_count=[int(np.sum(out["loss"][:, 1, k] > LN2)) for k in range(len(deltas))], repeats=repeats)
    if len(deltas) == 2:
        # the step above which item 3's first-step guarantee (more distinguishable falls first) is lost
        hi = int(np.argmax(res["dist"]))
        lo = 1 - hi
        num = 4 * np.einsum("rd,rd->r", out["bbar"], b[:, hi] - b[:, lo])  # 4 <b_bar, b_hi - b_lo>
        res["lr_threshold"] = float(np.min(num / (beta ** 2 * out["Gi_bbar"][:, hi])))
        res["lr_limit"] = float(np.min(2.0 / (beta ** 2 * out["G_norm"])))
    return res
