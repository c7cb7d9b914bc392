"""Figures of the persona data: statement examples, label confidence and reference margins."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .style import figure, label_panels, NEGATIVE, POSITIVE, THEORY


def statement_examples(positive: Sequence[str], negative: Sequence[str], *, width: int = 44):
    """Figure 1 re-made: positive statements (green) beside negative ones (grey), one box each."""
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
    """Histograms of the label confidence of positive (green) and negative (grey) statements."""
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
