"""Prioritisation: groups of behaviours trained jointly, their predicted priorities, who is learned
first, the priority theorem over the measured margins, and the comparison of two pairs' priority gaps.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np

from .. import stats
from .checks import LN2, DynamicsError
from .features import BehaviorSet
from .runs import Runs, pooled_training

LEARNED_FIRST_METRICS = ("loss", "accuracy")


def random_groups(names: Sequence[str], size: int, count: int, *, seed: int) -> list[tuple[str, ...]]:
    """``count`` distinct random groups of ``size`` different behaviours (ordered as drawn).
    """
    names = list(names)
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= len(names):
        raise DynamicsError(f"size must be an int in 2..{len(names)}, got {size!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DynamicsError(f"count must be a positive int, got {count!r}")
    available = math.comb(len(names), size)
    if count > available:
        raise DynamicsError(f"only {available} distinct groups of {size} exist among {len(names)} behaviours")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), size]))
    seen, out = set(), []
    while len(out) < count:
        g = tuple(names[i] for i in rng.choice(len(names), size=size, replace=False))
        if frozenset(g) not in seen:
            seen.add(frozenset(g))
            out.append(g)
    return out


def group_priorities(group: Sequence[BehaviorSet], replicate: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The quantities of the priority theorem for a group trained jointly, from the training sets.

    ``b`` (K × d, b̂_i on each behaviour's training pairs), ``weights`` w_i = r_i n_i / Σ r_j n_j (the
    share of training pairs, after replication r), ``bbar`` = Σ w_i b̂_i, ``levels`` p_i = ⟨b̄, b̂_i⟩/‖b̄‖
    and ``inner`` ⟨b̄, b̂_i⟩. For two behaviours also ``gap``, the official priority gap of the first
    over the second (equal weights, :func:`alignment_dynamics.geometry.priority_gap`).
    """
    from ..geometry import priority_gap

    k = len(group)
    rep = [1] * k if replicate is None else list(replicate)
    b = np.stack([bs.b("train") for bs in group])
    n = np.array([bs.n_train * r for bs, r in zip(group, rep)], dtype=np.float64)
    w = n / n.sum()
    bbar = w @ b
    nb = float(np.linalg.norm(bbar))
    if not nb > 1e-12 * float(np.linalg.norm(b, axis=1).max()):
        raise DynamicsError("the behaviours' b vectors cancel (b̄ ≈ 0): priority levels are undefined")
    out = {"b": b, "weights": w, "bbar": bbar, "inner": b @ bbar, "levels": b @ bbar / nb}
    if k == 2:
        out["gap"] = np.array(priority_gap(b[0], b[1]))
    return out


def final_gains(runs: Runs, *, metric: str = "loss", part: str = "train") -> np.ndarray:
    """How much each behaviour of each run has been learned by the last step, ``[R, K]``.

    ``metric="loss"``: ln 2 − L_i(T), the drop of its DPO loss (every loss starts at ln 2);
    ``metric="accuracy"``: its policy-accuracy gain acc_i(T) − acc_i(0).
    """
    if metric not in LEARNED_FIRST_METRICS:
        raise DynamicsError(f"metric must be one of {list(LEARNED_FIRST_METRICS)}, got {metric!r}")
    if part not in ("train", "test"):
        raise DynamicsError(f"part must be 'train' or 'test', got {part!r}")
    if metric == "loss":
        return LN2 - runs.loss[part][:, -1, :]
    acc = runs.policy_accuracy[part]
    return acc[:, -1, :] - acc[:, 0, :]


def order_agreement(predicted: Any, measured: Any) -> dict[str, np.ndarray]:
    """Whether measured gains follow predicted priorities, per run (rows of K values each).

    ``top``: the behaviour with the highest prediction has the largest gain; ``order``: the whole
    order agrees; ``tau``: Kendall's τ between prediction and gain. Ties in the gains count as
    disagreement.
    """
    p = np.asarray(predicted, dtype=np.float64)
    g = np.asarray(measured, dtype=np.float64)
    if p.ndim != 2 or p.shape != g.shape or p.shape[1] < 2:
        raise DynamicsError(f"predicted and measured must both be [runs, K >= 2], got {p.shape} and {g.shape}")
    top = np.argmax(p, axis=1)
    top_ok = np.array([gi[t] > np.delete(gi, t).max() for gi, t in zip(g, top)])
    pairs = list(itertools.combinations(range(p.shape[1]), 2))
    conc = np.zeros(p.shape[0])
    for i, j in pairs:
        conc += np.sign(p[:, i] - p[:, j]) * np.sign(g[:, i] - g[:, j])
    tau = conc / len(pairs)
    return {"top": top_ok, "order": tau == 1.0, "tau": tau}


