"""Hygiene of the book's sources: headers, parameters cells, labels, glue keys, the table of contents."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
import yaml

from alignment_dynamics import build, config

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
"""
LABEL_PREFIXES = ("sec", "eq", "fig", "tbl", "thm", "prop", "lem", "def", "rem", "cor", "ex", "sol", "alg")
PRF_PREFIXES = ("thm", "prop", "lem", "def", "rem", "cor", "alg")


ROOT = Path(__file__).resolve().parents[1]
PAGES = build.read_toc(ROOT)
CHAPTERS = [p for p in PAGES if p.notebook]


def test_toc_lists_existing_pages_in_parts(root):
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "book/intro"
    assert all(part.get("numbered") for part in toc["parts"])
    assert [p.slug for p in PAGES][0] == "intro" and PAGES[-1].slug == "references"
    assert all(p.path.exists() for p in PAGES)


def test_every_chapter_in_book_is_in_the_toc(root):
    in_toc = {p.path.resolve() for p in PAGES}
    stray = [p.name for p in (root / "book").glob("*.md") if p.resolve() not in in_toc]
    assert not stray, f"chapters missing from _toc.yml: {stray}"


def test_only_references_is_a_plain_page():
    assert [p.slug for p in PAGES if not p.notebook] == ["references"]


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.slug)
def test_header_and_kernelspec(page):
    assert page.path.read_text().startswith(HEADER), f"{page.path.name}: the jupytext header must be exactly the house header"
    nb = build.load_notebook(page.path)
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.slug)
def test_one_literal_parameters_cell_with_fast_defaults(page):
    nb = jupytext.read(page.path)
    idx, values = build.parameters_cell(nb, where=page.path.name)  # raises unless exactly one, literal-only
    assert values == config.fast_defaults(page.slug), (
        f"{page.path.name}: the parameters cell must hold the fast profile's values of chapters/{page.path.stem}.py")
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code.index(idx) == 1, "the parameters cell is the first code cell after the imports"
    first = nb.cells[code[0]].source
    assert "import alignment_dynamics as ad" in first and f'ad.book.begin("{page.slug}")' in first
    before = "\n".join(c.source for c in nb.cells[:idx] if c.cell_type == "markdown")
    assert re.search(r"^## Setup\s*$", before, re.M), "the parameters cell sits under '## Setup'"
    after = nb.cells[code[2]].source
    assert f'ad.config.resolve("{page.slug}", PROFILE' in after, "the cell after parameters resolves the config"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.slug)
def test_last_cell_finishes_under_nbval(page):
    nb = jupytext.read(page.path)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "# NBVAL_CHECK_OUTPUT" in last.source and "ad.book.finish()" in last.source
    assert "remove-cell" in last.metadata.get("tags", [])


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.slug)
def test_no_path_hacks_or_installs_in_code(page):
    nb = jupytext.read(page.path)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        assert "sys.path" not in c.source and not re.search(r"^\s*[!%]pip", c.source, re.M), page.slug
        assert not re.search(r"""["'](/|\.\./|~/)[^"']*["']""", c.source), f"{page.slug}: no hand-written paths"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.slug)
def test_glue_keys_use_the_chapter_slug(page):
    text = page.path.read_text()
    keys = re.findall(r"\{glue(?::[a-z]+)?\}`([^`:]+)", text)
    bad = [k for k in keys if not k.startswith(page.slug + "_")]
    assert not bad, f"{page.slug}: glue keys must start with the slug: {bad}"
    heading_glue = [ln for ln in text.splitlines() if ln.startswith("#") and "{glue" in ln]
    assert not heading_glue, f"no glue in titles: {heading_glue}"


def _labels(text):
    labels = re.findall(r"^\(([A-Za-z0-9_\-]+)\)=\s*$", text, re.M)
    labels += re.findall(r"^:label:\s*([A-Za-z0-9_\-]+)\s*$", text, re.M)
    labels += re.findall(r"^\s*name:\s*((?:fig|tbl)-[A-Za-z0-9_\-]+)\s*$", text, re.M)
    return labels


def test_labels_are_unique_and_well_named():
    seen = {}
    for page in PAGES:
        for label in _labels(page.path.read_text()):
            assert label not in seen, f"label {label!r} in {page.slug} and {seen[label]}"
            seen[label] = page.slug
            if page.slug == "references":
                continue
            prefix, _, rest = label.partition("-")
            assert prefix in LABEL_PREFIXES, f"{label}: unknown label prefix"
            assert rest == page.slug or rest.startswith(page.slug + "-"), (
                f"{label}: labels are <prefix>-{page.slug}[-<name>]")


