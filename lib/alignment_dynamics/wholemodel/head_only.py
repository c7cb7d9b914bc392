"""The misalignment protocol with only the head trained.

The head-only identity: when only the unembedding is trained and the reference is the starting model,
the flipped run's loss trajectory is exactly the same from Base and from Aligned
(:func:`head_only_identity`); and the same protocol on multi-token responses, with the head trained on
frozen features through the fused linear op (:func:`head_misalignment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .batches import Layout, Pairs
from .checks import MisalignError, require_count
from .logps import completion_features
from .pairsets import PairSets
from .policy import make_policy, Policy


def answer_pairs(labels: Any, yes: int, no: int) -> tuple[np.ndarray, np.ndarray]:
    """Chosen and rejected answer tokens from labels (+1: " Yes" is preferred, -1: " No").
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (-1, 1)).all():
        raise MisalignError("labels must be a 1-d array of +1 / -1")
    return np.where(y > 0, yes, no).astype(np.int64), np.where(y > 0, no, yes).astype(np.int64)


def head_only_identity(H, chosen, rejected, W0, *, beta: float, lr: float, align_steps: int, steps: int,
                       batch_size: int, seed: int, H_test=None, chosen_test=None, rejected_test=None,
                       dtype=None) -> dict[str, np.ndarray]:
    """Align the head only, then misalign from Base and from Aligned: same losses, different accuracy.

    Trains the whole unembedding with DPO over the full vocabulary (``dpo.train_reference``, plain
    SGD): first ``align_steps`` in the normal direction from ``W0`` (giving W_A), then ``steps`` with
    chosen and rejected flipped, once from W0 (reference W0) and once from W_A (reference W_A), with
    the same batches. Returns the two runs' training and test losses and accuracies
    (``outputs/accuracies``: the policy prefers the flipped chosen answer) and ``max_loss_gap``, the
    largest difference between their losses.

    With single-token answers on a shared context the log-sum-exp cancels from every margin, so the
    loss depends on W only through W − W_start: the two loss trajectories are equal (up to rounding),
    and the accuracies differ because the starts do.
    """
    import torch

    from ..dpo import train_reference

    dtype = dtype or torch.float64
    for name, v in (("align_steps", align_steps), ("steps", steps)):
        require_count(name, v, 10 ** 6)
    H, W0 = torch.as_tensor(H), torch.as_tensor(W0).detach().cpu()  # float64 on the CPU
    chosen, rejected = torch.as_tensor(chosen).long(), torch.as_tensor(rejected).long()
    ev = None
    if H_test is not None:
        ev = {"test": (torch.as_tensor(H_test), torch.as_tensor(chosen_test).long(),
                       torch.as_tensor(rejected_test).long())}
    common = dict(beta=beta, lr=lr, batch_size=batch_size, dtype=dtype)
    al = train_reference(H, W0, chosen, rejected, steps=align_steps, generator=seed, **common)
    W_A = al.W
    runs = {}
    for name, start in (("base", None), ("aligned", W_A)):
        runs[name] = train_reference(H, W0, chosen, rejected, steps=steps, generator=seed + 1, flip=True,
                                     start_W=start, eval_sets=ev, **common)
    out = {"align_loss": al.train["loss"][0].numpy()}
    for name, tr in runs.items():
        out[f"{name}_train_loss"] = tr.train["loss"][0].numpy()
        out[f"{name}_train_acc"] = tr.train["outputs/accuracies"][0].numpy()
        if ev is not None:
            out[f"{name}_test_loss"] = tr.eval["test"]["loss"][0].numpy()
            out[f"{name}_test_acc"] = tr.eval["test"]["outputs/accuracies"][0].numpy()
    gaps = [np.abs(out["base_train_loss"] - out["aligned_train_loss"]).max()]
    if ev is not None:
        gaps.append(np.abs(out["base_test_loss"] - out["aligned_test_loss"]).max())
    out["max_loss_gap"] = np.float64(max(gaps))
    return out


