"""The contributor docs cannot drift: every library name, file, test and ``make`` target that
CONTRIBUTING.md and STYLE.md (and, for ``make``, README.md) mention exists."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shutil
import subprocess

import pytest

import alignment_dynamics

GUIDES = ("CONTRIBUTING.md", "STYLE.md")
SUBMODULES = set(alignment_dynamics._SUBMODULES) | {"packages", "validate", "fullref", "sphinx_ext"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
DOTTED = re.compile(r"(?<![\w/.$])((?:ad|alignment_dynamics|" + "|".join(sorted(SUBMODULES)) + r")(?:\.\w+)+)")
FILE_EXT = re.compile(r"\.(py|md|yml|toml|json|txt|js|css|SHA256SUMS)$")
MAKE = re.compile(r"(?:^|[\s;(])make\s+([a-z][\w-]*)", re.M)


def _code(text: str) -> list[str]:
    """The code of a markdown text: fenced blocks and inline spans."""
    blocks = FENCE.findall(text)
    return blocks + INLINE.findall(FENCE.sub("", text))


def _resolve(dotted: str):
    """Import ``dotted`` (``ad.`` and bare submodule names are under ``alignment_dynamics``)."""
    parts = dotted.split(".")
    parts[0:1] = ["alignment_dynamics"] if parts[0] in ("ad", "alignment_dynamics") else ["alignment_dynamics", parts[0]]
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)} and i == len(parts) - 1:
                return obj
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
            except ModuleNotFoundError:
                raise AssertionError(f"{dotted}: {'.'.join(parts[:i])} has no {name!r}") from None
    return obj


def _names(root, guides=GUIDES) -> set[str]:
    out = set()
    for guide in guides:
        for code in _code((root / guide).read_text()):
            out |= {m for m in DOTTED.findall(code) if not FILE_EXT.search(m)}
    return out


def test_every_library_name_the_guides_mention_exists(root):
    names = _names(root)
    assert len(names) >= 20, sorted(names)  # the extraction works
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (AssertionError, ImportError) as exc:
            missing.append(str(exc))
    assert not missing, missing


def test_a_name_that_does_not_exist_is_caught(root, tmp_path):
    (tmp_path / "G.md").write_text("Call `ad.models.load` and `data.no_such_loader(x)`, see `models.py`.\n")
    names = _names(tmp_path, ("G.md",))
    assert names == {"ad.models.load", "data.no_such_loader"}
    _resolve("ad.models.load")
    with pytest.raises(AssertionError, match="has no 'no_such_loader'"):
        _resolve("data.no_such_loader")


def _paths(text: str) -> set[str]:
    spans = {s.strip() for s in INLINE.findall(FENCE.sub("", text))}
    return {s for s in spans if re.fullmatch(r"[\w.-]+(?:/[\w.-]+)*/?", s) and ("/" in s or FILE_EXT.search(s))
            and not s.startswith(("..", "_build"))}


def test_every_file_the_guides_mention_exists(root):
    paths = set().union(*(_paths((root / g).read_text()) for g in GUIDES))
    assert "lib/alignment_dynamics/packages.py" in paths and "tests/conftest.py" in paths
    assert not [p for p in sorted(paths) if not (root / p).exists()]


def test_every_test_the_guides_mention_exists(root):
    defined = {node.name for path in (root / "tests").glob("test_*.py")
               for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    named = {m for g in GUIDES for m in re.findall(r"`(test_\w+)`", (root / g).read_text())}
    assert named, "no test named"
    assert named <= defined, sorted(named - defined)


def _make_targets(root) -> set[str]:
    return {t for doc in ("README.md", *GUIDES) for code in _code((root / doc).read_text())
            for t in MAKE.findall(code)}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_every_make_target_the_docs_mention_exists(root, tmp_path):
    targets = _make_targets(root)
    assert {"book", "test", "test-fast", "chapter", "model-packages"} <= targets
    def commands(target):  # what `make -n` would run (a .PHONY name without a rule runs nothing)
        proc = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(root), target,
                               f"VENV={tmp_path / 'venv'}"], text=True, capture_output=True, timeout=60)
        return [ln for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("make")] \
            if proc.returncode == 0 else []

    assert not commands("no-such-target")
    assert not [t for t in sorted(targets) if not commands(t)], "targets that run nothing"