def test_prf_labels_are_referenced_only_with_prf_ref():
    prf = set()
    for page in PAGES:
        text = page.path.read_text()
        prf |= {lab for lab in re.findall(r"^:label:\s*(\S+)", text, re.M) if lab.split("-")[0] in PRF_PREFIXES}
    for page in PAGES:
        for role, target in re.findall(r"\{(ref|numref|eq)\}`(?:[^`<]*<)?([^`>]+)>?`", page.path.read_text()):
            assert target not in prf, f"{page.slug}: {{{role}}}`{target}` must be {{prf:ref}}"


def test_every_chapter_has_a_config_spec():
    for page in CHAPTERS:
        config.chapter(page.slug)


MAKE_CHAPTER = re.compile(r"make chapter NAME=(?P<name>[\w-]+)(?: PROFILE=(?P<profile>\w+))?(?: ARGS=\"(?P<args>[^\"]*)\")?")


def _documented_chapter_commands(root):
    for path in [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "book").glob("*.md"))]:
        for m in MAKE_CHAPTER.finditer(path.read_text()):
            yield path.name, m


def test_documented_chapter_commands_are_valid(root):
    """Every `make chapter NAME=... ARGS="-p ..."` the README and the book show names a real chapter,
    profile and parameters with valid values (placeholders such as `<chapter>` or `...` excepted)."""
    import shlex

    seen = 0
    for where, m in _documented_chapter_commands(root):
        name, profile, args = m["name"], m["profile"] or "fast", m["args"] or ""
        if "..." in args or "<" in args:
            continue
        assert name in config.CHAPTERS, f"{where}: {m[0]!r} names no chapter"
        config.check_profile(profile)
        words = shlex.split(args)
        assert len(words) % 3 == 0 and all(w == "-p" for w in words[::3]), f"{where}: {m[0]!r}: not '-p NAME VALUE'"
        overrides = {k: config.parse_value(v) for k, v in zip(words[1::3], words[2::3])}
        try:
            config.validate_params(name, overrides)
        except config.ConfigError as exc:
            raise AssertionError(f"{where}: {m[0]!r}: {exc}") from None
        seen += 1
    assert seen >= 5


# Result words may appear in a Part II chapter's prose only through glue (generated from a verdict,
# `ad.book.glue_verdict`) or inside a paragraph that defines the verdict vocabulary, which must start
# with "**Rule for the verdict" (the one, explicit allowance). Code cells, inline code and glue roles
# are not prose.
RESULT_WORDS = re.compile(r"\b(agrees|consistent with|as the paper reports|confirms)\b", re.I)
PART_II = ("persona_data", "distinguishability", "training_dynamics", "prioritization", "misalignment")


def _prose_paragraphs(page):
    nb = jupytext.read(page.path)
    for c in nb.cells:
        if c.cell_type != "markdown":
            continue
        for para in re.split(r"\n\s*\n", c.source):
            if para.lstrip().startswith("**Rule for the verdict"):
                continue
            text = re.sub(r"\{[a-z:]+\}`[^`]*`", " ", para)  # roles: glue, ref, numref, prf:ref, eq
            text = re.sub(r"`[^`]*`", " ", text)  # inline code
            yield text


@pytest.mark.parametrize("page", [p for p in CHAPTERS if p.slug in PART_II], ids=lambda p: p.slug)
def test_no_result_words_typed_in_prose(page):
    bad = [m.group(0) + ": " + " ".join(t.split())[:160] for t in _prose_paragraphs(page)
           for m in [RESULT_WORDS.search(t)] if m]
    assert not bad, f"{page.slug}: results must be generated from a verdict and glued, not typed: {bad}"


def test_result_word_check_catches_a_typed_result(tmp_path):
    page = type("P", (), {})()
    page.path = tmp_path / "x.md"
    page.path.write_text(HEADER + "\nThe loss falls faster, as the paper reports.\n\n"
                         "**Rule for the verdicts**: agrees when the interval lies above 0.\n\n"
                         "It {glue:text}`x_verdict` here.\n")
    hits = [t for t in _prose_paragraphs(page) if RESULT_WORDS.search(t)]
    assert len(hits) == 1 and "as the paper reports" in hits[0]
