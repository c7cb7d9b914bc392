"""The training-dynamics chapter's all-behaviour sections as result objects: the speed sweep and its
correlations, the behaviours off the rank trend and the first step, the cross-fitted test, the
full-data reference and the claims table.

Each function takes the chapter's resolved configuration and earlier results
(:mod:`.dynamics_study`) and returns a frozen dataclass whose ``values`` hold the glued numbers, keyed
by the glue key without the chapter prefix (some may be NaN: glue them with
``ad.book.glue_result_allow_nan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .checks import DynamicsError
from .correlations import rank_outliers, speed_correlations
from .dynamics_study import DynamicsData, FigureRuns, HeadChange, LearningRate
from .runs import Runs, train_runs
from .study_keys import interval_values
from .speed import first_step_check, first_step_terms, speed_table

PREDICTORS = ("distinguishability", "concentration", "trace")
SPEED_COLUMNS = ("loss_drop_end", "slope", "steps_to_level")


def speed_measures(k_early: int, steps: int) -> dict[str, str]:
    """The learning-speed measures of the sweep and their names in the tables."""
    return {"loss_drop_k": f"loss drop after {k_early} steps", "loss_drop_end": f"loss drop after {steps} steps",
            "neg_steps": "−steps to 90 % accuracy", "acc_gain": "accuracy gain", "slope": "slope of ‖W_t − W_0‖"}


@dataclass(frozen=True)
class SpeedSweep:
    """Every sweep behaviour trained alone on every model (``seeds``), its learning speed and the
    rank correlations of speed with the embedding properties.

    ``runs[model]``; ``speeds[model]``: :func:`speed_table` joined with the properties; ``corr``: one
    row per model, measure and property (Spearman and partial ρ with intervals, ``model`` the short
    label, ``speed`` the measure's name); ``outliers[model][col]``: :func:`rank_outliers` (k = 3) for
    the loss drop and the head slope; ``values``: ``n_seeds``, ``k_early``, ``steps``, every
    ``m<k>_<speed>_<property>_<rho|lo|hi|prho|plo|phi>`` (may be NaN), ``m<k>_reached``,
    ``m<k>_rho_dist_conc`` and ``m<k>_rho_dist_trace``.
    """

    seeds: tuple[int, ...]
    measures: Mapping[str, str]
    runs: Mapping[str, Runs]
    speeds: Mapping[str, Any]
    corr: Any
    outliers: Mapping[str, Mapping[str, Any]]
    values: Mapping[str, Any]

    @property
    def table(self):
        """ρ and partial ρ with their intervals, per measure and property (rows) and model (columns)."""
        corr = self.corr.copy()
        corr["speed"] = corr["speed"].map(self.measures)
        ci = "{:+.2f} [{:+.2f}, {:+.2f}]".format
        corr["ρ [95 % CI]"] = [ci(*x) for x in zip(corr["rho"], corr["lo"], corr["hi"])]
        corr["partial ρ [95 % CI]"] = [ci(*x) for x in zip(corr["prho"], corr["plo"], corr["phi"])]
        return corr.pivot(index=["speed", "property"], columns="model", values=["ρ [95 % CI]", "partial ρ [95 % CI]"])


def speed_sweep(cfg, data: DynamicsData, lr: LearningRate) -> SpeedSweep:
    """Train every sweep behaviour alone (``cfg.seeds`` seeds, batch ``cfg.sweep_batch``), measure its
    speed (``cfg.k_early``, ``cfg.acc_level``) and correlate it with the properties (``cfg.n_boot``)."""
    import pandas as pd

    from .. import stats

    seeds = tuple(cfg.seed + k for k in range(cfg.seeds))
    measures = speed_measures(cfg.k_early, cfg.steps)
    runs, speeds, parts, outliers = {}, {}, [], {}
    values: dict[str, Any] = {"n_seeds": cfg.seeds, "k_early": cfg.k_early, "steps": cfg.steps}
    for k, m in enumerate(data.models, start=1):
        c = lr.choice[m]
        runs[m] = train_runs([[bs] for bs in data.sweep[m]], facts=data.facts[m], steps=cfg.steps,
                             batch_size=cfg.sweep_batch, seeds=list(seeds), lr=c["lr"], beta=c["beta"])
        speeds[m] = speed_table(runs[m], k_early=cfg.k_early, level=cfg.acc_level).join(data.props[m])
        s = speeds[m].assign(neg_steps=-speeds[m]["steps_to_level"])
        corr = speed_correlations(s, list(measures), list(PREDICTORS), n_boot=cfg.n_boot, seed=cfg.seed + k)
        for r in corr.itertuples():
            for tag in ("rho", "lo", "hi", "prho", "plo", "phi"):
                values[f"m{k}_{r.speed}_{r.property}_{tag}"] = getattr(r, tag)
        parts.append(corr.assign(model=data.short[m]))
        values[f"m{k}_reached"] = s["reached"].mean()
        values[f"m{k}_rho_dist_conc"] = stats.spearman(s["distinguishability"], s["concentration"])
        values[f"m{k}_rho_dist_trace"] = stats.spearman(s["distinguishability"], s["trace"])
        outliers[m] = {col: rank_outliers(speeds[m]["distinguishability"], speeds[m][col], list(speeds[m].index), k=3)
                       for col in ("loss_drop_end", "slope")}
    corr = pd.concat(parts, ignore_index=True)
    n_b = len(data.behaviors)
    for key, subject in (("loss_drop_end", "The loss drop"), ("slope", "The slope of ‖W_t − W_0‖"),
                         ("acc_gain", "The accuracy gain")):
        trios = {data.short[m]: tuple(values[f"m{k}_{key}_distinguishability_{q}"] for q in ("rho", "lo", "hi"))
                 for k, m in enumerate(data.models, start=1)}
        values[f"{key}_trend"] = trend_text(subject, trios, n_b)
    return SpeedSweep(seeds, measures, runs, speeds, corr, outliers, values)


def trend_text(subject: str, trios: Mapping[str, Sequence[float]], n: int) -> str:
    """How ``subject`` (a speed) follows distinguishability over models, generated from each model's
    Spearman ρ and its bootstrap interval ``{label: (rho, lo, hi)}`` over ``n`` behaviours by
    :func:`alignment_dynamics.verdicts.positive` (the chapter's rule): "rises with", "rises weakly with"
    (partly), "falls with" (differs), "is not resolvably related to" (unresolved); models that differ
    are named."""
    from .. import verdicts

    if not trios:
        raise DynamicsError("trend_text needs at least one model")
    word = {verdicts.AGREES: "rises with", verdicts.PARTLY: "rises weakly with", verdicts.DIFFERS: "falls with",
            verdicts.UNRESOLVED: "is not resolvably related to", verdicts.UNTESTABLE: "cannot be related to"}
    by = {label: word[verdicts.positive(*trio, n).verdict] for label, trio in trios.items()}
    if len(set(by.values())) == 1:
        return f"{subject} {next(iter(by.values()))} distinguishability"
    return f"{subject} " + "; ".join(f"{w} distinguishability on {label}" for label, w in by.items())


def speed_correlation(sweep: SpeedSweep, model: str, col: str) -> tuple[float, float, float]:
    """``(ρ, lo, hi)`` of distinguishability against the speed column ``col`` (``steps_to_level``:
    against −steps) on ``model``."""
    key = {"steps_to_level": "neg_steps"}.get(col, col)
    c = sweep.corr[(sweep.corr["model"] == model) & (sweep.corr["property"] == "distinguishability")
                   & (sweep.corr["speed"] == key)]
    if len(c) != 1:
        raise DynamicsError(f"no correlation of {col!r} on model {model!r}")
    r = c.iloc[0]
    return float(r["rho"]), float(r["lo"]), float(r["hi"])


@dataclass(frozen=True)
class Misfits:
    """Why behaviours fall off the rank trend, and the first step at the sweep's and the official batch.

    ``first_step_official[model]``: :func:`first_step_check`'s verdict on the figure runs;
    ``table``: the outliers with their class balance, noise fraction and starting accuracy;
    ``values``: per model ``m<k>_resid_imbalance_rho``, ``m<k>_resid_noise_rho``,
    ``m<k>_acc_gain_acc0_rho``, ``m<k>_misfits`` (the two worst), ``m<k>_first_step_ratio``,
    ``m<k>_first_step_rho``, ``m<k>_first_step_ratio_official``, ``m<k>_first_step_text``, and
    ``fig_batch`` (the first model's official batch).
    """

    first_step_official: Mapping[str, Any]
    table: Any
    values: Mapping[str, Any]


def misfits(cfg, data: DynamicsData, fig: FigureRuns, sweep: SpeedSweep) -> Misfits:
    """Correlate the rank residuals with class balance and noise, and check the first step's order."""
    import pandas as pd

    from .. import stats, verdicts

    rows, official, values = [], {}, {}
    for k, m in enumerate(data.models, start=1):
        s = sweep.speeds[m]
        yes_share = pd.Series({bs.behavior: float((bs.s_train > 0).mean()) for bs in data.sweep[m]})
        resid = rank_outliers(s["distinguishability"], s["loss_drop_end"], list(s.index), k=len(s))["residual"]
        worst = resid.abs().sort_values(ascending=False, kind="stable").index[:2]
        terms = [first_step_terms(bs, cfg.sweep_batch)["ratio"] for bs in data.sweep[m]]
        names = [g[0] for g in fig.runs[m].groups]
        check = first_step_check(fig.runs[m], fig.sets[m], data.props[m].loc[names, "distinguishability"].to_numpy(),
                                 cfg.batch_size, seed=cfg.seed)
        official[m] = check.verdict
        values.update({
            f"m{k}_resid_imbalance_rho": stats.spearman(resid.abs(), (yes_share[resid.index] - 0.5).abs()),
            f"m{k}_resid_noise_rho": stats.spearman(resid.abs(), s.loc[resid.index, "noise_fraction"]),
            f"m{k}_acc_gain_acc0_rho": stats.spearman(s["acc_0"], s["acc_gain"]),
            f"m{k}_misfits": " and ".join(f'"{b}"' for b in worst),
            f"m{k}_first_step_ratio": np.median(terms),
            f"m{k}_first_step_rho": stats.spearman(s["distinguishability"], s["first_step"]),
            f"m{k}_first_step_ratio_official": check.ratio,
            f"m{k}_first_step_text": verdicts.first_step_text(
                sweep_batch=cfg.sweep_batch, sweep_ratio=float(np.median(terms)), official_batch=check.batch,
                official_ratio=check.ratio, official=check.verdict)})
        if k == 1:
            values["fig_batch"] = check.batch
        for col, o in sweep.outliers[m].items():
            for name, r in o.iterrows():
                rows.append({"model": data.short[m], "speed": {"loss_drop_end": "loss drop", "slope": "head slope"}[col],
                             "behaviour": name, "distinguishability": r["x"], "speed value": r["y"],
                             "rank residual": r["residual"], "Yes-preferred share": yes_share[name],
                             "noise fraction": s.loc[name, "noise_fraction"], "starting accuracy": s.loc[name, "acc_0"]})
    table = pd.DataFrame(rows).style.format({"distinguishability": "{:.3f}", "speed value": "{:.4g}",
                                             "rank residual": "{:+.0f}", "Yes-preferred share": "{:.2f}",
                                             "noise fraction": "{:.0%}", "starting accuracy": "{:.2f}"}).hide(axis="index")
    return Misfits(official, table, values)


@dataclass(frozen=True)
class SpeedCrossFits:
    """The cross-fitted speed test per model (:func:`alignment_dynamics.crossfit.speed_crossfit`).

    ``by_model[model]``; ``verdicts``: ``{"m<k>_xfit": ..., "m<k>_circ": ...}``; ``table``; ``values``:
    ``xfit_folds``, ``xfit_seeds``, ``xfit_batch``, ``m<k>_<xfit|circ>_<rho|lo|hi>`` and the models'
    verdicts as one phrase each, ``xfit_reading`` and ``circ_reading`` (:func:`~alignment_dynamics.verdicts.by_model_phrase`).
    """

    by_model: Mapping[str, Any]
    verdicts: Mapping[str, Any]
    table: Any
    values: Mapping[str, Any]


def speed_crossfits(cfg, data: DynamicsData, lr: LearningRate, sweep: SpeedSweep) -> SpeedCrossFits:
    """Cross-fit distinguishability against the held-out loss drop (``cfg.crossfit_folds`` folds, the
    first ``cfg.crossfit_seeds`` seeds, ``cfg.n_boot`` bootstrap replicates)."""
    import pandas as pd

    from .. import verdicts
    from ..crossfit import speed_crossfit

    by_model = {m: speed_crossfit(data.sweep[m], facts=data.facts[m], steps=cfg.steps, batch_size=cfg.sweep_batch,
                                  seeds=list(sweep.seeds[: cfg.crossfit_seeds]), lr=lr.choice[m]["lr"],
                                  beta=lr.choice[m]["beta"], n_folds=cfg.crossfit_folds, seed=cfg.seed, n_boot=cfg.n_boot)
                for m in data.models}
    values: dict[str, Any] = {"xfit_folds": cfg.crossfit_folds, "xfit_seeds": cfg.crossfit_seeds,
                              "xfit_batch": by_model[data.models[0]].batch}
    verdicts_ = {}
    for k, m in enumerate(data.models, start=1):
        x = by_model[m]
        values.update(interval_values(f"m{k}_xfit", (x.rho, x.lo, x.hi), ("rho", "lo", "hi")))
        values.update(interval_values(f"m{k}_circ", x.circular, ("rho", "lo", "hi")))
        verdicts_[f"m{k}_xfit"] = x.verdict
        verdicts_[f"m{k}_circ"] = x.circular_verdict
    values["xfit_reading"] = verdicts.by_model_phrase([by_model[m].verdict for m in data.models])
    values["circ_reading"] = verdicts.by_model_phrase([by_model[m].circular_verdict for m in data.models])
    table = pd.DataFrame({data.short[m]: {
        "cross-fitted ρ [95 % CI]": f"{x.rho:+.2f} [{x.lo:+.2f}, {x.hi:+.2f}]",
        "circular ρ [95 % CI] (contrast)": "{:+.2f} [{:+.2f}, {:+.2f}]".format(*x.circular),
        "behaviours": x.n, "verdict (cross-fitted)": x.verdict.verdict} for m, x in by_model.items()})
    return SpeedCrossFits(by_model, verdicts_, table, values)


@dataclass(frozen=True)
class Reference:
    """The sweep sample against the committed full-data reference, and the paper's claims on all
    statements (:mod:`alignment_dynamics.fullref`).

    ``sample``: :func:`~alignment_dynamics.fullref.compare`; ``full``:
    :func:`~alignment_dynamics.fullref.full_data_claims`; ``values``: ``reference_sample_text`` and
    ``reference_full_text``; ``table``: the full-data claims.
    """

    sample: Any
    full: Any
    values: Mapping[str, Any]

    @property
    def table(self):
        return self.full.table.style.format(precision=2).hide(axis="index")


def reference(cfg, data: DynamicsData, sweep: SpeedSweep) -> Reference:
    """Compare the sweep's distinguishability, loss drop and first step with the full-data reference."""
    from .. import fullref

    statements = {bs.behavior: len(bs.s_train) + len(bs.s_test) for bs in data.sweep[data.models[0]]}
    sample = fullref.compare(sweep.speeds, ["distinguishability", ("loss_drop_end", "loss_drop_train"), "first_step"],
                             statements=statements, labels=data.short, n_boot=cfg.n_boot, seed=cfg.seed)
    full = fullref.full_data_claims(list(data.models), ["loss_drop_test", "first_step"], labels=data.short,
                                    n_boot=cfg.n_boot, seed=cfg.seed)
    return Reference(sample, full, {"reference_sample_text": sample.text, "reference_full_text": full.text})


@dataclass(frozen=True)
class DynamicsClaims:
    """The chapter's claims table rows (``rows``: ``{"claim", "measured", "verdict", "source"}``) and
    the verdicts the prose glues (``verdicts``: ``m<k>_slope_v`` and ``m<k>_acc_v``)."""

    rows: Sequence[Mapping[str, Any]]
    verdicts: Mapping[str, Any]


def claims(cfg, data: DynamicsData, head: HeadChange, sweep: SpeedSweep, misfit: Misfits, xfit: SpeedCrossFits,
           ref: Reference) -> DynamicsClaims:
    """The rows of the claims table, each decided by a rule of :mod:`alignment_dynamics.verdicts`:
    the cross-fitted loss test and its circular contrast, the same-statement sweep correlations
    (``positive``), the first step at the official batch, the full-data claims, the exact first step
    (``exact``), the linear bound (``bound``) and the absent effect of concentration and trace
    (``absent``, margin 0.2)."""
    from .. import verdicts

    n_b = len(data.behaviors)
    rows, glued = [], {}
    v = {**sweep.values, **head.values}

    def add(claim, measured, verdict, source="paper summary"):
        rows.append({"claim": claim, "measured": measured, "verdict": verdict, "source": source})

    for k, m in enumerate(data.models, start=1):
        short, x = data.short[m], xfit.by_model[m]
        add(f"More distinguishable behaviours reduce their DPO loss faster ({short}, cross-fitted: "
            f"distinguishability and held-out loss drop on disjoint statements)",
            f"mean Spearman ρ over {x.n_folds} rotations = {x.rho:.2f} [{x.lo:.2f}, {x.hi:.2f}] over {x.n} behaviours",
            x.verdict)
        add(f"The same, circular contrast: predictor and outcome on the same training statements ({short})",
            "ρ = {:.2f} [{:.2f}, {:.2f}] (follows from the construction)".format(*x.circular),
            x.circular_verdict, source="project")
        for key, text in (("loss_drop_k", f"More distinguishable behaviours reduce their DPO loss faster ({short}, "
                                          f"loss drop after {cfg.k_early} steps, same statements)"),
                          ("slope", f"‖W_U(t) − W_U(0)‖ grows faster for more distinguishable behaviours ({short})"),
                          ("acc_gain", f"Training accuracy rises faster for more distinguishable behaviours ({short})")):
            rho, lo, hi = (v[f"m{k}_{key}_distinguishability_{q}"] for q in ("rho", "lo", "hi"))
            add(text, f"Spearman ρ = {rho:.2f} [{lo:.2f}, {hi:.2f}] over {n_b} behaviours, {cfg.seeds} seeds",
                verdicts.positive(rho, lo, hi, n_b))
        v1 = misfit.first_step_official[m]
        add(f"The first step of ‖W_U − W_U(0)‖ is already ordered by distinguishability at the official batch ({short})",
            f"ρ = {v1.estimate:.2f} over {v1.n} figure behaviours, one-sided permutation p = {v1.extra['p_greater']:.3f}",
            v1, source="project")
        for t in ref.full.for_model(m):
            add(t.claim, t.measured, t.verdict, source=t.source)
        err = v[f"m{k}_first_step_err"]
        add(f"The first step is ‖W₁ − W₀‖ = √2 ηβ ‖m̂_batch‖/2 exactly ({short})",
            f"largest relative error {err:.1e} over the five runs", verdicts.exact(err, n=5), source="derived")
        ratio = v[f"m{k}_ratio_bound"]
        add(f"‖W_t − W₀‖ ≤ √2 ηβ M₁ t for every t ({short})", f"largest measured/bound ratio {ratio:.3f}",
            verdicts.bound(ratio, n=5 * cfg.steps), source="derived")
        plo = [v[f"m{k}_loss_drop_end_{p}_plo"] for p in ("concentration", "trace")]
        phi = [v[f"m{k}_loss_drop_end_{p}_phi"] for p in ("concentration", "trace")]
        pr = [v[f"m{k}_loss_drop_end_{p}_prho"] for p in ("concentration", "trace")]
        add(f"Beyond distinguishability, concentration and trace do not change the loss drop ({short})",
            f"partial ρ intervals: concentration [{plo[0]:.2f}, {phi[0]:.2f}], trace [{plo[1]:.2f}, {phi[1]:.2f}]",
            verdicts.absent(list(zip(plo, phi)), margin=0.2, n=n_b, estimates=pr), source="derived")
        glued[f"m{k}_slope_v"] = verdicts.positive(*(v[f"m{k}_slope_distinguishability_{q}"] for q in ("rho", "lo", "hi")), n_b)
        glued[f"m{k}_acc_v"] = verdicts.positive(*(v[f"m{k}_acc_gain_distinguishability_{q}"] for q in ("rho", "lo", "hi")), n_b)
    return DynamicsClaims(rows, glued)
