"""The priority statements of `book/priority.md` (our statements in the spirit of Theorem 4.3 of Im & Li):
priority level and gap, the sign identity, the margin-change formula, the loss-order conditions, the
multi-behaviour runs and the chapter's sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .checks import as_rng, LN2
from .closed_form import dpo_loss_from_v, logistic_gd
from .families import make_two_class, random_unit, TwoClass
from .headline import excess, headline_row, mutate_bound
from .sweeps import InstanceRanges, loguniform, run_sweep
from .update_rate import remainder_bound
from ..threads import one_thread


def priority_levels(bs: Sequence[np.ndarray], weights: Sequence[float] | None = None, *, rtol: float = 1e-8):
    """Priority levels ``p_i = <b_bar, b_i> / ||b_bar||`` with ``b_bar = sum_i w_i b_i`` (equal weights by
    default; for two behaviours ``b_bar = (b_i + b_j)/2``, the official code's definition).

    Raises when ``||b_bar||`` is below ``rtol * max ||b_i||`` (e.g. ``b_i = -b_j``): the levels are then
    undefined.
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
    """The official priority gap ``(p_i - p_j) / max(||b_i||, ||b_j||)`` of behaviour i over j."""
    p = priority_levels([b_i, b_j])
    return float((p[0] - p[1]) / max(np.linalg.norm(b_i), np.linalg.norm(b_j)))


def sign_identity(b_i, b_j) -> tuple[float, float]:
    """``(p_i - p_j, (||b_i||^2 - ||b_j||^2) / (2 ||b_bar||))``: equal (the sign identity)."""
    b_i, b_j = np.asarray(b_i, float), np.asarray(b_j, float)
    p = priority_levels([b_i, b_j])
    return float(p[0] - p[1]), float((b_i @ b_i - b_j @ b_j) / (2 * np.linalg.norm((b_i + b_j) / 2)))


def margin_change_prediction(t, *, lr: float, beta: float, bbar, b_i):
    """``(lr beta t / 4) <b_bar, b_i>``: the first-order change of behaviour i's mean signed log-odds
    margin after t joint steps (exact at t = 1).
    """
    return lr * beta * np.asarray(t, dtype=np.float64) / 4.0 * float(np.dot(bbar, b_i))


def loss_bounds_from_v(v, *, beta: float, b_i, G_i):
    """``(lower, upper)`` on behaviour i's DPO loss at ``v``: ``ln2 - (beta/2) v^T b_i`` and that plus
    ``(beta^2/2) v^T G_i v`` (G_i = mean h h^T over behaviour i; classes balanced).
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
    """
    p = priority_levels([b_i, b_j])
    if not p[0] > 0:
        raise ValueError(f"p_i = {p[0]:.3g} must be positive (behaviour i the more distinguishable one)")
    return float(1.0 - p[1] / p[0])


def first_step_order_bound(v1, *, beta: float, b_i, b_j, G_i) -> float:
    """Lower bound on ``L_j(1) - L_i(1)`` after the first joint step ``v_1``:
    ``(beta/2) v_1^T (b_i - b_j) - (beta^2/2) v_1^T G_i v_1`` (item 2 of the priority theorem).
    """
    v1 = np.asarray(v1, dtype=np.float64)
    return float(0.5 * beta * v1 @ (np.asarray(b_i) - np.asarray(b_j)) - 0.5 * beta ** 2 * v1 @ np.asarray(G_i) @ v1)


@one_thread()
def unequal_sizes_example(*, n_i: int = 20, n_j: int = 180, norm_i: float = 4.42, norm_j: float = 3.57,
                          cos: float = 0.1, beta_prime: float = 0.64, lr: float = 0.1,
                          steps: int = 20) -> dict[str, Any]:
    """Two behaviours of unequal sizes where the *more* distinguishable one (i) is learned *second*: each
    behaviour is two points ``+- b/2`` (class-balanced, no noise) in ``d = 2``, trained jointly with
    full-batch GD. Returns both conditions (equal-weight reading and the weighted one) and both losses
    over steps.
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


def make_behaviours(rng, d: int, deltas: Sequence[float], *, cos: Sequence[float] | float = 0.0,
                    center_norm: float = 0.5, trace_per_dim: float = 1.0, decay: float = 0.5,
                    family: str = "gaussian") -> list[TwoClass]:
    """K behaviours in one embedding space: behaviour i has ``||b_i|| = deltas[i] sqrt(d)`` and its
    ``b_i`` has cosine ``cos[i]`` with a shared unit direction (so the behaviours can help or compete),
    and all share one common-mean direction.
    """
    rng = as_rng(rng)
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


@one_thread()
def priority_run(behaviours: Sequence[TwoClass], rng, *, n_per, beta: float, lr: float, steps: int,
                 repeats: int) -> dict[str, np.ndarray]:
    """Joint full-batch DPO on K behaviours that share the Yes/No tokens (``n_per`` examples each, or a
    sequence of K sizes; each behaviour balanced), ``repeats`` independent training sets. Returns
    per-behaviour measured margin changes and losses, the empirical ``b_i``, the weights ``w_i = n_i / n``,
    ``b_bar = sum_i w_i b_i``, ``G_i`` norms and quadratic forms, and every prediction and bound of our
    priority theorem, all with shape ``(R, T+1, K)`` (or ``(R, K)``, ``(R, K, d)``).
    """
    rng = as_rng(rng)
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


@one_thread()
def priority_instance(params: dict[str, Any], rng, *, steps: int, repeats: int, mutate: float = 1.0):
    """Run one random instance of the priority sweep (K behaviours, their sizes, distinguishabilities and
    alignments drawn at random). Returns ``(row, first_step)``: the worst violation of every statement
    of our priority theorem, tightness ratios, the headline columns ``tight_<name>`` / ``nonvac_<name>``,
    and the first-step rows (measured margin change, predicted, and for equal-size pairs the gap and the
    measured slowdown). ``mutate`` < 1 moves every headline bound in the direction of violation before it
    is checked (:func:`mutate_bound`).
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
        row.update(headline_row("gap_slowdown", m_, b_, "lower", np.array(g_nv)))
    else:
        row.update(headline_row("gap_slowdown", [], [], "lower", np.array([], dtype=bool)))
    if o_t:
        m_, b_ = np.array(o_t).T
        row.update(headline_row("first_step_order", m_, b_, "lower", np.array(o_nv)))
    else:
        row.update(headline_row("first_step_order", [], [], "lower", np.array([], dtype=bool)))
    first = np.stack([out["margin_change"][:, 1].ravel(), out["pred"][:, 1].ravel()], -1)
    return row, {"first": first, "gap": np.array(gap_rows).reshape(-1, 2)}


@dataclass(frozen=True)
class PriorityRanges(InstanceRanges):
    """:class:`InstanceRanges` for several behaviours: their number, per-behaviour size and alignments."""

    n_behaviours: tuple[int, ...] = (2, 2, 3, 4)
    cos_range: tuple[float, float] = (-0.6, 0.95)
    unequal_share: float = 0.5
    size_ratio_range: tuple[float, float] = (1.0 / 9.0, 9.0)

    def draw(self, rng) -> dict[str, Any]:
        p = super().draw(rng)
        K = int(rng.choice(self.n_behaviours))
        n_per = max(2, 2 * int(round(p.pop("n") / K / 2)))
        p.pop("delta")
        p.update(n_per=n_per, deltas=[loguniform(rng, *self.delta_range) for _ in range(K)],
                 cos=[float(rng.uniform(*self.cos_range)) for _ in range(K)])
        # half of the instances mix behaviours of unequal sizes (the persona files have 518 to 1000 rows)
        if rng.random() < self.unequal_share:
            p["sizes"] = [max(2, 2 * int(round(n_per * loguniform(rng, *self.size_ratio_range) ** 0.5 / 2)))
                          for _ in range(K)]
        else:
            p["sizes"] = None
        return p


@one_thread()
def sweep_priority(seed: int, n_instances: int, *, steps: int = 40, repeats: int = 8,
                   ranges: PriorityRanges | None = None, mutate: float = 1.0):
    """The priority sweep: ``(DataFrame of instances, array of first-step (measured, predicted) margin
    changes, array of (gap, measured slowdown) of the equal-size pairs)``.
    """
    import pandas as pd

    out = run_sweep(priority_instance, ranges or PriorityRanges(), seed, n_instances, "priority sweep",
                    steps=steps, repeats=repeats, mutate=mutate)
    return (pd.DataFrame([row for row, _ in out]), np.concatenate([x["first"] for _, x in out]),
            np.concatenate([x["gap"] for _, x in out]))


@one_thread()
def priority_pair(seed: int, *, d: int, n_per: int, beta_prime: float, lr: float, steps: int,
                  deltas: Sequence[float], cos: Sequence[float], repeats: int = 8, family: str = "gaussian",
                  center_norm: float = 0.5, trace_per_dim: float = 1.0, decay: float = 0.5) -> dict[str, Any]:
    """Two (or more) behaviours trained jointly: mean curves over ``repeats`` training sets of each
    behaviour's margin change and loss with our predictions and bounds, and the empirical
    distinguishabilities, priority levels and gap (first repeat's and mean).
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
