"""Figures of the geometry of preferences: class scatters, sorted properties with intervals, property
panels, the priority-gap heatmap, empirical tails and paired scatters.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .style import figure, MEASURED, NEGATIVE, ordered_colors, POSITIVE, shorten, THEORY


def _tags(highlight) -> dict:
    """``highlight`` as {name: text}: a mapping is kept, a list of names labels each by its name."""
    if isinstance(highlight, dict):
        return dict(highlight)
    return {h: shorten(h, 30) for h in highlight}


def class_scatter_panels(points: Sequence, positive: Sequence, titles: Sequence[str], *,
                         axis_name: str = "UMAP"):
    """2-D maps of several behaviours side by side, positive statements green and negative grey.

    ``points[k]`` is an (n, 2) array, ``positive[k]`` the matching bool mask and ``titles[k]`` plain
    text (e.g. the behaviour and its distinguishability). Axis ticks are hidden: UMAP coordinates have
    no units.
    """
    if not (len(points) == len(positive) == len(titles)) or not points:
        raise ValueError("points, positive and titles must be non-empty and of the same length")
    k = len(points)
    fig, axes = figure("triple" if k >= 3 else "double" if k == 2 else "square", 1, k, squeeze=False)
    for ax, z, pos, title in zip(axes[0], points, positive, titles):
        z = np.asarray(z)
        pos = np.asarray(pos, dtype=bool)
        if z.ndim != 2 or z.shape[1] != 2 or z.shape[0] != pos.shape[0]:
            raise ValueError(f"each map must be (n, 2) with n labels, got {z.shape} and {pos.shape}")
        ax.scatter(*z[~pos].T, s=9, color=NEGATIVE, alpha=0.7, label="negative (No)", linewidths=0)
        ax.scatter(*z[pos].T, s=9, color=POSITIVE, alpha=0.7, label="positive (Yes)", linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.grid(False)
    axes[0][0].legend(loc="best", markerscale=2)
    return fig


def sorted_with_intervals(panels: Sequence[dict], *, ylabel: str, highlight: Sequence[str] | dict = (),
                          log: bool = False):
    """Behaviours sorted by a value, with interval bars and plasma colours, one panel per dict.

    Each panel is ``{"values": array, "lo": array or None, "hi": array or None, "names": list,
    "title": str}``. Points run left to right from the smallest value (purple) to the largest
    (yellow). Names in ``highlight`` are ringed in black and labelled (a dict maps a name to a short
    tag to print instead of the name).
    """
    import matplotlib as mpl

    if not panels:
        raise ValueError("need at least one panel")
    fig, axes = figure("wide" if len(panels) > 1 else "single", 1, len(panels), squeeze=False)
    cmap = mpl.colormaps["plasma"]
    for ax, p in zip(axes[0], panels):
        v = np.asarray(p["values"], dtype=float)
        names = list(p["names"])
        if len(names) != len(v):
            raise ValueError("values and names must have the same length")
        order = np.argsort(v, kind="stable")
        x = np.arange(len(v))
        colors = cmap(np.linspace(0.0, 0.9, len(v)))
        if p.get("lo") is not None and p.get("hi") is not None:
            lo, hi = np.asarray(p["lo"], float)[order], np.asarray(p["hi"], float)[order]
            ax.vlines(x, lo, hi, colors=colors, alpha=0.6, linewidth=1.2)
        ax.scatter(x, v[order], c=colors, s=12, zorder=3)
        rank = {names[i]: r for r, i in enumerate(order)}
        for j, (name, tag) in enumerate((n, t) for n, t in _tags(highlight).items() if n in rank):
            r = rank[name]
            ax.scatter([r], [v[order][r]], s=60, facecolors="none", edgecolors="black", zorder=4)
            ax.annotate(tag, (r, v[order][r]), xytext=(4, 10 + 10 * (j % 2)), textcoords="offset points",
                        fontsize=8, ha="center", arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6})
        ax.set_title(p.get("title", ""))
        ax.set_xlabel("behaviours, sorted")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
    return fig


def property_panels(table, *, order_by: str = "distinguishability", columns: Sequence[str] = (),
                    labels: Sequence[str] = ()):
    """Several per-behaviour columns of ``table`` (a DataFrame), all against one sort order.

    One panel per column; the x axis is the rank by ``order_by`` and the colour the plasma colour of
    that rank, so that one can see whether concentration and trace follow distinguishability.
    """
    import matplotlib as mpl

    columns = list(columns) or [order_by]
    labels = list(labels) or columns
    fig, axes = figure("triple", 1, len(columns), squeeze=False)
    order = np.argsort(table[order_by].to_numpy(), kind="stable")
    colors = mpl.colormaps["plasma"](np.linspace(0.0, 0.9, len(order)))
    x = np.arange(len(order))
    for ax, col, lab in zip(axes[0], columns, labels):
        ax.scatter(x, table[col].to_numpy()[order], c=colors, s=10)
        ax.set_xlabel(f"behaviours, sorted by {order_by}")
        ax.set_ylabel(lab)
    return fig


def gap_heatmap(gaps, *, marks: Sequence[tuple[int, int, str]] = (), title: str = "",
                axis_label: str = "behaviour rank by distinguishability"):
    """A priority-gap matrix as a heatmap (diverging colours centred at 0) with marked pairs.

    ``gaps`` is (k × k), rows and columns already in the order to show; ``marks`` are
    ``(row, col, text)`` cells to ring and label. NaN cells (undefined gaps) are drawn white.
    """
    g = np.asarray(gaps, dtype=float)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gaps must be a square matrix, got shape {g.shape}")
    fig, ax = figure("square")
    vmax = float(np.nanmax(np.abs(g))) or 1.0
    im = ax.imshow(g, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.grid(False)
    for i, j, text in marks:
        for (r, c) in ((i, j), (j, i)):
            ax.scatter([c], [r], s=70, facecolors="none", edgecolors="black", linewidths=1.4)
        ax.annotate(text, (j, i), xytext=(8, 8), textcoords="offset points", fontsize=9, fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.5", "alpha": 0.85})
    ax.set_xlabel(f"j ({axis_label})")
    ax.set_ylabel(f"i ({axis_label})")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="priority gap G[i, j]")
    return fig


def tail_curves(panels: Sequence[dict], *, xlabel: str = "t (in standard deviations)"):
    """Empirical P(|X| ≥ t) on a log scale, measured (solid) against reference laws (black), per panel.

    Each panel is ``{"title": str, "curves": {label: (t, survival)}, "references": {label: (t,
    survival)}}``; the measured curves of all panels share one set of colours. A straight line on this
    plot is an exponential tail; a parabola bending down is a Gaussian tail.
    """
    if not panels:
        raise ValueError("need at least one panel")
    fig, axes = figure("wide" if len(panels) > 1 else "single", 1, len(panels), squeeze=False, sharey=True)
    labels = list(dict.fromkeys(label for p in panels for label in p["curves"]))
    colors = dict(zip(labels, ordered_colors(max(len(labels), 2))))
    for ax, p in zip(axes[0], panels):
        for label, (t, surv) in p["curves"].items():
            surv = np.asarray(surv, float)
            keep = surv > 0
            ax.plot(np.asarray(t)[keep], surv[keep], label=label, color=colors[label])
        for k, (label, (t, surv)) in enumerate(p.get("references", {}).items()):
            surv = np.asarray(surv, float)
            keep = surv > 0
            ax.plot(np.asarray(t)[keep], surv[keep], label=label, color=THEORY, linestyle=("--", ":", "-.")[k % 3],
                    linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(p.get("title", ""))
        ax.legend()
    axes[0][0].set_ylabel("P(|X| ≥ t)")
    return fig


def paired_scatter(x, y, *, xlabel: str, ylabel: str, names: Sequence[str] | None = None,
                   highlight: Sequence[str] | dict = (), diagonal: bool = False, logx: bool = False,
                   logy: bool = False):
    """One point per behaviour, ``x`` against ``y``, with named behaviours ringed and labelled.

    ``highlight`` lists names, or maps names to short tags to print instead.

    ``diagonal`` draws y = x (dashed) for comparing one quantity between two models.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    fig, ax = figure("single")
    ax.scatter(x, y, s=12, color=MEASURED, alpha=0.75)
    if names is not None:
        index = {n: k for k, n in enumerate(names)}
        for name, tag in ((n, t) for n, t in _tags(highlight).items() if n in index):
            k = index[name]
            ax.scatter([x[k]], [y[k]], s=60, facecolors="none", edgecolors="black", zorder=4)
            ax.annotate(tag, (x[k], y[k]), xytext=(5, 4), textcoords="offset points", fontsize=8)
    if diagonal:
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color=THEORY, linestyle="--", linewidth=1, label="y = x")
        ax.legend()
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig
