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
# Geometry of preferences (book/distinguishability.md)
# ---------------------------------------------------------------------------------------------------

def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _tags(highlight) -> dict:
    """``highlight`` as {name: text}: a mapping is kept, a list of names labels each by its name."""
    if isinstance(highlight, dict):
        return dict(highlight)
    return {h: _short(h, 30) for h in highlight}


def class_scatter_panels(points: Sequence, positive: Sequence, titles: Sequence[str], *,
                         axis_name: str = "UMAP"):
    """2-D maps of several behaviours side by side, positive statements green and negative grey.

    ``points[k]`` is an (n, 2) array, ``positive[k]`` the matching bool mask and ``titles[k]`` plain
    text (e.g. the behaviour and its distinguishability). Axis ticks are hidden: UMAP coordinates have
    no units.

    Used in: `book/distinguishability.md`.
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

    Used in: `book/distinguishability.md`.
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

    Used in: `book/distinguishability.md`.
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

    Used in: `book/distinguishability.md`.
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

    Used in: `book/distinguishability.md`.
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

    Used in: `book/distinguishability.md`.
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


# ---------------------------------------------------------------------------------------------------
# Theory (Part I): bounds against measurements on synthetic data
# ---------------------------------------------------------------------------------------------------

FAMILY_MARKERS = {"gaussian": "o", "laplace": "s", "mixture": "^"}


def _scatter_groups(ax, x, y, groups, *, size: float, label: str | None = None) -> None:
    """Scatter ``(x, y)`` in the measured colour, or one marker per group (tail family) when given."""
    if groups is None:
        ax.scatter(x, y, s=size, color=MEASURED, alpha=0.7, label=label)
        return
    groups = np.asarray(groups)
    for g in dict.fromkeys(groups.tolist()):
        sel = groups == g
        ax.scatter(x[sel], y[sel], s=size, alpha=0.7, marker=FAMILY_MARKERS.get(g, "o"), label=str(g))


def plot_identity(x, y, *, xlabel: str, ylabel: str, groups=None, ax=None, title: str | None = None,
                  log: bool = False):
    """Scatter of a measured quantity ``y`` against its prediction ``x`` on the line ``y = x``.

    ``groups`` (optional, one label per point) picks a marker per tail family or category.
    Returns the figure.

    Used in: `book/dpo_last_layer.md`, `book/update_rate.md`, `book/priority.md`.
    """
    if ax is None:
        fig, ax = figure("square")
    else:
        fig = ax.figure
    x, y = np.asarray(x, float), np.asarray(y, float)
    _scatter_groups(ax, x, y, groups, size=14, label="measured")
    lo = min(x.min(), y.min())
    hi = max(x.max(), y.max())
    ax.plot([lo, hi], [lo, hi], color=THEORY, linestyle="--", linewidth=1, label="prediction (y = x)")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return fig


def plot_bound_curves(t, measured: Sequence, *, labels: Sequence[str], upper: Sequence | None = None,
                      lower: Sequence | None = None, first_order: Sequence | None = None, ax=None,
                      ylabel: str = "", title: str | None = None, upper_label: str = "upper bound",
                      lower_label: str = "lower bound", logy: bool = False):
    """Measured curves over steps (one per instance, plasma colours from least to most distinguishable)
    with their bounds: ``upper`` dotted, ``lower`` dash-dotted, ``first_order`` dashed, all in the
    instance's colour, and the region between lower and upper shaded.

    Used in: `book/update_rate.md`, `book/accuracy.md`.
    """
    if ax is None:
        fig, ax = figure("single")
    else:
        fig = ax.figure
    colors = ordered_colors(len(measured))
    for k, (y, c, lab) in enumerate(zip(measured, colors, labels)):
        ax.plot(t, y, color=c, label=lab)
        if first_order is not None:
            ax.plot(t, first_order[k], color=c, linestyle="--", linewidth=1)
        if upper is not None:
            ax.plot(t, upper[k], color=c, linestyle=":", linewidth=1.2)
        if lower is not None:
            ax.plot(t, lower[k], color=c, linestyle="-.", linewidth=1)
        if upper is not None and lower is not None:
            ax.fill_between(t, lower[k], upper[k], color=c, alpha=0.08, linewidth=0)
    import matplotlib.lines as mlines

    handles, _ = ax.get_legend_handles_labels()
    extra = [mlines.Line2D([], [], color=THEORY, linestyle=ls, label=lab) for ls, lab, on in (
        ("--", "first order", first_order is not None), (":", upper_label, upper is not None),
        ("-.", lower_label, lower is not None)) if on]
    ax.legend(handles=handles + extra, ncol=2)
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    return fig


def plot_tightness(x, ratio, *, xlabel: str, ylabel: str, groups=None, ax=None, title: str | None = None,
                   logx: bool = True, logy: bool = False, reference: float = 1.0):
    """Tightness of a bound over random instances: ``ratio`` (measured / bound, or bound / measured)
    against an instance property ``x``, with the line where the bound would be attained.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    if ax is None:
        fig, ax = figure("single")
    else:
        fig = ax.figure
    x, ratio = np.asarray(x, float), np.asarray(ratio, float)
    _scatter_groups(ax, x, ratio, groups, size=12)
    if groups is not None:
        ax.legend()
    ax.axhline(reference, color=THEORY, linestyle="--", linewidth=1)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


