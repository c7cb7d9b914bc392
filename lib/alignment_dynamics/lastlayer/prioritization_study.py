"""The prioritisation chapter's first sections as result objects: the sweep sample and the learning
rate, the paper's Figure 5 pairs trained jointly, the comparison of the two pairs' gaps, and the
priority theorem drawn over the pairs' measured margins.

Each function takes the chapter's resolved configuration (``cfg``, from ``ad.config.resolve``) and the
results of earlier sections, and returns a frozen dataclass whose ``values`` hold every number and
string the prose glues, keyed by the glue key without the chapter prefix (``ad.book.glue_result``
glues them in one call). The all-behaviour tests (random pairs, triples, cross-fitting, reweighting)
are :mod:`.pair_sweep_study`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .checks import DynamicsError, closer_prediction
from .features import BehaviorSet, HeadFacts, behavior_set, head_facts, joint_splits
from .prioritization import final_gains, gap_size_comparison, group_priorities, margin_overlay
from .rates import lr_choice
from .runs import Runs, train_runs

PAIR_TAGS = ("a", "b")


def _short(models: Sequence[str]) -> dict[str, str]:
    from ..models import short_labels

    return short_labels(models)


@dataclass(frozen=True)
class SweepData:
    """The all-behaviour sweep sample of each model and the learning rate chosen on it.

    ``sweep[model][behaviour]``: the :class:`BehaviorSet` of the nested sweep sample; ``facts[model]``:
    its head; ``choice[model]``: :func:`lr_choice` (``lr``, ``beta``, ``kappa``, ...); ``short``: short
    model labels; ``values``: ``sweep_per_class``, ``fig_per_class``, ``m<k>_lr``, ``m<k>_beta``;
    ``table``: η, β and κ per model.
    """

    models: tuple[str, ...]
    short: Mapping[str, str]
    behaviors: tuple[str, ...]
    facts: Mapping[str, HeadFacts]
    sweep: Mapping[str, Mapping[str, BehaviorSet]]
    choice: Mapping[str, Mapping[str, float]]
    values: Mapping[str, Any]
    table: Any


def sweep_data(cfg) -> SweepData:
    """Embed (or load from the cache) every model's sweep sample of ``cfg.sweep_behaviors`` (None: all
    behaviours) with ``cfg.sweep_per_class`` statements per class, and choose β and η by
    :func:`lr_choice` with the chapter's ``proxy``, ``beta_mode``, ``lr`` and ``norm``.
    """
    import pandas as pd

    from .. import data, progress

    models = tuple(cfg.models)
    short = _short(models)
    behaviors = tuple(cfg.sweep_behaviors or data.behaviors())
    facts, sweep = {}, {}
    for m in models:
        facts[m] = head_facts(m)
        sweep[m] = {b: behavior_set(m, b, cfg.sweep_per_class, seed=cfg.seed, norm=cfg.norm, dtype=cfg.dtype)
                    for b in progress.steps(behaviors, f"features ({short[m]})", unit="behaviour")}
    choice = lr_choice({m: (facts[m], list(sweep[m].values())) for m in models}, proxy=cfg.proxy,
                       beta_mode=cfg.beta_mode, lr=cfg.lr, norm=cfg.norm)
    values: dict[str, Any] = {"sweep_per_class": str(cfg.sweep_per_class or "all"),
                              "fig_per_class": str(cfg.per_class or "all")}
    for k, m in enumerate(models, start=1):
        values[f"m{k}_lr"] = choice[m]["lr"]
        values[f"m{k}_beta"] = choice[m]["beta"]
    table = pd.DataFrame({short[m]: {"η": choice[m]["lr"], "β": choice[m]["beta"],
                                     "effective step κ": choice[m]["kappa"]} for m in models}).style.format("{:.4g}")
    return SweepData(models, short, behaviors, facts, sweep, choice, values, table)


def by_distinguishability(group: Sequence[BehaviorSet]) -> np.ndarray:
    """The positions of ``group`` from the least to the most distinguishable (‖b̂‖ on the training pairs).
    """
    if not group:
        raise DynamicsError("the group is empty")
    return np.argsort([np.linalg.norm(bs.b("train")) for bs in group])


@dataclass(frozen=True)
class Figure5:
    """The paper's Figure 5 pairs trained jointly on each figure model (``cfg.figure_models`` first models).

    ``sets[(model, tag)]`` and ``runs[(model, tag)]``: the two behaviour sets (official joint split)
    and the joint run, for ``tag`` in ``"a"``, ``"b"``; ``info``: one row per model and pair (‖b‖ of each
    member, the priority gap, the loss drops); ``first_is_more[model]``: in how many of the two pairs the
    more distinguishable member has the larger loss drop; ``values``: the glued numbers and names;
    ``steps``: the steps trained.
    """

    models: tuple[str, ...]
    pairs: Mapping[str, tuple[str, str]]
    sets: Mapping[tuple[str, str], Sequence[BehaviorSet]]
    runs: Mapping[tuple[str, str], Runs]
    info: Any
    first_is_more: Mapping[str, int]
    steps: int
    values: Mapping[str, Any]

    @property
    def table(self):
        """``info`` formatted for display."""
        df = self.info
        return df.style.format({c: "{:.4g}" for c in df.columns if df[c].dtype.kind == "f"}).hide(axis="index")


def figure5_pairs(cfg, data: SweepData) -> Figure5:
    """Train ``cfg.pair_a`` and ``cfg.pair_b`` jointly as the official two-behaviour script does
    (:func:`joint_splits` with the official seed, batches of ``cfg.batch_size`` from the union, one
    seed), on ``cfg.per_class`` statements per class, and compare who is learned first with who is
    more distinguishable.

    ``values``: per model k and pair t, ``m<k>_gap_pair_<t>``, ``m<k>_dist_first_<t>``,
    ``m<k>_dist_second_<t>``, ``m<k>_drop_first_<t>``, ``m<k>_drop_second_<t>``, the names
    ``m<k>_more_dist_<t>`` and ``m<k>_learned_first_<t>`` and ``m<k>_first_is_more_<t>`` (1 when they
    are the same behaviour); ``batch_size``; ``embedded``, the prompts embedded afresh for this
    chapter (sweep and figure sets; machine state, not a result).
    """
    import pandas as pd

    from .. import data as data_

    pairs = {"a": tuple(cfg.pair_a), "b": tuple(cfg.pair_b)}
    if any(len(p) != 2 for p in pairs.values()):
        raise DynamicsError(f"pair_a and pair_b must name two behaviours each, got {pairs}")
    fig_models = tuple(data.models[: cfg.figure_models])
    sets, runs, rows = {}, {}, []
    for m in fig_models:
        for tag, names in pairs.items():
            splits = joint_splits(list(names), seed=data_.OFFICIAL_SEED)
            group = [behavior_set(m, b, cfg.per_class, seed=cfg.seed, split=sp, norm=cfg.norm, dtype=cfg.dtype)
                     for b, sp in zip(names, splits)]
            sets[m, tag] = group
            runs[m, tag] = train_runs([group], facts=data.facts[m], steps=cfg.steps, batch_size=cfg.batch_size,
                                      seeds=[cfg.seed], lr=data.choice[m]["lr"], beta=data.choice[m]["beta"])
            pr = group_priorities(group)
            gains = final_gains(runs[m, tag])[0]
            rows.append({"model": data.short[m], "pair": tag, "first": names[0], "second": names[1],
                         "‖b‖ first": np.linalg.norm(pr["b"][0]),
                         "‖b‖ second": np.linalg.norm(pr["b"][1]), "priority gap": float(pr["gap"]),
                         "loss drop first": gains[0], "loss drop second": gains[1]})
    info = pd.DataFrame(rows)
    values: dict[str, Any] = {}
    first_is_more = {}
    for k, m in enumerate(fig_models, start=1):
        first_is_more[m] = 0
        for tag in pairs:
            r = info[(info["model"] == data.short[m]) & (info["pair"] == tag)].iloc[0]
            more = 0 if r["‖b‖ first"] > r["‖b‖ second"] else 1
            first = int(r["loss drop second"] > r["loss drop first"])
            values.update({f"m{k}_gap_pair_{tag}": r["priority gap"], f"m{k}_dist_first_{tag}": r["‖b‖ first"],
                           f"m{k}_dist_second_{tag}": r["‖b‖ second"],
                           f"m{k}_drop_first_{tag}": r["loss drop first"],
                           f"m{k}_drop_second_{tag}": r["loss drop second"],
                           f"m{k}_more_dist_{tag}": (r["first"], r["second"])[more],
                           f"m{k}_learned_first_{tag}": (r["first"], r["second"])[first],
                           f"m{k}_first_is_more_{tag}": int(first == more)})
            first_is_more[m] += int(first == more)
    values["batch_size"] = cfg.batch_size
    values["embedded"] = (sum(bs.computed for g in sets.values() for bs in g)
                          + sum(bs.computed for m in data.models for bs in data.sweep[m].values()))
    return Figure5(fig_models, pairs, sets, runs, info, first_is_more, int(cfg.steps), values)


@dataclass(frozen=True)
class GapSizes:
    """Is pair (a)'s priority gap larger than pair (b)'s, per figure model?

    ``by_model[model]``: :func:`gap_size_comparison` (``gap_a``, ``gap_b``, ``diff_lo``, ``diff_hi``,
    ``verdict``); ``values``: ``n_boot``, ``reversal_text`` (the generated reading over models,
    :func:`alignment_dynamics.verdicts.gap_order_text`), ``m<k>_gapdiff_lo`` and ``m<k>_gapdiff_hi``.
    """

    by_model: Mapping[str, Mapping[str, Any]]
    values: Mapping[str, Any]


def gap_sizes(cfg, data: SweepData, fig5: Figure5) -> GapSizes:
    """The bootstrap comparison of |G(a)| and |G(b)| (``cfg.n_boot`` replicates, ``cfg.seed``) on each
    figure model's training sets of the two pairs."""
    from .. import verdicts

    by_model = {m: gap_size_comparison(fig5.sets[m, "a"], fig5.sets[m, "b"], n_boot=cfg.n_boot, seed=cfg.seed)
                for m in fig5.models}
    values: dict[str, Any] = {
        "n_boot": cfg.n_boot,
        "reversal_text": verdicts.gap_order_text({data.short[m]: by_model[m]["verdict"] for m in fig5.models})}
    for k, m in enumerate(fig5.models, start=1):
        values[f"m{k}_gapdiff_lo"] = by_model[m]["diff_lo"]
        values[f"m{k}_gapdiff_hi"] = by_model[m]["diff_hi"]
    return GapSizes(by_model, values)


