"""The book's plotting style: one style, size presets, fixed colours and the helpers every figure shares.

Positive statements are green and negative grey (the paper's Figure 2); behaviours ordered by
distinguishability run on the plasma map from purple (least) to yellow (most) (Figures 3-4); "Base"
and "Aligned" have one fixed pair of colours; "what the paper claims" (theory, bounds) is drawn in
black dashes over "what we see" (measurements).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


POSITIVE = "yellowgreen"  # statements whose matching answer is " Yes" (official code's colour)
NEGATIVE = "dimgrey"  # statements whose matching answer is " No"
BASE = "#1f77b4"  # misalignment: training from the base model
ALIGNED = "#d62728"  # misalignment: training from the aligned model
THEORY = "black"  # bounds and predictions, drawn dashed
MEASURED = "#1f77b4"
TRAIN_STYLE = {"linestyle": "-"}
TEST_STYLE = {"linestyle": "--"}

SIZES = {
    "single": (6.0, 4.0),
    "wide": (10.0, 4.0),
    "double": (10.0, 4.0),
    "triple": (13.0, 4.0),
    "square": (5.5, 5.0),
    "grid": (12.0, 8.0),
}


_STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    import matplotlib as mpl

    mpl.rcParams.update(_STYLE)


def figure(size: str = "single", nrows: int = 1, ncols: int = 1, **kwargs):
    """A new ``(fig, axes)`` in one of the :data:`SIZES` presets, with the book's style."""
    import matplotlib.pyplot as plt

    if size not in SIZES:
        raise ValueError(f"unknown figure size {size!r}; valid sizes: {sorted(SIZES)}")
    use_style()
    return plt.subplots(nrows, ncols, figsize=SIZES[size], **kwargs)


def ordered_colors(n: int) -> list:
    """``n`` colours on the plasma map, purple (least distinguishable) to yellow (most).

    The top of plasma is cut at 0.9 so that the most distinguishable line stays visible on white.
    """
    import matplotlib as mpl

    if n < 1:
        raise ValueError(f"need at least one colour, got n={n}")
    cmap = mpl.colormaps["plasma"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, n)]


def steps_and_epochs_axis(ax, n_train: int, batch_size: int) -> None:
    """Label ``ax``'s x axis in steps and add a secondary axis in epochs (batch · t / n_train)."""
    if n_train <= 0 or batch_size <= 0:
        raise ValueError("n_train and batch_size must be positive")
    ax.set_xlabel("step t")
    sec = ax.secondary_xaxis("top", functions=(lambda t: t * batch_size / n_train,
                                               lambda e: e * n_train / batch_size))
    sec.set_xlabel(f"epochs (= {batch_size} t / {n_train})")


def label_panels(axes: Sequence, start: str = "a") -> None:
    """Put (a), (b), ... in the top-left corner of each axis."""
    for i, ax in enumerate(np.ravel(axes)):
        ax.text(-0.02, 1.02, f"({chr(ord(start) + i)})", transform=ax.transAxes, ha="right", va="bottom",
                fontweight="bold")


def shorten(name: str, width: int = 38) -> str:
    """``name`` cut to ``width`` characters, the last one an ellipsis, when it is longer (for legends and labels)."""
    return name if len(name) <= width else name[: width - 1] + "…"


def grid_axes(n: int, ncols: int):
    """``(fig, axes)`` for ``n`` panels in rows of at most ``ncols`` (a size preset by shape); unused cells hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    size = "grid" if nrows > 1 else ("wide" if ncols > 1 else "single")
    fig, axes = figure(size, nrows, ncols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def empty_figure(text: str):
    """A single empty panel that says ``text`` (a figure whose data are missing, e.g. no stored study)."""
    fig, ax = figure("single")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()
    return fig