def update_rate_bound_panels(curves: Sequence[dict], *, labels: Sequence[str]):
    """Three panels of the update-rate bounds over steps (log-log), from ``theory.update_rate_curves``:
    (a) the a-priori band around the first-order line, (b) the loss-drop sandwich (convexity below,
    energy above), (c) the lower bound in the paper's scaling and the label-blind expected upper bound.
    Returns the figure.

    Used in: `book/update_rate.md`.
    """
    fig, axes = figure("triple", 1, 3)
    t = curves[0]["t"][1:]
    meas = [c["measured"][1:] for c in curves]
    floor = 1e-12
    plot_bound_curves(t, meas, labels=labels, upper=[c["band_upper"][1:] for c in curves],
                      lower=[np.maximum(c["band_lower"][1:], floor) for c in curves],
                      first_order=[c["first_order"][1:] for c in curves], ax=axes[0],
                      ylabel="||W_t - W_0||_F", title="a-priori band", logy=True)
    plot_bound_curves(t, meas, labels=labels, upper=[c["energy_upper"][1:] for c in curves],
                      lower=[np.maximum(c["convexity_lower"][1:], floor) for c in curves], ax=axes[1],
                      ylabel="||W_t - W_0||_F", title="loss-drop sandwich", logy=True,
                      upper_label="energy", lower_label="convexity")
    plot_bound_curves(t, meas, labels=labels, upper=[c["expected_upper"][1:] for c in curves],
                      lower=[np.maximum(c["realised_lower"][1:], floor) for c in curves], ax=axes[2],
                      ylabel="||W_t - W_0||_F", title="paper's scaling", logy=True,
                      upper_label="E-upper (label-blind)", lower_label="lower (item 3)")
    lo = min(float(np.min(m)) for m in meas) / 10
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylim(bottom=lo)
    label_panels(axes)
    return fig


def accuracy_bound_panels(curves: Sequence[dict], *, labels: Sequence[str]):
    """Three panels of the accuracy guarantees over steps, from ``theory.accuracy_curves``: (a) accuracy
    with the before-training guarantee, (b) accuracy with the after-training guarantee, (c) the training
    loss with its before-training bound (log-log). Returns the figure.

    Used in: `book/accuracy.md`.
    """
    fig, axes = figure("triple", 1, 3)
    t = curves[0]["t"]
    acc = [c["accuracy"] for c in curves]
    plot_bound_curves(t, acc, labels=labels, lower=[c["guarantee_prior"] for c in curves], ax=axes[0],
                      ylabel="official training accuracy", title="before training", lower_label="guarantee")
    plot_bound_curves(t, acc, labels=labels, lower=[c["guarantee_post"] for c in curves], ax=axes[1],
                      ylabel="official training accuracy", title="after training (from the loss)",
                      lower_label="guarantee")
    plot_bound_curves(t[1:], [c["loss"][1:] for c in curves], labels=labels,
                      upper=[c["loss_prior"][1:] for c in curves], ax=axes[2], ylabel="training loss",
                      title="loss", logy=True, upper_label="bound before training")
    axes[2].set_xscale("log")
    for ax in axes[:2]:
        ax.set_ylim(-0.02, 1.02)
    label_panels(axes)
    return fig


def gap_against_slowdown(gap, slowdown, *, ax=None):
    """The official priority gap of each equal-size pair (x) against the measured first-step relative
    slowdown of the weaker behaviour (y), with the line y = x that our bound says the points stay above.
    Returns the figure.

    Used in: `book/priority.md`.
    """
    if ax is None:
        fig, ax = figure("square")
    else:
        fig = ax.figure
    gap, slowdown = np.asarray(gap, float), np.asarray(slowdown, float)
    ax.scatter(gap, slowdown, s=12, color=MEASURED, alpha=0.7, label="pairs (runs)")
    hi = max(float(np.max(gap)), float(np.max(slowdown)), 1e-3)
    ax.plot([0, hi], [0, hi], color=THEORY, linestyle="--", linewidth=1, label="y = x (bound attained)")
    ax.set_xlabel("official priority gap (p_i - p_j) / max ||b||")
    ax.set_ylabel("measured slowdown 1 - dM_j(1) / dM_i(1)")
    ax.set_title("gap against first-step slowdown")
    ax.legend()
    return fig


