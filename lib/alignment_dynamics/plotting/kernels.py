"""Figures of the DPO kernels: the fused-tiles diagram, trajectories of the kernels, provider bars and
scaling lines.
"""

from __future__ import annotations

import numpy as np

from .style import figure, label_panels, MEASURED


def fused_tiles_diagram():
    """The tiling of the fused linear log-probs: row chunks of H times vocabulary tiles of W.

    Left: the N x V logits that the naive path materialises, cut into (row chunk) x (vocabulary tile)
    blocks; the fused op holds one block at a time and keeps only a running max and sum per row.
    Right: the backward pass recomputes each block and adds its two contributions to dW in fp32.
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
    """Overlay trajectories ``{label: (values, style)}`` against ``steps`` (one axis)."""
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
    """Two bar panels: time per step and peak memory above the resident tensors, one bar per provider."""
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
    """Lines ``{label: (x, y)}`` on log-x (and log-y) axes: a benchmark quantity against batch size."""
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


def demo_trajectories(demo):
    """The two trainers of a :class:`~alignment_dynamics.bench.dpo_demo.TwoRowDemo` overlaid: (a) the
    training-batch loss at W_t, (b) the head change ‖W_t − W_0‖_F; the reference solid, the exact
    two-row trainer dashed."""
    ref, exact = demo.reference, demo.exact
    fig, axes = figure("double", 1, 2)
    trajectories_overlay(np.arange(ref.steps), {
        "reference (full vocabulary)": (ref.train["loss"][0], {"color": MEASURED}),
        "exact two-row": (exact.train["loss"][0], {"color": "black", "linestyle": "--"})},
        ylabel="batch loss", ax=axes[0])
    trajectories_overlay(np.arange(ref.steps + 1), {
        "reference (full vocabulary)": (ref.head_change[0], {"color": MEASURED}),
        "exact two-row": (exact.head_change[0], {"color": "black", "linestyle": "--"})},
        ylabel="‖W_t − W_0‖_F", ax=axes[1])
    label_panels(axes)
    return fig


def cpu_bench_bars(bench):
    """:func:`provider_bars` of the P3 table of a :class:`~alignment_dynamics.bench.dpo_report.CpuBench`."""
    t = bench.p3_table
    return provider_bars(list(t["provider"]), list(t["time per step (s)"]), list(t["peak above resident (MB)"]))


def gpu_scaling(results, *, scenario: str = "S2", dtypes: tuple[str, ...] = ("bf16", "fp32")):
    """Time per step against pairs B on the stored GPU run, one panel per dtype and one line per
    provider (:func:`scaling_lines`); with no results (None), panels that say so."""
    from ..bench.dpo_report import gpu_series

    fig, axes = figure("double", 1, len(dtypes))
    if results is None:
        for ax in axes:
            ax.text(0.5, 0.5, "no stored GPU results", ha="center", va="center", transform=ax.transAxes)
        return fig
    for ax, dt in zip(axes, dtypes):
        scaling_lines(gpu_series(results, scenario, dt), xlabel="pairs B", ylabel="time per step (ms)",
                      title=f"{scenario}, {dt}", ax=ax)
    label_panels(axes)
    return fig
