"""The misalignment protocol: align a model, then train it on flipped preferences, from Base and from Aligned.

The official protocol (``paper.md`` §6, runs E and F) [official code]:

1. *Align*: DPO on a behaviour in the normal direction (chosen = the answer matching the behaviour).
2. *Base*: DPO on the same pairs with chosen and rejected swapped (``--flip``), from the base model,
   with the base model as reference.
3. *Aligned*: the same flipped DPO from the aligned model (base + merged adapter), with the aligned
   model as reference.
4. Compare training and test loss and accuracy (accuracy: the policy prefers the *flipped* chosen
   answer) on the behaviour's test split.

This module runs it with whole-model, LoRA or top-block DPO (:func:`~.train.train_dpo`), summarises the
speed-up over seeds, and runs the variants of the chapter (several policies, behaviours and models).
The head-only identity is in :mod:`.head_only`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import stats
from .batches import Layout
from .checks import MisalignError
from .logps import prompt_embeddings
from .pairsets import PairSets
from .policy import make_policy, merged_model
from .train import DPORun, train_dpo, TrainSettings
from .trunk import trunk_activations


@dataclass
class Misalignment:
    """The runs of :func:`run_misalignment`: one align, one Base and one Aligned run per seed.

    The runs keep their histories; only the first seed's policies are kept (``first``), for the
    embeddings before and after alignment.
    """

    name: str
    seeds: list[int]
    align: list[DPORun]
    base: list[DPORun]
    aligned: list[DPORun]
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
    run: DPORun
    aligned_model: Any
    layout: Layout
    trunks: dict | None


def _trunks(model, sets: PairSets, *, method: str, top_blocks: int | None, layout: Layout, progress: bool):
    if top_blocks is None:
        return None
    probe = make_policy(model, method=method, top_blocks=top_blocks)
    return {"train": trunk_activations(probe, sets.train, layout, progress=progress),
            "test": trunk_activations(probe, sets.test, layout, progress=progress)}


def run_alignment(model, sets: PairSets, *, seed: int, method: str = "lora", top_blocks: int | None = None,
                  settings: TrainSettings, micro_batch: int = 16, layout: Layout | None = None,
                  trunks: dict | None = None, cache: bool = True, progress: bool = True) -> Alignment:
    """Align ``model`` on ``sets`` (normal direction) and return the run and the aligned model.

    The aligned model is the policy with LoRA adapters merged in (the official ``merge_and_unload``).
    With ``top_blocks`` the frozen bottom's activations are computed once (or taken from ``trunks``).
    """
    layout = layout or Layout.for_pairs(sets.train, sets.test, micro_batch=micro_batch)
    if trunks is None:
        trunks = _trunks(model, sets, method=method, top_blocks=top_blocks, layout=layout, progress=progress)
    pol = make_policy(model, method=method, top_blocks=top_blocks, seed=seed)
    run = train_dpo(pol, sets.train, settings, eval_sets={"test": sets.test}, seed=seed, layout=layout,
                       trunks=trunks, cache=cache, progress=progress)
    aligned = merged_model(run.policy)
    run.policy = None
    return Alignment(sets.name, run, aligned, layout, trunks)


def run_misalignment(model, sets: PairSets, *, seeds: Sequence[int], method: str = "lora",
                     top_blocks: int | None = None, align: TrainSettings, flip: TrainSettings,
                     micro_batch: int = 16, cache: bool = True, progress: bool = True) -> Misalignment:
    """Align on ``sets`` (normal direction), then flip from Base and from Aligned, for each seed.

    The aligned model (:func:`run_alignment`) is then both the Aligned run's start and its reference.
    With ``top_blocks`` the frozen bottom's activations are computed once and shared by every run (a
    flipped set has the same packed rows, and alignment leaves the bottom unchanged).
    """
    if not seeds:
        raise MisalignError("seeds must be a non-empty list of ints")
    layout = Layout.for_pairs(sets.train, sets.test, micro_batch=micro_batch)
    trunks = _trunks(model, sets, method=method, top_blocks=top_blocks, layout=layout, progress=progress)
    kw = dict(layout=layout, trunks=trunks, cache=cache, progress=progress)
    out = Misalignment(sets.name, [int(s) for s in seeds], [], [], [],
                       {"method": method, "top_blocks": top_blocks, "align": align.__dict__, "flip": flip.__dict__,
                        "n_train": len(sets.train), "n_test": len(sets.test)})
    flipped_train, flipped_test = sets.train.flipped(), sets.test.flipped()
    for k, seed in enumerate(out.seeds):
        al = run_alignment(model, sets, seed=seed, method=method, top_blocks=top_blocks, settings=align, **kw)
        b = train_dpo(make_policy(model, method=method, top_blocks=top_blocks, seed=seed), flipped_train, flip,
                         eval_sets={"test": flipped_test}, seed=seed, **kw)
        c = train_dpo(make_policy(al.aligned_model, method=method, top_blocks=top_blocks, seed=seed),
                         flipped_train, flip, eval_sets={"test": flipped_test}, seed=seed, **kw)
        if k == 0:
            out.first = {"aligned_model": al.aligned_model, "layout": layout, "trunks": trunks}
        for r in (b, c):
            r.policy = None  # keep the histories, free the weights
        out.align.append(al.run)
        out.base.append(b)
        out.aligned.append(c)
    return out


def embeddings(model, sets: PairSets, *, layout: Layout, trunks: dict | None = None,
               top_blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """h(x) of every statement of ``sets`` (training then test) under ``model``, with their labels.

    Computed by the whole-model path (:func:`prompt_embeddings`), so a model whose top
    blocks were trained shows its moved representation. Returns ``(h [n, d], labels [n])``.
    """
    pol = make_policy(model, top_blocks=top_blocks)
    parts = [prompt_embeddings(pol, p, layout, (trunks or {}).get(k)).numpy()
             for k, p in (("train", sets.train), ("test", sets.test))]
    return np.concatenate(parts), np.concatenate([sets.labels_train, sets.labels_test])


# ---------------------------------------------------------------------------------------------------
# Reading one protocol run: start-independent speed, gradient norm, the accuracy yardsticks
# ---------------------------------------------------------------------------------------------------

@dataclass
class ProtocolReading:
    """What the chapter reads off a :class:`Misalignment` (means over seeds; ``*_sd`` population SDs).

    ``speed_k_*``: the flipped held-out DPO margin after ``k`` steps, per step (each run starts at margin
    0 against its own reference, so this does not depend on where it starts); ``loss_k_*``: the flipped
    held-out loss after ``k`` steps (a function of the margins, so equally start-independent);
    ``grad0_*``: the norm of the first batch's gradient (before clipping; same batch from both starts);
    ``acc0_*``/``acc_end_*``: flipped held-out accuracy at the start and the end (these depend on the
    start); ``reached50_*``: seeds whose flipped accuracy reaches 50 % within the run; ``*_wins``: seeds
    in which Aligned is faster (higher speed, lower loss, larger gradient, higher final accuracy).
    ``speed``, ``loss`` and ``grad`` are the verdicts of the paired differences over seeds (t interval).
    """

    k: int
    steps: int
    n_seeds: int
    align_acc_start: float
    align_acc_end: float
    speed_k_base: float
    speed_k_aligned: float
    speed_wins: int
    loss_k_base: float
    loss_k_aligned: float
    loss_k_base_sd: float
    loss_k_aligned_sd: float
    loss_wins: int
    grad0_base: float
    grad0_aligned: float
    grad_wins: int
    acc0_base: float
    acc0_aligned: float
    acc_end_base: float
    acc_end_aligned: float
    acc_end_wins: int
    reached50_base: int
    reached50_aligned: int
    steps50_aligned: str
    logp0_base: float
    logp0_aligned: float
    speed: Any = None
    loss: Any = None
    grad: Any = None


def protocol_reading(result: Misalignment, *, k: int) -> ProtocolReading:
    """:class:`ProtocolReading` of ``result`` at step ``k`` (1..T)."""
    from .. import verdicts

    T = len(result.base[0].schedule)
    if not 1 <= k <= T:
        raise MisalignError(f"k must be in 1..{T} (the number of flipped steps), got {k!r}")

    def per_seed(which: str) -> dict[str, np.ndarray]:
        test = {m: result.curves(which, "test", m) for m in ("rewards/margins", "loss", "outputs/accuracies",
                                                              "logps/chosen")}
        grad = np.array([r.train["grad_norm"][0] for r in getattr(result, which)], dtype=np.float64)
        return {"speed": test["rewards/margins"][:, k] / k, "loss": test["loss"][:, k], "grad": grad,
                "acc0": test["outputs/accuracies"][:, 0], "acc_end": test["outputs/accuracies"][:, -1],
                "steps50": np.array([stats.first_reaching(a, 0.5) for a in test["outputs/accuracies"]]),
                "logp0": test["logps/chosen"][:, 0]}

    b, a = per_seed("base"), per_seed("aligned")
    align_acc = result.curves("align", "test", "outputs/accuracies")
    return ProtocolReading(
        k=int(k), steps=int(T), n_seeds=len(result.seeds),
        align_acc_start=float(align_acc[:, 0].mean()), align_acc_end=float(align_acc[:, -1].mean()),
        speed_k_base=float(b["speed"].mean()), speed_k_aligned=float(a["speed"].mean()),
        speed_wins=int((a["speed"] > b["speed"]).sum()),
        loss_k_base=float(b["loss"].mean()), loss_k_aligned=float(a["loss"].mean()),
        loss_k_base_sd=float(b["loss"].std()), loss_k_aligned_sd=float(a["loss"].std()),
        loss_wins=int((a["loss"] < b["loss"]).sum()),
        grad0_base=float(b["grad"].mean()), grad0_aligned=float(a["grad"].mean()),
        grad_wins=int((a["grad"] > b["grad"]).sum()),
        acc0_base=float(b["acc0"].mean()), acc0_aligned=float(a["acc0"].mean()),
        acc_end_base=float(b["acc_end"].mean()), acc_end_aligned=float(a["acc_end"].mean()),
        acc_end_wins=int((a["acc_end"] > b["acc_end"]).sum()),
        reached50_base=int(np.isfinite(b["steps50"]).sum()), reached50_aligned=int(np.isfinite(a["steps50"]).sum()),
        steps50_aligned=", ".join("never" if not np.isfinite(v) else f"{v:.0f}" for v in a["steps50"]),
        logp0_base=float(b["logp0"].mean()), logp0_aligned=float(a["logp0"].mean()),
        speed=verdicts.paired_difference(a["speed"] - b["speed"], expected=+1, unit="seeds"),
        loss=verdicts.paired_difference(a["loss"] - b["loss"], expected=-1, unit="seeds"),
        grad=verdicts.paired_difference(a["grad"] - b["grad"], expected=+1, unit="seeds"),
    )


def held_out_embeddings(model, sets: PairSets, *, layout: Layout, trunks: dict | None = None,
                        top_blocks: int | None = None) -> np.ndarray:
    """h(x) of the *test* statements of ``sets`` under ``model`` ([n_test, d]; never trained on)."""
    pol = make_policy(model, top_blocks=top_blocks)
    return prompt_embeddings(pol, sets.test, layout, (trunks or {}).get("test")).numpy()


def compare_modes(model, sets: PairSets, settings: TrainSettings, modes: dict[str, dict], *, seed: int,
                  micro_batch: int = 16, cache: bool = True, progress: bool = True) -> dict[str, DPORun]:
    """Train the same DPO problem with several policies (``modes``: label -> :func:`make_policy`
    keyword arguments), with the same batches, and return each run.
    """
    layout = Layout.for_pairs(sets.train, sets.test, micro_batch=micro_batch)
    out = {}
    for label, kw in modes.items():
        pol = make_policy(model, seed=seed, **kw)
        run = train_dpo(pol, sets.train, settings, eval_sets={"test": sets.test}, seed=seed, layout=layout,
                           cache=cache, progress=progress)
        run.policy = None
        out[label] = run
    return out