def headline_tightness(x, sweep, names: Sequence[str], *, ax=None, xlabel: str = "",
                       title: str = "tightness of the headline bounds"):
    """Per-instance tightness (column ``tight_<name>`` of a sweep) of several headline bounds against an
    instance property ``x``, one colour per bound, with the line where a bound would be attained.
    Returns the figure.

    Used in: `book/update_rate.md`, `book/accuracy.md`, `book/priority.md`.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = figure("single")
    else:
        fig = ax.figure
    x = np.asarray(x, dtype=np.float64)
    colors = plt.get_cmap("tab10").colors
    markers = ("o", "s", "^", "D", "v", "P")
    for k, name in enumerate(names):
        y = np.asarray(sweep[f"tight_{name}"], dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(x)
        ax.scatter(x[ok], y[ok], s=12, alpha=0.7, color=colors[k % 10], marker=markers[k % len(markers)], label=name)
    ax.axhline(1.0, color=THEORY, linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.08)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tightness (0: vacuous)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def plot_reduction_check(t, reference: dict, closed: dict, *, steps_label: str = "step t"):
    """Full-softmax reference (markers) against the logistic-regression recursion (lines): one panel per
    quantity in ``closed`` (same keys in ``reference``), and a last panel with the absolute differences
    on a log scale.

    Used in: `book/dpo_last_layer.md`.
    """
    keys = list(closed)
    n = len(keys) + 1
    if n == 4:
        fig, axes = figure("grid", 2, 2)
        axes = axes.ravel()
    else:
        fig, axes = figure("triple", 1, n)
    for ax, k in zip(axes, keys):
        tt = np.asarray(t)[: len(reference[k])]
        ax.plot(np.asarray(t)[: len(closed[k])], closed[k], color=THEORY, linestyle="--", label="logistic regression")
        ax.plot(tt, reference[k], linestyle="none", marker="o", markersize=2.5, color=MEASURED, alpha=0.7,
                label="full-softmax DPO")
        ax.set_title(k)
        ax.set_xlabel(steps_label)
        ax.legend()
    ax = axes[-1]
    for k in keys:
        n = min(len(reference[k]), len(closed[k]))
        diff = np.abs(np.asarray(reference[k])[:n] - np.asarray(closed[k])[:n])
        ax.semilogy(np.asarray(t)[:n], np.maximum(diff, 1e-18), label=k)
    ax.axhline(np.finfo(float).eps, color=THEORY, linestyle=":", linewidth=1, label="float64 eps")
    ax.set_ylim(1e-19, 1e-10)
    ax.set_title("|difference|")
    ax.set_xlabel(steps_label)
    ax.legend()
    label_panels(axes)
    return fig


def plot_priority_pair(t, margin_change, pred, band, loss, loss_lower, loss_upper, *, labels: Sequence[str],
                       title: str | None = None, axes=None):
    """Two behaviours trained jointly: (a) each one's mean margin change with our first-order prediction
    (dashed) and its guaranteed band (shaded); (b) each one's DPO loss with our two-sided bounds.
    Arrays have shape ``(T+1, K)``; colours run from the less to the more distinguishable behaviour.
    ``axes`` (two axes) draws into an existing figure, e.g. one row of a grid; ``title`` then prefixes
    the panel titles.

    Used in: `book/priority.md`.
    """
    if axes is None:
        fig, (a1, a2) = figure("double", 1, 2)
    else:
        a1, a2 = axes
        fig = a1.figure
    K = margin_change.shape[1]
    colors = ordered_colors(K)
    for k in range(K):
        c = colors[k]
        a1.plot(t, margin_change[:, k], color=c, label=labels[k])
        a1.plot(t, pred[:, k], color=c, linestyle="--", linewidth=1)
        a1.fill_between(t, pred[:, k] - band[:, k], pred[:, k] + band[:, k], color=c, alpha=0.12, linewidth=0)
        a2.plot(t, loss[:, k], color=c, label=labels[k])
        a2.fill_between(t, loss_lower[:, k], loss_upper[:, k], color=c, alpha=0.15, linewidth=0)
    a1.axhline(0, color=THEORY, linewidth=0.8)
    a2.axhline(np.log(2), color=THEORY, linewidth=0.8, linestyle=":")
    a1.set_xlabel("step t")
    a1.set_ylabel("change of mean signed log-odds margin")
    prefix = f"{title}: " if (title and axes is not None) else ""
    a1.set_title(prefix + "margins: measured, first order (dashed), band")
    a2.set_xlabel("step t")
    a2.set_ylabel("per-behaviour DPO loss")
    a2.set_title(prefix + "losses with our bounds (shaded)")
    a1.legend()
    a2.legend()
    if title and axes is None:
        fig.suptitle(title)
    if axes is None:
        label_panels([a1, a2])
    return fig


# ---------------------------------------------------------------------------------------------------
# kernels (book/kernels.md)
# ---------------------------------------------------------------------------------------------------

def fused_tiles_diagram():
    """The tiling of the fused linear log-probs: row chunks of H times vocabulary tiles of W.

    Left: the N x V logits that the naive path materialises, cut into (row chunk) x (vocabulary tile)
    blocks; the fused op holds one block at a time and keeps only a running max and sum per row.
    Right: the backward pass recomputes each block and adds its two contributions to dW in fp32.

    Used in: `book/kernels.md`.
    """
    import matplotlib.patches as mpatches

    fig, axes = figure("wide", 1, 2)
    n_rows, n_tiles = 4, 6
    for ax, title in zip(axes, ("forward: online log-sum-exp", "backward: recompute, accumulate dW")):
        ax.set_xlim(-3.2, n_tiles + 0.4)
        ax.set_ylim(-2.8, n_rows + 2.0)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title)
        for i in range(n_rows):
            for j in range(n_tiles):
                active = (i == 1 and j == 2)
                ax.add_patch(mpatches.Rectangle((j, n_rows - 1 - i), 0.92, 0.92,
                                                facecolor="#1f77b4" if active else "#dbe7f3",
                                                edgecolor="white", lw=1.0))
        ax.add_patch(mpatches.Rectangle((-2.8, 0), 1.2, n_rows - 0.08, facecolor="#f2f2f2", edgecolor="grey"))
        ax.add_patch(mpatches.Rectangle((-2.8, n_rows - 2), 1.2, 0.92, facecolor="#ff7f0e", alpha=0.8))
        ax.text(-1.7, n_rows / 2, "H\n(N x d)", ha="left", va="center", fontsize=8.5, rotation=90)
        ax.add_patch(mpatches.Rectangle((0, n_rows + 0.15), n_tiles - 0.08, 0.8, facecolor="#f2f2f2", edgecolor="grey"))
        ax.add_patch(mpatches.Rectangle((2, n_rows + 0.15), 0.92, 0.8, facecolor="#2ca02c", alpha=0.8))
        ax.text(n_tiles / 2, n_rows + 1.05, "W^T (d x V), vocabulary tiles", ha="center", va="bottom", fontsize=8.5)
        ax.text(2.46, n_rows - 1.54, "z", color="white", ha="center", va="center", fontsize=10, fontweight="bold")
    axes[0].text(n_tiles / 2 - 1.4, -0.45, "per row: m <- max(m, max z);  s <- s e^(m_old - m) + sum e^(z - m)\n"
                 "LSE = m + log s;  target logits h . W[y] gathered directly\nkept: H, W, targets, LSE (O(N))",
                 ha="center", va="top", fontsize=8)
    axes[1].text(n_tiles / 2 - 1.4, -0.45, "G = g e_y - c p  with  p = exp(z - LSE),  c = sum_k g_k\n"
                 "dW[tile] += G^T H_chunk  (fp32);  rows with c = 0 skip the dense part\n"
                 "one-pass DPO: whole pairs per chunk, loss and G from the same block",
                 ha="center", va="top", fontsize=8)
    return fig


def trajectories_overlay(steps, series: dict, *, ylabel: str, ax=None):
    """Overlay trajectories ``{label: (values, style)}`` against ``steps`` (one axis).

    Used in: `book/kernels.md`.
    """
    fig = None
    if ax is None:
        fig, ax = figure("single")
    for label, (values, style) in series.items():
        ax.plot(steps, np.asarray(values), label=label, **style)
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    ax.legend()
    return fig if fig is not None else ax.figure


def provider_bars(names, times_s, peaks_mb, *, title: str = ""):
    """Two bar panels: time per step and peak memory above the resident tensors, one bar per provider.

    Used in: `book/kernels.md`.
    """
    fig, (a, b) = figure("double", 1, 2)
    x = np.arange(len(names))
    a.bar(x, np.asarray(times_s, dtype=float), color=MEASURED)
    a.set_xticks(x, names, rotation=20, ha="right")
    a.set_ylabel("time per step (s)")
    b.bar(x, np.asarray([np.nan if p is None else p for p in peaks_mb], dtype=float), color="#ff7f0e")
    b.set_xticks(x, names, rotation=20, ha="right")
    b.set_ylabel("peak memory above resident (MB)")
    if title:
        fig.suptitle(title)
    label_panels([a, b])
    return fig


def scaling_lines(series: dict, *, xlabel: str, ylabel: str, title: str = "", logy: bool = True, ax=None):
    """Lines ``{label: (x, y)}`` on log-x (and log-y) axes: a benchmark quantity against batch size.

    Used in: `book/kernels.md`.
    """
    fig = None
    if ax is None:
        fig, ax = figure("single")
    for label, (xs, ys) in series.items():
        ax.plot(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), marker="o", label=label)
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return fig if fig is not None else ax.figure


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


# ---------------------------------------------------------------------------------------------------
# Training dynamics and prioritisation on real embeddings (book/training_dynamics.md, book/prioritization.md)
# ---------------------------------------------------------------------------------------------------

_THEORY_STYLES = ("--", "-.", ":", (0, (1, 3)))


def _grid_axes(n: int, ncols: int):
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    size = "grid" if nrows > 1 else ("wide" if ncols > 1 else "single")
    fig, axes = figure(size, nrows, ncols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _panel_curves(p: dict, key: str, t) -> tuple[np.ndarray, list]:
    """A panel's ``(K, T+1)`` curves under ``key`` and its K labels, checked against the steps ``t``."""
    y = np.atleast_2d(np.asarray(p[key], float))
    labels = list(p["labels"])
    if y.shape != (len(labels), t.shape[0]):
        raise ValueError(f"panel {p.get('title', '')!r}: {key} must be (K, T+1) = ({len(labels)}, {t.shape[0]}), "
                         f"got {y.shape}")
    return y, labels


