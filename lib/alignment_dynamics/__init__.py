"""alignment_dynamics: the library behind the executable book *Alignment Dynamics*.

The book re-derives and reproduces Im & Li, "Understanding the Learning Dynamics of Alignment with
Human Feedback" (ICML 2024). Chapters ``import alignment_dynamics as ad`` and call, glue and plot;
every computation worth testing lives here.

Submodules are imported lazily (``ad.config``, ``ad.book``, ...), so ``import alignment_dynamics``
stays cheap and does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Every submodule, reachable as ``ad.<name>`` (tests/test_layout.py checks the list against the package).
_SUBMODULES = {
    "artifacts",
    "bench",
    "book",
    "build",
    "build_record",
    "cache",
    "chapters",
    "config",
    "crossfit",
    "data",
    "deviations",
    "dpo",
    "embed",
    "fullref",
    "geometry",
    "geometry_claims",
    "geometry_study",
    "geometry_tails",
    "hardware",
    "interactive",
    "lastlayer",
    "models",
    "packages",
    "persona_study",
    "plotting",
    "progress",
    "sphinx_ext",
    "stats",
    "theory",
    "threads",
    "usage",
    "validate",
    "verdicts",
    "wholemodel",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'alignment_dynamics' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES)
