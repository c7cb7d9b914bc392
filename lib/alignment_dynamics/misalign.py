"""The misalignment protocol: align a model, then train it on flipped preferences, from Base and from Aligned.

The official protocol (``paper.md`` §6, runs E and F) [official code]:

1. *Align*: DPO on a behaviour in the normal direction (chosen = the answer matching the behaviour).
2. *Base*: DPO on the same pairs with chosen and rejected swapped (``--flip``), from the base model,
   with the base model as reference.
3. *Aligned*: the same flipped DPO from the aligned model (base + merged adapter), with the aligned
   model as reference.
4. Compare training and test loss and accuracy (accuracy: the policy prefers the *flipped* chosen
   answer) on the behaviour's test split.

This module runs it with :mod:`alignment_dynamics.finetune` (whole-model, LoRA or top-block DPO),
summarises the speed-up over seeds, and checks the head-only identity: when only the unembedding is
trained and the reference is the starting model, the flipped run's loss trajectory is exactly the
same from Base and from Aligned (:func:`head_only_identity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import finetune as ft
from . import stats


class MisalignError(ValueError):
    """Invalid settings for the misalignment protocol."""


# ---------------------------------------------------------------------------------------------------
# Data: persona and HH-RLHF pairs, tokenised for whole-model DPO
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairSets:
    """Training and test pairs of one data set, tokenised, with what the geometry needs.

    ``labels_*`` are +1 where the statement is positive (its matching answer is " Yes") and -1
    otherwise (persona only; empty for HH-RLHF); ``index_*`` are the records' indices in the data set
    (persona: in ``data.load_persona``; HH-RLHF: in ``data.load_hh_rlhf().pairs``).
    """

    name: str
    train: ft.Pairs
    test: ft.Pairs
    index_train: np.ndarray
    index_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray

    def flipped(self) -> "PairSets":
        """The same sets with chosen and rejected swapped (labels negated)."""
        return PairSets(self.name, self.train.flipped(), self.test.flipped(), self.index_train, self.index_test,
                        -self.labels_train, -self.labels_test)


def persona_sets(tokenizer, behavior: str, *, n_train: int | None = None, n_test: int | None = None,
                 trailing_newline: bool = False) -> PairSets:
    """A behaviour's official 90/10 split as tokenised pairs (chosen = the matching answer).

    ``n_train``/``n_test`` keep the first records of each side of the split (the split is a seeded
    shuffle, so these are uniform random subsets); None keeps all. Prompts are the book's default
    (``data.build_prompt``: the question verbatim; the official TRL runs add a trailing newline).
    """
    from . import data

    split = data.persona_split(behavior)
    tr = list(split.train if n_train is None else split.train[:_count("n_train", n_train, len(split.train))])
    te = list(split.test if n_test is None else split.test[:_count("n_test", n_test, len(split.test))])
    sets = []
    for idx in (tr, te):
        pp = data.persona_pairs(behavior, idx, trailing_newline=trailing_newline)
        sets.append((ft.tokenize_pairs(tokenizer, [p.prompt for p in pp], [p.chosen for p in pp],
                                       [p.rejected for p in pp]),
                     np.array([p.label for p in pp], dtype=np.int8)))
    return PairSets(behavior, sets[0][0], sets[1][0], np.asarray(tr), np.asarray(te), sets[0][1], sets[1][1])


def hh_sets(tokenizer, *, n_train: int, n_test: int, max_tokens: int) -> PairSets:
    """HH-RLHF (harmless-base test file) pairs that fit in ``max_tokens`` packed tokens, split 90/10.

    The split is the data module's seeded one (``data.hh_rlhf_split``); then each side keeps, in its
    shuffled order, the first ``n_train`` (``n_test``) pairs whose prompt plus both responses (EOS
    included) have at most ``max_tokens`` tokens. This favours short dialogues: a CPU-sized subset,
    not a uniform one.
    """
    from . import data

    hh = data.load_hh_rlhf()
    split = data.hh_rlhf_split(len(hh.pairs))
    _count("max_tokens", max_tokens, 10 ** 9)
    out = []
    for idx, n, what in ((split.train, n_train, "n_train"), (split.test, n_test, "n_test")):
        _count(what, n, len(idx))
        keep, pairs = [], None
        for start in range(0, len(idx), 256):
            chunk = list(idx[start:start + 256])
            pp = [hh.pairs[i] for i in chunk]
            tok = ft.tokenize_pairs(tokenizer, [p.prompt for p in pp], [p.chosen for p in pp], [p.rejected for p in pp])
            for j, length in enumerate(tok.packed_lengths()):
                if length <= max_tokens and len(keep) < n:
                    keep.append((chunk[j], tok.take([j])))
            if len(keep) == n:
                break
        if len(keep) < n:
            raise MisalignError(f"only {len(keep)} HH-RLHF pairs of the {what[2:]} split fit in {max_tokens} tokens; "
                                f"asked for {n}: raise max_tokens or lower {what}")
        pairs = _concat([p for _, p in keep])
        out.append((np.array([i for i, _ in keep]), pairs))
    empty = np.zeros(0, dtype=np.int8)
    return PairSets("hh-rlhf", out[0][1], out[1][1], out[0][0], out[1][0], empty, empty)


def _concat(parts: Sequence[ft.Pairs]) -> ft.Pairs:
    return ft.Pairs(sum((p.prompt for p in parts), ()), sum((p.a for p in parts), ()), sum((p.b for p in parts), ()),
                    sum((p.chosen_first for p in parts), ()))


def _count(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise MisalignError(f"{name} must be an int in 1..{limit}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------------

@dataclass
class Misalignment:
    """The runs of :func:`run_misalignment`: one align, one Base and one Aligned run per seed.

    The runs keep their histories; only the first seed's policies are kept (``first``), for the
    embeddings before and after alignment.
    """

    name: str
    seeds: list[int]
    align: list[ft.DPORun]
    base: list[ft.DPORun]
    aligned: list[ft.DPORun]
    settings: dict[str, Any]
    first: dict[str, Any] = field(default_factory=dict)

    def curves(self, which: str, split: str, metric: str) -> np.ndarray:
        """``[seeds, steps(+1)]``: a metric of the ``"align"``, ``"base"`` or ``"aligned"`` runs.

        ``split`` is ``"train"`` (batch metrics, length T) or ``"test"`` (length T + 1).
        """
        runs = {"align": self.align, "base": self.base, "aligned": self.aligned}.get(which)
        if runs is None:
            raise MisalignError(f"which must be 'align', 'base' or 'aligned', got {which!r}")
        if split == "train":
            return np.stack([r.train[metric] for r in runs])
        if split == "test":
            return np.stack([r.evals["test"][metric] for r in runs])
        raise MisalignError(f"split must be 'train' or 'test', got {split!r}")


@dataclass
class Alignment:
    """One alignment run (:func:`run_alignment`): its history, the aligned model and what it ran on."""

    name: str
    run: ft.DPORun
    aligned_model: Any
    layout: ft.Layout
    trunks: dict | None


def _trunks(model, sets: PairSets, *, method: str, top_blocks: int | None, layout: ft.Layout, progress: bool):
    if top_blocks is None:
        return None
    probe = ft.make_policy(model, method=method, top_blocks=top_blocks)
    return {"train": ft.trunk_activations(probe, sets.train, layout, progress=progress),
            "test": ft.trunk_activations(probe, sets.test, layout, progress=progress)}


def run_alignment(model, sets: PairSets, *, seed: int, method: str = "lora", top_blocks: int | None = None,
                  settings: ft.TrainSettings, micro_batch: int = 16, layout: ft.Layout | None = None,
                  trunks: dict | None = None, cache: bool = True, progress: bool = True) -> Alignment:
    """Align ``model`` on ``sets`` (normal direction) and return the run and the aligned model.

    The aligned model is the policy with LoRA adapters merged in (the official ``merge_and_unload``).
    With ``top_blocks`` the frozen bottom's activations are computed once (or taken from ``trunks``).
    """
    layout = layout or ft.Layout.for_pairs(sets.train, sets.test, micro_batch=micro_batch)
    if trunks is None:
        trunks = _trunks(model, sets, method=method, top_blocks=top_blocks, layout=layout, progress=progress)
    pol = ft.make_policy(model, method=method, top_blocks=top_blocks, seed=seed)
    run = ft.train_dpo(pol, sets.train, settings, eval_sets={"test": sets.test}, seed=seed, layout=layout,
                       trunks=trunks, cache=cache, progress=progress)
    aligned = ft.merged_model(run.policy)
    run.policy = None
    return Alignment(sets.name, run, aligned, layout, trunks)


def run_misalignment(model, sets: PairSets, *, seeds: Sequence[int], method: str = "lora",
                     top_blocks: int | None = None, align: ft.TrainSettings, flip: ft.TrainSettings,
                     micro_batch: int = 16, cache: bool = True, progress: bool = True) -> Misalignment:
    """Align on ``sets`` (normal direction), then flip from Base and from Aligned, for each seed.

    The aligned model (:func:`run_alignment`) is then both the Aligned run's start and its reference.
    With ``top_blocks`` the frozen bottom's activations are computed once and shared by every run (a
    flipped set has the same packed rows, and alignment leaves the bottom unchanged).
    """
    if not seeds:
        raise MisalignError("seeds must be a non-empty list of ints")
    layout = ft.Layout.for_pairs(sets.train, sets.test, micro_batch=micro_batch)
    trunks = _trunks(model, sets, method=method, top_blocks=top_blocks, layout=layout, progress=progress)
    kw = dict(layout=layout, trunks=trunks, cache=cache, progress=progress)
    out = Misalignment(sets.name, [int(s) for s in seeds], [], [], [],
                       {"method": method, "top_blocks": top_blocks, "align": align.__dict__, "flip": flip.__dict__,
                        "n_train": len(sets.train), "n_test": len(sets.test)})
    flipped_train, flipped_test = sets.train.flipped(), sets.test.flipped()
    for k, seed in enumerate(out.seeds):
        al = run_alignment(model, sets, seed=seed, method=method, top_blocks=top_blocks, settings=align, **kw)
        b = ft.train_dpo(ft.make_policy(model, method=method, top_blocks=top_blocks, seed=seed), flipped_train, flip,
                         eval_sets={"test": flipped_test}, seed=seed, **kw)
        c = ft.train_dpo(ft.make_policy(al.aligned_model, method=method, top_blocks=top_blocks, seed=seed),
                         flipped_train, flip, eval_sets={"test": flipped_test}, seed=seed, **kw)
        if k == 0:
            out.first = {"aligned_model": al.aligned_model, "layout": layout, "trunks": trunks}
        for r in (b, c):
            r.policy = None  # keep the histories, free the weights
        out.align.append(al.run)
        out.base.append(b)
        out.aligned.append(c)
    return out


def embeddings(model, sets: PairSets, *, layout: ft.Layout, trunks: dict | None = None,
               top_blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """h(x) of every statement of ``sets`` (training then test) under ``model``, with their labels.

    Computed by the whole-model path (:func:`finetune.prompt_embeddings`), so a model whose top
    blocks were trained shows its moved representation. Returns ``(h [n, d], labels [n])``.
    """
    pol = ft.make_policy(model, top_blocks=top_blocks)
    parts = [ft.prompt_embeddings(pol, p, layout, (trunks or {}).get(k)).numpy()
             for k, p in (("train", sets.train), ("test", sets.test))]
    return np.concatenate(parts), np.concatenate([sets.labels_train, sets.labels_test])


def speedup_table(result: Misalignment, *, k: int, threshold: float = 0.5):
    """Per seed: steps to ``threshold`` flipped test accuracy, the test loss and accuracy after ``k``
    steps and the accuracy at the end, for Base and Aligned (a pandas DataFrame; one row per seed).
    """
    import pandas as pd

    T = len(result.base[0].schedule)
    if not 0 <= k <= T:
        raise MisalignError(f"k must be in 0..{T} (the number of flipped steps), got {k!r}")
    rows = []
    for s, b, a in zip(result.seeds, result.base, result.aligned):
        eb, ea = b.evals["test"], a.evals["test"]
        rows.append({
            "seed": s,
            "base steps to acc": stats.first_reaching(eb["outputs/accuracies"], threshold),
            "aligned steps to acc": stats.first_reaching(ea["outputs/accuracies"], threshold),
            "base acc@0": eb["outputs/accuracies"][0], "aligned acc@0": ea["outputs/accuracies"][0],
            f"base acc@{k}": eb["outputs/accuracies"][k], f"aligned acc@{k}": ea["outputs/accuracies"][k],
            f"base loss@{k}": eb["loss"][k], f"aligned loss@{k}": ea["loss"][k],
            "base acc@end": eb["outputs/accuracies"][-1], "aligned acc@end": ea["outputs/accuracies"][-1],
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# The head-only identity
# ---------------------------------------------------------------------------------------------------

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

    from .dpo import train_reference

    dtype = dtype or torch.float64
    for name, v in (("align_steps", align_steps), ("steps", steps)):
        _count(name, v, 10 ** 6)
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


def sequence_features(policy: ft.Policy, pairs: ft.Pairs, layout: ft.Layout, trunk=None) -> SequenceFeatures:
    """:class:`SequenceFeatures` of ``pairs`` (chosen and rejected responses) from a policy's forward pass.

    The rows are those of :func:`finetune.completion_features`, so they are the features the whole-model
    runs score; with top blocks the frozen bottom comes from the activation cache.
    """
    import torch

    h_a, t_a, h_b, t_b = ft.completion_features(policy, pairs, layout, trunk)
    first = torch.tensor(pairs.chosen_first)
    pick = lambda x, y: torch.where(first.view(-1, *[1] * (x.dim() - 1)), x, y)  # noqa: E731
    L = max(h_a.shape[1], h_b.shape[1])
    h_a, h_b = (torch.nn.functional.pad(h, (0, 0, 0, L - h.shape[1])) for h in (h_a, h_b))
    t_a, t_b = (torch.nn.functional.pad(t, (0, L - t.shape[1]), value=-100) for t in (t_a, t_b))
    return SequenceFeatures(pick(h_a, h_b), pick(t_a, t_b), pick(h_b, h_a), pick(t_b, t_a))


def set_features(model, sets: PairSets, *, layout: ft.Layout, trunks: dict | None = None,
                 top_blocks: int | None = None) -> tuple[SequenceFeatures, SequenceFeatures]:
    """:func:`sequence_features` of the training and test pairs of ``sets`` under ``model``."""
    pol = ft.make_policy(model, top_blocks=top_blocks)
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

    from .dpo import dpo_metrics, sample_batches
    from .dpo.fused import fused_dpo_loss, sequence_logps

    _count("steps", steps, 10 ** 6)
    _count("eval_every", eval_every, 10 ** 6)
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


def compare_modes(model, sets: PairSets, settings: ft.TrainSettings, modes: dict[str, dict], *, seed: int,
                  micro_batch: int = 16, cache: bool = True, progress: bool = True) -> dict[str, ft.DPORun]:
    """Train the same DPO problem with several policies (``modes``: label -> :func:`finetune.make_policy`
    keyword arguments), with the same batches, and return each run.
    """
    layout = ft.Layout.for_pairs(sets.train, sets.test, micro_batch=micro_batch)
    out = {}
    for label, kw in modes.items():
        pol = ft.make_policy(model, seed=seed, **kw)
        run = ft.train_dpo(pol, sets.train, settings, eval_sets={"test": sets.test}, seed=seed, layout=layout,
                           cache=cache, progress=progress)
        run.policy = None
        out[label] = run
    return out


def survey(model, tokenizer, behaviors: Sequence[str], *, seed: int, n_train: int | None, n_test: int | None,
           method: str, top_blocks: int | None, settings: ft.TrainSettings, micro_batch: int = 16,
           known: dict | None = None, cache: bool = True, progress: bool = True):
    """Align ``model`` on each behaviour; measure distinguishability before and after, and the curves.

    For each behaviour: its pair sets (:func:`persona_sets`), h(x) of every statement before and after
    alignment (:func:`embeddings`) and their distinguishability ‖μ₊ − μ₋‖
    (``geometry.properties``), and the alignment run. Returns a DataFrame (one row per behaviour,
    ordered by distinguishability before alignment) and a dict behaviour -> dict with the run, the
    embeddings and the labels. ``known`` maps a behaviour already aligned with these very settings,
    seed and sizes to such a dict (``run``, ``h_before``, ``h_after``, ``labels``, ``sets``); it is
    used instead of training the behaviour again.
    """
    import pandas as pd

    from . import geometry

    known = dict(known or {})
    need = {"run", "h_before", "h_after", "labels", "sets"}
    for name, d in known.items():
        if not isinstance(d, dict) or not need <= set(d):
            raise MisalignError(f"known[{name!r}] must be a dict with keys {sorted(need)}")
    rows, details = [], {}
    for name in behaviors:
        if name in known:
            d = known[name]
            run, h0, h1, y, sets = d["run"], d["h_before"], d["h_after"], d["labels"], d["sets"]
            if ((n_train is not None and len(sets.train) != n_train) or (n_test is not None and len(sets.test) != n_test)
                    or len(y) != len(h0)):
                raise MisalignError(f"known[{name!r}] was not run with n_train={n_train}, n_test={n_test}")
        else:
            sets = persona_sets(tokenizer, name, n_train=n_train, n_test=n_test)
            al = run_alignment(model, sets, seed=seed, method=method, top_blocks=top_blocks, settings=settings,
                               micro_batch=micro_batch, cache=cache, progress=progress)
            run = al.run
            h0, y = embeddings(model, sets, layout=al.layout, trunks=al.trunks, top_blocks=top_blocks)
            h1, _ = embeddings(al.aligned_model, sets, layout=al.layout, trunks=al.trunks, top_blocks=top_blocks)
            del al
        p0, p1 = geometry.properties(h0, y), geometry.properties(h1, y)
        test = run.evals["test"]
        rows.append({"behavior": name, "distinguishability before": p0["distinguishability"],
                     "distinguishability after": p1["distinguishability"],
                     "relative before": p0["relative_distinguishability"],
                     "relative after": p1["relative_distinguishability"],
                     "test loss at end": test["loss"][-1], "test acc at start": test["outputs/accuracies"][0],
                     "test acc at end": test["outputs/accuracies"][-1]})
        details[name] = {"run": run, "h_before": h0, "h_after": h1, "labels": y, "sets": sets}
    table = pd.DataFrame(rows).sort_values("distinguishability before", kind="stable").reset_index(drop=True)
    return table, details


def answer_pairs(labels: Any, yes: int, no: int) -> tuple[np.ndarray, np.ndarray]:
    """Chosen and rejected answer tokens from labels (+1: " Yes" is preferred, -1: " No")."""
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (-1, 1)).all():
        raise MisalignError("labels must be a 1-d array of +1 / -1")
    return np.where(y > 0, yes, no).astype(np.int64), np.where(y > 0, no, yes).astype(np.int64)


def repeat_on_extremes(model, survey, details: dict, *, exclude: str, seed: int, method: str,
                       top_blocks: int | None, settings: ft.TrainSettings, k: int, micro_batch: int = 16,
                       cache: bool = True, progress: bool = True):
    """The misalignment protocol (one seed) on the least and the most distinguishable behaviours of a
    :func:`survey` other than ``exclude``; one :func:`speedup_table` row per behaviour, with its
    distinguishability before alignment.
    """
    import pandas as pd

    names = [n for n in survey["behavior"] if n != exclude]
    if not names:
        raise MisalignError(f"the survey has no behaviour besides {exclude!r}")
    rows = []
    for name in dict.fromkeys([names[0], names[-1]]):
        res = run_misalignment(model, details[name]["sets"], seeds=[seed], method=method, top_blocks=top_blocks,
                               align=settings, flip=settings, micro_batch=micro_batch, cache=cache, progress=progress)
        rows.append(speedup_table(res, k=k).assign(behavior=name))
    out = pd.concat(rows, ignore_index=True)
    return out.merge(survey[["behavior", "distinguishability before"]], on="behavior")


def cross_model_view(models: dict, behavior: str, *, n_train: int | None, n_test: int | None, seed: int,
                     method: str, top_blocks: int | None, settings: ft.TrainSettings, k: int,
                     micro_batch: int = 16, cache: bool = True, progress: bool = True):
    """For each model (name -> object with ``.model`` and ``.tokenizer``): the behaviour's
    distinguishability under it and one flipped DPO run from its own start (a pandas DataFrame, one
    row per model).
    """
    import pandas as pd

    from . import geometry

    rows = {}
    for name, lm in models.items():
        sets = persona_sets(lm.tokenizer, behavior, n_train=n_train, n_test=n_test)
        al = run_alignment(lm.model, sets.flipped(), seed=seed, method=method, top_blocks=top_blocks,
                           settings=settings, micro_batch=micro_batch, cache=cache, progress=progress)
        h, y = embeddings(lm.model, sets, layout=al.layout, trunks=al.trunks, top_blocks=top_blocks)
        p = geometry.properties(h, y)
        test = al.run.evals["test"]
        kk = min(k, len(al.run.schedule))
        rows[name] = {"distinguishability": p["distinguishability"],
                      "relative distinguishability": p["relative_distinguishability"],
                      "flipped test acc at start": test["outputs/accuracies"][0],
                      f"flipped test loss at step {kk}": test["loss"][kk],
                      "flipped test acc at end": test["outputs/accuracies"][-1]}
        del al
    return pd.DataFrame(rows).T
