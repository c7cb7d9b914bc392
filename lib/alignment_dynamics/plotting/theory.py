"""Figures of Part I: bounds against measurements on synthetic data."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .style import figure, label_panels, MEASURED, ordered_colors, THEORY


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


def update_rate_bound_panels(curves: Sequence[dict], *, labels: Sequence[str]):
    """Three panels of the update-rate bounds over steps (log-log), from ``theory.update_rate_curves``:
    (a) the a-priori band around the first-order line, (b) the loss-drop sandwich (convexity below,
    energy above), (c) the lower bound in the paper's scaling and the label-blind expected upper bound.
    Returns the figure.
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


def sgd_and_margin_panels(curves: Sequence[dict], margin_table, *, labels: Sequence[str]):
    """Two panels for the update-rate chapter. (a) From ``theory.update_rate_curves``: the root mean square
    distance between the SGD and the full-batch heads over steps (solid), our bound from the batch-gradient
    variance (dotted) and its a-priori corollary ``lr beta sqrt(M2 t / B)`` (dashed), log-log. (b) From
    ``theory.check_margin_concentration``: the standard deviation over fresh examples of the one-step
    margin change (markers, one per covariance case) and our bound (lines), against d (log-log).
    Returns the figure.
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


def reduction_trajectory(traj):
    """:func:`plot_reduction_check` of a :class:`alignment_dynamics.theory.reduction_study.TrajectoryResult`
    (its ``curves``: full-softmax reference against the recursion)."""
    c = traj.curves
    return plot_reduction_check(c["t"], c["reference"], c["closed"])


def priority_pairs(pairs):
    """The two illustrated pairs of a :class:`alignment_dynamics.theory.priority_study.PairsResult`, one row
    each of :func:`plot_priority_pair` (margins, losses), panels labelled."""
    fig, axes = figure("grid", 2, 2)
    labels = ["less distinguishable", "more distinguishable"]
    for row, (name, pr) in enumerate(pairs.pairs.items()):
        plot_priority_pair(pr["t"], pr["margin_change"], pr["pred"], pr["band"], pr["loss"], pr["loss_lower"],
                           pr["loss_upper"], labels=labels, title=name, axes=axes[row])
    label_panels(axes)
    return fig


def priority_gap_scatter(sweep):
    """:func:`gap_against_slowdown` of a priority sweep result (``sweep.gaps``: gap, measured slowdown)."""
    return gap_against_slowdown(sweep.gaps[:, 0], sweep.gaps[:, 1])


def priority_first_step(sweep):
    """Measured first-step margin changes of a priority sweep result against the exact formula."""
    return plot_identity(sweep.first[:, 1], sweep.first[:, 0], xlabel="predicted (eta beta / 4) ||b_bar|| p_i",
                         ylabel="measured M_i(1) - M_i(0)", title="first step, all behaviours")


def accuracy_curves_panels(curves):
    """:func:`accuracy_bound_panels` of a :class:`alignment_dynamics.theory.accuracy_study.CurvesResult`."""
    return accuracy_bound_panels(curves.curves, labels=list(curves.labels))


def accuracy_tightness(sweep):
    """:func:`headline_tightness` of the accuracy sweep's headline bounds against ||mu_+ - mu_-|| / alpha."""
    return headline_tightness(sweep.tightness_x, sweep.frame, [r["bound"] for r in sweep.bounds],
                              xlabel="||mu_+ - mu_-|| / alpha")


def update_rate_curves_panels(curves):
    """:func:`update_rate_bound_panels` of a :class:`alignment_dynamics.theory.update_rate_study.CurvesResult`."""
    return update_rate_bound_panels(curves.curves, labels=list(curves.labels))


def update_rate_sgd_margin(curves, margin):
    """:func:`sgd_and_margin_panels` of the update_rate curves and margin-concentration results."""
    return sgd_and_margin_panels(curves.curves, margin.frame, labels=list(curves.labels))


def update_rate_sweep_panels(sweep):
    """The update_rate sweep: (a) the first step against the formula in units of its slope, by tail family;
    (b) the headline bounds' tightness at the last step against kappa t."""
    sw = sweep.frame
    fig, axes = figure("double", 1, 2)
    slope = np.sqrt(2) * sw["lr"] * sw["beta"] / 4
    plot_identity(sw["dist_hat"], sw["first_step"] / slope, groups=sw["family"], ax=axes[0],
                  xlabel="||mu_+ - mu_-|| (sample)", ylabel="||W_1 - W_0|| / (sqrt(2) eta beta / 4)",
                  title="first step", log=True)
    headline_tightness(sw["kappa"] * sweep.sweep_steps, sw, [r["bound"] for r in sweep.bounds], ax=axes[1],
                       xlabel="kappa t (last step)")
    label_panels(axes)
    return fig
