"""The prioritisation chapter's all-behaviour tests as result objects: hundreds of random pairs and
triples trained jointly on the sweep sample, the cross-fitted pair test, reweighting, and the claims
table.

Each function takes the chapter's resolved configuration and earlier results
(:mod:`.prioritization_study`) and returns a frozen dataclass whose ``values`` hold the glued numbers,
keyed by the glue key without the chapter prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .checks import DynamicsError
from .prioritization import LEARNED_FIRST_METRICS, agreement_by_bins, priority_outcomes, random_groups
from .prioritization_study import Figure5, GapSizes, Margins, SweepData
from .reweighting import reweighting_effect, reweighting_plan
from .runs import train_runs
from .study_keys import interval_values

SHARE_KINDS = ("pairs", "triples_top", "triples_order")


@dataclass(frozen=True)
class PairSweep:
    """Random pairs and triples trained jointly on every model's sweep sample (the circular test: the
    gap and the outcome come from the same training statements).

    ``pairs``/``triples``: the behaviour names, the same on every model; ``seeds``; ``outcomes[model]``
    and ``triple_outcomes[model]``: :func:`priority_outcomes`; ``shares[model][(kind, metric)]``: the
    Wilson ``(p, lo, hi)`` of the correct predictions for ``kind`` in :data:`SHARE_KINDS` and each
    learned-first metric; ``bins[model]``: :func:`agreement_by_bins` of |gap| (loss metric), keyed by
    the short label; ``summary``: the table of shares; ``values``: the counts and settings, every share
    (``m<k>_<kind>_<metric>_<p|lo|hi>``), ``pairs_per_behaviour`` and the misses' gaps
    (``m<k>_n_wrong``, ``m<k>_wrong_median_gap``, ``m<k>_median_gap``).
    """

    pairs: tuple[tuple[str, ...], ...]
    triples: tuple[tuple[str, ...], ...]
    seeds: tuple[int, ...]
    outcomes: Mapping[str, Any]
    triple_outcomes: Mapping[str, Any]
    shares: Mapping[str, Mapping[tuple[str, str], tuple[float, float, float]]]
    bins: Mapping[str, Any]
    summary: Any
    values: Mapping[str, Any]


def pair_sweep(cfg, data: SweepData) -> PairSweep:
    """Draw ``cfg.n_pairs`` random pairs and ``cfg.n_triples`` triples of the sweep behaviours
    (:func:`random_groups`, ``cfg.seed``), train each jointly on every model (``cfg.seeds`` seeds,
    batches ``cfg.pair_batch`` and ``cfg.triple_batch``) and score the priority predictions."""
    import pandas as pd

    from .. import stats

    seeds = tuple(cfg.seed + k for k in range(cfg.seeds))
    pair_names = tuple(random_groups(data.behaviors, 2, cfg.n_pairs, seed=cfg.seed))
    triple_names = tuple(random_groups(data.behaviors, 3, cfg.n_triples, seed=cfg.seed))
    outcomes, triple_outcomes = {}, {}
    for m in data.models:
        lr, beta = data.choice[m]["lr"], data.choice[m]["beta"]
        groups = [[data.sweep[m][b] for b in g] for g in pair_names]
        runs = train_runs(groups, facts=data.facts[m], steps=cfg.steps, batch_size=cfg.pair_batch, seeds=list(seeds),
                          lr=lr, beta=beta)
        outcomes[m] = priority_outcomes(groups, runs)
        tgroups = [[data.sweep[m][b] for b in g] for g in triple_names]
        truns = train_runs(tgroups, facts=data.facts[m], steps=cfg.steps, batch_size=cfg.triple_batch,
                           seeds=list(seeds), lr=lr, beta=beta)
        triple_outcomes[m] = priority_outcomes(tgroups, truns)
    values: dict[str, Any] = {"n_pairs": cfg.n_pairs, "n_triples": cfg.n_triples, "n_seeds": cfg.seeds,
                              "pair_batch": cfg.pair_batch, "triple_batch": cfg.triple_batch,
                              "pairs_per_behaviour": 2 * len(pair_names) / len({b for p in pair_names for b in p})}
    shares, summary, bins = {}, [], {}
    for k, m in enumerate(data.models, start=1):
        o, to = outcomes[m], triple_outcomes[m]
        shares[m] = {}
        for metric in LEARNED_FIRST_METRICS:
            counts = {"pairs": (o[f"agree_{metric}"], len(o)), "triples_top": (to[f"top_{metric}"], len(to)),
                      "triples_order": (to[f"order_{metric}"], len(to))}
            for kind in SHARE_KINDS:
                hits, n = counts[kind]
                shares[m][kind, metric] = v = stats.wilson(int(hits.sum()), n)
                for tag, x in zip(("p", "lo", "hi"), v):
                    values[f"m{k}_{kind}_{metric}_{tag}"] = x
            fmt = {kind: "{:.2f} [{:.2f}, {:.2f}]".format(*shares[m][kind, metric]) for kind in SHARE_KINDS}
            summary.append({"model": data.short[m], "learned first by": metric,
                            "pairs: gap sign right": fmt["pairs"], "triples: top level first": fmt["triples_top"],
                            "triples: whole order": fmt["triples_order"]})
        bins[data.short[m]] = agreement_by_bins(np.abs(o["gap"]), o["agree_loss"], cfg.gap_bins)
        wrong = o[~o["agree_loss"]]
        values[f"m{k}_wrong_median_gap"] = float(np.median(np.abs(wrong["gap"]))) if len(wrong) else 0.0
        values[f"m{k}_median_gap"] = float(np.median(np.abs(o["gap"])))
        values[f"m{k}_n_wrong"] = len(wrong)
    values["misses_text"] = misses_text({data.short[m]: outcomes[m] for m in data.models})
    table = pd.DataFrame(summary).style.hide(axis="index")
    return PairSweep(pair_names, triple_names, seeds, outcomes, triple_outcomes, shares, bins, table, values)


@dataclass(frozen=True)
class PairCrossFits:
    """The cross-fitted random-pair test per model (:func:`alignment_dynamics.crossfit.pair_crossfit`).

    ``by_model[model]``: the :class:`~alignment_dynamics.crossfit.PairCrossFit`; ``verdicts``:
    ``{"m<k>_pairs_xfit": its verdict}``, glued with ``ad.book.glue_verdict``; ``table``: the shares,
    counts and verdicts per model; ``values``: ``xfit_folds``, ``m<k>_pairs_<xfit|circ>_<p|lo|hi>`` and
    ``pairs_xfit_reading``, the models' verdicts as one phrase (:func:`~alignment_dynamics.verdicts.by_model_phrase`).
    """

    by_model: Mapping[str, Any]
    verdicts: Mapping[str, Any]
    table: Any
    values: Mapping[str, Any]


def pair_crossfits(cfg, data: SweepData, sweep: PairSweep) -> PairCrossFits:
    """Cross-fit the random pairs of ``sweep`` on every model: ``cfg.crossfit_folds`` folds, the first
    ``cfg.crossfit_seeds`` seeds, a bootstrap by behaviour of ``cfg.n_boot`` replicates."""
    import pandas as pd

    from .. import verdicts
    from ..crossfit import pair_crossfit

    by_model = {m: pair_crossfit(sweep.pairs, data.sweep[m], facts=data.facts[m], steps=cfg.steps,
                                 batch_size=cfg.pair_batch, seeds=list(sweep.seeds[: cfg.crossfit_seeds]),
                                 lr=data.choice[m]["lr"], beta=data.choice[m]["beta"], n_folds=cfg.crossfit_folds,
                                 seed=cfg.seed, n_boot=cfg.n_boot)
                for m in data.models}
    values: dict[str, Any] = {"xfit_folds": cfg.crossfit_folds}
    verdicts_ = {}
    for k, m in enumerate(data.models, start=1):
        x = by_model[m]
        values.update(interval_values(f"m{k}_pairs_xfit", (x.share, x.lo, x.hi)))
        values.update(interval_values(f"m{k}_pairs_circ", x.circular))
        verdicts_[f"m{k}_pairs_xfit"] = x.verdict
    values["pairs_xfit_reading"] = verdicts.by_model_phrase([by_model[m].verdict for m in data.models],
                                                            list(data.models))
    table = pd.DataFrame({data.short[m]: {
        "cross-fitted share [95 % CI, by behaviour]": f"{x.share:.2f} [{x.lo:.2f}, {x.hi:.2f}]",
        "circular share [by behaviour] (contrast)": "{:.2f} [{:.2f}, {:.2f}]".format(*x.circular),
        "pairs": x.n, "behaviours": x.n_behaviors, "verdict (cross-fitted)": x.verdict.verdict}
        for m, x in by_model.items()})
    return PairCrossFits(by_model, verdicts_, table, values)


@dataclass(frozen=True)
class Reweighting:
    """Oversampling the less distinguishable member of every random pair, on the first model.

    ``plan``: the replication of each pair (:func:`reweighting_plan`); ``effect``:
    :func:`reweighting_effect` (the members' loss drops before and after, the shares);
    ``verdict``: :func:`alignment_dynamics.verdicts.share` on the share of pairs whose gap between loss
    drops shrinks; ``values``: ``max_replication``, ``rw_median_factor``, ``rw_shrinks_<p|lo|hi>``,
    ``rw_low_last_before``, ``rw_low_last_after`` and ``rw_<low|high|total>_gain``.
    """

    model: str
    plan: Sequence[tuple[int, int]]
    effect: Mapping[str, Any]
    verdict: Any
    values: Mapping[str, Any]


def reweighting_study(cfg, data: SweepData, sweep: PairSweep) -> Reweighting:
    """Retrain ``sweep``'s pairs on the first model with the less distinguishable member oversampled by
    the balancing ratio (at most ``cfg.max_replication``), same seeds and batches."""
    from .. import verdicts

    m = data.models[0]
    groups = [[data.sweep[m][b] for b in g] for g in sweep.pairs]
    plan = reweighting_plan(groups, max_factor=cfg.max_replication)
    runs = train_runs(groups, facts=data.facts[m], steps=cfg.steps, batch_size=cfg.pair_batch, seeds=list(sweep.seeds),
                      lr=data.choice[m]["lr"], beta=data.choice[m]["beta"], replicate=plan)
    rw = reweighting_effect(groups, sweep.outcomes[m], priority_outcomes(groups, runs))
    values: dict[str, Any] = {"max_replication": cfg.max_replication,
                              "rw_median_factor": float(np.median([max(r) for r in plan]))}
    for key in ("shrinks_p", "shrinks_lo", "shrinks_hi", "low_last_before", "low_last_after"):
        values[f"rw_{key}"] = rw[key]
    for key in ("low", "high", "total"):
        values[f"rw_{key}_gain"] = rw[f"{key}_ratio"]
    values["rw_price_text"], values["rw_total_text"] = reweighting_texts(rw)
    verdict = verdicts.share(rw["shrinks_p"], rw["shrinks_lo"], rw["shrinks_hi"], len(groups))
    return Reweighting(m, plan, rw, verdict, values)


def misses_text(outcomes: Mapping[str, Any]) -> str:
    """The generated sentence on the random pairs whose gap sign was wrong (loss metric), per model
    (``{label: priority_outcomes}``): how many, and whether their median |gap| is below the median over
    all pairs (the misses are then small-gap pairs, where noise decides)."""
    if not outcomes:
        raise DynamicsError("misses_text needs the outcomes of at least one model")
    parts, smaller = [], []
    for label, o in outcomes.items():
        wrong = o[~o["agree_loss"]]
        if not len(wrong):
            parts.append(f"none on {label}")
            continue
        w, a = float(np.median(np.abs(wrong["gap"]))), float(np.median(np.abs(o["gap"])))
        smaller.append(w < a)
        parts.append(f"{len(wrong)} on {label} (median |gap| {w:.3f}, against {a:.3f} over all pairs)")
    head = "Misses of the gap's sign: " + "; ".join(parts) + "."
    if not smaller:
        return head
    if all(smaller):
        return head + (" The misses have smaller gaps than the typical pair, where SGD noise and the class balance "
                       "of each training sample decide.")
    if not any(smaller):
        return head + " The misses are not confined to small gaps: their median gap is not below the typical pair's."
    return head + " On some models the misses have smaller gaps than the typical pair, on others not."


def reweighting_texts(effect: Mapping[str, Any]) -> tuple[str, str]:
    """Two generated sentences on :func:`reweighting_effect`: who pays for the oversampling (the
    median pair's loss-drop ratios, after over before, of the lagging and the leading member) and
    whether it creates progress (the ratio of their sum: not above 1, it only redistributes)."""
    low, high, total = (float(effect[k]) for k in ("low_ratio", "high_ratio", "total_ratio"))
    ratios = (f"in the median pair the lagging member's loss drop is multiplied by {low:.2f}, the leading "
              f"member's by {high:.2f}, and their sum by {total:.2f}")
    price = (f"The price is paid by the other behaviour: {ratios}." if high < 1
             else f"The other behaviour does not pay for it: {ratios}.")
    if total <= 1:
        progress = "Reweighting redistributes a shared update; it does not create progress."
    else:
        progress = "The sum of the loss drops grows too: here reweighting adds progress as well as redistributing it."
    return price, progress


def claim_rows(cfg, data: SweepData, fig5: Figure5, gaps: GapSizes, margins: Margins, sweep: PairSweep,
               xfit: PairCrossFits, rw: Reweighting) -> list[dict[str, Any]]:
    """The rows of the chapter's claims table, each ``{"claim", "measured", "verdict", "source"}``, with
    the verdicts of :mod:`alignment_dynamics.verdicts` (the rules the chapter states).

    Per figure model: the Figure 5 pairs (:func:`~alignment_dynamics.verdicts.share_counts` of 2) and the
    order of the two gaps (:func:`gap_sizes`' verdict); per model: the cross-fitted pair test, the
    circular contrast by each learned-first metric and the triples; then the theorem's first step
    (:func:`~alignment_dynamics.verdicts.exact`) and reweighting.
    """
    from .. import verdicts

    short, m1 = data.short, data.models[0]
    rows = []

    def add(claim, measured, verdict, source="paper summary"):
        rows.append({"claim": claim, "measured": measured, "verdict": verdict, "source": source})

    for m in fig5.models:
        n_ok = fig5.first_is_more[m]
        add(f"In Figure 5's pairs the more distinguishable behaviour is learned first ({short[m]})",
            f"the more distinguishable member has the larger loss drop in {n_ok} of 2 pairs",
            verdicts.share_counts(n_ok, 2))
        c = gaps.by_model[m]
        add(f"Pair (a) has a larger priority gap than pair (b) ({short[m]})",
            f"|gap| = {c['gap_a']:.3f} for (a) and {c['gap_b']:.3f} for (b); 95 % interval of the "
            f"difference [{c['diff_lo']:.3f}, {c['diff_hi']:.3f}]", c["verdict"])
    for m in data.models:
        x = xfit.by_model[m]
        add(f"The sign of the priority gap predicts which behaviour is learned first ({short[m]}, cross-fitted: "
            f"gap, training and held-out loss on disjoint statements)",
            f"right in {x.share:.2f} [{x.lo:.2f}, {x.hi:.2f}] of {x.n} random pairs over {x.n_behaviors} behaviours "
            f"(bootstrap by behaviour)", x.verdict)
        for metric in LEARNED_FIRST_METRICS:
            p, lo, hi = sweep.shares[m]["pairs", metric]
            add(f"The same, circular contrast: gap and outcome on the same training statements ({short[m]}, by {metric})",
                f"right in {p:.2f} [{lo:.2f}, {hi:.2f}] of {cfg.n_pairs} random pairs (Wilson, pairs as independent)",
                verdicts.share(p, lo, hi, cfg.n_pairs), source="project")
        p, lo, hi = sweep.shares[m]["triples_top", "loss"]
        add(f"In triples, the behaviour with the highest priority level is learned first ({short[m]}, same statements)",
            f"right in {p:.2f} [{lo:.2f}, {hi:.2f}] of {cfg.n_triples} triples (chance 0.33)",
            verdicts.share(p, lo, hi, cfg.n_triples, chance=1 / 3, unit="triples"), source="derived")
    err = margins.first_step_error
    add("After one full-batch step each margin moves by ηβ⟨m̂, m̂_i⟩ exactly",
        f"largest relative error {err:.1e} (pair (a), {short[m1]})", verdicts.exact(err, n=2), source="derived")
    e = rw.effect
    add("Balancing the data across behaviours evens out their learning (data collection)",
        f"oversampling the less distinguishable member shrinks the gap between loss drops in "
        f"{e['shrinks_p']:.2f} [{e['shrinks_lo']:.2f}, {e['shrinks_hi']:.2f}] of pairs ({short[m1]})", rw.verdict)
    return rows

