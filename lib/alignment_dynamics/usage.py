"""Which library names each chapter uses, read from the chapters' code cells.

Docstrings do not say where a name is used: a hand-written "Used in" drifts as soon as a chapter
changes. The index is generated instead. :func:`usage_index` parses the code cells of every
``book/*.md`` (jupytext MyST) with :mod:`ast`, collects each ``ad.<module>.<name>`` (and
``ad.<package>.<module>.<name>``), reached through ``ad``, a module alias (``th = ad.theory``) or a
``from alignment_dynamics... import``, and maps ``"<module>.<name>"`` to the chapters that use it.

``python -m alignment_dynamics.usage`` prints the index of this checkout; ``... usage <name>`` prints
only the names that start with ``<name>`` (e.g. ``geometry.``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "alignment_dynamics"
_LIB = Path(__file__).resolve().parent
CHECKOUT = _LIB.parents[1]


def references(source: str) -> set[tuple[str, ...]]:
    """Every ``alignment_dynamics`` attribute path that ``source`` uses through ``ad``, a module alias
    (``th = ad.theory``, ``from alignment_dynamics import plotting as P``) or ``from ... import``.

    Each path starts with ``"alignment_dynamics"``: ``ad.theory.phi(1)`` gives
    ``("alignment_dynamics", "theory", "phi")``."""
    tree = ast.parse(source)
    alias: dict[str, tuple[str, ...]] = {}
    refs: set[tuple[str, ...]] = set()

    def path_of(node) -> tuple[str, ...] | None:
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in alias:
            return alias[node.id] + tuple(reversed(chain))
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    dotted = tuple(a.name.split("."))
                    alias[a.asname or dotted[0]] = dotted if a.asname else dotted[:1]
                    refs.add(dotted)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
            for a in node.names:
                full = (*node.module.split("."), a.name)
                refs.add(full)
                alias[a.asname or a.name] = full
    for node in ast.walk(tree):  # module aliases by assignment: th = ad.theory
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            p = path_of(node.value) if isinstance(node.value, ast.Attribute) else None
            if p is not None:
                alias[node.targets[0].id] = p
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            p = path_of(node)
            if p is not None:
                refs.add(p)
    return refs


def _is_module(parts: tuple[str, ...]) -> bool:
    path = _LIB.parent.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def used_name(path: tuple[str, ...]) -> str | None:
    """The library name a reference path stands for: its modules and the first name after them,
    without the package (``("alignment_dynamics", "theory", "BOUNDS", "keys")`` -> ``"theory.BOUNDS"``);
    ``None`` for a module itself. Modules are told from names by the package's files, so nothing is
    imported."""
    if not path or path[0] != PACKAGE:
        return None
    k = 1
    while k < len(path) and _is_module(path[: k + 1]):
        k += 1
    if k == 1 or k == len(path):  # a name of the package itself, or a module
        return None
    return ".".join(path[1: k + 1])


def chapter_code(text: str) -> str:
    """The code cells of one MyST chapter (``{code-cell}`` blocks), joined, as jupytext reads them."""
    import jupytext

    nb = jupytext.reads(text, fmt="md:myst")
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def usage_index(root: str | Path = CHECKOUT) -> dict[str, list[str]]:
    """``{"<module>.<name>": [chapter slugs]}`` for every library name the chapters in ``root/book``
    use, names and slugs sorted. A chapter whose code does not parse is a :class:`SyntaxError`
    naming it."""
    index: dict[str, set[str]] = {}
    for page in sorted(Path(root, "book").glob("*.md")):
        code = chapter_code(page.read_text(encoding="utf-8"))
        try:
            refs = references(code)
        except SyntaxError as exc:
            raise SyntaxError(f"{page}: a code cell does not parse: {exc}") from exc
        for ref in refs:
            name = used_name(ref)
            if name is not None:
                index.setdefault(name, set()).add(page.stem)
    return {name: sorted(pages) for name, pages in sorted(index.items())}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prefix = args[0] if args else ""
    for name, pages in usage_index().items():
        if name.startswith(prefix):
            print(f"{name}: {', '.join(pages)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
