"""The book's plotting style: one style, size presets and fixed colours.

Rules: plot functions take arrays and return a ``Figure``; they never train, embed or read files.
Positive statements are green and negative grey (the paper's Figure 2); behaviours ordered by
distinguishability run on the plasma map from purple (least) to yellow (most) (Figures 3-4); "Base"
and "Aligned" have one fixed pair of colours; "what the paper claims" (theory, bounds) is drawn in
black dashes over "what we see" (measurements).

Used in: every chapter with a figure.
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


# ---------------------------------------------------------------------------------------------------
# persona_data: statements, label confidence, reference margins
# ---------------------------------------------------------------------------------------------------

def statement_examples(positive: Sequence[str], negative: Sequence[str], *, width: int = 44):
    """Figure 1 re-made: positive statements (green) beside negative ones (grey), one box each.

    Used in: `book/persona_data.md`.
    """
    import textwrap

    import matplotlib.colors as mcolors

    if not positive or not negative:
        raise ValueError("need at least one positive and one negative statement")
    wrapped = [[textwrap.fill(s, width) for s in col] for col in (positive, negative)]
    lines = max(sum(t.count("\n") + 2 for t in col) for col in wrapped)
    fig, axes = figure("wide", 1, 2)
    fig.set_size_inches(10.0, 0.24 * lines + 0.7)
    for ax, col, colour, title in zip(axes, wrapped, (POSITIVE, NEGATIVE),
                                      ('positive: the persona would say it (" Yes")',
                                       'negative: the persona would not (" No")')):
        ax.set_axis_off()
        ax.set_title(title, color=colour, fontweight="bold", fontsize=11)
        y = 1.0
        for text in col:
            ax.text(0.02, y, text, va="top", ha="left", fontsize=10.5, transform=ax.transAxes,
                    bbox={"boxstyle": "round,pad=0.4", "facecolor": mcolors.to_rgba(colour, 0.15),
                          "edgecolor": colour})
            y -= (text.count("\n") + 2) / lines
    return fig


def label_confidence_hist(positive: np.ndarray, negative: np.ndarray, *, bins: int = 50):
    """Histograms of the label confidence of positive (green) and negative (grey) statements.

    Used in: `book/persona_data.md`.
    """
    fig, ax = figure("single")
    edges = np.linspace(0.5, 1.0, bins + 1)
    ax.hist(positive, bins=edges, color=POSITIVE, alpha=0.7, label=f"positive (n = {len(positive):,})")
    ax.hist(negative, bins=edges, color=NEGATIVE, alpha=0.5, label=f"negative (n = {len(negative):,})")
    ax.set_xlabel("label confidence (preference model's probability that the label is right)")
    ax.set_ylabel("statements")
    ax.legend(loc="upper left")
    return fig


def margins_by_class(margins: dict[str, tuple[np.ndarray, np.ndarray]]):
    """One panel per model: the reference Yes-minus-No logit margin of positive (green) and negative
    (grey) statements, with the decision threshold 0 dashed.

    Used in: `book/persona_data.md`.
    """
    if not margins:
        raise ValueError("need at least one model's margins")
    fig, axes = figure("wide", 1, len(margins), squeeze=False)
    for ax, (name, (pos, neg)) in zip(axes[0], margins.items()):
        lo, hi = float(min(pos.min(), neg.min())), float(max(pos.max(), neg.max()))
        edges = np.linspace(lo, hi, 31)
        ax.hist(pos, bins=edges, color=POSITIVE, alpha=0.7, label="positive statements")
        ax.hist(neg, bins=edges, color=NEGATIVE, alpha=0.5, label="negative statements")
        ax.axvline(0.0, color=THEORY, linestyle="--", linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("logit(\" Yes\") - logit(\" No\") after the prompt")
        ax.set_ylabel("statements")
    axes[0][0].legend(loc="upper left")
    label_panels(axes[0])
    return fig
