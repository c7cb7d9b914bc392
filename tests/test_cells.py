"""Chapters only call, glue and plot (issue 16, item 3).

Every code cell of every chapter, except the papermill ``parameters`` cell, is read as Python and may
hold only calls into ``alignment_dynamics``, assignments of their results, attribute and item access,
literals and names. What computes or decides lives in ``lib/`` with a test; a cell that loops, branches,
compares, does arithmetic, defines a function, builds text with an f-string, imports a computing library
or reads the glue store back is an offence. ``LEFT`` lists the chapters not yet rewritten; it may only
shrink: a chapter listed there that has no offence left fails too, so the list cannot go stale.
"""
from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

# Chapters whose cells still compute, one per line (each rewrite removes its own line).
LEFT: dict[str, str] = {
}

ALLOWED_IMPORTS = ("alignment_dynamics", "IPython.display")

_KINDS: tuple[tuple[tuple[type, ...], str], ...] = (
    ((ast.For, ast.AsyncFor, ast.While), "loop"),
    ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp), "comprehension"),
    ((ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef), "definition"),
    ((ast.If, ast.IfExp, ast.Match, ast.Try), "branch"),
    ((ast.Compare, ast.BoolOp), "comparison"),
    ((ast.BinOp, ast.AugAssign), "arithmetic"),
    ((ast.JoinedStr,), "f-string"),
)


def cell_offences(source: str) -> list[str]:
    """The offences of one code cell, as ``"<kind> (line <n>)"``; a cell that is not Python is one."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"not Python (line {exc.lineno})"]
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        for types, kind in _KINDS:
            if isinstance(node, types):
                found.append(f"{kind} (line {line})")
        if isinstance(node, ast.UnaryOp) and not isinstance(node.operand, ast.Constant):
            found.append(f"arithmetic (line {line})")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_IMPORTS):
                    found.append(f"import of {name} (line {line})")
        if isinstance(node, ast.Attribute) and node.attr == "glued":
            found.append(f"reads the glue store (line {line})")
    return found


def chapter_offences(path: Path) -> list[str]:
    nb = jupytext.read(path)
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        out += [f"cell {i}: {o}" for o in cell_offences(cell.source)]
    return out


CHAPTERS = sorted(p.stem for p in BOOK.glob("*.md") if p.stem != "references")


@pytest.mark.parametrize("slug", CHAPTERS)
def test_chapter_only_calls_glues_and_plots(slug):
    offences = chapter_offences(BOOK / f"{slug}.md")
    if slug in LEFT:
        assert offences, f"{slug} has no offence left: remove it from LEFT in {Path(__file__).name}"
    else:
        assert not offences, f"{slug}: cells compute or decide ({len(offences)}):\n" + "\n".join(offences[:40])


def test_left_names_real_chapters():
    assert set(LEFT) <= set(CHAPTERS), sorted(set(LEFT) - set(CHAPTERS))


@pytest.mark.parametrize("source, kind", [
    ("for x in ad.things():\n    ad.book.glue_num('k', x)", "loop"),
    ("xs = [x.speed for x in study.rows]", "comprehension"),
    ("def f(x):\n    return x", "definition"),
    ("f = lambda x: x", "definition"),
    ("verdict = 'agrees' if rho > 0.8 else 'differs'", "branch"),
    ("ok = rho >= 0.8", "comparison"),
    ("ok = a and b", "comparison"),
    ("gap = res.a - res.b", "arithmetic"),
    ("n = -res.count", "arithmetic"),
    ("ad.book.glue_num(f'td_{m}_rho', rho)", "f-string"),
    ("import numpy as np", "import of numpy"),
    ("from scipy import stats", "import of scipy"),
    ("v = ad.book.glued()['x']", "reads the glue store"),
    ("ad.book.glue_num('k', res.x", "not Python"),
])
def test_rule_catches_each_offence(source, kind):
    assert any(o.startswith(kind) for o in cell_offences(source)), cell_offences(source)


@pytest.mark.parametrize("source", [
    "import alignment_dynamics as ad",
    "from IPython.display import HTML",
    "res = ad.chapters.training_dynamics.sweep(cfg)\nad.book.glue_result('td_sweep', res.summary)",
    "fig = ad.plotting.dynamics.sweep(res, figsize=(6, 4), alpha=-0.5)\nad.book.glue_figure('fig-sweep', fig)",
    "res.table",
])
def test_rule_allows_call_glue_and_plot(source):
    assert cell_offences(source) == []