def curves_grid(t, panels: Sequence[dict], *, ylabel: str, ncols: int = 2, n_train: int | None = None,
                batch_size: int | None = None, hline: float | None = None, hline_label: str = ""):
    """Per-behaviour curves over steps, one panel per dict, behaviours on the plasma map.

    Each panel is ``{"title": str, "train": (K, T+1), "test": (K, T+1) or None, "labels": K names}``;
    behaviour k gets the k-th plasma colour, so list them from least (purple) to most (yellow)
    distinguishable. Training curves are solid, test curves dashed. ``hline`` draws a reference level
    (e.g. ln 2) in black dots; with ``n_train`` and ``batch_size`` the top axis shows epochs.

    Used in: `book/training_dynamics.md`, `book/prioritization.md`.
    """
    if not panels:
        raise ValueError("need at least one panel")
    t = np.asarray(t, float)
    fig, axes = _grid_axes(len(panels), ncols)
    for ax, p in zip(axes, panels):
        train, labels = _panel_curves(p, "train", t)
        colors = ordered_colors(len(labels))
        for k, (y, c, lab) in enumerate(zip(train, colors, labels)):
            ax.plot(t, y, color=c, label=_short(lab, 40), **TRAIN_STYLE)
            if p.get("test") is not None:
                ax.plot(t, np.asarray(p["test"], float)[k], color=c, linewidth=1.1, **TEST_STYLE)
        if hline is not None:
            ax.axhline(hline, color=THEORY, linestyle=":", linewidth=0.9, label=hline_label or None)
        ax.set_title(p.get("title", ""))
        ax.set_ylabel(ylabel)
        if n_train and batch_size:
            steps_and_epochs_axis(ax, n_train, batch_size)
        else:
            ax.set_xlabel("step t")
    import matplotlib.lines as mlines

    for i, ax in enumerate(axes):
        if i and list(panels[i]["labels"]) == list(panels[i - 1]["labels"]):
            continue  # one legend per run of panels showing the same behaviours
        handles, _ = ax.get_legend_handles_labels()
        if i == 0 and any(p.get("test") is not None for p in panels):
            handles += [mlines.Line2D([], [], color="0.3", label="training set", **TRAIN_STYLE),
                        mlines.Line2D([], [], color="0.3", label="test set", linewidth=1.1, **TEST_STYLE)]
        ax.legend(handles=handles, fontsize=7)
    return fig