# ---------------------------------------------------------------------------------------------------
# Last-layer DPO on multi-token responses (HH-RLHF), through the fused linear op
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SequenceFeatures:
    """Frozen features of the chosen and rejected responses of P pairs, padded: ``[P, L, d]``.

    Token ``t`` of a response is predicted by ``h[:, t]``; padding has target ``-100``.
    """

    h_chosen: Any
    t_chosen: Any
    h_rejected: Any
    t_rejected: Any

    def __len__(self) -> int:
        return int(self.h_chosen.shape[0])

    def take(self, idx) -> "SequenceFeatures":
        return SequenceFeatures(self.h_chosen[idx], self.t_chosen[idx], self.h_rejected[idx], self.t_rejected[idx])

    def flipped(self) -> "SequenceFeatures":
        return SequenceFeatures(self.h_rejected, self.t_rejected, self.h_chosen, self.t_chosen)

    def to(self, device) -> "SequenceFeatures":
        return SequenceFeatures(*(t.to(device) for t in (self.h_chosen, self.t_chosen, self.h_rejected,
                                                          self.t_rejected)))


def sequence_features(policy: Policy, pairs: Pairs, layout: Layout, trunk=None) -> SequenceFeatures:
    """:class:`SequenceFeatures` of ``pairs`` (chosen and rejected responses) from a policy's forward pass.

    The rows are those of :func:`completion_features`, so they are the features the whole-model
    runs score; with top blocks the frozen bottom comes from the activation cache.
    """
    import torch

    h_a, t_a, h_b, t_b = completion_features(policy, pairs, layout, trunk)
    first = torch.tensor(pairs.chosen_first)
    pick = lambda x, y: torch.where(first.view(-1, *[1] * (x.dim() - 1)), x, y)  # noqa: E731
    L = max(h_a.shape[1], h_b.shape[1])
    h_a, h_b = (torch.nn.functional.pad(h, (0, 0, 0, L - h.shape[1])) for h in (h_a, h_b))
    t_a, t_b = (torch.nn.functional.pad(t, (0, L - t.shape[1]), value=-100) for t in (t_a, t_b))
    return SequenceFeatures(pick(h_a, h_b), pick(t_a, t_b), pick(h_b, h_a), pick(t_b, t_a))


def set_features(model, sets: PairSets, *, layout: Layout, trunks: dict | None = None,
                 top_blocks: int | None = None) -> tuple[SequenceFeatures, SequenceFeatures]:
    """:func:`sequence_features` of the training and test pairs of ``sets`` under ``model``.
    """
    pol = make_policy(model, top_blocks=top_blocks)
    return tuple(sequence_features(pol, p, layout, (trunks or {}).get(k))
                 for k, p in (("train", sets.train), ("test", sets.test)))


