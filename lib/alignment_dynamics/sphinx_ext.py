"""A small Sphinx extension for the rendered book (listed in ``_config.yml``).

Jupyter Book 1 always loads ``sphinx-thebe``, whose inline configuration script is added twice to every
page (the browser reports "Identifier 'THEBE_JS_URL' has already been declared") and which points at
unpkg.com. The book is meant to be read offline and has no live-code buttons, so this extension drops
the thebe scripts and style from every page.

It also keeps the interactive figures' script (``book/_static/ad-interactive.js``, listed in
``html_js_files``) only on the pages that hold an interactive figure (``data-ad-figure`` in the body),
so the other pages do not load it; a page that has one loads it exactly once.
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


INTERACTIVE_JS = "ad-interactive.js"


def _is_interactive_js(asset) -> bool:
    return str(getattr(asset, "filename", asset) or "").endswith(INTERACTIVE_JS)


def _interactive_only_where_used(app, pagename, templatename, context, doctree):
    if "script_files" not in context:
        return
    scripts = context["script_files"]
    ours = [a for a in scripts if _is_interactive_js(a)]
    if not ours:
        return
    keep = ours[:1] if "data-ad-figure" in str(context.get("body", "")) else []
    context["script_files"] = [a for a in scripts if not _is_interactive_js(a)] + keep


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("html-page-context", _interactive_only_where_used, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