def theory_overlay_grid(t, panels: Sequence[dict], *, ylabel: str, ncols: int = 2, logy: bool = False,
                        clip_band: bool = False):
    """Measured per-behaviour curves (plasma colours) with theory drawn over them in black.

    Each panel is ``{"title", "measured": (K, T+1), "labels": K names, "theory": {label: (K, T+1)},
    "points": {label: (x, (K,))}, "band": (lower (K, T+1), upper (K, T+1)) or absent}``. Each theory
    entry gets its own black line style (dashed, dash-dotted, dotted, ...), each point set black
    crosses at step ``x``; a band is shaded in the behaviour's colour. With ``clip_band`` the y range
    follows the curves, not the band (a rigorous band may be much wider than what it bounds).

    Used in: `book/training_dynamics.md`, `book/prioritization.md`.
    """
    import matplotlib.lines as mlines

    if not panels:
        raise ValueError("need at least one panel")
    t = np.asarray(t, float)
    fig, axes = _grid_axes(len(panels), ncols)
    for ax, p in zip(axes, panels):
        meas, labels = _panel_curves(p, "measured", t)
        colors = ordered_colors(len(labels))
        extra = []
        if p.get("band") is not None:
            lo, hi = (np.atleast_2d(np.asarray(x, float)) for x in p["band"])
            for k, c in enumerate(colors):
                ax.fill_between(t, lo[k], hi[k], color=c, alpha=0.12, linewidth=0)
            extra.append(mlines.Line2D([], [], color="0.6", linewidth=6, alpha=0.4, label=p.get("band_label", "band")))
        for k, (y, c, lab) in enumerate(zip(meas, colors, labels)):
            ax.plot(t, y, color=c, label=_short(lab, 40))
        for j, (name, curves) in enumerate((p.get("theory") or {}).items()):
            style = _THEORY_STYLES[j % len(_THEORY_STYLES)]
            for y in np.atleast_2d(np.asarray(curves, float)):
                ax.plot(t, y, color=THEORY, linestyle=style, linewidth=1.0)
            extra.append(mlines.Line2D([], [], color=THEORY, linestyle=style, linewidth=1.0, label=name))
        for name, (x, ys) in (p.get("points") or {}).items():
            ys = np.atleast_1d(np.asarray(ys, float))
            ax.scatter(np.full(ys.shape, x), ys, marker="x", color=THEORY, s=28, zorder=5, linewidths=1.2)
            extra.append(mlines.Line2D([], [], color=THEORY, marker="x", linestyle="none", label=name))
        if logy:
            ax.set_yscale("log")
        if clip_band:
            lines = [meas] + [np.atleast_2d(np.asarray(c, float)) for c in (p.get("theory") or {}).values()]
            lo_y = min(float(np.nanmin(x)) for x in lines)
            hi_y = max(float(np.nanmax(x)) for x in lines)
            pad = 0.15 * max(hi_y - lo_y, 1e-12)
            ax.set_ylim(lo_y - pad, hi_y + pad)
        ax.set_title(p.get("title", ""))
        ax.set_xlabel("step t")
        ax.set_ylabel(ylabel)
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + extra, fontsize=7.5)
    return fig


