"""Figures of training dynamics and prioritisation on real embeddings: curve grids, theory overlays,
learning-rate sensitivity, speed grids, agreement bins and balance panels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .style import (
    figure, grid_axes, MEASURED, ordered_colors, shorten, steps_and_epochs_axis, TEST_STYLE, THEORY,
    TRAIN_STYLE,
)


_THEORY_STYLES = ("--", "-.", ":", (0, (1, 3)))


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
    """
    if not panels:
        raise ValueError("need at least one panel")
    t = np.asarray(t, float)
    fig, axes = grid_axes(len(panels), ncols)
    for ax, p in zip(axes, panels):
        train, labels = _panel_curves(p, "train", t)
        colors = ordered_colors(len(labels))
        for k, (y, c, lab) in enumerate(zip(train, colors, labels)):
            ax.plot(t, y, color=c, label=shorten(lab, 40), **TRAIN_STYLE)
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
    """
    import matplotlib.lines as mlines

    if not panels:
        raise ValueError("need at least one panel")
    t = np.asarray(t, float)
    fig, axes = grid_axes(len(panels), ncols)
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
            ax.plot(t, y, color=c, label=shorten(lab, 40))
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
    """
    import matplotlib as mpl

    if not panels:
        raise ValueError("need at least one panel")
    fig, axes = grid_axes(len(panels), ncols)
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
            ax.annotate(shorten(name, 28), (x[k], y[k]), xytext=(5, 3 - 10 * (j % 3)), textcoords="offset points",
                        fontsize=6.5)
        if p.get("logy"):
            ax.set_yscale("log")
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", ""))
        ax.set_title("\n".join(x for x in (p.get("title", ""), p.get("note", "")) if x), fontsize=9)
    return fig


def full_data_grid(panels: Sequence[dict], *, empty_text: str = "", ncols: int = 2):
    """:func:`speed_grid` of the full-data tests (``fullref.FullDataClaims.panels()``); with no panel (no
    model of this build has a reference) one panel that says so (``empty_text``)."""
    if panels:
        return speed_grid(panels, ncols=ncols)
    import textwrap

    fig, axes = grid_axes(1, 1)
    axes[0].text(0.5, 0.5, textwrap.fill(empty_text or "no full-data reference for these models", 60),
                 ha="center", va="center", fontsize=9, transform=axes[0].transAxes)
    axes[0].set_axis_off()
    return fig


def agreement_bins(labels: Sequence[str], series: dict, *, chance: float, xlabel: str, ylabel: str):
    """Fractions with intervals per bin (e.g. how often the priority gap's sign is right, per |gap| bin).

    ``series`` maps a label to ``(p, lo, hi)`` arrays over the bins; ``chance`` is drawn as a black
    dotted line.
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


def whole_model_pairs(panels: Sequence[dict], *, xlabel: str = "head-only priority gap G(a, b) (predictor statements)",
                      ylabel: str = "held-out margin a − b after k steps", empty_text: str = ""):
    """One panel per model: each pair's gap (x) against which behaviour the whole model learned first
    (y, the held-out margin difference); the quadrants where the gap's sign is right are shaded and the
    named pairs are labelled. ``panels``: dicts with ``title`` and ``points`` (``gap``, ``diff``,
    ``named``, ``label``). Without panels, one empty panel shows ``empty_text``."""
    from .style import ALIGNED, BASE, empty_figure, label_panels

    if not panels:
        return empty_figure(empty_text or "no study")
    fig, flat = grid_axes(len(panels), 2)
    for ax, p in zip(flat, panels):
        pts = p["points"]
        if not pts:
            raise ValueError(f"panel {p.get('title')!r} has no points")
        x = np.array([q["gap"] for q in pts], dtype=float)
        y = np.array([q["diff"] for q in pts], dtype=float)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError(f"panel {p.get('title')!r}: non-finite gaps or margin differences")
        named = np.array([bool(q["named"]) for q in pts])
        xr, yr = max(np.abs(x).max(), 1e-12) * 1.15, max(np.abs(y).max(), 1e-12) * 1.15
        ax.fill_between([0, xr], 0, yr, color=ALIGNED, alpha=0.08, linewidth=0)
        ax.fill_between([-xr, 0], -yr, 0, color=ALIGNED, alpha=0.08, linewidth=0)
        ax.axhline(0, color=THEORY, linestyle=":", linewidth=1)
        ax.axvline(0, color=THEORY, linestyle=":", linewidth=1)
        ax.plot(x[~named], y[~named], linestyle="none", marker="o", markersize=4.5, color="0.3", label="random pairs")
        ax.plot(x[named], y[named], linestyle="none", marker="D", markersize=6, color=BASE, label="Figure 5 pairs")
        for q in pts:
            if q["named"]:
                ax.annotate(q["label"], (q["gap"], q["diff"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlim(-xr, xr)
        ax.set_ylim(-yr, yr)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(p["title"])
        ax.legend(loc="best", fontsize=7)
    label_panels(flat)
    return fig
