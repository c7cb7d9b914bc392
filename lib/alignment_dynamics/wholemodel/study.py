"""The controlled misalignment study: does alignment make a model easier to misalign, and is it the
alignment on *that* behaviour that does it?

For each behaviour and seed (a seed draws its own training and held-out statements,
:func:`~.pairsets.resampled_sets`), the flipped DPO run of the misalignment protocol starts from four
models, each its own reference:

* ``base``: the model as loaded;
* ``aligned``: aligned on the same behaviour (the paper's "Aligned");
* ``other``: aligned on *another* behaviour of the study (the next one in the list), with the same
  settings: a control for "any DPO training at all";
* ``sham``: aligned on the same statements with their labels shuffled (a seeded permutation of which
  answer is chosen): a control for "training on these statements, whatever the labels".

Measures of each flipped run (:data:`MEASURES`). With the reference equal to the start, the DPO margin
of a pair is β times how far its log-probability ratio *moved*, so the margin, and the loss, start at 0
and ln 2 from every start: ``speed_k`` (the mean flipped held-out margin after ``k`` steps, per step)
and ``loss_k`` do not depend on where a run starts, unlike the accuracy (``acc0`` is where it starts;
"steps to 50 %" favours whichever start is closer). ``grad_norm0`` is the norm of the first batch's
gradient (before clipping; the batches are the same for the four starts). ``dist_start`` is the
distinguishability ‖μ₊ − μ₋‖ of the held-out statements' h(x) under the starting model (never trained
on), so ``aligned`` against ``base`` is "distinguishability before and after alignment" on held-out data.

:func:`run_study` computes the rows; :func:`write` and :func:`load` store them as an artefact
(``artifacts/misalign-study/``, :mod:`alignment_dynamics.artifacts`); :func:`summarize` gives the paired
differences between starts with a two-level bootstrap (behaviours, then seeds within a behaviour) and
a verdict for each. Run: ``python -m alignment_dynamics.wholemodel.study --out artifacts/misalign-study``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .checks import maybe_progress, MisalignError
from .batches import Layout, Pairs
from .logps import prompt_embeddings
from .pairsets import resampled_sets
from .policy import make_policy, merged_model
from .train import train_dpo, TrainSettings
from .trunk import trunk_activations

CONDITIONS = ("base", "aligned", "other", "sham")
START = {"base": "the base model", "aligned": "aligned on the same behaviour",
         "other": "aligned on another behaviour", "sham": "aligned on shuffled labels"}
MEASURES = ("speed_k", "speed_end", "loss_k", "grad_norm0", "acc0", "acc_end", "dist_start")
#: The comparisons the chapter reads: (start a, start b, measure, the sign the paper's claim predicts for
#: a − b, or 0 where the paper makes no claim and the comparison attributes the effect).
COMPARISONS = (
    ("aligned", "base", "speed_k", +1), ("aligned", "base", "loss_k", -1), ("aligned", "base", "speed_end", 0),
    ("aligned", "base", "grad_norm0", 0),
    ("aligned", "other", "speed_k", 0), ("aligned", "sham", "speed_k", 0), ("other", "base", "speed_k", 0),
    ("sham", "base", "speed_k", 0), ("aligned", "base", "dist_start", 0),
)
#: The stored study's seeds (each draws its own statements); the behaviours are Figure 3's five.
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
FORMAT_VERSION = 1
MAKE = "python -m alignment_dynamics.wholemodel.study --out artifacts/misalign-study"


@dataclass(frozen=True)
class StudySettings:
    """What one study runs: behaviours, seeds, sizes and the DPO settings of every run (alignment,
    sham and flipped runs share them). ``k`` is the step at which speed and loss are read."""

    behaviors: tuple[str, ...]
    seeds: tuple[int, ...]
    n_train: int = 128
    n_test: int = 48
    top_blocks: int | None = 2
    method: str = "full"
    lr: float = 1e-3
    beta: float = 0.01
    batch_size: int = 16
    micro_batch: int = 16
    k: int = 4

    def __post_init__(self):
        from .. import data

        object.__setattr__(self, "behaviors", tuple(self.behaviors))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if len(self.behaviors) < 2 or len(set(self.behaviors)) != len(self.behaviors):
            raise MisalignError(f"the study needs at least two different behaviours (the 'other' control aligns "
                                f"on another one), got {list(self.behaviors)}")
        data.validate_behaviors(self.behaviors)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise MisalignError(f"seeds must be distinct ints, at least one, got {list(self.seeds)}")
        steps = math.ceil(self.n_train / self.batch_size)
        if not 1 <= self.k <= steps:
            raise MisalignError(f"k must be in 1..{steps} (the steps of one epoch of {self.n_train} pairs in batches "
                                f"of {self.batch_size}), got {self.k!r}")

    def train_settings(self) -> TrainSettings:
        return TrainSettings(beta=self.beta, lr=self.lr, batch_size=self.batch_size, epochs=1,
                             micro_batch=self.micro_batch)


def sham_pairs(pairs: Pairs, seed: int) -> Pairs:
    """The pairs with their labels shuffled: a seeded permutation of which completion is chosen (the
    statements and the share of each answer stay; which statement gets which answer is random)."""
    from .. import stats

    perm = stats.generator((int(seed), 0x5A4)).permutation(len(pairs))
    return Pairs(pairs.prompt, pairs.a, pairs.b, tuple(pairs.chosen_first[int(i)] for i in perm))


def _measures(run, dist: float, k: int) -> dict[str, float]:
    ev = run.evals["test"]
    margins, T = np.asarray(ev["rewards/margins"], dtype=np.float64), len(run.schedule)
    return {"speed_k": float(margins[k] / k), "speed_end": float(margins[T] / T), "loss_k": float(ev["loss"][k]),
            "grad_norm0": float(run.train["grad_norm"][0]), "acc0": float(ev["outputs/accuracies"][0]),
            "acc_end": float(ev["outputs/accuracies"][T]), "dist_start": float(dist)}


def run_study(model, tokenizer, settings: StudySettings, *, progress: bool = True) -> list[dict[str, Any]]:
    """One row per behaviour × seed × start (:data:`CONDITIONS`) with the :data:`MEASURES` of its flipped run.

    Per seed, every behaviour is aligned once and sham-aligned once (frozen bottom shared; only the
    trained top is copied), then each behaviour's flipped run starts from the four models with the same
    batches. Runs are not cached (the artefact is the record).
    """
    from .. import geometry

    s, ts = settings, settings.train_settings()
    rows: list[dict[str, Any]] = []
    items = [(seed, b) for seed in s.seeds for b in s.behaviors]
    work: dict[str, dict] = {}
    for j, (seed, b) in enumerate(maybe_progress(items, progress, "misalignment study (seed x behaviour)")):
        sets = resampled_sets(tokenizer, b, seed=seed, n_train=s.n_train, n_test=s.n_test)
        layout = Layout.for_pairs(sets.train, sets.test, micro_batch=s.micro_batch)
        trunks = None
        if s.top_blocks is not None:
            probe = make_policy(model, method=s.method, top_blocks=s.top_blocks)
            trunks = {"train": trunk_activations(probe, sets.train, layout, progress=False),
                      "test": trunk_activations(probe, sets.test, layout, progress=False)}
        kw = dict(layout=layout, trunks=trunks, cache=False, progress=False)

        def align(pairs):
            run = train_dpo(make_policy(model, method=s.method, top_blocks=s.top_blocks, seed=seed), pairs, ts,
                            seed=seed, **kw)
            return merged_model(run.policy)

        work[b] = {"sets": sets, "layout": layout, "trunks": trunks, "aligned": align(sets.train),
                   "sham": align(sham_pairs(sets.train, seed))}
        if j % len(s.behaviors) == len(s.behaviors) - 1:  # every behaviour of this seed is aligned: flip
            for i, name in enumerate(s.behaviors):
                w = work[name]
                starts = {"base": model, "aligned": w["aligned"],
                          "other": work[s.behaviors[(i + 1) % len(s.behaviors)]]["aligned"], "sham": w["sham"]}
                ftrain, ftest = w["sets"].train.flipped(), w["sets"].test.flipped()
                for cond, start in starts.items():
                    pol = make_policy(start, method=s.method, top_blocks=s.top_blocks, seed=seed)
                    h = prompt_embeddings(pol, w["sets"].test, w["layout"], (w["trunks"] or {}).get("test")).numpy()
                    dist = geometry.properties(h, w["sets"].labels_test)["distinguishability"]
                    run = train_dpo(pol, ftrain, ts, eval_sets={"test": ftest}, seed=seed, layout=w["layout"],
                                    trunks=w["trunks"], cache=False, progress=False)
                    rows.append({"behavior": name, "seed": int(seed), "condition": cond,
                                 "other": s.behaviors[(i + 1) % len(s.behaviors)] if cond == "other" else "",
                                 "n_train": len(ftrain), "n_test": len(ftest), **_measures(run, dist, s.k)})
                    del run, pol
            work = {}
    return rows


# ---------------------------------------------------------------------------------------------------
# The artefact
# ---------------------------------------------------------------------------------------------------

def default_dir() -> Path:
    from .. import artifacts

    return artifacts.root() / "misalign-study"


def _check_rows(rows: Sequence[dict], settings: StudySettings, model: str) -> None:
    want = {(b, sd, c) for b in settings.behaviors for sd in settings.seeds for c in CONDITIONS}
    have = {(r["behavior"], r["seed"], r["condition"]) for r in rows}
    if have != want or len(rows) != len(want):
        raise MisalignError(f"{model}: the study rows do not cover every behaviour x seed x start exactly once "
                            f"({len(rows)} rows for {len(want)} cells); nothing written")
    for r in rows:
        bad = [m for m in MEASURES if not (isinstance(r.get(m), float) and math.isfinite(r[m]))]
        if bad:
            raise MisalignError(f"{model} / {r['behavior']} / seed {r['seed']} / {r['condition']}: non-finite or "
                                f"missing {bad}; nothing written")


def write(results: dict[str, dict], out_dir: str | Path, *, command: str, seconds: float,
          commit: str | None = None) -> list[Path]:
    """Write ``<model>.json`` per model (``results[model]``: ``rows``, ``settings``, ``dtype``) and the
    manifest, after checking every row of every model."""
    from .. import artifacts

    for m, res in results.items():
        _check_rows(res["rows"], res["settings"], m)
    bodies = {f"{m}.json": {"format": FORMAT_VERSION, "model": m, "settings": asdict(res["settings"]),
                            "measures": list(MEASURES), "rows": res["rows"]} for m, res in results.items()}
    extra = {f"{m}.json": {"dtype": res.get("dtype", "unknown"), "rows": len(res["rows"])}
             for m, res in results.items()}
    return artifacts.write(out_dir, bodies, fmt=FORMAT_VERSION, command=command, seconds=seconds, commit_id=commit,
                           extra=extra)


@dataclass
class Study:
    """One model's stored study: its rows, settings and manifest entry."""

    model: str
    rows: list[dict[str, Any]]
    settings: StudySettings
    manifest: dict[str, Any] = field(default_factory=dict)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def load(model: str, directory: str | Path | None = None) -> Study:
    """The stored study of ``model`` (checksum and format checked; rows re-checked)."""
    from .. import artifacts

    d = Path(directory) if directory is not None else default_dir()
    body, entry = artifacts.read(d, f"{model}.json", fmt=FORMAT_VERSION, make=MAKE, error=MisalignError,
                                 what=f"misalignment study for model {model!r}")
    settings = StudySettings(**body["settings"])
    _check_rows(body["rows"], settings, model)
    return Study(model, body["rows"], settings, entry)