def train_head_sequences(train: SequenceFeatures, W0, *, beta: float, lr: float, steps: int, batch_size: int,
                         seed: int, start_W=None, eval_sets: dict[str, SequenceFeatures] | None = None,
                         eval_every: int = 1) -> dict[str, Any]:
    """Last-layer DPO on multi-token responses: train the whole head ``W`` (Adam) on frozen features.

    Sequence log-probs are sums over response tokens, computed by the fused linear op of
    ``alignment_dynamics.dpo.fused`` without the N × V logits (every row of W gets gradient: the
    contexts of chosen and rejected tokens differ, so nothing cancels). The reference is the start
    (``start_W``, default ``W0``); its log-probs come from the same op. Batches come from
    ``dpo.sample_batches`` with ``seed``. The policy's log-probs go through the same op
    (``sequence_logps``) as the reference's, so the loss at step 0 is exactly ln 2. Returns TRL's metrics per step for the training batches
    (``train``), for each evaluation set every ``eval_every`` steps and after the last (``evals``,
    with the steps in ``eval_steps``), and the final head ``W``.
    """
    import torch

    from ..dpo import dpo_metrics, sample_batches
    from ..dpo.fused import fused_dpo_loss, sequence_logps

    require_count("steps", steps, 10 ** 6)
    require_count("eval_every", eval_every, 10 ** 6)
    W_start = (W0 if start_W is None else start_W).detach().to(torch.float32)
    W = torch.nn.Parameter(W_start.clone())
    opt = torch.optim.Adam([W], lr=lr)
    train = train.to(W.device)  # the features follow the head (a GPU when the model is on one)
    eval_sets = {k: v.to(W.device) for k, v in (eval_sets or {}).items()}
    sets = {"train": train, **eval_sets}

    def seq_logps(feats: SequenceFeatures, weight, chunk: int = 64):
        with torch.no_grad():
            c = torch.cat([sequence_logps(feats.h_chosen[i:i + chunk], weight, feats.t_chosen[i:i + chunk])
                           for i in range(0, len(feats), chunk)])
            r = torch.cat([sequence_logps(feats.h_rejected[i:i + chunk], weight, feats.t_rejected[i:i + chunk])
                           for i in range(0, len(feats), chunk)])
        return c, r

    ref = {k: seq_logps(v, W_start) for k, v in sets.items()}
    batches = sample_batches(len(train), batch_size, steps, seed)[0]
    hist: dict[str, dict[str, list]] = {k: {} for k in sets}
    eval_steps = []

    def log(name, m):
        for key, val in m.items():
            hist[name].setdefault(key, []).append(float(val))

    def evaluate(t):
        eval_steps.append(t)
        for name, feats in eval_sets.items():
            c, r = seq_logps(feats, W.detach())
            log(name, dpo_metrics(c, r, *ref[name], beta=beta))

    for t in range(steps):
        if t % eval_every == 0:
            evaluate(t)
        idx = batches[t]
        idx = idx[idx >= 0].to(W.device)
        b = train.take(idx)
        # "recompute": the policy's log-probs come from the same op as the reference's (sequence_logps),
        # so at step 0 they agree bit for bit and the loss is exactly ln 2
        out = fused_dpo_loss(b.h_chosen, W, b.t_chosen, b.t_rejected, ref["train"][0][idx], ref["train"][1][idx],
                             beta=beta, H_rejected=b.h_rejected, strategy="recompute")
        log("train", dpo_metrics(out.chosen_logps.detach(), out.rejected_logps.detach(), ref["train"][0][idx],
                                 ref["train"][1][idx], beta=beta))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    evaluate(steps)
    return {"train": {k: np.asarray(v) for k, v in hist["train"].items()},
            "evals": {n: {k: np.asarray(v) for k, v in hist[n].items()} for n in eval_sets},
            "eval_steps": np.asarray(eval_steps), "W": W.detach()}


def head_misalignment(train: SequenceFeatures, test: SequenceFeatures, W0, *, beta: float, lr: float, steps: int,
                      batch_size: int, seed: int, eval_every: int = 1) -> dict[str, dict]:
    """The misalignment protocol with only the head trained, on multi-token responses.

    Align (normal direction, from ``W0``), then train on the flipped pairs from ``W0`` ("base") and
    from the aligned head ("aligned", also the reference), all with :func:`train_head_sequences` and
    the same number of steps. Returns the three runs' outputs by name.
    """
    kw = dict(beta=beta, lr=lr, steps=steps, batch_size=batch_size, eval_every=eval_every)
    align = train_head_sequences(train, W0, seed=seed, eval_sets={"test": test}, **kw)
    ftrain, ftest = train.flipped(), test.flipped()
    base = train_head_sequences(ftrain, W0, seed=seed + 1, eval_sets={"test": ftest}, **kw)
    aligned = train_head_sequences(ftrain, W0, start_W=align["W"], seed=seed + 1, eval_sets={"test": ftest}, **kw)
    return {"align": align, "base": base, "aligned": aligned}
