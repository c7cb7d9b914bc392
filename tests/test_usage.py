"""Docs that cannot drift (issue 16): where a library name is used is generated from the chapters
(``alignment_dynamics.usage``), never written into its docstring."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import alignment_dynamics as ad
from alignment_dynamics import usage

LIB = Path(ad.__file__).resolve().parent
ROOT = LIB.parents[1]

HEADER = """---
jupytext:
  formats: md:myst
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter

Prose mentioning `ad.geometry.not_code`, which is not in a code cell.

"""

CELL_A = """```{code-cell} ipython3
import alignment_dynamics as ad
geo = ad.geometry
d = geo.properties(h, labels)
```
"""

CELL_B = """```{code-cell} ipython3
:tags: [remove-input]
ad.dpo.reference.dpo_loss(1)
ad.theory.HEADLINE_BOUNDS.keys()
from alignment_dynamics.stats import wilson as w
w(1, 2)
```
"""


def _docstrings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc is not None:
                yield getattr(node, "name", "<module>"), node.lineno if hasattr(node, "lineno") else 1, doc


def test_no_docstring_says_where_it_is_used():
    bad = [f"{path.relative_to(LIB)}:{line} {name}"
           for path in sorted(LIB.rglob("*.py"))
           for name, line, doc in _docstrings(ast.parse(path.read_text(encoding="utf-8")))
           if "Used in:" in doc]
    assert not bad, f"hand-written 'Used in:' drifts; alignment_dynamics.usage generates it: {bad}"


def _book(tmp_path: Path, pages: dict[str, str]) -> Path:
    (tmp_path / "book").mkdir()
    for slug, text in pages.items():
        (tmp_path / "book" / f"{slug}.md").write_text(text, encoding="utf-8")
    return tmp_path


def test_index_of_a_synthetic_book(tmp_path):
    root = _book(tmp_path, {"one": HEADER + CELL_A + CELL_B, "two": HEADER + CELL_A, "plain": "# no code\n"})
    assert usage.usage_index(root) == {
        "dpo.reference.dpo_loss": ["one"],        # ad.<package>.<module>.<name>
        "geometry.properties": ["one", "two"],    # through a module alias
        "stats.wilson": ["one"],                  # from ... import ... as
        "theory.HEADLINE_BOUNDS": ["one"],        # stops at the first name, not at .keys
    }


def test_a_name_removed_from_a_chapter_leaves_the_index(tmp_path):
    root = _book(tmp_path, {"one": HEADER + CELL_A + CELL_B, "two": HEADER + CELL_A})
    before = usage.usage_index(root)
    (root / "book" / "one.md").write_text(HEADER + CELL_A + CELL_B.replace("ad.dpo.reference.dpo_loss(1)\n", ""))
    after = usage.usage_index(root)
    assert "dpo.reference.dpo_loss" in before and "dpo.reference.dpo_loss" not in after
    assert {k: v for k, v in before.items() if k != "dpo.reference.dpo_loss"} == after
    (root / "book" / "two.md").write_text(HEADER + "no code any more\n")
    assert usage.usage_index(root)["geometry.properties"] == ["one"]


def test_used_name_separates_modules_from_names():
    assert usage.used_name(("alignment_dynamics", "theory")) is None  # a module
    assert usage.used_name(("alignment_dynamics",)) is None
    assert usage.used_name(("numpy", "mean")) is None
    assert usage.used_name(("alignment_dynamics", "plotting", "style", "X", "y")) == "plotting.style.X"


def test_a_chapter_that_does_not_parse_is_named(tmp_path):
    root = _book(tmp_path, {"broken": HEADER + "```{code-cell} ipython3\ndef (:\n```\n"})
    with pytest.raises(SyntaxError, match="broken.md"):
        usage.usage_index(root)


def test_every_name_in_the_real_index_resolves():
    index = usage.usage_index(ROOT)
    assert "geometry_study.property_study" in index and "distinguishability" in index["geometry_study.property_study"]
    missing = []
    for name in index:
        module, _, attr = name.rpartition(".")
        try:
            getattr(importlib.import_module(f"alignment_dynamics.{module}"), attr)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name} ({exc})")
    assert not missing, f"the chapters use names the package does not have: {missing}"
    chapters = {p.stem for p in (ROOT / "book").glob("*.md")}
    assert {c for pages in index.values() for c in pages} <= chapters


def test_the_command_prints_the_index(capsys):
    assert usage.main(["geometry_study.prop"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("geometry_study.prop") for line in lines)
    assert any(line.startswith("geometry_study.property_study: ") and "distinguishability" in line for line in lines)
