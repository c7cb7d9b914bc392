"""The figures of ``book/training_dynamics.md``, drawn from its result objects
(:mod:`alignment_dynamics.lastlayer.dynamics_study`, :mod:`~alignment_dynamics.lastlayer.sweep_study`).

Each function lays a result's arrays out as panels for the generic figures of :mod:`.dynamics`
(behaviours from the least to the most distinguishable on the plasma map) and returns the ``Figure``;
none trains, embeds or reads files.
"""

from __future__ import annotations

import numpy as np

from .dynamics import curves_grid, full_data_grid, lr_sensitivity, speed_grid, theory_overlay_grid

LN2_LINE = {"hline": float(np.log(2)), "hline_label": "ln 2"}


def sensitivity(data, sens):
    """The median loss drop against the effective step per model, with the official η, the chosen η
    and the official effective step's range."""
    s = data.short
    return lr_sensitivity({s[m]: (sens.kappa[m], sens.drop[m]) for m in data.models},
                          marks={s[m]: dict(sens.marks[m]) for m in data.models},
                          xlabel="effective step κ = η β² E‖h‖²", ylabel="median of ln 2 − training loss after the last step",
                          band=sens.kappa_range, logy=True)


def loss_curves(data, lr, fig):
    """Training and test loss of Behaviors 1-5 at the chosen η, one panel per model."""
    panels = [{"title": f"{data.short[m]}: η = {lr.choice[m]['lr']:.3g}, β = {lr.choice[m]['beta']:.3g}",
               "train": fig.runs[m].curves(fig.quantile_five[m]),
               "test": fig.runs[m].curves(fig.quantile_five[m], part="test"), "labels": fig.tags[m]}
              for m in data.models]
    return curves_grid(np.arange(fig.steps + 1), panels, ylabel="DPO loss", n_train=fig.n_train,
                       batch_size=fig.batch_size, **LN2_LINE)


def official_rate_curves(data, fig):
    """Training loss of Behaviors 1-5 at the official η = 0.1, one panel per model."""
    panels = [{"title": f"{data.short[m]}: η = 0.1 (official)", "train": fig.official_rate[m].curves(fig.quantile_five[m]),
               "test": None, "labels": fig.tags[m]} for m in data.models]
    return curves_grid(np.arange(fig.steps + 1), panels, ylabel="DPO training loss", **LN2_LINE)


def official_five_curves(data, fig):
    """Training and test loss of the official code's five behaviours, one panel per model."""
    panels = [{"title": f"{data.short[m]}: the official five", "train": fig.runs[m].curves(fig.official_five[m]),
               "test": fig.runs[m].curves(fig.official_five[m], part="test"), "labels": fig.official_tags[m]}
              for m in data.models]
    return curves_grid(np.arange(fig.steps + 1), panels, ylabel="DPO loss", **LN2_LINE)


def _change_panels(data, fig, head):
    out = []
    for m in data.models:
        ov, meas = head.overlays[m], head.measured[m]
        out.append(({"title": f"{data.short[m]}: measured and first order", "measured": meas, "labels": fig.tags[m],
                     "theory": {"first order, √2 ηβ t ‖m̂‖/2": ov["first_order"],
                                "distinguishability rate, √2 ηβ t ‖μ̂₊ − μ̂₋‖/4": ov["distinguishability"]},
                     "points": {"exact first step": (1, head.first_step[m])}},
                    {"title": f"{data.short[m]}: against the linear bound (log scale)", "measured": meas[:, 1:],
                     "labels": fig.tags[m], "theory": {"linear bound": ov["bound"][:, 1:]}}))
    return out


def head_change_curves(data, fig, head):
    """‖W_U(t) − W_U(0)‖ of Behaviors 1-5 with the first-order and distinguishability lines and the
    exact first step, one panel per model."""
    panels = [p for p, _ in _change_panels(data, fig, head)]
    return theory_overlay_grid(np.arange(fig.steps + 1), panels, ylabel="‖W_U(t) − W_U(0)‖_F", ncols=len(data.models))


def head_change_bound(data, fig, head):
    """The same curves on a log scale against the linear bound, one panel per model."""
    panels = [p for _, p in _change_panels(data, fig, head)]
    return theory_overlay_grid(np.arange(fig.steps + 1)[1:], panels, ylabel="‖W_U(t) − W_U(0)‖_F",
                               ncols=len(data.models), logy=True)


def accuracy_curves(data, fig):
    """The official and TRL accuracies of Behaviors 1-5, two panels per model."""
    panels = []
    for m in data.models:
        for metric, title in (("policy_accuracy", "policy prefers the chosen answer"),
                              ("reward_accuracy", "TRL rewards/accuracies")):
            panels.append({"title": f"{data.short[m]}: {title}", "train": fig.runs[m].curves(fig.quantile_five[m], metric),
                           "test": fig.runs[m].curves(fig.quantile_five[m], metric, "test"), "labels": fig.tags[m]})
    return curves_grid(np.arange(fig.steps + 1), panels, ylabel="accuracy", ncols=2)


def speed_panels(data, sweep):
    """Learning speed against distinguishability, one point per behaviour: the loss drop, the head
    slope and the steps to the accuracy level, one row per model, outliers ringed, ρ in the note."""
    from ..lastlayer.sweep_study import speed_correlation

    panels = []
    for m in data.models:
        s = sweep.speeds[m]
        for col, ylabel in (("loss_drop_end", f"ln 2 − L({sweep.values['steps']})"), ("slope", "slope of ‖W_t − W_0‖"),
                            ("steps_to_level", "steps to 90 % accuracy")):
            rho, lo, hi = speed_correlation(sweep, data.short[m], col)
            out = sweep.outliers[m].get(col)
            panels.append({"x": s["distinguishability"], "y": s[col].to_numpy(), "xlabel": "distinguishability ‖μ₊ − μ₋‖",
                           "ylabel": ylabel, "title": data.short[m], "names": list(s.index),
                           "highlight": [] if out is None else list(out.index),
                           "note": f"ρ = {rho:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                                   + (" (of −steps)" if col == "steps_to_level" else "")})
    return speed_grid(panels, ncols=3)


def full_data(data, ref):
    """The paper's claim on all statements from the committed reference (or the reason it is missing)."""
    return full_data_grid(ref.full.panels(data.short), empty_text=ref.full.text)