def lr_sensitivity(curves: dict, *, marks: dict, xlabel: str, ylabel: str,
                   band: tuple[float, float] | None = None, band_label: str = "range of the assumptions",
                   logy: bool = False):
    """A measured quantity against a step size (log x axis), one line per model, with marked values.

    ``curves`` maps a label to ``(x, y)``; ``marks`` maps a label to ``{name: x}``, drawn as vertical
    lines in that curve's colour (dotted, dashed, dash-dotted in turn); ``band`` shades a range of x.
    With ``logy`` the y axis is logarithmic and non-positive values (e.g. a loss that rose) are left out.

    Used in: `book/training_dynamics.md`.
    """
    fig, ax = figure("single")
    colors = ordered_colors(max(len(curves), 2))
    for k, (label, (x, y)) in enumerate(curves.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.shape != y.shape:
            raise ValueError(f"curve {label!r}: x and y must have one shape, got {x.shape} and {y.shape}")
        if logy:
            x, y = x[y > 0], y[y > 0]
        ax.plot(x, y, marker="os^"[k % 3], markersize=3.5, color=colors[k], label=label)
        for j, (name, xm) in enumerate((marks.get(label) or {}).items()):
            ax.axvline(xm, color=colors[k], linestyle=(":", "--", "-.")[j % 3], linewidth=1.1,
                       label=f"{name} ({label})")
    if band is not None:
        ax.axvspan(band[0], band[1], color="0.85", alpha=0.5, linewidth=0, label=band_label)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7.5)
    return fig


def speed_grid(panels: Sequence[dict], *, ncols: int = 3):
    """One scatter per (model, measure): a learning-speed measure against a behaviour property.

    Each panel is ``{"x", "y", "xlabel", "ylabel", "title", "names", "highlight": names to ring and
    label, "note": a second title line (e.g. ρ and its interval), "logy": bool}``. Points are coloured
    by the plasma rank of x (purple: smallest).

    Used in: `book/training_dynamics.md`.
    """
    import matplotlib as mpl

    if not panels:
        raise ValueError("need at least one panel")
    fig, axes = _grid_axes(len(panels), ncols)
    cmap = mpl.colormaps["plasma"]
    for ax, p in zip(axes, panels):
        x, y = np.asarray(p["x"], float), np.asarray(p["y"], float)
        if x.shape != y.shape:
            raise ValueError(f"panel {p.get('title', '')!r}: x and y must have one shape, got {x.shape} and {y.shape}")
        rank = np.argsort(np.argsort(x, kind="stable"), kind="stable") / max(len(x) - 1, 1)
        ax.scatter(x, y, c=cmap(0.9 * rank), s=11, alpha=0.85)
        names = list(p.get("names") or [])
        index = {n: k for k, n in enumerate(names)}
        for j, name in enumerate(h for h in (p.get("highlight") or []) if h in index):
            k = index[name]
            ax.scatter([x[k]], [y[k]], s=55, facecolors="none", edgecolors="black", zorder=4)
            ax.annotate(_short(name, 28), (x[k], y[k]), xytext=(5, 3 - 10 * (j % 3)), textcoords="offset points",
                        fontsize=6.5)
        if p.get("logy"):
            ax.set_yscale("log")
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", ""))
        ax.set_title("\n".join(x for x in (p.get("title", ""), p.get("note", "")) if x), fontsize=9)
    return fig


