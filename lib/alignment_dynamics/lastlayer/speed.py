"""Learning-speed measures of single-behaviour runs and the update-rate theory drawn over them: speed
tables and slopes of ‖W_t − W_0‖, the first step's size and its ordering by distinguishability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .. import stats
from .checks import LN2, DynamicsError
from .features import BehaviorSet
from .runs import Runs


def change_slope(head_change: Any) -> np.ndarray:
    """The least-squares slope through the origin of ‖W_t − W_0‖ against t: Σ t c_t / Σ t².
    """
    c = np.asarray(head_change, dtype=np.float64)
    if c.ndim < 1 or c.shape[-1] < 2:
        raise DynamicsError(f"head_change needs at least two steps, got shape {c.shape}")
    t = np.arange(c.shape[-1], dtype=np.float64)
    return (c * t).sum(-1) / (t * t).sum()


def speed_table(runs: Runs, *, k_early: int, level: float = 0.9):
    """Learning-speed measures per behaviour of single-behaviour runs, averaged over seeds.

    Columns: ``loss_drop_k`` and ``loss_drop_end`` (ln 2 minus the training loss after ``k_early`` and
    after all steps), ``steps_to_level`` (the median over seeds of the first step with training policy
    accuracy ≥ ``level``, counting a run that never reaches it as T + 1, so it ranks last),
    ``reached`` (share of seeds reaching it), ``acc_0`` and ``acc_gain`` (training policy accuracy at t = 0 and its gain by T), ``slope``
    (:func:`change_slope`), ``first_step`` (‖W_1 − W_0‖), one row per behaviour (group), for one
    learning rate.
    """
    import pandas as pd

    if runs.meta.get("K") != 1:
        raise DynamicsError("speed_table needs single-behaviour runs (groups of one)")
    if len(np.unique(runs.lr)) != 1:
        raise DynamicsError("speed_table needs runs at one learning rate; select them first")
    if not 0 < k_early <= runs.steps:
        raise DynamicsError(f"k_early must be in 1..{runs.steps}, got {k_early!r}")
    loss = runs.loss["train"][:, :, 0]
    acc = runs.policy_accuracy["train"][:, :, 0]
    steps = np.asarray(stats.first_reaching(acc, level), dtype=np.float64)
    per_run = pd.DataFrame({
        "group": runs.group,
        "loss_drop_k": LN2 - loss[:, k_early],
        "loss_drop_end": LN2 - loss[:, -1],
        "steps_to_level": np.minimum(steps, runs.steps + 1),
        "reached": np.isfinite(steps).astype(np.float64),
        "acc_0": acc[:, 0],
        "acc_gain": acc[:, -1] - acc[:, 0],
        "slope": change_slope(runs.head_change),
        "first_step": runs.head_change[:, 1],
    })
    agg = per_run.groupby("group").agg(
        loss_drop_k=("loss_drop_k", "mean"), loss_drop_end=("loss_drop_end", "mean"),
        steps_to_level=("steps_to_level", "median"),
        reached=("reached", "mean"),
        acc_0=("acc_0", "mean"), acc_gain=("acc_gain", "mean"), slope=("slope", "mean"),
        first_step=("first_step", "mean"))
    agg.index = pd.Index([runs.groups[g][0] for g in agg.index], name="behavior")
    return agg


# ---------------------------------------------------------------------------------------------------
# The update-rate theory over the runs; the first step
# ---------------------------------------------------------------------------------------------------

def update_rate_overlay(sets: Sequence[BehaviorSet], runs: Runs) -> dict[str, np.ndarray]:
    """The update-rate theory for single-behaviour runs, ``[R, T + 1]`` each (run r trains ``sets[group[r]]``).

    ``first_order``: √2 (ηβt/2)‖m̂‖ with m̂ = mean s h over the training pairs (the first-order term of
    the deterministic proposition, exact at t = 1 for a full batch); ``distinguishability``:
    √2 (ηβt/4)‖μ̂₊ − μ̂₋‖, the same for exactly balanced classes (the paper's quantity); ``bound``: the
    linear bound √2 ηβ M₁ t with M₁ the run's largest batch-mean ‖h‖, which holds for every t and every
    batch sequence. Also ``first_step_error``, the relative error of the exact first-step formula
    (computed from the first batch) against the measured ‖W_1 − W_0‖.
    """
    from ..theory import linear_upper_bound

    t = runs.t.astype(np.float64)
    R = runs.runs
    out = {k: np.zeros((R, t.shape[0])) for k in ("first_order", "distinguishability", "bound")}
    for r in range(R):
        bs = sets[runs.group[r]]
        if runs.groups[runs.group[r]] != (bs.behavior,):
            raise DynamicsError(f"run {r} trained {runs.groups[runs.group[r]]}, but the set given is {bs.behavior!r}")
        h, s = bs.part("train")
        m = (s[:, None] * h).mean(0)
        eb = runs.lr[r] * runs.beta[r]
        out["first_order"][r] = math.sqrt(2.0) * eb * t / 2.0 * np.linalg.norm(m)
        out["distinguishability"][r] = math.sqrt(2.0) * eb * t / 4.0 * np.linalg.norm(bs.b("train"))
        out["bound"][r] = linear_upper_bound(t, lr=runs.lr[r], beta=runs.beta[r], M1=runs.max_batch_norm[r])
    measured = runs.head_change[:, 1]
    out["first_step_error"] = np.abs(runs.first_step - measured) / np.maximum(measured, 1e-300)
    return out


@dataclass(frozen=True)
class FirstStepCheck:
    """Is the first step of ‖W_U − W_U(0)‖ ordered by distinguishability at a given batch?

    ``batch``: the batch used (the requested one, capped at the smallest training set); ``ratio``: the
    median over behaviours of the batch-imbalance / signal ratio of :func:`first_step_terms`;
    ``first``: the mean first-step head change of each behaviour over its runs; ``verdict``: the
    :func:`alignment_dynamics.verdicts.rank_order` test of ``first`` against ``distinguishability``.
    """

    batch: int
    ratio: float
    first: np.ndarray
    verdict: Any


def first_step_check(runs: "Runs", sets: dict, distinguishability: Sequence[float], batch_size: int, *,
                     seed: int = 0) -> FirstStepCheck:
    """The single-step ordering question on trained runs with one behaviour per group (``runs.groups``),
    their behaviour sets ``sets[name]`` and each behaviour's distinguishability, in group order.
    """
    from .. import verdicts

    names = [g[0] for g in runs.groups]
    if len(distinguishability) != len(names):
        raise DynamicsError(f"need one distinguishability per group ({len(names)}), got {len(distinguishability)}")
    batch = min(int(batch_size), min(sets[b].n_train for b in names))
    ratio = float(np.median([first_step_terms(sets[b], batch)["ratio"] for b in names]))
    first = np.array([runs.head_change[runs.group == i][:, 1].mean() for i in range(len(names))])
    verdict = verdicts.rank_order(np.asarray(distinguishability, dtype=float), first, seed=seed)
    return FirstStepCheck(batch, ratio, first, verdict)


def first_step_terms(bs: BehaviorSet, batch_size: int) -> dict[str, float]:
    """The parts of a first SGD step's squared size E‖m̂_B‖², over random batches B.

    With the class means of the training pairs, m̂_B = ½(μ̂₊ − μ̂₋) + (p_B − ½)(μ̂₊ + μ̂₋) plus the
    batch's within-class noise, where p_B is the batch's share of Yes-preferred pairs. Drawing B of n
    pairs without replacement, E p_B = p and Var p_B = p(1 − p)/B · (n − B)/(n − 1). Returns ``signal``
    = ¼‖μ̂₊ − μ̂₋‖², ``imbalance`` = E(p_B − ½)² ‖μ̂₊ + μ̂₋‖², ``cross`` = (p − ½)⟨μ̂₊ − μ̂₋, μ̂₊ + μ̂₋⟩,
    ``class_means`` = their sum (exact when every statement equals its class mean) and ``ratio`` =
    imbalance/signal.
    """
    h, s = bs.part("train")
    n = h.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= n:
        raise DynamicsError(f"batch_size must be an int in 1..{n}, got {batch_size!r}")
    p = float((s > 0).mean())
    var = p * (1 - p) / batch_size * ((n - batch_size) / (n - 1) if n > 1 else 0.0)
    plus, minus = h[s > 0].mean(0), h[s < 0].mean(0)
    b, c = plus - minus, plus + minus
    signal = 0.25 * float(b @ b)
    imbalance = (var + (p - 0.5) ** 2) * float(c @ c)
    cross = (p - 0.5) * float(b @ c)
    return {"signal": signal, "imbalance": imbalance, "cross": cross, "class_means": signal + imbalance + cross,
            "ratio": imbalance / signal if signal > 0 else math.inf}
