"""The layout of the package (issue 16): small files, no private names used across modules, every
submodule importable and reachable as ``ad.<name>``, and every ``ad.<module>.<name>`` a chapter uses
resolves."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path

import pytest

import alignment_dynamics as ad
from alignment_dynamics import usage

LIB = Path(ad.__file__).resolve().parent
ROOT = LIB.parents[1]
MAX_LINES = 700

#: Files over MAX_LINES today, each with why it is still one file. Split one, then delete its entry:
#: an entry whose file is back under the limit fails the test, so this list can only shrink.
OVER_LIMIT = {
    "data.py": "loading, checksums, splits and summaries of the two data sets; to split by data set",
    "models.py": "the model registry, GGUF conversion, loading and the tiny test models; to split by stage",
    "build.py": "the staged build (sources, cache keys, execution, render); to split by stage",
    "geometry.py": "the properties, bootstrap, rank statistics, tails and maps of distinguishability",
}


def _line_counts() -> dict[str, int]:
    return {p.relative_to(LIB).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
            for p in sorted(LIB.rglob("*.py"))}


def test_files_are_small_or_listed_with_a_reason():
    counts = _line_counts()
    over = {name: n for name, n in counts.items() if n > MAX_LINES}
    unlisted = {name: n for name, n in over.items() if name not in OVER_LIMIT}
    assert not unlisted, f"files over {MAX_LINES} lines (split them): {unlisted}"
    stale = sorted(name for name in OVER_LIMIT if counts.get(name, 0) <= MAX_LINES)
    assert not stale, f"back under {MAX_LINES} lines or gone: delete from OVER_LIMIT: {stale}"


# --- private names across modules ----------------------------------------------------------------

def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(dotted: str) -> bool:
    path = LIB.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def private_uses(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Private names of other ``alignment_dynamics`` modules that ``source`` (the code of ``module``) uses:
    ``from <module> import _x`` and ``<module>._x`` on a module bound by an import."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the alignment_dynamics module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                src = ".".join(parts + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src.split(".")[0] != "alignment_dynamics":
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"line {node.lineno}: from {src} import {alias.name}")
                if _is_module(f"{src}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{src}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "alignment_dynamics":  # import a.b binds a; import a.b as c binds a.b
                    bound[alias.asname or "alignment_dynamics"] = alias.name if alias.asname else "alignment_dynamics"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                target = ".".join([bound[value.id], *reversed(chain)])
                if _is_module(target) and target != module:
                    found.append(f"line {node.lineno}: {target}.{node.attr}")
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_uses_another_modules_private_names():
    bad = {}
    for path in sorted(LIB.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        uses = private_uses(source, _module_name(path), is_package=path.name == "__init__.py")
        if uses:
            bad[path.relative_to(LIB).as_posix()] = uses
    assert not bad, f"make these helpers public in their home module: {bad}"


@pytest.mark.parametrize("source, module, expected", [
    ("from ..models import _text_config", "alignment_dynamics.bench.embed",
     ["line 1: from alignment_dynamics.models import _text_config"]),
    ("from .reference import (check_beta, _check_matrix)", "alignment_dynamics.dpo.fused",
     ["line 1: from alignment_dynamics.dpo.reference import _check_matrix"]),
    ("from .dpo import reference as ref\nref._check_tokens(1)", "alignment_dynamics.theory",
     ["line 2: alignment_dynamics.dpo.reference._check_tokens"]),
    ("from . import dpo\ndpo.reference._check_hparams()", "alignment_dynamics.book",
     ["line 2: alignment_dynamics.dpo.reference._check_hparams"]),
    ("import alignment_dynamics as ad\nad.data._checkout_data_dir()", "alignment_dynamics.book",
     ["line 2: alignment_dynamics.data._checkout_data_dir"]),
    # not private uses: a module's own names, dunders, attributes of objects, other packages' privates
    ("from . import validate as _v\n_v.finite_array(1)\nself._x\n__version__", "alignment_dynamics.stats", []),
    ("from .models import __doc__\nfrom torch import _C\nimport numpy as np\nnp._core", "alignment_dynamics.embed", []),
    ("from . import _private_helper", "alignment_dynamics", ["line 1: from alignment_dynamics import _private_helper"]),
])
def test_private_use_detector(source, module, expected):
    assert private_uses(source, module, is_package=module == "alignment_dynamics") == expected


# --- imports ---------------------------------------------------------------------------------------

def test_every_submodule_imports():
    names, failed = [], {}
    for info in pkgutil.walk_packages(ad.__path__, "alignment_dynamics.",
                                      onerror=lambda name: failed.setdefault(name, "package failed to import")):
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - report every failure, not just the first
            failed[info.name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed
    assert {"alignment_dynamics.theory.update_rate", "alignment_dynamics.plotting.style"} <= set(names)


def test_lazy_submodules_are_exactly_the_package_s_submodules():
    real = {info.name for info in pkgutil.iter_modules(ad.__path__)}
    assert ad._SUBMODULES == real, (f"missing from _SUBMODULES: {sorted(real - ad._SUBMODULES)}; "
                                    f"not submodules: {sorted(ad._SUBMODULES - real)}")
    for name in sorted(ad._SUBMODULES):
        mod = getattr(ad, name)
        assert isinstance(mod, types.ModuleType) and mod.__name__ == f"alignment_dynamics.{name}"
    assert set(dir(ad)) >= ad._SUBMODULES
    with pytest.raises(AttributeError, match="no attribute 'no_such_module'"):
        ad.no_such_module  # noqa: B018


# --- what the chapters use -------------------------------------------------------------------------

chapter_references = usage.references  # the index of alignment_dynamics.usage reads chapters this way


def unresolved(path: tuple[str, ...]) -> str | None:
    """Where ``path`` (``alignment_dynamics``, module..., name, ...) stops resolving, or None; the walk
    stops at the first object that is not a module."""
    obj = importlib.import_module(path[0])
    for i, part in enumerate(path[1:], 1):
        if not isinstance(obj, types.ModuleType):
            return None
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(path[: i + 1]))
            except ModuleNotFoundError:
                return ".".join(path[: i + 1])
    return None


def _chapter_code(page: Path) -> str:
    return usage.chapter_code(page.read_text(encoding="utf-8"))


def test_chapter_reference_finder():
    src = ("import alignment_dynamics as ad\nth = ad.theory\nth.logistic_gd(1)\nad.plotting.figure('single')\n"
           "from alignment_dynamics import plotting as P\nP.MEASURED\nfrom alignment_dynamics.theory import phi\n")
    refs = chapter_references(src)
    assert {("alignment_dynamics", "theory", "logistic_gd"), ("alignment_dynamics", "plotting", "figure"),
            ("alignment_dynamics", "plotting", "MEASURED"), ("alignment_dynamics", "theory", "phi")} <= refs
    assert unresolved(("alignment_dynamics", "theory", "logistic_gd")) is None
    assert unresolved(("alignment_dynamics", "theory", "no_such_bound")) == "alignment_dynamics.theory.no_such_bound"
    assert unresolved(("alignment_dynamics", "theory", "HEADLINE_BOUNDS", "keys")) is None  # stops at a non-module


@pytest.mark.parametrize("page", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_every_name_a_chapter_uses_resolves(page):
    refs = chapter_references(_chapter_code(page))
    missing = sorted(filter(None, (unresolved(r) for r in refs)))
    assert not missing, f"{page.name} uses names the package does not have: {missing}"
