"""Helpers for chapters: glue numbers into the prose, record claims, time the chapter.

Every number in the book's prose is glued from the computation that made it (:func:`glue_num`).
Glue keys are ``<slug>_<quantity>`` in snake_case. Values that depend on the machine's speed (wall
times, throughputs, speed-ups) are glued with ``volatile=True``; all others must be bit-identical
between two executions, which the build checks (:func:`finish` prints them for nbval).

Each chapter's table "What the paper claims vs what we see" is made of :func:`claim` rows; the build
collects them from every executed chapter, and the introduction's scorecard shows them all.
"""

from __future__ import annotations

import ast
import json
import math
import numbers
import os
import re
import time
from pathlib import Path
from typing import Any

from .verdicts import VERDICTS  # noqa: E402  (the one vocabulary; rules in alignment_dynamics.verdicts)
_KEY_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")

_state: dict[str, Any] = {"slug": None, "start": None, "glued": {}, "volatile": set(), "claims": [], "bounds": []}


class GlueError(ValueError):
    """A glue key or value the book cannot show."""


# ---------------------------------------------------------------------------------------------------
# Paths of the running build
# ---------------------------------------------------------------------------------------------------

def repo_root() -> Path:
    """The book's repository root (the folder holding ``_toc.yml``)."""
    env = os.environ.get("ALIGNMENT_DYNAMICS_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    if (here / "_toc.yml").exists():
        return here
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if (p / "_toc.yml").exists():
            return p
    raise FileNotFoundError("cannot find the book's root (a folder with _toc.yml); set ALIGNMENT_DYNAMICS_ROOT")


def build_dir() -> Path:
    """The folder of the running build (``$ALIGNMENT_DYNAMICS_BUILD_DIR``, else ``<root>/_build``)."""
    env = os.environ.get("ALIGNMENT_DYNAMICS_BUILD_DIR")
    return Path(env) if env else repo_root() / "_build"


# ---------------------------------------------------------------------------------------------------
# Glue
# ---------------------------------------------------------------------------------------------------

def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise GlueError(f"glue key {key!r} must be '<slug>_<quantity>' in lower snake_case, without ':'")
    slug = _state["slug"]
    if slug is not None and not key.startswith(slug + "_"):
        raise GlueError(f"glue key {key!r} must start with this chapter's slug {slug!r}")


def to_python_number(value: Any) -> int | float:
    """A NumPy or torch scalar (or 0-d array) as a Python ``int`` or ``float``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    if hasattr(value, "shape") and getattr(value, "shape", ()) not in ((), None):
        if math.prod(value.shape) != 1:
            raise GlueError(f"can only glue a scalar, got an array of shape {tuple(value.shape)}")
        value = value.reshape(())
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    raise GlueError(f"cannot glue {type(value).__name__} {value!r} as a number")


def _glue(key: str, value: Any, volatile: bool) -> None:
    from myst_nb import glue

    if key in _state["glued"] and _state["glued"][key] != value:
        raise GlueError(f"glue key {key!r} glued twice with different values")
    _state["glued"][key] = value
    if volatile:
        _state["volatile"].add(key)
    glue(key, value, display=False)


def glue_num(key: str, value: Any, *, volatile: bool = False, allow_nan: bool = False) -> int | float:
    """Glue a number for ``{glue:text}`key:.2f``` in the prose; return it as a Python number.

    NumPy / torch scalars become Python ``int``/``float`` (with NumPy 2, a NumPy scalar breaks
    ``{glue:text}`` format specs). NaN or infinity is an error unless ``allow_nan``.
    ``volatile=True`` marks a machine-dependent number (a time, a rate).
    """
    _check_key(key)
    v = to_python_number(value)
    if isinstance(v, float) and not math.isfinite(v) and not allow_nan:
        raise GlueError(f"glue {key!r}: value is {v!r}; pass allow_nan=True if that is the result")
    _glue(key, v, volatile)
    return v


def count_phrase(n: int, singular: str, plural: str | None = None) -> str:
    """``"1 seed"``, ``"2 seeds"``: a count with its noun (or verb) in agreement (``plural`` defaults to
    ``singular + "s"``)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise GlueError(f"count_phrase: n must be an int >= 0, got {n!r}")
    return f"{int(n)} {singular if n == 1 else (plural or singular + 's')}"


def glue_text(key: str, value: str, *, volatile: bool = False) -> str:
    """Glue a short string (a name, a profile) for ``{glue:text}`key```."""
    _check_key(key)
    if not isinstance(value, str):
        raise GlueError(f"glue_text {key!r}: expected a str, got {type(value).__name__}")
    _glue(key, value, volatile)
    return value


def glue_result(prefix: str, result: Any, *, fields: "list[str] | None" = None, volatile: tuple[str, ...] = ()) -> dict[str, Any]:
    """Glue a result object's scalar fields under ``<prefix>_<field>``: numbers with :func:`glue_num`,
    strings with :func:`glue_text`. ``result`` is a dataclass or a mapping; ``fields`` picks and orders
    the fields (default: every number or string field, others skipped); ``volatile`` names the
    machine-dependent ones. A field named in ``fields`` that is missing or not a scalar is an error.
    Returns ``{key: glued value}``. One call per result object keeps a cell to call, glue and plot."""
    import dataclasses

    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    elif isinstance(result, dict):
        values = dict(result)
    else:
        raise GlueError(f"glue_result {prefix!r}: expected a dataclass instance or a dict, got {type(result).__name__}")

    def scalar(v: Any) -> bool:
        if isinstance(v, (str, bool, int, float)):
            return True
        return hasattr(v, "item") and getattr(v, "shape", ()) in ((), None)

    if fields is None:
        names = [k for k, v in values.items() if scalar(v)]
    else:
        unknown = [k for k in fields if k not in values]
        if unknown:
            raise GlueError(f"glue_result {prefix!r}: no field(s) {unknown}; fields are {sorted(values)}")
        bad = [k for k in fields if not scalar(values[k])]
        if bad:
            raise GlueError(f"glue_result {prefix!r}: field(s) {bad} are not numbers or strings")
        names = list(fields)
    stray = sorted(set(volatile) - set(names))
    if stray:
        raise GlueError(f"glue_result {prefix!r}: volatile names {stray} are not glued fields")
    out: dict[str, Any] = {}
    for name in names:
        key, v = f"{prefix}_{name}", values[name]
        if isinstance(v, str):
            out[key] = glue_text(key, v, volatile=name in volatile)
        else:
            out[key] = glue_num(key, v, volatile=name in volatile)
    return out


def glue_figure(key: str, fig) -> None:
    """Glue a matplotlib figure for ``{glue:figure}`` (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    _check_key(key)
    glue(key, fig, display=False)
    plt.close(fig)


def glued() -> dict[str, Any]:
    """Everything glued so far in this kernel (key -> value)."""
    return dict(_state["glued"])


# ---------------------------------------------------------------------------------------------------
# Chapter lifecycle
# ---------------------------------------------------------------------------------------------------

def begin(slug: str) -> None:
    """Start the chapter's clock and check that its glue keys use its slug."""
    from .config import chapter

    chapter(slug)
    _state.update(slug=slug, start=time.perf_counter(), glued={}, volatile=set(), claims=[], bounds=[])


def current_slug() -> str | None:
    """The slug of the chapter that called :func:`begin` in this process (None before)."""
    return _state["slug"]


def finish() -> None:
    """Print every deterministic glued value, one per line.

    The chapter's last cell calls this under ``# NBVAL_CHECK_OUTPUT`` (tagged ``remove-cell``), so
    nbval's re-execution checks that all non-volatile numbers come out bit-identical. The chapter's
    wall time (``<slug>_runtime_s``) is glued by the build, which measures it (see
    :func:`runtime_cell`).
    """
    if _state["slug"] is None:
        raise RuntimeError("call ad.book.begin(slug) at the start of the chapter")
    print(deterministic_summary())


def runtime_cell(slug: str, seconds: float):
    """The cell the build appends to an executed chapter: it glues ``<slug>_runtime_s``.

    The build measures the chapter's wall time (kernel start, imports and every cell) and stores it
    as a glue output in the same form as ``myst_nb.glue(..., display=False)``.
    """
    import nbformat

    output = nbformat.v4.new_output(
        "display_data",
        data={"application/papermill.record/text/plain": repr(float(seconds))},
        metadata={"scrapbook": {"mime_prefix": "application/papermill.record/", "name": f"{slug}_runtime_s"}},
    )
    cell = nbformat.v4.new_code_cell(
        source=f"# {slug}_runtime_s: the wall time of this chapter, glued by the build",
        metadata={"tags": ["remove-cell"]}, outputs=[output])
    cell.execution_count = 1  # nbval refuses outputs on a cell that never ran
    return cell


def deterministic_summary() -> str:
    """One line per non-volatile glued value, ``key = repr(value)``, sorted by key."""
    rows = [f"{k} = {v!r}" for k, v in sorted(_state["glued"].items()) if k not in _state["volatile"]]
    return "\n".join(rows) if rows else "(nothing glued)"


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------

def claim(claim: str, measured: str, verdict, *, source: str = "paper summary", estimate: float | None = None,
          interval: tuple[float, float] | None = None, n: int | None = None) -> dict[str, Any]:
    """Record one row of the chapter's "What the paper claims vs what we see" table.

    ``measured`` is text made from the computed numbers (an f-string of them). ``verdict`` is a
    :class:`alignment_dynamics.verdicts.Verdict` (preferred: it brings the estimate, its interval, the
    sample size ``n`` and the rule that decided) or one of :data:`VERDICTS` as a string, with
    ``estimate``, ``interval`` and ``n`` given here (rows made the old way, without them, still work).
    The row is glued (``<slug>_claim_<k>``) so that the build can collect it into ``claims.json`` and
    the scorecard of the introduction.
    """
    from .verdicts import Verdict

    slug = _state["slug"]
    if slug is None:
        raise RuntimeError("call ad.book.begin(slug) before recording claims")
    if isinstance(verdict, Verdict):
        fields = verdict.row()
    else:
        if verdict not in VERDICTS:
            raise GlueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        iv = None if interval is None else [float(to_python_number(interval[0])), float(to_python_number(interval[1]))]
        fields = {"verdict": verdict, "estimate": None if estimate is None else float(to_python_number(estimate)),
                  "interval": iv, "n": None if n is None else int(to_python_number(n)), "rule": ""}
    if not claim or not measured:
        raise GlueError("a claim needs its text and what we measured")
    row = {"chapter": slug, "claim": claim, "source": source, "measured": measured, **fields}
    _state["claims"].append(row)
    k = len(_state["claims"])
    glue_text(f"{slug}_claim_{k}", json.dumps(row, sort_keys=True, allow_nan=False))
    return row


def glue_verdict(key: str, verdict, *, subject: str | None = None, fmt: str = ".2f") -> str:
    """Glue a verdict's generated words for the prose: ``<key>`` (the phrase, e.g. "agrees with the
    paper's claim") and, with ``subject``, ``<key>_sentence`` (:meth:`Verdict.sentence`). Returns the
    phrase. Result words in a chapter's prose come only from here (a hygiene test checks it)."""
    phrase = glue_text(key, verdict.phrase())
    if subject is not None:
        glue_text(f"{key}_sentence", verdict.sentence(subject, fmt))
    return phrase


def claims_table(rows: list[dict[str, Any]] | None = None):
    """The chapter's claims as a DataFrame (Claim [source] | What we measured | n | Verdict)."""
    import pandas as pd

    rows = _state["claims"] if rows is None else rows
    return pd.DataFrame(
        [{"Claim": f"{r['claim']} [{r['source']}]", "What we measured": r["measured"],
          "n": "" if r.get("n") is None else str(r["n"]), "Verdict": r["verdict"]}
         for r in rows]
    ).style.hide(axis="index").format(escape="html")


def claims_from_notebook(nb) -> list[dict[str, str]]:
    """The claim rows glued in an executed notebook (a ``nbformat`` node), in order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook", {})
            name = meta.get("name", "")
            m = re.match(r"^[a-z0-9_]+_claim_(\d+)$", name)
            if not m:
                continue
            data = out.get("data", {})
            text = next((v for k, v in data.items() if k.endswith("text/plain")), None)
            if text is None:
                continue
            found.append((int(m.group(1)), json.loads(ast.literal_eval(text))))
    return [row for _, row in sorted(found, key=lambda t: t[0])]


# ---------------------------------------------------------------------------------------------------
# Bound summaries (the build collects them into <build>/theory_bounds.json)
# ---------------------------------------------------------------------------------------------------

BOUND_FIELDS = ("chapter", "bound", "kind", "instances", "nonvacuous_share", "median_tightness")


def bound_summary(rows: list[dict[str, Any]]):
    """Record the chapter's headline bounds, one row each with :data:`BOUND_FIELDS` (``chapter`` must be
    this chapter), glue their numbers as ``<slug>_<bound>_instances``, ``..._nonvacuous_share`` and
    ``..._median_tightness``, and glue each row (``<slug>_bound_<k>``) for the build's
    ``theory_bounds.json``. Returns the rows as a DataFrame.
    """
    import pandas as pd

    slug = _state["slug"]
    if slug is None:
        raise RuntimeError("call ad.book.begin(slug) before recording bounds")
    for r in rows:
        if set(r) != set(BOUND_FIELDS):
            raise GlueError(f"a bound row needs exactly the fields {BOUND_FIELDS}, got {sorted(r)}")
        if r["chapter"] != slug:
            raise GlueError(f"bound row of chapter {r['chapter']!r} recorded in {slug!r}")
        if r["kind"] not in ("upper", "lower"):
            raise GlueError(f"kind must be 'upper' or 'lower', got {r['kind']!r}")
        row = {"chapter": slug, "bound": str(r["bound"]), "kind": r["kind"],
               "instances": int(to_python_number(r["instances"])),
               "nonvacuous_share": float(to_python_number(r["nonvacuous_share"])),
               "median_tightness": float(to_python_number(r["median_tightness"]))}
        for q in ("instances", "nonvacuous_share", "median_tightness"):
            glue_num(f"{slug}_{row['bound']}_{q}", row[q])
        _state["bounds"].append(row)
        glue_text(f"{slug}_bound_{len(_state['bounds'])}", json.dumps(row, sort_keys=True))
    return pd.DataFrame(rows, columns=list(BOUND_FIELDS))


def bounds_from_notebook(nb) -> list[dict[str, Any]]:
    """The bound rows glued in an executed notebook (a ``nbformat`` node), in order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name", "")
            m = re.match(r"^[a-z0-9_]+_bound_(\d+)$", name)
            if not m:
                continue
            text = next((v for k, v in out.get("data", {}).items() if k.endswith("text/plain")), None)
            if text is not None:
                found.append((int(m.group(1)), json.loads(ast.literal_eval(text))))
    return [row for _, row in sorted(found, key=lambda t: t[0])]


