"""The book's figures: one shared style (:mod:`.style`) and one module per chapter group.

Rules: plot functions take arrays and return a ``Figure``; they never train, embed or read files. The
style (colours, size presets, :func:`use_style`) lives in :mod:`.style`; the figures of each part of the
book in :mod:`.geometry` (distinguishability), :mod:`.theory` (Part I), :mod:`.persona` (persona data),
:mod:`.dynamics` (training dynamics, prioritization), :mod:`.misalignment` and :mod:`.kernels`.
``ad.plotting.<name>`` gives the style and every figure the chapters use.
"""

from __future__ import annotations

from .style import (
    ALIGNED, BASE, figure, label_panels, MEASURED, NEGATIVE, ordered_colors, POSITIVE, SIZES,
    steps_and_epochs_axis, TEST_STYLE, THEORY, TRAIN_STYLE, use_style,
)
from .geometry import (
    class_scatter_panels, gap_heatmap, paired_scatter, property_panels, sorted_with_intervals, tail_curves,
)
from .theory import (
    accuracy_bound_panels, gap_against_slowdown, headline_tightness, plot_identity, plot_priority_pair,
    plot_reduction_check, sgd_and_margin_panels, update_rate_bound_panels,
)
from .persona import label_confidence_hist, margins_by_class, statement_examples
from .dynamics import (
    agreement_bins, balance_panels, curves_grid, full_data_grid, lr_sensitivity, speed_grid, theory_overlay_grid,
)
from .misalignment import base_vs_aligned, labelled_curves, study_panels
from .kernels import fused_tiles_diagram, provider_bars, scaling_lines, trajectories_overlay

__all__ = [
    "ALIGNED", "BASE", "MEASURED", "NEGATIVE", "POSITIVE", "SIZES", "TEST_STYLE", "THEORY", "TRAIN_STYLE",
    "accuracy_bound_panels", "agreement_bins", "balance_panels", "base_vs_aligned", "class_scatter_panels",
    "curves_grid", "figure", "full_data_grid", "fused_tiles_diagram", "gap_against_slowdown", "gap_heatmap", "headline_tightness",
    "label_confidence_hist", "label_panels", "labelled_curves", "study_panels", "lr_sensitivity", "margins_by_class",
    "ordered_colors", "paired_scatter", "plot_identity", "plot_priority_pair", "plot_reduction_check",
    "property_panels", "provider_bars", "scaling_lines", "sgd_and_margin_panels", "sorted_with_intervals",
    "speed_grid", "statement_examples", "steps_and_epochs_axis", "tail_curves", "theory_overlay_grid",
    "trajectories_overlay", "update_rate_bound_panels", "use_style",
]

from . import prioritization, training_dynamics  # noqa: E402  (the Part II chapters' figures, from their result objects)

__all__ += ["prioritization", "training_dynamics"]
