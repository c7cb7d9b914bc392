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
from .pairsets import PairSets, persona_sets
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
# Variants: several policies, several behaviours, several models
# ---------------------------------------------------------------------------------------------------

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


def survey(model, tokenizer, behaviors: Sequence[str], *, seed: int, n_train: int | None, n_test: int | None,
           method: str, top_blocks: int | None, settings: TrainSettings, micro_batch: int = 16,
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

    from .. import geometry

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


def repeat_on_extremes(model, survey, details: dict, *, exclude: str, seed: int, method: str,
                       top_blocks: int | None, settings: TrainSettings, k: int, micro_batch: int = 16,
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
                     method: str, top_blocks: int | None, settings: TrainSettings, k: int,
                     micro_batch: int = 16, cache: bool = True, progress: bool = True):
    """For each model (name -> object with ``.model`` and ``.tokenizer``): the behaviour's
    distinguishability under it and one flipped DPO run from its own start (a pandas DataFrame, one
    row per model).
    """
    import pandas as pd

    from .. import geometry

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