def glue_keys_in_notebook(nb) -> set[str]:
    """Every glue key an executed notebook holds."""
    keys = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                keys.add(name)
    return keys


def _own_profile(obj: Any) -> bool:
    """Whether a collected file belongs to the running build's profile (any profile outside a build)."""
    profile = os.environ.get("ALIGNMENT_DYNAMICS_PROFILE")
    return not profile or (isinstance(obj, dict) and obj.get("profile") == profile)


def load_claims() -> list[dict[str, str]]:
    """Claims collected by the running build from every executed chapter (the intro's scorecard).

    The build names the file (``$ALIGNMENT_DYNAMICS_CLAIMS``, else ``<build>/claims.json``); claims
    collected for another profile than the running one are never shown (an empty list instead).
    """
    env = os.environ.get("ALIGNMENT_DYNAMICS_CLAIMS")
    path = Path(env) if env else build_dir() / "claims.json"
    if not path.exists():
        return []
    obj = json.loads(path.read_text())
    return list(obj.get("claims", [])) if _own_profile(obj) else []


def load_report() -> dict | None:
    """The running build's execution report (``$ALIGNMENT_DYNAMICS_REPORT``, else
    ``<build>/report.json``), or None outside a build or when the report is another profile's."""
    env = os.environ.get("ALIGNMENT_DYNAMICS_REPORT")
    path = Path(env) if env else build_dir() / "report.json"
    if not path.exists():
        return None
    obj = json.loads(path.read_text())
    return obj if _own_profile(obj) else None


