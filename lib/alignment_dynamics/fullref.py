"""The full-data reference: every behaviour's numbers on all of its statements, computed once.

The fast chapters estimate per-behaviour quantities on a sample of each behaviour's statements (32 per
class in the all-behaviour sweeps). This module computes the same quantities on every statement, with the
official 90/10 split, the official batch of 128 and 100 SGD steps, for each model, and writes them as a
small artefact with a manifest (command, commit, machine, CPU, dtype, date, checksum) under
``artifacts/fullref/``. The chapters read it with :func:`load` (checksum verified) and show their sample's
numbers beside it, with the rank agreement between the two.

Per behaviour and model (one row): ``distinguishability``, ``trace``, ``concentration`` (geometry on the
training pairs, the official three), ``n_train``, ``n_test``, ``first_step`` (‖W₁ − W₀‖ of one official
step), ``change_100`` (‖W₁₀₀ − W₀‖), ``loss_drop_train`` and ``loss_drop_test`` (ln 2 − loss after the
last step on the training / held-out pairs), ``acc_test`` (policy accuracy on held-out pairs at the end).
The learning rate and β are the training-dynamics chapter's ``official`` choice (:func:`lastlayer.lr_choice`)
computed on these full training sets.

Run: ``python -m alignment_dynamics.fullref --out artifacts/fullref`` (about an hour on two cores with
native bfloat16; several on an AVX2-only CPU).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import artifacts
from .validate import InputError

#: Columns of a reference table, in order (after ``behavior``).
COLUMNS = ("n_train", "n_test", "distinguishability", "trace", "concentration", "first_step", "change_100",
           "loss_drop_train", "loss_drop_test", "acc_test")
#: The protocol of the reference (official batch and steps).
BATCH_SIZE, STEPS = 128, 100
FORMAT_VERSION = 1
MAKE = "python -m alignment_dynamics.fullref --out artifacts/fullref"


class ReferenceError(InputError):
    """A missing, corrupted or mismatched reference artefact."""


@dataclass(frozen=True)
class Reference:
    """One model's reference table: ``rows[behaviour][column]`` and the manifest it was made under."""

    model: str
    rows: dict[str, dict[str, float]]
    manifest: dict[str, Any]

    def column(self, name: str, behaviors: Sequence[str]) -> np.ndarray:
        """The values of ``name`` for ``behaviors``, in that order (an unknown behaviour is an error)."""
        if name not in COLUMNS:
            raise ReferenceError(f"unknown reference column {name!r}; columns are {list(COLUMNS)}")
        missing = [b for b in behaviors if b not in self.rows]
        if missing:
            raise ReferenceError(f"the {self.model} reference has no row for {missing[:3]}"
                                 f"{' ...' if len(missing) > 3 else ''} ({len(self.rows)} behaviours in it)")
        return np.array([self.rows[b][name] for b in behaviors], dtype=np.float64)


