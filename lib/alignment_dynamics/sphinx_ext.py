"""A small Sphinx extension for the rendered book (listed in ``_config.yml``).

Jupyter Book 1 always loads ``sphinx-thebe``, whose inline configuration script is added twice to every
page (the browser reports "Identifier 'THEBE_JS_URL' has already been declared") and which points at
unpkg.com. The book is meant to be read offline and has no live-code buttons, so this extension drops
the thebe scripts and style from every page.
"""

from __future__ import annotations


def _is_thebe(asset) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", "") or "")
    return "thebe" in filename or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [a for a in context[key] if not _is_thebe(a)]


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