def priority_outcomes(groups: Sequence[Sequence[BehaviorSet]], runs: Runs):
    """Predicted priorities against measured learning, one row per group (gains averaged over seeds).

    Columns: ``members`` (names, in the group's order), ``levels`` (priority levels with the shares of
    training pairs as weights, :func:`group_priorities`), ``gains_loss`` and ``gains_accuracy``
    (:func:`final_gains` on the training sets, mean over the group's runs), and for each metric ``top_*``,
    ``order_*`` and ``tau_*`` (:func:`order_agreement` of levels and gains). For pairs also ``gap``
    (the official priority gap of the first over the second) and ``agree_*``: the sign of the gap
    matches which behaviour gained more (a zero gap or a tie counts as disagreement).
    """
    import pandas as pd

    if len(groups) != len(runs.groups):
        raise DynamicsError(f"got {len(groups)} groups for runs of {len(runs.groups)} groups")
    gains = {m: final_gains(runs, metric=m) for m in LEARNED_FIRST_METRICS}
    rows = []
    for gi, group in enumerate(groups):
        names = tuple(bs.behavior for bs in group)
        if names != runs.groups[gi]:
            raise DynamicsError(f"group {gi} is {names}, but the runs trained {runs.groups[gi]}")
        sel = runs.group == gi
        pr = group_priorities(group, runs.replicate[gi])
        row: dict[str, Any] = {"members": names, "levels": pr["levels"],
                               "distinguishability": np.linalg.norm(pr["b"], axis=1)}
        for metric, g in gains.items():
            mean_gain = g[sel].mean(axis=0)
            row[f"gains_{metric}"] = mean_gain
            agree = order_agreement(pr["levels"][None], mean_gain[None])
            row[f"top_{metric}"] = bool(agree["top"][0])
            row[f"order_{metric}"] = bool(agree["order"][0])
            row[f"tau_{metric}"] = float(agree["tau"][0])
            if len(group) == 2:
                gap = float(pr["gap"])
                row["gap"] = gap
                row[f"agree_{metric}"] = bool(gap != 0 and np.sign(gap) == np.sign(mean_gain[0] - mean_gain[1]))
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_by_bins(values: Any, agree: Any, edges: Sequence[float], *, level: float = 0.95):
    """The share of agreements per bin of ``values`` (e.g. |priority gap|), with Wilson intervals.

    Bins are [edges[k], edges[k+1]) (the last one closed); returns a DataFrame with ``bin``, ``n``,
    ``p``, ``lo``, ``hi`` (NaN for an empty bin).
    """
    import pandas as pd

    v = np.asarray(values, dtype=np.float64)
    a = np.asarray(agree, dtype=bool)
    e = np.asarray(edges, dtype=np.float64)
    if v.shape != a.shape or v.ndim != 1:
        raise DynamicsError(f"values and agree must be 1-D of one length, got {v.shape} and {a.shape}")
    if e.ndim != 1 or e.shape[0] < 2 or np.any(np.diff(e) <= 0):
        raise DynamicsError(f"edges must be at least two increasing numbers, got {list(edges)}")
    rows = []
    for k in range(e.shape[0] - 1):
        last = k == e.shape[0] - 2
        sel = (v >= e[k]) & ((v <= e[k + 1]) if last else (v < e[k + 1]))
        n = int(sel.sum())
        p, lo, hi = stats.wilson(int(a[sel].sum()), n, level=level) if n else (math.nan,) * 3
        rows.append({"bin": f"[{e[k]:g}, {e[k + 1]:g}{']' if last else ')'}", "n": n, "p": p, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def margin_overlay(group: Sequence[BehaviorSet], runs: Runs, run: int) -> dict[str, Any]:
    """The priority theorem drawn over one joint run's measured training margins.

    ``theorem``: (ηβt/4)⟨b̄, b̂_i⟩ (class means, weights = shares of training pairs; exact for
    class-balanced sets), ``imbalance``: the same first-order formula with b̂_i replaced by 2m̂_i,
    m̂_i = mean s h over behaviour i (exact at t = 1 for any class balance, full batch), ``band``:
    the theorem's remainder ρ_t‖b̂_i‖ around ``theorem`` (full-batch gradient descent), and
    ``band_holds_until``: the last step at which every band is narrower than the predicted change.
    Arrays are ``[K, T + 1]``.
    """
    from ..theory import margin_change_prediction, remainder_bound, sample_statistics

    if runs.groups[runs.group[run]] != tuple(bs.behavior for bs in group):
        raise DynamicsError(f"run {run} trained {runs.groups[runs.group[run]]}, not {[bs.behavior for bs in group]}")
    rep = runs.replicate[runs.group[run]]
    pr = group_priorities(group, rep)
    lr, beta = float(runs.lr[run]), float(runs.beta[run])
    t = runs.t.astype(np.float64)
    H, S, _ = pooled_training(group, rep)
    sst = sample_statistics(H, S)
    m_all = 2.0 * sst["m_hat"]
    theorem, imbalance, band = [], [], []
    for k, bs in enumerate(group):
        h, s = bs.part("train")
        theorem.append(margin_change_prediction(t, lr=lr, beta=beta, bbar=pr["bbar"], b_i=pr["b"][k]))
        imbalance.append(margin_change_prediction(t, lr=lr, beta=beta, bbar=m_all, b_i=2.0 * (s[:, None] * h).mean(0)))
        rho = remainder_bound(t, lr=lr, beta=beta, mhat_norm=np.linalg.norm(pr["bbar"]) / 2.0, G_norm=sst["G_norm"])
        band.append(rho * np.linalg.norm(pr["b"][k]))
    theorem, imbalance, band = np.array(theorem), np.array(imbalance), np.array(band)
    ok = (band < np.abs(theorem)) | (t == 0)
    holds = int(np.argmin(ok.all(0))) - 1 if not ok.all() else int(t[-1])
    return {"theorem": theorem, "imbalance": imbalance, "band": band, "band_holds_until": holds,
            "kappa": float(lr * beta ** 2 * sst["G_norm"] / 2.0)}


def gap_size_comparison(pair_a: Sequence["BehaviorSet"], pair_b: Sequence["BehaviorSet"], *, n_boot: int,
                        seed: int) -> dict[str, float | str]:
    """Is pair (a)'s priority gap larger than pair (b)'s? A stratified-bootstrap answer on the pairs'
    training sets.

    Returns |G(a)|, |G(b)|, the 95 % percentile interval of |G(a)| − |G(b)| over ``n_boot`` replicates
    (:func:`alignment_dynamics.geometry.bootstrap_gaps`), and ``verdict``, the
    :func:`alignment_dynamics.verdicts.difference` verdict on "pair (a) has the larger gap" ("not
    resolvable at this sample size" when the interval contains 0). ``n`` is the number of training
    statements the bootstrap resampled.
    """
    from .. import geometry, verdicts

    sets = list(pair_a) + list(pair_b)
    if len(pair_a) != 2 or len(pair_b) != 2:
        raise DynamicsError("each pair must hold exactly two behaviour sets")
    data_ = {bs.behavior: (bs.h_train, bs.s_train > 0) for bs in sets}
    pa, pb = tuple(bs.behavior for bs in pair_a), tuple(bs.behavior for bs in pair_b)
    boot = geometry.bootstrap_gaps(data_, [pa, pb], n_boot=n_boot, seed=seed)
    ga = abs(geometry.priority_gap(pair_a[0].b("train"), pair_a[1].b("train")))
    gb = abs(geometry.priority_gap(pair_b[0].b("train"), pair_b[1].b("train")))
    lo, hi = geometry.percentile_ci(np.abs(boot[pa]) - np.abs(boot[pb]))
    n = int(sum(bs.n_train for bs in sets))
    diff = ga - gb
    verdict = verdicts.difference(min(max(diff, float(lo)), float(hi)), float(lo), float(hi), n, unit="statements")
    return {"gap_a": ga, "gap_b": gb, "diff": diff, "diff_lo": float(lo), "diff_hi": float(hi), "n": n,
            "verdict": verdict}
