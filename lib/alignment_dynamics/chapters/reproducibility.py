"""The specification of the chapter `book/reproducibility.md`: the build report (run last)."""

from __future__ import annotations

from ..config import ChapterSpec, register
from .common import TINY_PAIR

register(ChapterSpec(slug="reproducibility", aggregates="report", reads_artifacts=True,
                     datasets=("anthropic-persona", "hh-rlhf"),  # it shows the data fingerprints
                     settings={"models": {"smoke": TINY_PAIR, "fast": None, "full": None}}))  # None: packaged