def covered(directory: str | Path | None = None) -> list[str]:
    """The models with a stored study in ``directory`` (default: the committed one)."""
    from .. import artifacts

    return artifacts.stems(Path(directory) if directory is not None else default_dir())


# ---------------------------------------------------------------------------------------------------
# Summary: paired differences between starts, with intervals and verdicts
# ---------------------------------------------------------------------------------------------------

def paired(study: Study, a: str, b: str, measure: str) -> tuple[np.ndarray, list[str]]:
    """The differences ``measure(a) − measure(b)`` of the same behaviour and seed (one per cell), and
    each cell's behaviour."""
    for c in (a, b):
        if c not in CONDITIONS:
            raise MisalignError(f"unknown start {c!r}; starts are {list(CONDITIONS)}")
    if measure not in MEASURES:
        raise MisalignError(f"unknown measure {measure!r}; measures are {list(MEASURES)}")
    by = {(r["behavior"], r["seed"], r["condition"]): r[measure] for r in study.rows}
    cells = [(bh, sd) for bh in study.settings.behaviors for sd in study.settings.seeds]
    return (np.array([by[(bh, sd, a)] - by[(bh, sd, b)] for bh, sd in cells], dtype=np.float64),
            [bh for bh, _ in cells])


@dataclass(frozen=True)
class Comparison:
    """One paired comparison: the mean difference a − b over behaviours (each behaviour's seeds averaged
    first), its two-level bootstrap interval, how many behaviours and cells, in how many behaviours the
    mean difference is positive, and the verdict (against the paper's predicted sign where it makes a
    claim, else the sign of the interval: ``expected`` 0)."""

    a: str
    b: str
    measure: str
    expected: int
    estimate: float
    lo: float
    hi: float
    n_behaviors: int
    n_cells: int
    positive_behaviors: int
    verdict: Any

    def sign(self) -> str:
        """"above 0", "below 0" or "containing 0": where the interval lies."""
        return "above 0" if self.lo > 0 else "below 0" if self.hi < 0 else "containing 0"


