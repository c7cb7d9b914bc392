"""Figure 5 on the whole model: does the head-only priority gap predict which of two behaviours the
whole model (its top blocks, trained end to end) learns first?

The last-layer chapter (``book/prioritization.md``) tests the priority theorem where its hypotheses
hold: only the unembedding moves. Here the same question is asked of DPO on the top transformer
blocks (:func:`~.policy.make_policy`), where the theorem makes no promise. Per pair (a, b) and seed,
each behaviour's statements are drawn at random and dealt into three disjoint parts
(:func:`~.pairsets.predictor_sets`):

* ``n_predict`` statements of the 90 % split, half of each class, give the **predictor**: the head-only priority gap
  G(a, b) (:func:`alignment_dynamics.geometry.priority_gap`) of b̂ = μ̂₊ − μ̂₋ of the base model's
  h(x) (:func:`~.logps.prompt_embeddings`, the representation whose unembedding the head-only theory
  trains);
* ``n_train`` further statements of the 90 % split of *both* behaviours, shuffled together, are the
  **training** set of one epoch of DPO;
* ``n_test`` statements of the 10 % split, per behaviour, give the **outcome**: each behaviour's
  held-out DPO margin after ``k`` steps (``margin_*_k``, "learned first") and after the epoch.

The prediction is right for a (pair, seed) when sign G(a, b) = sign(margin_a − margin_b) (a zero gap or
a tie counts as wrong). :func:`summarize` gives the share of right predictions over the random pairs
with an interval that resamples the groups of pairs linked by a shared behaviour (pairs in different
groups share no behaviour and are independent; :func:`alignment_dynamics.stats.pair_share_by_component`)
and its verdict (:func:`alignment_dynamics.verdicts.share` against chance ½), the Spearman correlation
of the gap with the margin difference, and each named pair on its own. Predictor and outcome never
share a statement. :func:`write`/:func:`load` store the rows as an artefact
(``artifacts/whole-model-pairs/``). Run: ``python -m alignment_dynamics.wholemodel.pair_study``.
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

from .batches import Layout, Pairs
from .checks import MisalignError, maybe_progress
from .logps import prompt_embeddings
from .pairsets import predictor_sets
from .policy import make_policy
from .train import TrainSettings, train_dpo
from .trunk import trunk_activations

#: The numbers of one (pair, seed): the predictor, the outcome, and the base model's
#: distinguishability of each behaviour on the predictor statements.
MEASURES = ("gap", "margin_a_k", "margin_b_k", "margin_a_end", "margin_b_end", "dist_a", "dist_b")
DEFAULT_SEEDS = (0, 1)
DEFAULT_N_RANDOM = 20
FORMAT_VERSION = 1
MAKE = "python -m alignment_dynamics.wholemodel.pair_study --out artifacts/whole-model-pairs"


@dataclass(frozen=True)
class PairStudySettings:
    """What the study runs. ``named`` are the pairs reported one by one (Figure 5's), ``random`` the
    pairs of the test; sizes are statements per behaviour; the DPO settings are those of the
    misalignment study. ``k`` is the step at which "learned first" is read."""

    named: tuple[tuple[str, str], ...]
    random: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    n_predict: int = 32
    n_train: int = 48
    n_test: int = 24
    top_blocks: int | None = 2
    method: str = "full"
    lr: float = 1e-3
    beta: float = 0.01
    batch_size: int = 16
    micro_batch: int = 16
    k: int = 2

    def __post_init__(self):
        from .. import data

        named = tuple(tuple(p) for p in self.named)
        rand = tuple(tuple(p) for p in self.random)
        object.__setattr__(self, "named", named)
        object.__setattr__(self, "random", rand)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        for p in named + rand:
            if len(p) != 2 or p[0] == p[1]:
                raise MisalignError(f"a pair is two different behaviours, got {list(p)}")
        data.validate_behaviors(sorted({b for p in named + rand for b in p}))
        keys = [frozenset(p) for p in named + rand]
        if len(set(keys)) != len(keys):
            raise MisalignError("the named and random pairs must all be different pairs")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise MisalignError(f"seeds must be distinct ints, at least one, got {list(self.seeds)}")
        for name in ("n_predict", "n_train", "n_test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 4:
                raise MisalignError(f"{name} must be an int >= 4 (statements per behaviour), got {v!r}")
        if self.n_predict % 2:
            raise MisalignError(f"n_predict must be even (half of each class), got {self.n_predict}")
        steps = math.ceil(2 * self.n_train / self.batch_size)
        if not 1 <= self.k <= steps:
            raise MisalignError(f"k must be in 1..{steps} (the steps of one epoch of 2 x {self.n_train} pairs in "
                                f"batches of {self.batch_size}), got {self.k!r}")

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return self.named + self.random

    def train_settings(self) -> TrainSettings:
        return TrainSettings(beta=self.beta, lr=self.lr, batch_size=self.batch_size, epochs=1,
                             micro_batch=self.micro_batch)


def default_settings(n_random: int = DEFAULT_N_RANDOM, seeds: Sequence[int] = DEFAULT_SEEDS, *,
                     seed: int = 0, **kw) -> PairStudySettings:
    """Figure 5's two pairs and ``n_random`` random pairs of other behaviours (drawn with ``seed``)."""
    from .. import data
    from ..chapters.common import NAMED_BEHAVIORS
    from ..lastlayer.prioritization import random_groups

    named = (tuple(NAMED_BEHAVIORS[0:2]), tuple(NAMED_BEHAVIORS[2:4]))
    taken = {b for p in named for b in p}
    pool = [b for b in data.behaviors() if b not in taken]
    return PairStudySettings(named=named, random=tuple(random_groups(pool, 2, n_random, seed=seed)),
                             seeds=tuple(seeds), **kw)


def _b(h: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return h[labels > 0].mean(0) - h[labels < 0].mean(0)


def run_pair(model, tokenizer, pair: tuple[str, str], seed: int, s: PairStudySettings) -> dict[str, Any]:
    """The :data:`MEASURES` of one pair and seed (see the module docstring)."""
    from .. import geometry

    a, b = pair
    (pa, sa), (pb, sb) = (predictor_sets(tokenizer, x, seed=seed, n_predict=s.n_predict, n_train=s.n_train,
                                          n_test=s.n_test) for x in pair)
    train = Pairs.concat([sa.train, sb.train])
    layout = Layout.for_pairs(pa.train, pb.train, train, sa.test, sb.test, micro_batch=s.micro_batch)
    base = make_policy(model, method=s.method, top_blocks=s.top_blocks, seed=seed)
    trunks = None
    if s.top_blocks is not None:
        trunks = {n: trunk_activations(base, p, layout, progress=False)
                  for n, p in {"pa": pa.train, "pb": pb.train, "train": train, "a": sa.test, "b": sb.test}.items()}
    ba = _b(prompt_embeddings(base, pa.train, layout, (trunks or {}).get("pa")).double().numpy(), pa.labels_train)
    bb = _b(prompt_embeddings(base, pb.train, layout, (trunks or {}).get("pb")).double().numpy(), pb.labels_train)
    gap = geometry.priority_gap(ba, bb)
    run = train_dpo(base, train, s.train_settings(), eval_sets={"a": sa.test, "b": sb.test}, seed=seed,
                    layout=layout, trunks=trunks, cache=False, progress=False)
    T = len(run.schedule)
    m = {x: np.asarray(run.evals[x]["rewards/margins"], dtype=np.float64) for x in ("a", "b")}
    return {"a": a, "b": b, "seed": int(seed), "n_predict": s.n_predict, "n_train": s.n_train, "n_test": s.n_test,
            "gap": float(gap), "margin_a_k": float(m["a"][s.k]), "margin_b_k": float(m["b"][s.k]),
            "margin_a_end": float(m["a"][T]), "margin_b_end": float(m["b"][T]),
            "dist_a": float(np.linalg.norm(ba)), "dist_b": float(np.linalg.norm(bb))}


def run_study(model, tokenizer, settings: PairStudySettings, *, progress: bool = True) -> list[dict[str, Any]]:
    """One row per pair × seed (:func:`run_pair`), named pairs first."""
    items = [(p, sd) for p in settings.pairs for sd in settings.seeds]
    return [run_pair(model, tokenizer, p, sd, settings)
            for p, sd in maybe_progress(items, progress, "whole-model pairs (pair x seed)")]


# ---------------------------------------------------------------------------------------------------
# The artefact
# ---------------------------------------------------------------------------------------------------

def default_dir() -> Path:
    from .. import artifacts

    return artifacts.root() / "whole-model-pairs"


def _check_rows(rows: Sequence[dict], s: PairStudySettings, model: str) -> None:
    want = {(a, b, sd) for a, b in s.pairs for sd in s.seeds}
    have = {(r["a"], r["b"], r["seed"]) for r in rows}
    if have != want or len(rows) != len(want):
        raise MisalignError(f"{model}: the rows do not cover every pair x seed exactly once ({len(rows)} rows for "
                            f"{len(want)} cells)")
    for r in rows:
        bad = [m for m in MEASURES if not (isinstance(r.get(m), float) and math.isfinite(r[m]))]
        if bad:
            raise MisalignError(f"{model} / {r['a']} + {r['b']} / seed {r['seed']}: non-finite or missing {bad}")


def write(model: str, rows: list[dict], settings: PairStudySettings, out_dir: str | Path, *, command: str,
          seconds: float, dtype: str, commit: str | None = None) -> list[Path]:
    """Write ``<model>.json`` and the manifest after checking every row (nothing is written otherwise)."""
    from .. import artifacts

    _check_rows(rows, settings, model)
    body = {"format": FORMAT_VERSION, "model": model, "settings": asdict(settings), "measures": list(MEASURES),
            "rows": rows}
    return artifacts.write(out_dir, {f"{model}.json": body}, fmt=FORMAT_VERSION, command=command, seconds=seconds,
                           commit_id=commit, extra={f"{model}.json": {"dtype": dtype, "rows": len(rows)}})


@dataclass
class PairStudy:
    """One model's stored (or live) rows with their settings and manifest entry."""

    model: str
    rows: list[dict[str, Any]]
    settings: PairStudySettings
    manifest: dict[str, Any] = field(default_factory=dict)


def load(model: str, directory: str | Path | None = None) -> PairStudy:
    """The stored study of ``model`` (checksum and format checked; rows re-checked)."""
    from .. import artifacts

    d = Path(directory) if directory is not None else default_dir()
    body, entry = artifacts.read(d, f"{model}.json", fmt=FORMAT_VERSION, make=MAKE, error=MisalignError,
                                 what=f"whole-model pair study for model {model!r}")
    settings = PairStudySettings(**body["settings"])
    _check_rows(body["rows"], settings, model)
    return PairStudy(model, body["rows"], settings, entry)


def covered(directory: str | Path | None = None) -> list[str]:
    """The models with a stored study in ``directory`` (default: the committed one)."""
    from .. import artifacts

    return artifacts.stems(Path(directory) if directory is not None else default_dir())


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NamedPair:
    """One named pair over its seeds: the mean gap, the mean margin difference a − b at k, and in how
    many seeds the gap's sign was right."""

    a: str
    b: str
    gap: float
    diff_k: float
    right: int
    seeds: int


@dataclass(frozen=True)
class PairSummary:
    """What :func:`summarize` finds for one model (see the module docstring)."""

    model: str
    n_pairs: int
    n_seeds: int
    share: float
    lo: float
    hi: float
    rho: float
    rho_lo: float
    rho_hi: float
    verdict: Any
    rho_verdict: Any
    named: tuple[NamedPair, ...]
    share_end: float
    components: int  # groups of random pairs linked by a shared behaviour (the interval resamples them)

    def sentence(self, label: str) -> str:
        """A generated result sentence for the prose."""
        return (f"On {label}, over {_count(self.n_pairs, 'random pair')} × {_count(self.n_seeds, 'seed')}, the sign of the head-only "
                f"priority gap named the behaviour with the larger held-out margin after the first steps in "
                f"{self.share:.0%} of pairs [{self.lo:.0%}, {self.hi:.0%}; a bootstrap over the {self.components} groups of "
                f"pairs that share no behaviour] (after the epoch: "
                f"{self.share_end:.0%}), which {self.verdict.phrase()}; Spearman ρ(gap, margin difference) = "
                f"{self.rho:.2f} [{self.rho_lo:.2f}, {self.rho_hi:.2f}].")


def _count(n: int, noun: str) -> str:
    """``"1 seed"``, ``"2 seeds"`` (:func:`alignment_dynamics.book.count_phrase`)."""
    from ..book import count_phrase

    return count_phrase(n, noun)


def _right(gap: np.ndarray, diff: np.ndarray) -> np.ndarray:
    return ((gap != 0) & (np.sign(gap) == np.sign(diff))).astype(np.float64)


def summarize(study: PairStudy, *, n_boot: int = 2000, seed: int = 0) -> PairSummary:
    """The share of right predictions over the random pairs (mean over seeds per pair), its interval by
    linked groups of pairs and verdict, ρ(gap, margin difference at k) with a bootstrap interval, and the named pairs."""
    from .. import stats, verdicts

    s = study.settings
    if not s.random:
        raise MisalignError("the study has no random pairs to test the prediction on")
    by = {(r["a"], r["b"]): [] for r in study.rows}
    for r in study.rows:
        by[(r["a"], r["b"])].append(r)

    def arrays(pair, end=False):
        rows = by[pair]
        g = np.array([r["gap"] for r in rows])
        suffix = "end" if end else "k"
        d = np.array([r[f"margin_a_{suffix}"] - r[f"margin_b_{suffix}"] for r in rows])
        return g, d

    right = np.array([_right(*arrays(p)).mean() for p in s.random])
    right_end = np.array([_right(*arrays(p, True)).mean() for p in s.random])
    share, lo, hi, components = stats.pair_share_by_component(right, s.random, n_boot=n_boot, seed=seed)
    gaps = np.array([arrays(p)[0].mean() for p in s.random])
    diffs = np.array([arrays(p)[1].mean() for p in s.random])
    try:
        rho, rlo, rhi = stats.spearman_ci(gaps, diffs, n_boot=n_boot, seed=seed)
        rho_verdict = verdicts.positive(rho, rlo, rhi, len(s.random), unit="pairs")
    except stats.StatsError:  # a constant gap or difference: ρ is undefined
        rho = rlo = rhi = math.nan
        rho_verdict = verdicts.not_testable("Spearman ρ is undefined for a constant gap or margin difference",
                                            n=len(s.random), unit="pairs")
    named = tuple(NamedPair(a, b, float(arrays((a, b))[0].mean()), float(arrays((a, b))[1].mean()),
                            int(_right(*arrays((a, b))).sum()), len(by[(a, b)])) for a, b in s.named)
    return PairSummary(study.model, len(s.random), len(s.seeds), share, lo, hi, rho, rlo, rhi,
                       verdicts.share(share, lo, hi, len(s.random)), rho_verdict, named, float(right_end.mean()),
                       components)


def main(argv: Sequence[str] | None = None) -> int:
    from .. import artifacts, hardware, models

    p = argparse.ArgumentParser(prog="python -m alignment_dynamics.wholemodel.pair_study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m", help="comma-separated models")
    p.add_argument("--n-random", type=int, default=DEFAULT_N_RANDOM, help="random pairs besides Figure 5's two")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated seeds")
    p.add_argument("--n-predict", type=int, default=PairStudySettings.n_predict, help="predictor statements per behaviour")
    p.add_argument("--n-train", type=int, default=PairStudySettings.n_train, help="training statements per behaviour")
    p.add_argument("--n-test", type=int, default=PairStudySettings.n_test, help="held-out statements per behaviour")
    p.add_argument("--dtype", default="auto", help="forward-pass dtype: auto, float32 or bfloat16")
    p.add_argument("--out", default=str(default_dir()))
    a = p.parse_args(argv)
    settings = default_settings(a.n_random, tuple(int(x) for x in a.seeds.split(",")), n_predict=a.n_predict,
                                n_train=a.n_train, n_test=a.n_test)
    cmd = ("python -m alignment_dynamics.wholemodel.pair_study " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    for name in a.models.split(","):
        t0, commit = time.perf_counter(), artifacts.commit()
        dtype = hardware.resolve_dtype(a.dtype)
        lm = models.load(name, dtype=dtype)
        rows = run_study(lm.model, lm.tokenizer, settings)
        for path in write(name, rows, settings, a.out, command=cmd, seconds=time.perf_counter() - t0, dtype=dtype,
                          commit=commit):
            print(path)
        del lm
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------------
# What the chapter shows
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairReport:
    """The whole-model pair study as the chapter shows it: one :class:`PairSummary` per model with a
    study, the models without one, where the numbers come from, and each model's points for the figure."""

    summaries: dict[str, PairSummary]
    studies: dict[str, PairStudy]
    missing: tuple[str, ...]
    source: str  # "stored artefact" or "run in this build"

    @property
    def provenance(self) -> str:
        from .. import artifacts

        if self.source != "stored artefact":
            return "a tiny study run in this build (smoke profile: plumbing only)"
        return artifacts.describe({m: st.manifest for m, st in self.studies.items()})

    def verdict(self):
        """The share verdict over every model with a study (``verdicts.combine``), or not testable."""
        from .. import verdicts

        if not self.summaries:
            return verdicts.not_testable(f"no whole-model pair study for {list(self.missing)}")
        return verdicts.combine([s.verdict for s in self.summaries.values()], rule="each model's random pairs")

    @property
    def k(self) -> int:
        """The step at which "learned first" is read (the first study's; the default without one)."""
        return next(iter(self.studies.values())).settings.k if self.studies else PairStudySettings.k

    def design(self) -> str:
        """The design in words, from the settings of the first study."""
        if not self.studies:
            return "no study"
        s = next(iter(self.studies.values())).settings
        top = "every block" if not s.top_blocks else "the top block" if s.top_blocks == 1 else \
            f"the top {s.top_blocks} blocks"
        return (f"{len(s.named)} named and {_count(len(s.random), 'random pair')} × {_count(len(s.seeds), 'seed')}; "
                f"per behaviour {s.n_predict} predictor, {s.n_train} training and {s.n_test} held-out statements; "
                f"{top} trained "
                f"({s.method}) for one epoch in batches of {s.batch_size}, lr {s.lr:g}, β {s.beta:g}; "
                f"learned first read after k = {s.k} steps")

    def text(self, labels: dict[str, str] | None = None) -> str:
        """One generated paragraph: per model, the test's sentence and the named pairs."""
        labels = labels or {}
        if not self.summaries:
            return (f"No whole-model pair study is stored for {', '.join(self.missing)}; make one with `{MAKE}`.")
        parts = []
        for m, s in self.summaries.items():
            named = "; ".join(f"{n.a} over {n.b}: gap {n.gap:+.2f}, held-out margin difference {n.diff_k:+.3f}, "
                              f"sign right in {n.right} of {_count(n.seeds, 'seed')}" for n in s.named)
            parts.append(s.sentence(labels.get(m, m)) + (f" The named pairs: {named}." if named else ""))
        if self.missing:
            parts.append(f"No whole-model pair study is stored for {', '.join(self.missing)}.")
        return " ".join(parts)

    def against_head_only(self, head: dict, labels: dict[str, str] | None = None) -> str:
        """Each model's whole-model share set against its head-only cross-fitted share (``head[model]``
        with ``share``, ``lo``, ``hi``), as generated sentences: below or above when the two 95 %
        intervals do not overlap (a conservative test of the difference), else not resolvably different.
        Models without both are left out; with none, says so."""
        labels = labels or {}
        parts = []
        for m, s in self.summaries.items():
            h = head.get(m)
            if h is None:
                continue
            vals = [s.share, s.lo, s.hi, h.share, h.lo, h.hi]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals) or not (
                    s.lo <= s.share <= s.hi and h.lo <= h.share <= h.hi):
                raise MisalignError(f"{m}: the shares and intervals must be finite with lo <= share <= hi, got {vals}")
            if s.hi < h.lo:
                rel = "below"
            elif s.lo > h.hi:
                rel = "above"
            else:
                rel = None
            head_txt = f"the head-only share {h.share:.0%} [{h.lo:.0%}, {h.hi:.0%}]"
            parts.append(f"on {labels.get(m, m)} the whole-model share {s.share:.0%} [{s.lo:.0%}, {s.hi:.0%}] is "
                         + (f"{rel} {head_txt} (the two intervals do not overlap)" if rel else
                            f"not resolvably different from {head_txt} (the intervals overlap)"))
        if not parts:
            return "No model has both a whole-model and a head-only pair test in this build."
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."

    def claim_text(self, labels: dict[str, str] | None = None) -> str:
        """What was measured, per model, for the claims table."""
        labels = labels or {}
        if not self.summaries:
            return f"no whole-model pair study for {', '.join(self.missing)}"
        return "; ".join(f"{labels.get(m, m)}: share right {s.share:.2f} [{s.lo:.2f}, {s.hi:.2f}], "
                         f"{_count(s.n_pairs, 'random pair')} × {_count(s.n_seeds, 'seed')}"
                         for m, s in self.summaries.items())

    def panels(self, labels: dict[str, str] | None = None) -> list[dict]:
        """Per model: each pair's mean gap (x) and mean held-out margin difference at k (y), the named
        pairs marked, for ``plotting.dynamics.whole_model_pairs``."""
        labels = labels or {}
        out = []
        for m, st in self.studies.items():
            by: dict[tuple[str, str], list[dict]] = {}
            for r in st.rows:
                by.setdefault((r["a"], r["b"]), []).append(r)
            named = {p: f"Figure 5({'abcdefgh'[i]})" if i < 8 else f"named {i + 1}"
                     for i, p in enumerate(st.settings.named)}
            pts = [{"gap": float(np.mean([r["gap"] for r in rows])),
                    "diff": float(np.mean([r["margin_a_k"] - r["margin_b_k"] for r in rows])),
                    "named": pair in named, "label": named.get(pair, f"{pair[0]} / {pair[1]}")}
                   for pair, rows in by.items()]
            s = self.summaries[m]
            out.append({"title": f"{labels.get(m, m)}: right in {s.share:.0%} of {s.n_pairs} pairs", "points": pts})
        return out


def report(model_names: Sequence[str], *, live: dict | None = None, directory: str | Path | None = None,
           n_boot: int = 2000, seed: int = 0, progress: bool = True) -> PairReport:
    """The study of each model: read from the stored artefact, or, with ``live`` (the smoke profile:
    :class:`PairStudySettings` keyword arguments), run now on each model (loaded by name). A model with
    neither is listed as missing, and the chapter says so."""
    from .. import models as _models

    summaries, studies, missing = {}, {}, []
    for m in model_names:
        if live is not None:
            s = PairStudySettings(**live)
            lm = _models.load(m)
            st = PairStudy(m, run_study(lm.model, lm.tokenizer, s, progress=progress), s, {})
            del lm
        elif m in covered(directory):
            st = load(m, directory)
        else:
            missing.append(m)
            continue
        studies[m] = st
        summaries[m] = summarize(st, n_boot=n_boot, seed=seed)
    return PairReport(summaries, studies, tuple(missing), "run in this build" if live is not None else "stored artefact")
