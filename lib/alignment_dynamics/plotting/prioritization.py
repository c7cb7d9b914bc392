"""The figures of ``book/prioritization.md``, drawn from its result objects
(:mod:`alignment_dynamics.lastlayer.prioritization_study`, :mod:`~alignment_dynamics.lastlayer.pair_sweep_study`).

Each function lays a result's arrays out as panels for the generic figures of :mod:`.dynamics`
(behaviours from the least to the most distinguishable on the plasma map) and returns the ``Figure``;
none trains, embeds or reads files.
"""

from __future__ import annotations

import numpy as np

from .dynamics import agreement_bins, balance_panels, curves_grid, theory_overlay_grid


def _order(group):
    from ..lastlayer.prioritization_study import by_distinguishability

    return by_distinguishability(group)


def pair_curves(fig5, model: str | None = None):
    """Loss and accuracy of each Figure 5 pair's two members (training solid, test dashed), one row
    per pair, for ``model`` (default: the first figure model)."""
    m = fig5.models[0] if model is None else model
    if (m, "a") not in fig5.runs:
        raise ValueError(f"no Figure 5 runs for model {m!r}; models are {list(fig5.models)}")
    t = np.arange(fig5.steps + 1)
    panels = []
    for tag in fig5.pairs:
        runs, group = fig5.runs[m, tag], fig5.sets[m, tag]
        order = _order(group)
        names = [group[i].behavior for i in order]
        for metric, ylabel in (("loss", "DPO loss"), ("policy_accuracy", "accuracy")):
            curves = getattr(runs, metric)
            panels.append({"title": f"({tag}) {ylabel}", "train": curves["train"][0][:, order].T,
                           "test": curves["test"][0][:, order].T, "labels": names})
    return curves_grid(t, panels, ylabel="", ncols=2)


def margin_panels(fig5, margins):
    """The measured margin changes of the first model's two pairs with the priority theorem's
    first-order lines (balanced and own class balance) and its band."""
    m = margins.model
    t = np.arange(fig5.steps + 1)
    panels = []
    for tag in fig5.pairs:
        runs, group, ov = fig5.runs[m, tag], fig5.sets[m, tag], margins.overlays[tag]
        order = _order(group)
        panels.append({"title": f"({tag}) margins", "measured": runs.margin["train"][0][:, order].T,
                       "labels": [group[i].behavior for i in order],
                       "theory": {"first order (balanced)": ov["theorem"][order],
                                  "first order (own class balance)": ov["imbalance"][order]},
                       "band": (ov["theorem"][order] - ov["band"][order], ov["theorem"][order] + ov["band"][order]),
                       "band_label": "band of the theorem"})
    return theory_overlay_grid(t, panels, ylabel="M_i(t) − M_i(0)", ncols=2, clip_band=True)


def gap_bins(sweep):
    """The share of random pairs whose gap sign is right, per bin of |gap|, one series per model."""
    if not sweep.bins:
        raise ValueError("the pair sweep has no bins")
    first = next(iter(sweep.bins.values()))
    return agreement_bins(list(first["bin"]), {k: (v["p"], v["lo"], v["hi"]) for k, v in sweep.bins.items()},
                          chance=0.5, xlabel="|priority gap|", ylabel="share of pairs where the gap's sign is right")


def reweighting_panels(rw):
    """Each pair's loss drops, less against more distinguishable member, as collected and reweighted."""
    e = rw.effect
    return balance_panels([{"x": e["high_before"], "y": e["low_before"], "title": "as collected"},
                           {"x": e["high_after"], "y": e["low_after"],
                            "title": "less distinguishable member oversampled"}],
                          xlabel="loss drop, more distinguishable member",
                          ylabel="loss drop, less distinguishable member")
