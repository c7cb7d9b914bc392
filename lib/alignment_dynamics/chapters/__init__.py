"""The book's chapters, one specification per chapter: ``chapters/<slug>.py`` registers the chapter's
parameters, settings, data sets and artefacts with :func:`alignment_dynamics.config.register`;
``chapters/common.py`` holds what several chapters share.

Importing this package registers every chapter. ``alignment_dynamics.config`` imports it on first use
(``config.CHAPTERS``, ``config.chapter``, ``config.resolve``), so nothing else needs to.
"""

# The order of registration is the order of config.CHAPTERS.
from . import (  # noqa: F401  (each module registers its chapter)
    intro,
    reproducibility,
    persona_data,
    dpo_last_layer,
    update_rate,
    accuracy,
    priority,
    distinguishability,
    kernels,
    training_dynamics,
    prioritization,
    misalignment,
)
