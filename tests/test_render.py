"""The render step (build.render): strict mode turns every Sphinx warning into a failed render, and a
failed render keeps the previous pages. On a one-page book, so it runs in seconds without the book build."""

from __future__ import annotations

from alignment_dynamics import build

CONFIG = """title: t
only_build_toc_files: true
execute:
  execute_notebooks: "off"
"""


def _stage(folder, body: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_config.yml").write_text(CONFIG)
    (folder / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (folder / "index.md").write_text(f"# A page\n\n{body}\n")
    return folder


def test_strict_render_fails_on_a_warning_and_keeps_the_previous_pages(tmp_path):
    stage = _stage(tmp_path / "stage", "See {ref}`sec-nowhere`.")  # an unknown label: a Sphinx warning
    html = tmp_path / "html"
    html.mkdir()
    (html / "old.html").write_text("the previous pages")
    ok, _, _ = build.render(stage, html, strict=True, expected=["index"])
    assert not ok
    assert sorted(p.name for p in html.iterdir()) == ["old.html"]
    ok, _, _ = build.render(stage, html, strict=False, expected=["index"])
    assert ok and (html / "index.html").exists() and not (html / "old.html").exists()


def test_strict_render_of_a_clean_page_succeeds(tmp_path):
    stage = _stage(tmp_path / "stage", "(sec-here)=\n## Here\n\nSee {ref}`sec-here`.")
    ok, _, _ = build.render(stage, tmp_path / "html", strict=True, expected=["index"])
    assert ok and (tmp_path / "html" / "index.html").exists()
