"""The machinery of the sweeps over random instances: the ranges an instance is drawn from, child seeds,
and the loops that run one chapter's instance function over a sweep or over a row of
distinguishabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .families import FAMILIES, make_two_class, TwoClass


def _seeds(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(int(n))]


def loguniform(rng, lo, hi):
    """A number drawn log-uniformly from ``[lo, hi]``."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


@dataclass(frozen=True)
class InstanceRanges:
    """Ranges of a random instance of the sweeps (the paper's scaling: ``beta = beta' / sqrt(d)``)."""

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
        n = 2 * int(round(loguniform(rng, self.n_range[0], n_hi) / 2))
        return {
            "d": d, "n": n,
            "delta": loguniform(rng, *self.delta_range),
            "center_norm": float(rng.uniform(*self.center_range)),
            "trace_per_dim": loguniform(rng, *self.trace_range),
            "decay": float(rng.uniform(*self.decay_range)),
            "family": str(rng.choice(self.families)),
            "beta_prime": loguniform(rng, *self.beta_prime_range),
            "lr": loguniform(rng, *self.lr_range),
        }


def model_from(params: dict[str, Any], rng, **kw) -> TwoClass:
    """The :class:`TwoClass` of a drawn instance (the ``d``, ``delta``, ``center_norm``, ``trace_per_dim``,
    ``decay`` and ``family`` of ``params``; ``kw`` go to :func:`make_two_class`)."""
    return make_two_class(rng, params["d"], delta=params["delta"], center_norm=params["center_norm"],
                          trace_per_dim=params["trace_per_dim"], decay=params["decay"],
                          family=params["family"], **kw)


def _progress(iterable, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=total < 20)


def run_sweep(instance, ranges: "InstanceRanges", seed: int, n_instances: int, desc: str, **kw) -> list:
    """``instance(params, rng, **kw)`` on ``n_instances`` random instances, each with its own child seed."""
    return [instance(ranges.draw(rng), rng, **kw) for rng in _progress(_seeds(seed, n_instances), n_instances, desc)]


def run_curves(instance, seed: int, base: dict[str, Any], deltas: Sequence[float], **kw) -> list[dict[str, Any]]:
    """``instance`` once per distinguishability in ``deltas`` (the rest of the parameters in ``base``), each
    with the seed ``[seed, k]``; returns the curves with the instance's row under ``"row"``."""
    out = []
    for k, delta in enumerate(deltas):
        row, curves = instance({**base, "delta": float(delta)}, np.random.default_rng([int(seed), k]), **kw)
        curves.update(row=row)
        out.append(curves)
    return out