def agreement_bins(labels: Sequence[str], series: dict, *, chance: float, xlabel: str, ylabel: str):
    """Fractions with intervals per bin (e.g. how often the priority gap's sign is right, per |gap| bin).

    ``series`` maps a label to ``(p, lo, hi)`` arrays over the bins; ``chance`` is drawn as a black
    dotted line.

    Used in: `book/prioritization.md`.
    """
    fig, ax = figure("single")
    x = np.arange(len(labels), dtype=float)
    colors = ordered_colors(max(len(series), 2))
    width = 0.8 / max(len(series), 1)
    for k, (label, (p, lo, hi)) in enumerate(series.items()):
        p, lo, hi = (np.asarray(v, float) for v in (p, lo, hi))
        xs = x - 0.4 + width * (k + 0.5)
        ax.errorbar(xs, p, yerr=[p - lo, hi - p], fmt="o", color=colors[k], capsize=3, label=label)
    ax.axhline(chance, color=THEORY, linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7.5)
    return fig


def balance_panels(panels: Sequence[dict], *, xlabel: str, ylabel: str):
    """Side-by-side scatters sharing their axes, each with the diagonal y = x (dashed black).

    Each panel is ``{"x", "y", "title"}``; e.g. the loss drops of the two members of many pairs,
    before and after a reweighting.

    Used in: `book/prioritization.md`.
    """
    if not panels:
        raise ValueError("need at least one panel")
    fig, axes = figure("double" if len(panels) > 1 else "single", 1, len(panels), squeeze=False, sharex=True,
                       sharey=True)
    xs = [np.asarray(p["x"], float) for p in panels]
    ys = [np.asarray(p["y"], float) for p in panels]
    if any(x.shape != y.shape for x, y in zip(xs, ys)):
        raise ValueError("each panel's x and y must have one shape")
    lo = min(min(x.min(), y.min()) for x, y in zip(xs, ys))
    hi = max(max(x.max(), y.max()) for x, y in zip(xs, ys))
    for ax, x, y, p in zip(axes[0], xs, ys, panels):
        ax.scatter(x, y, s=12, color=MEASURED, alpha=0.75)
        ax.plot([lo, hi], [lo, hi], color=THEORY, linestyle="--", linewidth=1, label="y = x")
        ax.set_title(p.get("title", ""))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[0][0].legend()
    return fig


# ---------------------------------------------------------------------------------------------------
# Misalignment (book/misalignment.md)
# ---------------------------------------------------------------------------------------------------

def _band(ax, x, runs, color, label, style=None):
    """Mean over runs (rows) as a line, min-max over runs as a band."""
    runs = np.atleast_2d(np.asarray(runs, dtype=float))
    ax.plot(x, runs.mean(0), color=color, label=label, **(style or {}))
    if runs.shape[0] > 1:
        ax.fill_between(x, runs.min(0), runs.max(0), color=color, alpha=0.18, linewidth=0)


def base_vs_aligned(panels: Sequence[dict], *, n_train: int, batch_size: int, ncols: int = 2,
                    labels: tuple[str, str] = ("Base", "Aligned")):
    """Panels of Base vs Aligned curves: the mean over seeds (line) and the min-max band.

    Each panel is a dict with ``title``, ``ylabel``, ``base`` and ``aligned`` (arrays ``[seeds, T]``,
    at steps t = 0, 1, ... unless the panel gives them as ``x``), and optionally ``hline`` (a reference
    level drawn dotted, e.g. ln 2 or 0.5).
    The x axis is the step, with epochs (``batch_size`` t / ``n_train``) on top.

    Used in: `book/misalignment.md`.
    """
    if not panels:
        raise ValueError("need at least one panel")
    fig, flat = _grid_axes(len(panels), ncols)
    for ax, p in zip(flat, panels):
        for key, color, label in (("base", BASE, labels[0]), ("aligned", ALIGNED, labels[1])):
            runs = np.atleast_2d(np.asarray(p[key], dtype=float))
            x = np.asarray(p["x"]) if p.get("x") is not None else np.arange(runs.shape[1])
            if x.shape != (runs.shape[1],):
                raise ValueError(f"panel {p['title']!r}: x has shape {x.shape}, the curves {runs.shape[1]} points")
            _band(ax, x, runs, color, label)
        if p.get("hline") is not None:
            ax.axhline(p["hline"], color=THEORY, linestyle=":", linewidth=1)
        ax.set_title(p["title"])
        ax.set_ylabel(p["ylabel"])
        steps_and_epochs_axis(ax, n_train, batch_size)
        ax.legend()
    label_panels(flat)
    return fig


