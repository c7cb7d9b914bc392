"""Tail families and samplers: class-conditional embedding distributions that are α-subexponential in our
sense (every one-dimensional projection ``<e, h - mu>`` has ``P(|.| >= x) <= 2 exp(-x / alpha)``), with a
known, minimal α and closed-form projected CDFs: Gaussian, Laplace (an exponential scale mixture of
Gaussians, so every projection is exactly Laplace) and a heavier two-scale Laplace mixture.
:func:`make_two_class` sets the distinguishability ``||mu_+ - mu_-||`` exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import as_rng, LN2, require_nonneg, require_positive, require_prob


FAMILIES: tuple[str, ...] = ("gaussian", "laplace", "mixture")


def _family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown tail family {family!r}; valid families: {list(FAMILIES)}")
    return family


@functools.lru_cache(maxsize=1)
def gaussian_tail_constant() -> float:
    """``a_G = sup_{z>0} z / (-ln Q(z))`` (Q the standard normal tail), about 0.5568.

    ``N(0, s^2)`` satisfies ``P(|Y| >= x) <= 2 exp(-x / alpha)`` exactly when ``alpha >= a_G s``.
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
        require_prob("q", self.q)
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
        rng = as_rng(rng)
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
    """A preference data distribution: positive (Yes preferred, s = +1) and negative (s = -1) classes."""

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
        rng = as_rng(rng)
        lead = () if repeats is None else (int(repeats),)
        hp = self.plus.sample(rng, lead + (int(n_plus),))
        hm = self.minus.sample(rng, lead + (int(n_minus),))
        h = np.concatenate([hp, hm], axis=-2)
        s = np.concatenate([np.ones(int(n_plus)), -np.ones(int(n_minus))])
        return h, s


def random_orthogonal(rng, d: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    rng = as_rng(rng)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_unit(rng, d: int) -> np.ndarray:
    """A uniformly random unit vector in ``R^d``."""
    rng = as_rng(rng)
    x = rng.standard_normal(d)
    return x / np.linalg.norm(x)


def make_two_class(rng, d: int, *, delta: float, center_norm: float = 0.5, trace_per_dim: float = 1.0,
                   decay: float = 0.5, family: str = "gaussian", q: float = 0.1, kappa: float = 4.0,
                   b_dir: np.ndarray | None = None, center_dir: np.ndarray | None = None) -> TwoClass:
    """A :class:`TwoClass` with exactly ``||mu_+ - mu_-|| = delta sqrt(d)``.

    ``mu_+- = c +- b/2`` with ``||c|| = center_norm sqrt(d)`` (the common mean); each class has its own
    random rotation of the spectrum ``lambda_i ~ i^(-decay)`` scaled to ``Tr(Sigma) = trace_per_dim d``.
    ``b_dir`` and ``center_dir`` (unit vectors) fix the directions; random otherwise.
    """
    rng = as_rng(rng)
    d = int(d)
    if d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    require_nonneg("delta", delta)
    require_nonneg("center_norm", center_norm)
    require_positive("trace_per_dim", trace_per_dim)
    require_nonneg("decay", decay)
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
    """
    import pandas as pd

    rng = as_rng(rng)
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