def compare(study: Study, a: str, b: str, measure: str, *, expected: int = 0, n_boot: int = 4000,
            seed: int = 0) -> Comparison:
    """:class:`Comparison` of ``measure`` between starts ``a`` and ``b`` (:func:`paired`).

    The interval resamples behaviours, then seeds within each (``stats.cluster_mean_ci``): five
    behaviours is a small sample of behaviours, and the interval says so by its width. The verdict is
    ``verdicts.difference`` with the predicted sign (``expected`` ±1); with ``expected`` 0 (no claim) it
    is read against +1 and the chapter words it from :meth:`Comparison.sign`.
    """
    from .. import stats, verdicts

    d, groups = paired(study, a, b, measure)
    est, lo, hi = stats.cluster_mean_ci(d, groups, n_boot=n_boot, seed=seed)
    names = list(dict.fromkeys(groups))
    pos = sum(float(np.mean([x for x, g in zip(d, groups) if g == n])) > 0 for n in names)
    v = verdicts.difference(est, lo, hi, len(d), expected=expected or +1, unit="behaviour × seed cells")
    return Comparison(a, b, measure, expected, est, lo, hi, len(names), len(d), int(pos), v)


@dataclass
class StudySummary:
    """Every comparison of :data:`COMPARISONS` for one model, and the mean of each measure per start."""

    model: str
    comparisons: list[Comparison]
    means: Any  # DataFrame: start x measure
    n_behaviors: int
    n_seeds: int

    def get(self, a: str, b: str, measure: str) -> Comparison:
        for c in self.comparisons:
            if (c.a, c.b, c.measure) == (a, b, measure):
                return c
        raise MisalignError(f"no comparison {a} - {b} of {measure}; the summary has "
                            f"{[(c.a, c.b, c.measure) for c in self.comparisons]}")

    def table(self):
        import pandas as pd

        return pd.DataFrame([{"comparison": f"{c.a} − {c.b}", "measure": c.measure, "mean difference": c.estimate,
                              "95% interval": f"[{c.lo:.3g}, {c.hi:.3g}]", "behaviours > 0":
                              f"{c.positive_behaviors} of {c.n_behaviors}", "cells": c.n_cells,
                              "reading": c.verdict.verdict if c.expected else f"interval {c.sign()}"}
                             for c in self.comparisons])