@dataclass(frozen=True)
class Margins:
    """The priority theorem over the first model's measured margins of the two pairs.

    ``overlays[tag]``: :func:`margin_overlay` of the pair's run; ``first_step_error``: the largest
    relative error of the first full-batch step of pair (a) against the first-order formula with each
    set's own class balance (exact in theory); ``values``: ``band_until_<t>``, ``kappa_<t>``,
    ``ratio_balanced_<t>`` and ``ratio_own_<t>`` (median over the pair of the measured last-step
    margin change over the balanced and own-balance first-order predictions) and ``first_step_err``.
    """

    model: str
    overlays: Mapping[str, Mapping[str, Any]]
    first_step_error: float
    values: Mapping[str, Any]


def margin_study(cfg, data: SweepData, fig5: Figure5) -> Margins:
    """Draw the priority theorem over the first model's Figure 5 runs, and check its first step exactly
    with two full-batch steps of pair (a)."""
    m = data.models[0]
    if (m, "a") not in fig5.runs:
        raise DynamicsError(f"the Figure 5 runs do not include the first model {m!r}")
    overlays, values = {}, {}
    for tag in fig5.pairs:
        runs = fig5.runs[m, tag]
        ov = overlays[tag] = margin_overlay(fig5.sets[m, tag], runs, 0)
        meas = runs.margin["train"][0].T
        values[f"band_until_{tag}"] = ov["band_holds_until"]
        values[f"kappa_{tag}"] = ov["kappa"]
        values[f"ratio_balanced_{tag}"] = np.median(meas[:, -1] / ov["theorem"][:, -1])
        values[f"ratio_own_{tag}"] = np.median(meas[:, -1] / ov["imbalance"][:, -1])
    full_batch = train_runs([fig5.sets[m, "a"]], facts=data.facts[m], steps=2, batch_size=None, seeds=[cfg.seed],
                            lr=data.choice[m]["lr"], beta=data.choice[m]["beta"], progress=False)
    ov_fb = margin_overlay(fig5.sets[m, "a"], full_batch, 0)
    pred = ov_fb["imbalance"][:, 1]
    err = float(np.max(np.abs(full_batch.margin["train"][0][1] - pred) / np.abs(pred)))
    values["balance_text"] = balance_text({t: (values[f"ratio_balanced_{t}"], values[f"ratio_own_{t}"]) for t in fig5.pairs})
    values["first_step_err"] = err
    values["first_step_text"] = first_step_text(err)
    values["band_summary"] = band_summary(err, [ov["band_holds_until"] for ov in overlays.values()], fig5.steps)
    return Margins(m, overlays, err, values)