def compute(model_names: Sequence[str], *, behaviors: Sequence[str] | None = None, seed: int = 1234,
            proxy: str = "smollm2-135m-instruct", dtype: str = "auto", progress: bool = True,
            directory: str | Path | None = None) -> dict[str, dict]:
    """The reference rows ``{model: {"rows": {behaviour: {column: value}}, "lr", "beta", "q_official"}}``
    (see the module docstring).

    ``proxy`` is the Llama-architecture model whose feature scale stands in for Llama-2-7B's, as in the
    training-dynamics chapter. When it is not among ``model_names``, its scale ``q_official`` is read from
    its committed reference in ``directory`` (so the models can be computed in separate runs)."""
    from . import data, geometry, hardware
    from . import lastlayer as dy
    from . import progress as prog

    names = list(dict.fromkeys(model_names))
    if not names:
        raise ReferenceError("no models given")
    q_official = None
    if proxy not in names:
        if not covers(proxy, directory):
            raise ReferenceError(f"the proxy model {proxy!r} is neither among the models {names} nor in the "
                                 f"committed reference ({_covered(directory) or 'none'}): compute it first")
        q_official = load(proxy, directory).manifest["q_official"]
    behaviors = data.validate_behaviors(list(behaviors) if behaviors is not None else data.behaviors())
    facts, sets = {}, {}
    for m in names:
        facts[m] = dy.head_facts(m)
        it = prog.steps(behaviors, f"full-data embeddings ({m})", unit="behaviour") if progress else behaviors
        sets[m] = [dy.behavior_set(m, b, None, seed=seed, dtype=dtype) for b in it]
    choice = dy.lr_choice({m: (facts[m], sets[m]) for m in names}, proxy=proxy, beta_mode="official",
                          q_official=q_official)
    out: dict[str, dict] = {}
    for m in names:
        runs = dy.train_runs([[bs] for bs in sets[m]], facts=facts[m], steps=STEPS, batch_size=BATCH_SIZE,
                             seeds=[seed], lr=choice[m]["lr"], beta=choice[m]["beta"], progress=progress)
        rows = {}
        for r, bs in enumerate(sets[m]):
            p = geometry.properties(bs.h_train, bs.s_train > 0)
            rows[bs.behavior] = {
                "n_train": bs.n_train, "n_test": int(bs.h_test.shape[0]),
                "distinguishability": p["distinguishability"], "trace": p["trace"],
                "concentration": p["concentration"],
                "first_step": float(runs.head_change[r, 1]), "change_100": float(runs.head_change[r, -1]),
                "loss_drop_train": float(dy.LN2 - runs.loss["train"][r, -1, 0]),
                "loss_drop_test": float(dy.LN2 - runs.loss["test"][r, -1, 0]),
                "acc_test": float(runs.policy_accuracy["test"][r, -1, 0]),
            }
        out[m] = {"rows": rows, "lr": float(choice[m]["lr"]), "beta": float(choice[m]["beta"]),
                  "q_official": float(choice[m]["q_official"]), "dtype": hardware.resolve_dtype(dtype)}
    return out


def write(result: dict[str, dict], out_dir: str | Path, *, command: str, seconds: float,
          commit: str | None = None) -> list[Path]:
    """Write one ``<model>.json`` per model and update ``manifest.json`` (each file's checksum, command,
    commit, machine, date and seconds; entries of other models already there are kept) in ``out_dir``,
    atomically (:func:`alignment_dynamics.artifacts.write`). ``commit`` is the code's commit when the
    computation started (default: now). Every row is checked before anything is written."""
    for m, res in result.items():  # check everything before writing anything
        for b, row in res["rows"].items():
            bad = [k for k in COLUMNS if not (isinstance(row.get(k), (int, float)) and math.isfinite(row[k]))]
            if bad:
                raise ReferenceError(f"{m} / {b}: missing or non-finite reference values in {bad}; nothing written")
        for k in ("lr", "beta", "q_official"):
            if not (isinstance(res.get(k), (int, float)) and math.isfinite(res[k]) and res[k] > 0):
                raise ReferenceError(f"{m}: {k} must be a positive finite number, got {res.get(k)!r}; nothing written")
    bodies = {f"{m}.json": {"format": FORMAT_VERSION, "model": m, "columns": list(COLUMNS), "batch_size": BATCH_SIZE,
                            "steps": STEPS, "lr": res["lr"], "beta": res["beta"], "q_official": res["q_official"],
                            "rows": res["rows"]} for m, res in result.items()}
    extra = {f"{m}.json": {"behaviours": len(res["rows"]), "dtype": res.get("dtype", "unknown")}
             for m, res in result.items()}
    return artifacts.write(out_dir, bodies, fmt=FORMAT_VERSION, command=command, seconds=seconds, commit_id=commit,
                           extra=extra)


