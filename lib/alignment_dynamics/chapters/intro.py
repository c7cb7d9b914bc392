"""The specification of the chapter `book/intro.md`: it aggregates every chapter's claims."""

from __future__ import annotations

from ..config import ChapterSpec, register

register(ChapterSpec(slug="intro", aggregates="claims"))