def summarize(study: Study, *, n_boot: int = 4000, seed: int = 0) -> StudySummary:
    """The :data:`COMPARISONS` of one stored study, and each start's mean of every measure."""
    frame = study.frame()
    means = frame.groupby("condition")[list(MEASURES)].mean().reindex(list(CONDITIONS))
    comps = [compare(study, a, b, m, expected=e, n_boot=n_boot, seed=seed) for a, b, m, e in COMPARISONS]
    return StudySummary(study.model, comps, means, len(study.settings.behaviors), len(study.settings.seeds))


def main(argv: Sequence[str] | None = None) -> int:
    from .. import artifacts, hardware, models
    from ..chapters.common import FIG3_BEHAVIORS

    p = argparse.ArgumentParser(prog="python -m alignment_dynamics.wholemodel.study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m", help="comma-separated models")
    p.add_argument("--behaviors", default=",".join(FIG3_BEHAVIORS), help="comma-separated behaviours (>= 2)")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated seeds (each draws its own statements)")
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-test", type=int, default=48)
    p.add_argument("--dtype", default="auto", help="forward-pass dtype: auto, float32 or bfloat16")
    p.add_argument("--out", default=str(default_dir()))
    a = p.parse_args(argv)
    settings = StudySettings(behaviors=tuple(a.behaviors.split(",")), seeds=tuple(int(x) for x in a.seeds.split(",")),
                             n_train=a.n_train, n_test=a.n_test)
    cmd = ("python -m alignment_dynamics.wholemodel.study " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    for name in a.models.split(","):
        t0, commit = time.perf_counter(), artifacts.commit()
        dtype = hardware.resolve_dtype(a.dtype)
        lm = models.load(name, dtype=dtype)
        rows = run_study(lm.model, lm.tokenizer, settings)
        for path in write({name: {"rows": rows, "settings": settings, "dtype": dtype}}, a.out, command=cmd,
                          seconds=time.perf_counter() - t0, commit=commit):
            print(path)
        del lm
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------------
# What the chapter shows: every model's summary, generated sentences, the figure's panels
# ---------------------------------------------------------------------------------------------------

#: The speed comparisons drawn in the chapter's figure, in order.
SPEED_ROWS = (("aligned", "base"), ("other", "base"), ("sham", "base"), ("aligned", "other"), ("aligned", "sham"))


def attribution(summary: StudySummary) -> str:
    """Which start makes the flipped run fast, in words generated from the intervals of the speed
    comparisons: specific to the behaviour's own labels, generic to any DPO training, or unresolved."""
    ab, ob, sb = (summary.get(a, "base", "speed_k") for a in ("aligned", "other", "sham"))
    ao, as_ = summary.get("aligned", "other", "speed_k"), summary.get("aligned", "sham", "speed_k")
    if ab.sign() != "above 0":
        return (f"the aligned start is not faster than the base model (interval {ab.sign()}), so there is no "
                "speed-up to attribute")
    if ao.sign() == "above 0" and as_.sign() == "above 0":
        return ("the speed-up is specific: the aligned start is faster than a start aligned on another behaviour "
                "and than a start trained on the same statements with shuffled labels (both intervals above 0)")
    generic = [name for c, name in ((ob, "aligned on another behaviour"), (sb, "trained on shuffled labels"))
               if c.sign() == "above 0"]
    if generic:
        verb = "is" if len(generic) == 1 else "are"
        return (f"the speed-up is at least partly generic: a start {' and a start '.join(generic)} {verb} faster "
                f"than the base model too, and the aligned start exceeds the other-behaviour start by an interval "
                f"{ao.sign()} and the sham start by an interval {as_.sign()}")
    return (f"the controls do not resolve where the speed-up comes from (aligned − other: interval {ao.sign()}; "
            f"aligned − sham: interval {as_.sign()})")


@dataclass
class StudyReport:
    """The study as the chapter shows it: one :class:`StudySummary` per model that has a study,
    the models without one, and the generated words."""

    summaries: dict[str, StudySummary]
    missing: list[str]
    source: str  # "stored artefact" or "run in this build"
    manifest: dict[str, dict]
    studies: dict[str, Study] = field(default_factory=dict, repr=False)  # the cells behind each summary

    def table(self):
        import pandas as pd

        if not self.summaries:
            return pd.DataFrame({"note": [f"no controlled study for {', '.join(self.missing)}"]})
        return pd.concat([s.table().assign(model=m) for m, s in self.summaries.items()], ignore_index=True)[
            ["model", "comparison", "measure", "mean difference", "95% interval", "behaviours > 0", "cells", "reading"]]

    def means(self):
        import pandas as pd

        return pd.concat({m: s.means for m, s in self.summaries.items()}, names=["model", "start"]) if self.summaries \
            else pd.DataFrame()

    def verdict(self, a: str = "aligned", b: str = "base", measure: str = "speed_k"):
        """The verdict of ``measure(a) − measure(b)`` over every model with a study
        (``verdicts.combine`` of each model's), or not testable without a study."""
        from .. import verdicts

        if not self.summaries:
            return verdicts.not_testable(f"no controlled study for {self.missing}")
        return verdicts.combine([s.get(a, b, measure).verdict for s in self.summaries.values()],
                                rule="each model's paired comparison")

    def design(self) -> str:
        """The study's design in words, from its settings (per model where they differ)."""
        if not self.summaries:
            return "no study"
        texts = {}
        for m, st in self.studies.items():
            s = st.settings
            texts.setdefault((f"{len(s.behaviors)} behaviours × {len(s.seeds)} seeds, {s.n_train} training and "
                              f"{s.n_test} held-out statements per behaviour and seed, batches of {s.batch_size}, "
                              f"speed read after k = {s.k} steps"), []).append(m)
        if len(texts) == 1:
            return next(iter(texts))
        return "; ".join(f"{', '.join(ms)}: {t}" for t, ms in texts.items())

    def claim_text(self, a: str, b: str, measure: str, labels: dict[str, str] | None = None) -> str:
        """What was measured, per model, for the claims table: the mean difference, its interval and n."""
        labels = labels or {}
        if not self.summaries:
            return f"no controlled study for {', '.join(self.missing)}"
        parts = []
        for m, s in self.summaries.items():
            c = s.get(a, b, measure)
            parts.append(f"{labels.get(m, m)}: {a} − {b} {c.estimate:.3g} [{c.lo:.3g}, {c.hi:.3g}], "
                         f"{c.n_behaviors} behaviours × {s.n_seeds} seeds, > 0 in {c.positive_behaviors} "
                         f"of {c.n_behaviors} behaviours")
        return "; ".join(parts) + ("; no study for " + ", ".join(self.missing) if self.missing else "")

    def text(self, labels: dict[str, str] | None = None) -> str:
        """One generated paragraph: per model, the speed verdict, the gradient, the attribution."""
        labels = labels or {}
        if not self.summaries:
            return (f"No controlled study is stored for {', '.join(self.missing)}; make one with `{MAKE}` "
                    f"(about ten minutes per small model on two cores).")
        parts = []
        for m, s in self.summaries.items():
            sp, g, d = s.get("aligned", "base", "speed_k"), s.get("aligned", "base", "grad_norm0"), \
                s.get("aligned", "base", "dist_start")
            e = s.get("aligned", "base", "speed_end")
            parts.append(
                sp.verdict.sentence(f"From {labels.get(m, m)} ({s.n_behaviors} behaviours × {s.n_seeds} seeds), "
                                    "the aligned minus the base start's flipped held-out margin per step", ".2g")
                + f" Over the whole epoch (the margin after the last step, per step) the difference is "
                f"{e.estimate:.2g} [{e.lo:.2g}, {e.hi:.2g}] (interval {e.sign()})."
                + f" The first batch's gradient norm differs by {g.estimate:.2g} [{g.lo:.2g}, {g.hi:.2g}] (interval "
                f"{g.sign()}); the held-out distinguishability under the aligned start differs from the base "
                f"model's by {d.estimate:.2g} [{d.lo:.2g}, {d.hi:.2g}] (interval {d.sign()}); {attribution(s)}.")
        if self.missing:
            parts.append(f"No controlled study is stored for {', '.join(self.missing)}.")
        return " ".join(parts)

    def panels(self, labels: dict[str, str] | None = None) -> list[dict]:
        """Per model: the speed comparisons (:data:`SPEED_ROWS`), each with its behaviours' mean
        differences and its interval, for ``plotting.misalignment.study_panels``."""
        labels = labels or {}
        out = []
        for m, s in self.summaries.items():
            rows = []
            for a, b in SPEED_ROWS:
                c = s.get(a, b, "speed_k")
                d, groups = paired(self.studies[m], a, b, "speed_k")
                names = list(dict.fromkeys(groups))
                rows.append({"label": f"{a} − {b}", "estimate": c.estimate, "lo": c.lo, "hi": c.hi,
                             "behaviours": [float(np.mean([x for x, g in zip(d, groups) if g == n])) for n in names]})
            out.append({"title": labels.get(m, m), "rows": rows})
        return out


def report(model_names: Sequence[str], *, live: dict | None = None, directory: str | Path | None = None,
           n_boot: int = 4000, seed: int = 0, progress: bool = True) -> StudyReport:
    """The study of each model: read from the stored artefact, or, with ``live`` (the smoke profile:
    :class:`StudySettings` keyword arguments), run now on each model (loaded by name). A model with
    neither is listed as missing, and the chapter says so."""
    from .. import models as _models

    summaries, studies, manifest, missing = {}, {}, {}, []
    for m in model_names:
        if live is not None:
            s = StudySettings(**live)
            lm = _models.load(m)
            st = Study(m, run_study(lm.model, lm.tokenizer, s, progress=progress), s, {})
            del lm
        elif m in covered(directory):
            st = load(m, directory)
        else:
            missing.append(m)
            continue
        studies[m], manifest[m] = st, st.manifest
        summaries[m] = summarize(st, n_boot=n_boot, seed=seed)
    return StudyReport(summaries, missing, "run in this build" if live is not None else "stored artefact", manifest,
                       studies)


def provenance(rep: StudyReport) -> str:
    """Where the study's numbers come from, in words: the build, or each stored file's machine, dtype,
    date, minutes and commit (from its manifest entry)."""
    if rep.source != "stored artefact":
        return "a tiny study run in this build (smoke profile: plumbing only)"
    if not rep.manifest:
        return "no stored study"
    from .. import artifacts

    return artifacts.describe(rep.manifest)


def lead(rep: StudyReport, labels: dict[str, str] | None = None) -> str:
    """The chapter's lead sentence, generated from the speed verdict of each model and the controls."""
    labels = labels or {}
    if not rep.summaries:
        return f"no controlled study is stored for {', '.join(rep.missing)}, so the claim is not tested here."
    parts = []
    for m, s in rep.summaries.items():
        c = s.get("aligned", "base", "speed_k")
        parts.append(f"from {labels.get(m, m)} ({s.n_behaviors} behaviours × {s.n_seeds} seeds) the comparison "
                     f"{c.verdict.phrase()} "
                     f"({c.positive_behaviors} of {c.n_behaviors} behaviours faster from the aligned start); "
                     f"{attribution(s)}")
    return "; ".join(parts) + "."
