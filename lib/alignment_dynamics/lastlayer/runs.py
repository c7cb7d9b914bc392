"""Training runs: behaviours (or groups of behaviours trained jointly) × learning rates × seeds in one
call, with every per-behaviour curve the chapters plot (:func:`train_runs`, :class:`Runs`).

The paper's last-layer protocol [official code]: only the unembedding W_U is trained, by plain SGD
with β = 0.01 and a fresh random batch of 128 training pairs per step, for 100 steps, with the initial
model as the reference. By the reduction of ``book/dpo_last_layer.md`` this is logistic regression on
the frozen features h(x), which :func:`alignment_dynamics.dpo.train_two_row` runs exactly and in
batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..threads import one_thread
from .checks import DynamicsError, require_positive
from .features import BehaviorSet, HeadFacts


@dataclass
class Runs:
    """Curves of many training runs; run r trains jointly on the behaviours ``groups[group[r]]``.

    Per-behaviour curves are ``[R, T + 1, K]`` (K behaviours per group, t = 0..T, evaluated at W_t on
    each behaviour's whole training or test set): ``loss``, ``margin`` (the mean DPO margin Δ = 2 s vᵀh,
    i.e. the change M(t) − M(0) of the mean signed log-odds), ``policy_accuracy`` (the policy prefers the
    chosen answer: s (a + 2v)ᵀh > 0, the official accuracy), ``policy_yes`` (the share of statements on
    which the policy prefers " Yes": (a + 2v)ᵀh > 0) and ``reward_accuracy`` (TRL's
    ``rewards/accuracies``: Δ > 0). Each is a dict with ``"train"`` and ``"test"`` (NaN where a test
    set is empty). ``head_change`` is ‖W_t − W_0‖_F ``[R, T + 1]``, ``batch_loss`` the loss of each
    step's batch ``[R, T]``, ``first_step`` the exact prediction of ‖W_1 − W_0‖ from the first batch's
    own statistics, and ``max_batch_norm`` the largest batch mean of ‖h‖ (for the linear bound).
    """

    groups: list[tuple[str, ...]]
    group: np.ndarray
    lr: np.ndarray
    beta: np.ndarray
    seed: np.ndarray
    replicate: list[tuple[int, ...]]
    steps: int
    batch_size: int | None
    loss: dict[str, np.ndarray]
    margin: dict[str, np.ndarray]
    policy_accuracy: dict[str, np.ndarray]
    policy_yes: dict[str, np.ndarray]
    reward_accuracy: dict[str, np.ndarray]
    head_change: np.ndarray
    batch_loss: np.ndarray
    first_step: np.ndarray
    max_batch_norm: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return int(self.group.shape[0])

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.steps + 1)

    def curves(self, behaviors: Sequence[str], metric: str = "loss", part: str = "train") -> np.ndarray:
        """``(K, T + 1)`` curves of the named behaviours from single-behaviour runs, in the order given
        (the mean over a behaviour's runs, e.g. its seeds). ``metric`` is ``"loss"``, ``"margin"``,
        ``"policy_accuracy"``, ``"policy_yes"`` or ``"reward_accuracy"``; ``part`` ``"train"`` or ``"test"``.
        """
        metrics = ("loss", "margin", "policy_accuracy", "policy_yes", "reward_accuracy")
        if metric not in metrics:
            raise DynamicsError(f"metric must be one of {list(metrics)}, got {metric!r}")
        if part not in ("train", "test"):
            raise DynamicsError(f"part must be 'train' or 'test', got {part!r}")
        pos = {g[0]: i for i, g in enumerate(self.groups) if len(g) == 1}
        missing = [b for b in behaviors if b not in pos]
        if missing:
            raise DynamicsError(f"no single-behaviour runs of {missing}; the runs trained {self.groups}")
        values = getattr(self, metric)[part]
        return np.stack([values[self.group == pos[b]][:, :, 0].mean(axis=0) for b in behaviors])

    def select(self, mask) -> "Runs":
        """The runs where ``mask`` (bool [R]) holds."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self.runs,):
            raise DynamicsError(f"mask must be [{self.runs}] bools, got shape {m.shape}")

        def sub(d_):
            return {k: v[m] for k, v in d_.items()}

        return Runs(self.groups, self.group[m], self.lr[m], self.beta[m], self.seed[m], self.replicate, self.steps,
                    self.batch_size, sub(self.loss), sub(self.margin), sub(self.policy_accuracy),
                    sub(self.policy_yes), sub(self.reward_accuracy), self.head_change[m], self.batch_loss[m], self.first_step[m],
                    self.max_batch_norm[m], dict(self.meta))


def _as_list(name: str, value, kind=float) -> list:
    vals = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if not vals:
        raise DynamicsError(f"{name} must not be empty")
    return [kind(v) for v in vals]


def pooled_training(group: Sequence[BehaviorSet], replicate: Sequence[int]):
    """The pooled training pairs of a group, behaviour k's set repeated ``replicate[k]`` times as a
    whole (features and labels stay aligned): ``(H, s, behavior_id)``."""
    h = np.concatenate([np.tile(bs.h_train, (r, 1)) for bs, r in zip(group, replicate)])
    s = np.concatenate([np.tile(bs.s_train, r) for bs, r in zip(group, replicate)])
    bid = np.concatenate([np.full(bs.n_train * r, i) for i, (bs, r) in enumerate(zip(group, replicate))])
    return h, s, bid


def _group_arrays(group: Sequence[BehaviorSet], replicate: Sequence[int], facts: HeadFacts):
    import torch

    k = len(group)
    if len(replicate) != k or any((not isinstance(r, (int, np.integer))) or r < 1 for r in replicate):
        raise DynamicsError(f"replicate must give a positive int per behaviour of the group, got {replicate!r}")
    d = group[0].d
    if any(bs.d != d for bs in group) or facts.d != d:
        raise DynamicsError(f"every behaviour set and the head facts must have the same width d; got "
                            f"{sorted({bs.d for bs in group} | {facts.d})}")
    if len({bs.model for bs in group} | {facts.model}) != 1:
        raise DynamicsError(f"the sets and head facts come from different models: "
                            f"{sorted({bs.model for bs in group} | {facts.model})}")
    h_tr, s_tr, bid_tr = pooled_training(group, replicate)
    ev = {}
    for part in ("train", "test"):
        h = np.concatenate([bs.part(part)[0] for bs in group])
        s = np.concatenate([bs.part(part)[1] for bs in group])
        bid = np.concatenate([np.full(bs.part(part)[0].shape[0], i) for i, bs in enumerate(group)])
        ev[part] = (torch.from_numpy(np.ascontiguousarray(h)), torch.from_numpy(s), torch.from_numpy(bid).long(),
                    h @ facts.a)
    return (torch.from_numpy(np.ascontiguousarray(h_tr)), torch.from_numpy(s_tr), torch.from_numpy(bid_tr).long(),
            np.linalg.norm(h_tr, axis=1), ev)


def _group_mean(x: np.ndarray, bid: np.ndarray, k: int) -> np.ndarray:
    """Means over the last axis per group id (NaN for an empty group): [..., n] -> [..., k]."""
    out = np.full(x.shape[:-1] + (k,), np.nan)
    for i in range(k):
        sel = bid == i
        if sel.any():
            out[..., i] = x[..., sel].mean(-1)
    return out


def train_runs(groups: Sequence[Sequence[BehaviorSet]], *, facts: HeadFacts, steps: int, batch_size: int | None,
               seeds: Sequence[int] | int, lr: float | Sequence[float], beta: float,
               replicate: Sequence[Sequence[int]] | None = None, chunk: int = 96, progress: bool = True) -> Runs:
    """Train every group (one behaviour, or several jointly) at every learning rate with every seed.

    Runs are ordered group-major, then learning rate, then seed. Each run is the official last-layer
    protocol on the group's pooled training pairs: plain SGD on the head, a fresh random batch of
    ``batch_size`` pairs per step from seed ``seed`` (``None``: full batch), ``steps`` steps, the initial
    head as the reference; it runs on :func:`alignment_dynamics.dpo.train_two_row` (exact), ``chunk``
    runs per call. ``replicate`` repeats each behaviour's training pairs (an integer weight per behaviour
    and group: oversampling). Metrics are evaluated at W_t on every behaviour's whole, unreplicated
    training and test sets (see :class:`Runs`).
    """
    from tqdm.auto import tqdm

    from ..dpo import train_two_row
    from ..theory import first_step_v

    groups = [tuple(g) for g in groups]
    if not groups or any(len(g) == 0 for g in groups):
        raise DynamicsError("groups must be a non-empty list of non-empty groups of behaviour sets")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise DynamicsError(f"steps must be a positive int, got {steps!r}")
    seeds_l = _as_list("seeds", seeds, int)
    lrs = [require_positive("lr", v) for v in _as_list("lr", lr)]
    beta = require_positive("beta", beta)
    reps = [tuple([1] * len(g)) for g in groups] if replicate is None else [tuple(int(x) for x in r) for r in replicate]
    if len(reps) != len(groups):
        raise DynamicsError(f"replicate must have one entry per group ({len(groups)}), got {len(reps)}")
    ks = {len(g) for g in groups}
    if len(ks) != 1:
        raise DynamicsError(f"all groups must have the same number of behaviours, got sizes {sorted(ks)}")
    K = ks.pop()
    arrays = [_group_arrays(g, r, facts) for g, r in zip(groups, reps)]
    for (h_tr, *_), g in zip(arrays, groups):
        if batch_size is not None and batch_size > h_tr.shape[0]:
            raise DynamicsError(f"batch_size {batch_size} exceeds the {h_tr.shape[0]} training pairs of group "
                                f"{[bs.behavior for bs in g]}; use a smaller batch or a larger sample")
    plan = [(gi, l_, s_) for gi in range(len(groups)) for l_ in lrs for s_ in seeds_l]
    R, T = len(plan), steps
    names = ("train", "test")
    out = {key: {p: np.full((R, T + 1, K), np.nan) for p in names}
           for key in ("loss", "margin", "policy_accuracy", "policy_yes", "reward_accuracy")}
    head_change = np.zeros((R, T + 1))
    batch_loss = np.zeros((R, T))
    first_step = np.zeros(R)
    max_batch_norm = np.zeros(R)
    # runs whose groups lack a test set (tiny samples) are trained in chunks of their own
    has = {gi: tuple(p for p in names if arrays[gi][4][p][0].shape[0] > 0) for gi in range(len(groups))}
    order = sorted(range(R), key=lambda r: (has[plan[r][0]] != names, r))
    chunks = [order[i:i + chunk] for i in range(0, R, chunk)]
    chunks = [[r for r in c if has[plan[r][0]] == key] for c in chunks for key in dict.fromkeys(has[plan[r][0]] for r in c)]
    with one_thread(), tqdm(total=R, desc="training runs", unit="run", disable=not progress or R < 50,
                                 leave=False) as bar:
        for part in chunks:
            gis = [plan[r][0] for r in part]
            evsets = {p: [(arrays[gi][4][p][0], arrays[gi][4][p][1], None, arrays[gi][4][p][2]) for gi in gis]
                      for p in has[gis[0]]}
            traj = train_two_row([arrays[gi][0] for gi in gis], [arrays[gi][1] for gi in gis], beta=beta,
                                 lr=[plan[r][1] for r in part], steps=T, batch_size=batch_size,
                                 generator=[plan[r][2] for r in part], behavior_id=[arrays[gi][2] for gi in gis],
                                 n_behaviors=K, eval_sets=evsets, keep_v=True)
            V = traj.v.numpy()
            for j, r in enumerate(part):
                gi, l_, _ = plan[r]
                for p in evsets:
                    by = traj.eval_by_behavior[p]
                    out["loss"][p][r] = by["loss"][j].numpy()
                    out["margin"][p][r] = by["rewards/margins"][j].numpy() / beta
                    out["reward_accuracy"][p][r] = by["rewards/accuracies"][j].numpy()
                    h_e, s_e, bid_e, ah = arrays[gi][4][p]
                    z = h_e.numpy() @ V[j].T  # [n, T+1]
                    logodds = ah[:, None] + 2.0 * z  # log pi(Yes) - log pi(No) at W_t
                    correct = (s_e.numpy()[:, None] * logodds > 0).astype(np.float64)
                    out["policy_accuracy"][p][r] = _group_mean(correct.T, bid_e.numpy(), K)
                    out["policy_yes"][p][r] = _group_mean((logodds > 0).astype(np.float64).T, bid_e.numpy(), K)
                head_change[r] = traj.head_change[j].numpy()
                batch_loss[r] = traj.train["loss"][j].numpy()
                b = traj.batches[j].numpy()
                b0 = b[0][b[0] >= 0]
                h_tr, s_tr, norms = arrays[gi][0].numpy(), arrays[gi][1].numpy(), arrays[gi][3]
                first_step[r] = math.sqrt(2.0) * np.linalg.norm(first_step_v(h_tr[b0], s_tr[b0], beta=beta, lr=l_))
                bn = np.where(b >= 0, norms[b.clip(0)], np.nan)
                max_batch_norm[r] = float(np.nanmax(np.nanmean(bn, axis=1)))
            bar.update(len(part))
            del traj, V
    plan_a = np.array(plan, dtype=object)
    return Runs(groups=[tuple(bs.behavior for bs in g) for g in groups], group=plan_a[:, 0].astype(int),
                lr=plan_a[:, 1].astype(float), beta=np.full(R, beta), seed=plan_a[:, 2].astype(int),
                replicate=reps, steps=T, batch_size=batch_size, loss=out["loss"], margin=out["margin"],
                policy_accuracy=out["policy_accuracy"], policy_yes=out["policy_yes"],
                reward_accuracy=out["reward_accuracy"],
                head_change=head_change, batch_loss=batch_loss, first_step=first_step,
                max_batch_norm=max_batch_norm, meta={"model": facts.model, "K": K})