def verdict_counts(claims: list[dict[str, str]]) -> dict[str, int]:
    """How many claims have each verdict (every verdict present, zeros included)."""
    counts = {v: 0 for v in VERDICTS}
    for c in claims:
        counts[c["verdict"]] += 1
    return counts


def scorecard(claims: list[dict[str, str]]):
    """The introduction's table of every chapter's claims, with a link to each chapter."""
    import html

    import pandas as pd

    if not claims:
        return pd.DataFrame({"Scorecard": ["No chapter with claims was executed in this build."]}).style.hide(axis="index")
    rows = [{
        "Chapter": f'<a href="{c["chapter"]}.html">{html.escape(c["chapter"])}</a>',
        "Claim": html.escape(f"{c['claim']} [{c['source']}]"),
        "What we measured": html.escape(c["measured"]),
        "Verdict": html.escape(c["verdict"]),
    } for c in claims]
    return pd.DataFrame(rows).style.hide(axis="index")


def report_table(report: dict | None):
    """The execution report of a build as a DataFrame (chapter, status, wall time, cache)."""
    import pandas as pd

    if not report:
        return pd.DataFrame({"Report": ["Not run by the build: no execution report."]})
    rows = [{"chapter": c["name"], "status": c["status"], "wall time (s)": round(c["wall_s"], 1),
             "from cache": "yes" if c["cached"] else "no", "cache key": c["key"][:12]}
            for c in report["chapters"]]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Result objects whose numbers may be undefined, and claims rows made in lib (training_dynamics,
# prioritization)
# ---------------------------------------------------------------------------------------------------

def glue_result_allow_nan(prefix: str, values: dict[str, Any], *, volatile: tuple[str, ...] = ()) -> dict[str, Any]:
    """:func:`glue_result` for a mapping of values some of which may be NaN (an undefined rank
    correlation, a ratio over an empty set): those are glued with ``allow_nan=True``, the others as
    :func:`glue_result` does. Returns ``{key: glued value}``."""
    import math

    if not isinstance(values, dict):
        raise GlueError(f"glue_result_allow_nan {prefix!r}: expected a dict of values, got {type(values).__name__}")

    def numeric(v: Any) -> bool:
        return not isinstance(v, (str, bool)) and (isinstance(v, (int, float)) or hasattr(v, "item"))

    nan = [k for k, v in values.items() if numeric(v) and math.isnan(float(v))]
    rest = {k: v for k, v in values.items() if k not in nan}
    out = glue_result(prefix, rest, volatile=tuple(k for k in volatile if k in rest))
    for k in nan:
        out[f"{prefix}_{k}"] = glue_num(f"{prefix}_{k}", values[k], volatile=k in volatile, allow_nan=True)
    return out


def record_claims(rows: "list[dict[str, Any]]"):
    """Record claims rows made by a library function (each ``{"claim", "measured", "verdict",
    "source"}``) with :func:`claim`, in order, and return :func:`claims_table`."""
    for r in rows:
        missing = {"claim", "measured", "verdict", "source"} - set(r)
        if missing:
            raise GlueError(f"a claim row lacks {sorted(missing)}: {dict(r)}")
        claim(r["claim"], r["measured"], r["verdict"], source=r["source"])
    return claims_table()
