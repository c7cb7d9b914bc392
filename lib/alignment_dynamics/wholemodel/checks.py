"""Shared pieces of whole-model training: the errors, a count check, the progress bar and the
transformers version.
"""

from __future__ import annotations

import os
from typing import Any


class FinetuneError(ValueError):
    """Invalid pairs, model, method or training settings."""


def transformers_version() -> str:
    """The installed transformers version (part of every cache key: its kernels shape the numbers)."""
    import transformers

    return transformers.__version__


def maybe_progress(it, enabled: bool, desc: str):
    """``it`` wrapped in the package's progress bar, unless ``enabled`` is false or ``TQDM_DISABLE`` is set."""
    if not enabled or os.environ.get("TQDM_DISABLE"):
        return it
    from .. import progress

    return progress.steps(it, desc)


class MisalignError(ValueError):
    """Invalid settings for the misalignment protocol."""


def require_count(name: str, value: Any, limit: int) -> int:
    """``value`` unless it is not an int in 1..``limit``; then a :class:`MisalignError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise MisalignError(f"{name} must be an int in 1..{limit}, got {value!r}")
    return value
