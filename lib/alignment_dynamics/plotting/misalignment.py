"""Figures of misalignment: Base against Aligned, and labelled curves with min-max bands."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .style import (
    ALIGNED, BASE, empty_figure, figure, grid_axes, label_panels, ordered_colors, shorten, steps_and_epochs_axis, THEORY,
)


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
    """
    if not panels:
        raise ValueError("need at least one panel")
    fig, flat = grid_axes(len(panels), ncols)
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
            _band(ax, np.arange(runs.shape[1]), runs, color[label], shorten(label, 48), (styles or {}).get(label))
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


def study_panels(panels: Sequence[dict], *, xlabel: str = "difference of the flipped margin per step",
                 empty_text: str = ""):
    """The controlled study's paired comparisons, one panel per model.

    Each panel has ``title`` and ``rows`` (top to bottom): dicts with ``label`` (e.g. "aligned − base"),
    ``estimate``, ``lo``, ``hi`` (the interval, drawn as a bar with the estimate as a diamond) and
    ``behaviours`` (each behaviour's mean difference over seeds, drawn as dots). A dotted line marks 0.
    Without panels, one empty panel shows ``empty_text``.
    """
    if not panels:
        return empty_figure(empty_text or "no study")
    fig, flat = grid_axes(len(panels), 2)
    for ax, p in zip(flat, panels):
        rows = p["rows"]
        if not rows:
            raise ValueError(f"panel {p.get('title')!r} has no rows")
        for i, r in enumerate(rows):
            y = len(rows) - 1 - i
            if not r["lo"] <= r["estimate"] <= r["hi"]:
                raise ValueError(f"row {r['label']!r}: the estimate {r['estimate']} lies outside its interval "
                                 f"[{r['lo']}, {r['hi']}]")
            color = ALIGNED if r["lo"] > 0 else BASE if r["hi"] < 0 else THEORY
            ax.plot([r["lo"], r["hi"]], [y, y], color=color, linewidth=3, solid_capstyle="butt")
            ax.plot([r["estimate"]], [y], marker="D", color=color, markersize=6)
            b = np.asarray(r["behaviours"], dtype=float)
            ax.plot(b, np.full(b.shape, y + 0.18), linestyle="none", marker="o", markersize=3.5, color="0.35",
                    alpha=0.8)
        ax.axvline(0.0, color=THEORY, linestyle=":", linewidth=1)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r["label"] for r in rows][::-1])
        ax.set_xlabel(xlabel)
        ax.set_title(p["title"])
    label_panels(flat)
    return fig


# ---------------------------------------------------------------------------------------------------
# The misalignment chapter's figures, from its result objects (alignment_dynamics.wholemodel.sections)
# ---------------------------------------------------------------------------------------------------

_LN2 = float(np.log(2))


def modes_curves(check):
    """The three training modes of a :class:`~alignment_dynamics.wholemodel.sections.TopBlockCheck`:
    training loss and accuracy (batch) and test loss, the whole-model run dashed over the cached one."""
    runs = check.runs
    return labelled_curves([
        {"title": "training loss (batch)", "ylabel": "DPO loss", "curves": {m: r.train["loss"] for m, r in runs.items()},
         "hline": _LN2},
        {"title": "training accuracy (batch)", "ylabel": "outputs/accuracies",
         "curves": {m: r.train["outputs/accuracies"] for m, r in runs.items()}},
        {"title": "test loss", "ylabel": "DPO loss", "curves": {m: r.evals["test"]["loss"] for m, r in runs.items()},
         "hline": _LN2},
    ], styles={check.modes[1]: {"linestyle": "--"}})


def protocol_curves(res, *, n_train: int, batch_size: int):
    """Flipped DPO from Base and from Aligned (a :class:`~alignment_dynamics.wholemodel.Misalignment`):
    test loss, test margin, training loss and test accuracy."""
    def pair(split, metric):
        return {"base": res.curves("base", split, metric), "aligned": res.curves("aligned", split, metric)}
    return base_vs_aligned([
        {"title": "test loss", "ylabel": "DPO loss", **pair("test", "loss"), "hline": _LN2},
        {"title": "test margin", "ylabel": "rewards/margins", **pair("test", "rewards/margins"), "hline": 0.0},
        {"title": "training loss", "ylabel": "DPO loss (batch)", **pair("train", "loss"), "hline": _LN2},
        {"title": "test accuracy", "ylabel": "outputs/accuracies", **pair("test", "outputs/accuracies"), "hline": 0.5},
    ], n_train=n_train, batch_size=batch_size)


def head_only_curves(head, *, batch_size: int):
    """Head-only misalignment (a :class:`~alignment_dynamics.wholemodel.sections.HeadOnlyCheck`): test
    loss and test accuracy from Base and from Aligned."""
    c = head.curves
    return base_vs_aligned([
        {"title": "test loss", "ylabel": "DPO loss", "base": c["base_test_loss"][None],
         "aligned": c["aligned_test_loss"][None], "hline": _LN2},
        {"title": "test accuracy", "ylabel": "outputs/accuracies", "base": c["base_test_acc"][None],
         "aligned": c["aligned_test_acc"][None], "hline": 0.5},
    ], n_train=head.n_train, batch_size=batch_size)


def held_out_maps(geo):
    """The held-out statements before and after alignment (a
    :class:`~alignment_dynamics.wholemodel.sections.HeldOutGeometry`), positive and negative."""
    from .geometry import class_scatter_panels

    return class_scatter_panels(list(geo.maps), [geo.positive] * 2, ["Before DPO", "After DPO"],
                                axis_name=geo.method.upper())


def hh_curves(hh, head):
    """HH-RLHF from Base and Aligned: the whole model (``hh``, a
    :class:`~alignment_dynamics.wholemodel.sections.HHProtocol`) on top, the head only (``head``, a
    :class:`~alignment_dynamics.wholemodel.sections.HHHeadOnly`) below: training loss, test loss and
    the test log-prob difference of the flipped chosen and rejected responses."""
    res, hb, ha = hh.res, head.runs["base"], head.runs["aligned"]

    def diff(start):
        return res.curves(start, "test", "logps/chosen") - res.curves(start, "test", "logps/rejected")

    def head_diff(run):
        return [run["evals"]["test"]["logps/chosen"] - run["evals"]["test"]["logps/rejected"]]
    return base_vs_aligned([
        {"title": "whole model: training loss", "ylabel": "DPO loss (batch)", "hline": _LN2,
         "base": res.curves("base", "train", "loss"), "aligned": res.curves("aligned", "train", "loss")},
        {"title": "whole model: test loss", "ylabel": "DPO loss", "hline": _LN2,
         "base": res.curves("base", "test", "loss"), "aligned": res.curves("aligned", "test", "loss")},
        {"title": "whole model: test log-prob difference", "ylabel": "chosen − rejected (nats)",
         "base": diff("base"), "aligned": diff("aligned")},
        {"title": "head only: training loss", "ylabel": "DPO loss (batch)", "hline": _LN2,
         "base": hb["train"]["loss"][None], "aligned": ha["train"]["loss"][None]},
        {"title": "head only: test loss", "ylabel": "DPO loss", "hline": _LN2, "x": hb["eval_steps"],
         "base": hb["evals"]["test"]["loss"][None], "aligned": ha["evals"]["test"]["loss"][None]},
        {"title": "head only: test log-prob difference", "ylabel": "chosen − rejected (nats)", "x": hb["eval_steps"],
         "base": head_diff(hb), "aligned": head_diff(ha)},
    ], n_train=hh.hh_n_train, batch_size=hh.settings.batch_size, ncols=3)