def labelled_curves(panels: Sequence[dict], *, xlabel: str = "step t", colors: Sequence | None = None,
                    styles: dict | None = None, legend: str = "first"):
    """Panels of several labelled curves each (mean line and min-max band when a curve has several runs).

    Each panel is a dict with ``title``, ``ylabel`` and ``curves`` (label -> array ``[T]`` or
    ``[runs, T]``), and optionally ``hline``. Labels keep their colour across panels (``colors`` in
    label order; default: the plasma order) and their line style (``styles``: label -> matplotlib
    keywords, e.g. a dashed curve drawn over a solid one it equals). ``legend``: ``"first"`` (only the
    first panel) or ``"all"``.

    Used in: `book/misalignment.md`.
    """
    if not panels:
        raise ValueError("need at least one panel")
    labels = list(dict.fromkeys(k for p in panels for k in p["curves"]))
    cols = list(colors) if colors is not None else ordered_colors(len(labels))
    if len(cols) < len(labels):
        raise ValueError(f"{len(labels)} labels but {len(cols)} colours")
    color = dict(zip(labels, cols))
    fig, axes = figure("triple" if len(panels) >= 3 else "double" if len(panels) == 2 else "single",
                       1, len(panels), squeeze=False)
    if legend not in ("first", "all"):
        raise ValueError(f"legend must be 'first' or 'all', got {legend!r}")
    for k, (ax, p) in enumerate(zip(axes[0], panels)):
        for label, runs in p["curves"].items():
            runs = np.atleast_2d(np.asarray(runs, dtype=float))
            _band(ax, np.arange(runs.shape[1]), runs, color[label], _short(label, 48), (styles or {}).get(label))
        if p.get("hline") is not None:
            ax.axhline(p["hline"], color=THEORY, linestyle=":", linewidth=1)
        ax.set_title(p["title"])
        ax.set_ylabel(p["ylabel"])
        ax.set_xlabel(xlabel)
        if legend == "all" or k == 0:
            ax.legend()
    if len(panels) > 1:
        label_panels(axes[0])
    return fig


def sgd_and_margin_panels(curves: Sequence[dict], margin_table, *, labels: Sequence[str]):
    """Two panels for the update-rate chapter. (a) From ``theory.update_rate_curves``: the root mean square
    distance between the SGD and the full-batch heads over steps (solid), our bound from the batch-gradient
    variance (dotted) and its a-priori corollary ``lr beta sqrt(M2 t / B)`` (dashed), log-log. (b) From
    ``theory.check_margin_concentration``: the standard deviation over fresh examples of the one-step
    margin change (markers, one per covariance case) and our bound (lines), against d (log-log).
    Returns the figure.

    Used in: `book/update_rate.md`.
    """
    import matplotlib.lines as mlines

    fig, axes = figure("double", 1, 2)
    colors = ordered_colors(len(curves))
    t = curves[0]["t"][1:]
    for c, col, lab in zip(curves, colors, labels):
        axes[0].plot(t, c["sgd_rms"][1:], color=col, label=lab)
        axes[0].plot(t, c["sgd_bound"][1:], color=col, linestyle=":", linewidth=1.2)
        axes[0].plot(t, c["sgd_rate"][1:], color=col, linestyle="--", linewidth=1)
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [mlines.Line2D([], [], color=THEORY, linestyle=":", label="bound (variance)"),
                mlines.Line2D([], [], color=THEORY, linestyle="--", label="a priori, sqrt(t/B)")]
    axes[0].legend(handles=handles, ncol=2, fontsize="small")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step t")
    axes[0].set_ylabel("RMS ||W_t^SGD - W_t^GD||_F")
    axes[0].set_title("SGD around full batch")
    markers = ("o", "s", "^", "D")
    case_colors = ordered_colors(max(len(set(margin_table["case"])), 2))
    for k, case in enumerate(dict.fromkeys(margin_table["case"])):
        sub = margin_table[margin_table["case"] == case]
        axes[1].plot(sub["d"], sub["measured_sd"], linestyle="none", marker=markers[k % 4], color=case_colors[k],
                     label=f"{case}: measured")
        axes[1].plot(sub["d"], sub["bound_sd"], color=case_colors[k], linestyle=":", linewidth=1.2)
    h, _ = axes[1].get_legend_handles_labels()
    h.append(mlines.Line2D([], [], color=THEORY, linestyle=":", label="bound"))
    axes[1].legend(handles=h, fontsize="small")
    import matplotlib.ticker as mticker

    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    dims = sorted(set(int(d) for d in margin_table["d"]))
    axes[1].xaxis.set_major_locator(mticker.FixedLocator(dims))
    axes[1].xaxis.set_major_formatter(mticker.FixedFormatter([str(d) for d in dims]))
    axes[1].xaxis.set_minor_formatter(mticker.NullFormatter())
    axes[1].set_xlabel("d")
    axes[1].set_ylabel("SD over fresh x of the margin change")
    axes[1].set_title("one-step margin change")
    label_panels(axes)
    return fig