def first_step_text(error: float) -> str:
    """The generated sentence on the first full-batch step against the first-order formula with each
    set's own class balance, decided by :func:`alignment_dynamics.verdicts.exact` (the identity is
    exact at t = 1, so only floating-point error is allowed)."""
    from .. import verdicts

    v = verdicts.exact(error, n=2)
    if v.verdict == verdicts.AGREES:
        return (f"With full-batch training the first step matches the first-order formula with each set's own "
                f"class balance to a relative error of {error:.1e}, as the theorem says it must (it is exact at t = 1).")
    if v.verdict == verdicts.DIFFERS:
        return (f"With full-batch training the first step differs from the first-order formula with each set's own "
                f"class balance by a relative error of {error:.1e}, more than floating point explains, although the "
                "theorem says it is exact at t = 1: this run does not reproduce the identity.")
    return "The first full-batch step could not be compared with the first-order formula (its prediction is zero)."


def band_summary(error: float, band_until: Sequence[int], steps: int) -> str:
    """The summary's generated sentence on the theorem over the Figure 5 margins: is the first step
    exact (:func:`first_step_text`'s rule), and up to which step is the rigorous band narrower than the
    predicted change (``band_until``, one per pair, of ``steps``)?"""
    from .. import verdicts

    if not band_until:
        raise DynamicsError("band_summary needs the band's last valid step of at least one pair")
    first = {verdicts.AGREES: "is exact", verdicts.DIFFERS: "is not reproduced here"}.get(
        verdicts.exact(error, n=2).verdict, "could not be checked")
    last = min(int(b) for b in band_until)
    if last >= steps:
        band = f"its rigorous band stays narrower than the predicted change for all {steps} steps"
    else:
        band = (f"its rigorous band is narrower than the predicted change only up to step {last} of {steps} "
                "on real embeddings, whose common mean makes the loss strongly curved in one direction")
    return f"The theorem's first step {first} (relative error {error:.1e}); {band}."


def balance_text(ratios: Mapping[str, tuple[float, float]]) -> str:
    """Which first-order prediction the measured margins follow after the last step, per pair
    (``{tag: (measured/balanced, measured/own class balance)}``, :func:`closer_prediction`), and the
    reading that follows: the balanced one everywhere means the class-balance component has saturated."""
    if not ratios:
        raise DynamicsError("balance_text needs the ratios of at least one pair")
    closer = {t: closer_prediction(*r) for t, r in ratios.items()}
    own = [f"({t})" for t, c in closer.items() if c == "b"]
    if not own:
        return ("After the last step the balanced prediction is the closer one for every pair: the correction for "
                "the class balance is exact at the first step (below) but describes only the start; the imbalance "
                "moves the head along the embeddings' common mean, where the loss is strongly curved, and that "
                "component saturates within a few steps (as for the head change in the training-dynamics chapter), "
                "leaving the balanced first-order term.")
    return (f"After the last step the prediction with each set's own class balance is the closer one for pair "
            f"{' and '.join(own)}: there the class-balance component has not saturated within the run.")