def default_dir() -> Path:
    """``artifacts/fullref`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "artifacts" / "fullref"


def load(model: str, directory: str | Path | None = None) -> Reference:
    """The committed reference of ``model``, its checksum checked against the manifest."""
    d = Path(directory) if directory is not None else default_dir()
    have = _covered(d)
    if have and model not in have:
        raise ReferenceError(f"no reference for model {model!r} in {d}; the reference covers {have}")
    try:
        body, entry = artifacts.load(d, f"{model}.json", fmt=FORMAT_VERSION, make=MAKE)
    except artifacts.ArtifactError as e:
        raise ReferenceError(f"no usable reference for model {model!r}: {e}") from None
    if body.get("columns") != list(COLUMNS):
        raise ReferenceError(f"{d / (model + '.json')}: columns {body.get('columns')} differ from this library's "
                             f"{list(COLUMNS)}; recompute the reference with `{MAKE}`")
    return Reference(model=model, rows=body["rows"],
                     manifest={**entry, "lr": body["lr"], "beta": body["beta"], "q_official": body["q_official"]})


@dataclass(frozen=True)
class Agreement:
    """How a chapter's sample estimate of one per-behaviour quantity ranks the behaviours against the
    full-data reference: Spearman's ρ over the ``n`` behaviours in both, with a bootstrap interval that
    resamples behaviours; ``statements_sample`` / ``statements_reference`` are the median statements per
    behaviour behind each (the reference's on its training split)."""

    model: str
    column: str
    n: int
    rho: float
    lo: float
    hi: float
    statements_sample: float
    statements_reference: float
    reference_date: str
    reference_cpu: str


def agreement(sample: "dict[str, float]", model: str, column: str, *, statements: "dict[str, int] | float",
              directory: str | Path | None = None, reference: Reference | None = None, n_boot: int = 2000,
              seed: int = 0) -> Agreement:
    """Compare ``sample[behaviour]`` (a chapter's estimate of ``column``) with ``model``'s reference.

    ``statements`` is the number of statements behind each sample value (a mapping by behaviour, or one
    number for all). Behaviours the sample holds but the reference lacks are an error (a stale or partial
    reference must not be compared silently); a non-finite sample value is an error too."""
    from . import stats

    ref = reference if reference is not None else load(model, directory)
    if ref.model != model:
        raise ReferenceError(f"the reference given is {ref.model!r}'s, not {model!r}'s")
    names = list(sample)
    if len(names) < 4:
        raise ReferenceError(f"a rank agreement needs at least 4 behaviours, got {len(names)}")
    x = np.array([sample[b] for b in names], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        bad = [b for b, v in zip(names, x) if not np.isfinite(v)]
        raise ReferenceError(f"non-finite sample values of {column!r} for {bad[:3]}")
    y = ref.column(column, names)
    rho, lo, hi = stats.crossfit_spearman(x[None, :], y[None, :], n_boot=n_boot, seed=seed)
    if isinstance(statements, dict):
        n_s = float(np.median([statements[b] for b in names]))
    else:
        n_s = float(statements)
    n_r = float(np.median([ref.rows[b]["n_train"] for b in names]))
    machine = ref.manifest.get("machine", {})
    return Agreement(model=model, column=column, n=len(names), rho=rho, lo=lo, hi=hi, statements_sample=n_s,
                     statements_reference=n_r, reference_date=str(ref.manifest.get("date_utc", "?"))[:10],
                     reference_cpu=f"{machine.get('cpu', '?')}, {ref.manifest.get('dtype', '?')}")


def covers(model: str, directory: str | Path | None = None) -> bool:
    """Whether the committed reference has ``model`` (a reader's other model, or the smoke profile's tiny
    models, has none; that is not an error)."""
    return model in _covered(directory)


@dataclass(frozen=True)
class Comparison:
    """A chapter's sample against the reference, for every model and column: ``table`` (one row per model
    and column: ``n``, ``rho``, ``lo``, ``hi``, statements behind each side), ``agreements[(model, column)]``,
    the models without a reference in ``missing``, and ``text``, one generated sentence per model."""

    table: Any
    agreements: dict
    missing: tuple
    text: str


def compare(samples: "dict[str, Any]", columns: "Sequence[str | tuple[str, str]]", *,
            statements: "dict[str, int] | float", labels: "dict[str, str] | None" = None,
            directory: str | Path | None = None, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """:func:`agreement` for each model in ``samples`` (``{model: table indexed by behaviour}``) and each
    column; models the reference does not cover are listed in ``missing`` and named in ``text``.

    A column is a name both tables use, or a pair ``(sample column, reference column)`` where the chapter
    measures the reference's quantity under its own protocol (e.g. its loss drop after its own steps)."""
    import pandas as pd

    labels = labels or {}
    pairs = [(c, c) if isinstance(c, str) else tuple(c) for c in columns]
    if not pairs or any(len(p) != 2 or p[1] not in COLUMNS for p in pairs):
        raise ReferenceError(f"columns must be reference columns {list(COLUMNS)} or (sample, reference) pairs; "
                             f"got {list(columns)}")
    rows, agreements, missing, sentences = [], {}, [], []
    for m, table in samples.items():
        name = labels.get(m, m)
        if not covers(m, directory):
            missing.append(m)
            sentences.append(f"There is no full-data reference for {name}: the committed one covers "
                             f"{', '.join(_covered(directory)) or 'no model'}.")
            continue
        ref = load(m, directory)
        parts = []
        for sc, rc in pairs:
            if sc not in table:
                raise ReferenceError(f"the {name} sample table has no column {sc!r}; it has {list(table.columns)}")
            a = agreement({b: float(table[sc][b]) for b in table.index}, m, rc, statements=statements,
                          reference=ref, n_boot=n_boot, seed=seed)
            agreements[(m, sc)] = a
            what = sc if sc == rc else f"{sc} vs {rc}"
            rows.append({"model": name, "quantity": what, "behaviours": a.n, "ρ": a.rho, "95% lo": a.lo,
                         "95% hi": a.hi, "statements (sample)": a.statements_sample,
                         "statements (reference)": a.statements_reference})
            parts.append(f"{what} ρ = {a.rho:.2f} [{a.lo:.2f}, {a.hi:.2f}]")
        a0 = agreements[(m, pairs[0][0])]
        sentences.append(f"On {name}, the sample ({a0.statements_sample:.0f} statements per behaviour) ranks the "
                         f"{a0.n} behaviours against the full data ({a0.statements_reference:.0f} training "
                         f"statements per behaviour) with " + "; ".join(parts) + ".")
    return Comparison(table=pd.DataFrame(rows), agreements=agreements, missing=tuple(missing),
                      text=" ".join(sentences))


@dataclass(frozen=True)
class FullDataTest:
    """The paper's association claim tested on the reference itself: Spearman's ρ over behaviours of
    ``predictor`` (measured on each behaviour's training statements) and ``outcome`` (``loss_drop_test``
    and ``acc_test`` are measured on the held-out 10 %, disjoint from them), with a bootstrap interval
    by behaviour and the verdict of :func:`alignment_dynamics.verdicts.positive`. ``claim`` and
    ``measured`` are the generated texts of a claims-table row, ``sentence`` the generated result."""

    model: str
    predictor: str
    outcome: str
    n: int
    rho: float
    lo: float
    hi: float
    verdict: Any
    disjoint: bool
    claim: str
    measured: str
    sentence: str
    source: str
    names: tuple = ()
    x: tuple = ()
    y: tuple = ()


#: Reference columns measured on held-out statements (disjoint from those behind the geometry).
HELD_OUT = ("loss_drop_test", "acc_test")
#: Reference columns measured on the training statements (as the geometry is).
ON_TRAIN = ("distinguishability", "trace", "concentration", "first_step", "change_100", "loss_drop_train")
#: How a claims row names an outcome.
_OUTCOME_WORDS = {"loss_drop_test": "reduce their held-out DPO loss faster",
                  "loss_drop_train": "reduce their training DPO loss faster",
                  "first_step": "move the head further in the first official step",
                  "change_100": "move the head further in 100 official steps",
                  "acc_test": "reach a higher held-out accuracy"}


def full_data_test(model: str, predictor: str = "distinguishability", outcome: str = "loss_drop_test", *,
                   directory: str | Path | None = None, label: str | None = None, n_boot: int = 2000,
                   seed: int = 0) -> FullDataTest:
    """Does ``predictor`` rank the behaviours as ``outcome`` does, on all statements? ``disjoint`` says
    whether the outcome comes from statements disjoint from the predictor's (the non-circular form)."""
    from . import stats, verdicts

    valid = [k for k in COLUMNS if k not in ("n_train", "n_test")]
    for c, role in ((predictor, "predictor"), (outcome, "outcome")):
        if c not in valid:
            raise ReferenceError(f"unknown {role} {c!r}; valid: {valid}")
    ref = load(model, directory)
    names = sorted(ref.rows)
    xs, ys = ref.column(predictor, names), ref.column(outcome, names)
    rho, lo, hi = stats.crossfit_spearman(xs[None, :], ys[None, :], n_boot=n_boot, seed=seed)
    v = verdicts.positive(rho, lo, hi, len(names))
    disjoint = predictor in ON_TRAIN and outcome in HELD_OUT
    kind = "held-out statements" if disjoint else "the same statements (circular)"
    name = label or model
    n_tr = int(np.median(ref.column("n_train", names)))
    claim = (f"At full data, behaviours with a larger {predictor} {_OUTCOME_WORDS.get(outcome, 'have a larger ' + outcome)} "
             f"({name}; {outcome} on {kind})")
    measured = (f"Spearman ρ = {rho:.2f} [{lo:.2f}, {hi:.2f}] over {len(names)} behaviours, about {n_tr} training "
                f"statements each, batch {BATCH_SIZE}, {STEPS} steps")
    sentence = v.sentence(f"On all statements of {name}, ρ({predictor}, {outcome} on {kind})")
    # the paper claims faster loss reduction and accuracy; the head-movement rows are this book's reading
    source = "paper summary" if outcome.startswith(("loss_drop", "acc")) else "project"
    return FullDataTest(model=model, predictor=predictor, outcome=outcome, n=len(names), rho=rho, lo=lo, hi=hi,
                        verdict=v, disjoint=disjoint, claim=claim, measured=measured, sentence=sentence,
                        source=source, names=tuple(names), x=tuple(map(float, xs)), y=tuple(map(float, ys)))


@dataclass(frozen=True)
class FullDataClaims:
    """:func:`full_data_test` for several models and outcomes: ``tests[(model, outcome)]``, the models
    without a reference in ``missing``, a ``table`` and the generated ``text``."""

    tests: dict
    missing: tuple
    table: Any
    text: str

    def for_model(self, model: str) -> list[FullDataTest]:
        return [t for (m, _), t in self.tests.items() if m == model]

    def panels(self, labels: "dict[str, str] | None" = None) -> list[dict]:
        """One scatter panel per test (``plotting.speed_grid``'s format), ρ and its interval as the note."""
        labels = labels or {}
        return [{"x": t.x, "y": t.y, "names": list(t.names), "xlabel": f"{t.predictor} (training statements)",
                 "ylabel": t.outcome + (" (held-out)" if t.disjoint else " (same statements)"),
                 "title": labels.get(t.model, t.model),
                 "note": f"ρ = {t.rho:+.2f} [{t.lo:+.2f}, {t.hi:+.2f}], n = {t.n}: {t.verdict.verdict}"}
                for t in self.tests.values()]


def full_data_claims(models: Sequence[str], outcomes: Sequence[str] = ("loss_drop_test", "first_step"), *,
                     predictor: str = "distinguishability", labels: "dict[str, str] | None" = None,
                     directory: str | Path | None = None, n_boot: int = 2000, seed: int = 0) -> FullDataClaims:
    """The paper's claim at full data for every model the reference covers (others are named in
    ``missing`` and in ``text``)."""
    import pandas as pd

    labels = labels or {}
    tests, missing, sentences = {}, [], []
    for m in models:
        if not covers(m, directory):
            missing.append(m)
            sentences.append(f"There is no full-data reference for {labels.get(m, m)}; the committed one covers "
                             f"{', '.join(_covered(directory)) or 'no model'}.")
            continue
        for o in outcomes:
            t = tests[(m, o)] = full_data_test(m, predictor, o, directory=directory, label=labels.get(m, m),
                                                n_boot=n_boot, seed=seed)
            sentences.append(t.sentence)
    table = pd.DataFrame([{"model": labels.get(t.model, t.model), "outcome": t.outcome,
                           "disjoint statements": "yes" if t.disjoint else "no (circular)", "behaviours": t.n,
                           "ρ": t.rho, "95% lo": t.lo, "95% hi": t.hi, "verdict": t.verdict.verdict}
                          for t in tests.values()])
    return FullDataClaims(tests=tests, missing=tuple(missing), table=table, text=" ".join(sentences))


def _covered(directory: str | Path | None) -> list[str]:
    """The models the manifest in ``directory`` (default: the committed one) lists ([] without one)."""
    return [n[:-5] for n in artifacts.listed(Path(directory) if directory is not None else default_dir())]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alignment_dynamics.fullref", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m", help="comma-separated models")
    p.add_argument("--behaviors", default=None, help="comma-separated behaviours (default: all 135)")
    p.add_argument("--out", default=str(default_dir()), help="output folder (also where a proxy reference is read)")
    p.add_argument("--dtype", default="auto", help="forward-pass dtype: auto, float32 or bfloat16")
    a = p.parse_args(argv)
    t0, commit = time.perf_counter(), artifacts.commit()
    res = compute(a.models.split(","), behaviors=a.behaviors.split(",") if a.behaviors else None, dtype=a.dtype,
                  directory=a.out)
    cmd = "python -m alignment_dynamics.fullref " + " ".join(argv if argv is not None else sys.argv[1:])
    for path in write(res, a.out, command=cmd.strip(), seconds=time.perf_counter() - t0, commit=commit):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
