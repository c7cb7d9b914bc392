"""The sections of `book/distinguishability.md` as functions returning result objects.

Each function computes one section of the chapter from its configuration (and the results of the
sections before it) and returns a frozen dataclass: numbers, strings, tables, the inputs of its figure
and the generated sentences that state its result. Per-model numbers sit in ``.models`` (one result
per model, in the order of ``cfg.models``), glued under ``distinguishability_m1``, ``_m2``. The
chapter's cells only call these functions, glue the fields (:func:`alignment_dynamics.book.glue_result`)
and plot. The tails section is in :mod:`alignment_dynamics.geometry_tails`, the claims of the chapter
in :mod:`alignment_dynamics.geometry_claims`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import data, embed, geometry as geo, models as _models, progress, stats, verdicts
from .chapters.common import FIG3_BEHAVIORS, NAMED_BEHAVIORS

MEASURES = ("distinguishability", "relative_distinguishability", "dprime", "fisher", "concentration", "trace")
MEASURE_NAMES = {"distinguishability": "distinguishability", "relative_distinguishability": "relative distinguishability",
                 "dprime": "d′", "fisher": "Fisher distance", "concentration": "concentration", "trace": "trace"}
OFFICIAL_FIVE = tuple(FIG3_BEHAVIORS)            # Behaviors 1-5 of the official plots [official code]
PAIR_A = tuple(NAMED_BEHAVIORS[0:2])             # Figure 5(a) [paper summary]
PAIR_B = tuple(NAMED_BEHAVIORS[2:4])             # Figure 5(b)
RELIABILITY_TARGET = 0.9                         # the predicted reliability whose sample size is reported
D_PAPER = 4096                                   # Llama-2-7B's hidden size [official code]
# Compact table styles of the chapter (pandas Styler.set_table_styles)
COMPACT = [{"selector": "td, th", "props": "padding: 2px 9px; font-size: 0.85em;"},
           {"selector": "td", "props": "white-space: nowrap;"},
           {"selector": "th.row_heading", "props": "min-width: 15em; font-weight: normal; text-align: left;"}]


def tags() -> dict[str, str]:
    """The figure tags of the named behaviours: B1-B5 for the official five, a1, a2, b1, b2 for the pairs."""
    out = {b: f"B{k}" for k, b in enumerate(OFFICIAL_FIVE, start=1)}
    out.update({PAIR_A[0]: "a1", PAIR_A[1]: "a2", PAIR_B[0]: "b1", PAIR_B[1]: "b2"})
    return out


@dataclass(frozen=True)
class ModelNames:
    """The two models' names and their short column labels."""

    m1_name: str
    m2_name: str
    labels: dict


def model_names(cfg) -> ModelNames:
    """The names of ``cfg.models`` (two) and their unique short labels."""
    m1, m2 = cfg.models
    return ModelNames(m1, m2, _models.short_labels(cfg.models))


# ---------------------------------------------------------------------------------------------------
# Embeddings of every behaviour
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSample:
    """One model's embedding run: dimension, wall time and rows computed afresh (both volatile)."""

    d: int
    embed_s: float
    computed: int


@dataclass(frozen=True)
class Sample:
    """The class-stratified sample of every behaviour and its embeddings (``emb[model][behaviour]``);
    ``items[model]`` is the list of (behaviour, h, positive mask) the geometry functions take."""

    per_class: str
    n_behaviors: int
    n_records: int
    n_statements: int
    behaviors: list = field(repr=False)
    samples: dict = field(repr=False)
    emb: dict = field(repr=False)
    items: dict = field(repr=False)
    statements: dict = field(repr=False)
    models: tuple = field(repr=False)


def embed_sample(cfg) -> Sample:
    """Embed ``cfg.per_class`` statements per class of ``cfg.behaviors`` (None: all) with each model."""
    behaviors = cfg.behaviors or data.behaviors()
    samples = {b: data.stratified_sample(b, cfg.per_class, seed=cfg.seed) for b in behaviors}
    emb, per_model = {}, []
    for m in cfg.models:
        t0 = time.perf_counter()
        emb[m] = {b: embed.behavior_embeddings(m, b, samples[b], norm=cfg.norm, dtype=cfg.dtype, progress=False)
                  for b in progress.steps(behaviors, f"embedding ({m})", unit="behaviour")}
        seconds = time.perf_counter() - t0
        per_model.append(ModelSample(int(emb[m][behaviors[0]].h.shape[1]), seconds,
                                     int(sum(e.computed for e in emb[m].values()))))
    items = {m: [(b, emb[m][b].h, emb[m][b].positive) for b in behaviors] for m in cfg.models}
    return Sample(str(cfg.per_class or "all"), len(behaviors),
                  sum(len(data.load_persona(b)) for b in data.behaviors()),
                  sum(len(samples[b]) for b in behaviors), list(behaviors), samples, emb, items,
                  {b: len(samples[b]) for b in behaviors}, tuple(per_model))


# ---------------------------------------------------------------------------------------------------
# Three properties and their noise
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelProperties:
    """One model's property summary: split-half ρ of each measure, predicted reliabilities, rank
    intervals, the noise floor, the range and scale, and the rank correlations with concentration/trace."""

    split_rho: float
    split_rho_full: float
    per_class_for_090: int
    rank_width: float
    noise_fraction: float
    n_below_floor: int
    min: float
    max: float
    mean_norm: float
    split_distinguishability: float
    split_relative_distinguishability: float
    split_dprime: float
    split_fisher: float
    split_concentration: float
    split_trace: float
    rho_conc: float
    rho_trace: float


@dataclass(frozen=True)
class Properties:
    """The property tables (``tables[model]``: one row per behaviour), the difference vectors, the
    bootstrap intervals and replicates, the split-half correlations, and their reading."""

    shrinkage: float
    n_full: int
    floor_shrink: float
    reliability_reading: str
    tables: dict = field(repr=False)
    bvecs: dict = field(repr=False)
    cis: dict = field(repr=False)
    reps: dict = field(repr=False)
    split: dict = field(repr=False)
    split_table: Any = field(repr=False)
    models: tuple = field(repr=False)


def per_class_for(rho: float, per_class: int | None, target: float = RELIABILITY_TARGET) -> int:
    """Statements per class for a predicted reliability ``target`` from a split-half ρ of halves of
    ``per_class / 2`` (Spearman–Brown); ``per_class`` itself when ρ is not in (0, target), 0 for all."""
    if 0 < rho < target:
        need = per_class / 2 * geo.spearman_brown_factor(rho, target) if per_class else 0
    else:
        need = per_class or 0
    return int(np.ceil(need))


def property_study(cfg, sample: Sample) -> Properties:
    """Properties, stratified bootstrap and split-half stability of every behaviour on each model."""
    import pandas as pd

    tables, bvecs, cis, reps, split = {}, {}, {}, {}, {}
    for m in cfg.models:
        tables[m], bvecs[m] = geo.property_table(sample.items[m], shrinkage=cfg.shrinkage)
        cis[m], reps[m] = geo.bootstrap_table(sample.items[m], n_boot=cfg.n_boot, seed=cfg.seed)
        split[m] = geo.split_half_stability(sample.items[m], seed=cfg.seed, keys=list(MEASURES),
                                            shrinkage=cfg.shrinkage)[0]
    n_all = int(np.median([len(data.load_persona(b)) for b in sample.behaviors]))
    predicted = {m: geo.spearman_brown(split[m]["distinguishability"]) for m in cfg.models}
    per_model = []
    for m in cfg.models:
        t = tables[m]
        rank_lo, rank_hi = geo.rank_intervals(reps[m]["distinguishability"])
        per_model.append(ModelProperties(
            split_rho=split[m]["distinguishability"], split_rho_full=predicted[m],
            per_class_for_090=per_class_for(split[m]["distinguishability"], cfg.per_class),
            rank_width=float(np.median(rank_hi - rank_lo)), noise_fraction=float(t["noise_fraction"].median()),
            n_below_floor=int((t["distinguishability_sq_unbiased"] <= 0).sum()),
            min=float(t["distinguishability"].min()), max=float(t["distinguishability"].max()),
            mean_norm=float(t["mean_norm"].median()),
            **{f"split_{k}": split[m][k] for k in MEASURES},
            rho_conc=stats.spearman(t["distinguishability"], t["concentration"]),
            rho_trace=stats.spearman(t["distinguishability"], t["trace"])))
    labels = _models.short_labels(cfg.models)
    table = (pd.DataFrame({f"split-half ρ, {labels[m]}": split[m] for m in cfg.models}).rename(index=MEASURE_NAMES)
             .style.format(precision=2).set_table_styles(COMPACT[:1]))
    return Properties(cfg.shrinkage, n_all, n_all / (2 * cfg.per_class) if cfg.per_class else 1,
                      verdicts.reliability_reading(predicted, n_full=n_all), tables, bvecs, cis, reps, split, table,
                      tuple(per_model))


@dataclass(frozen=True)
class Ranking:
    """The behaviours sorted by distinguishability on the first model (``table``), styled three ways."""

    table: Any = field(repr=False)
    top: Any = field(repr=False)
    bottom: Any = field(repr=False)
    full: Any = field(repr=False)


RANK_FORMAT = {"‖μ₊−μ₋‖": "{:.3f}", "noise": "{:.0%}", "max‖Σ‖₂": "{:.2f}", "max tr Σ": "{:.1f}", "d′": "{:.2f}"}


def ranking(cfg, props: Properties, *, rows: int = 10) -> Ranking:
    """The first model's behaviours by distinguishability with their intervals, noise fraction,
    concentration, trace, d′ and their rank on the second model; the top and bottom ``rows``."""
    import pandas as pd

    m1, m2 = cfg.models
    index = {b: i for i, b in enumerate(data.behaviors())}
    labels = _models.short_labels(cfg.models)
    t, c = props.tables[m1], props.cis[m1]
    ranked = pd.DataFrame({
        "#": [index[b] for b in t.index],
        "‖μ₊−μ₋‖": t["distinguishability"],
        "95% CI": [f"{lo:.2f}–{hi:.2f}" for lo, hi in zip(c["distinguishability_lo"], c["distinguishability_hi"])],
        "noise": t["noise_fraction"],
        "max‖Σ‖₂": t["concentration"],
        "max tr Σ": t["trace"],
        "d′": t["dprime"],
        f"rank, {labels[m2]}": props.tables[m2]["distinguishability"].rank(ascending=False).astype(int),
    }).sort_values("‖μ₊−μ₋‖", ascending=False)
    return Ranking(ranked, ranked.head(rows).style.format(RANK_FORMAT).set_table_styles(COMPACT),
                   ranked.tail(rows).style.format(RANK_FORMAT).set_table_styles(COMPACT),
                   ranked.style.format(RANK_FORMAT).set_table_styles(COMPACT))


def sorted_panels(cfg, sample: Sample, props: Properties) -> list[dict]:
    """The panels of :func:`alignment_dynamics.plotting.sorted_with_intervals`, one per model."""
    return [dict(values=props.tables[m]["distinguishability"], lo=props.cis[m]["distinguishability_lo"],
                 hi=props.cis[m]["distinguishability_hi"], names=sample.behaviors, title=m) for m in cfg.models]


# ---------------------------------------------------------------------------------------------------
# Figure 2: three maps
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Maps:
    """The least, median and most distinguishable behaviours of the first model, embedded on a larger
    sample and mapped to 2-D: d′ of each panel, and the panels' class counts (for the verdict)."""

    per_class: str
    low_dprime: float
    mid_dprime: float
    high_dprime: float
    picked: list = field(repr=False)
    maps: list = field(repr=False)
    masks: list = field(repr=False)
    titles: list = field(repr=False)
    properties: list = field(repr=False)
    counts: list = field(repr=False)
    texts: list = field(repr=False, default_factory=list)  # each map's statements, in its rows' order


def figure2_maps(cfg, props: Properties) -> Maps:
    """Embed ``cfg.map_per_class`` statements per class of the three picked behaviours and map them
    with ``cfg.map_method`` (fixed ``random_state``); ``texts`` keeps each map's statements for the
    interactive figure (:func:`alignment_dynamics.interactive.maps_figure`)."""
    m1 = cfg.models[0]
    picked = geo.pick_by_quantile(props.tables[m1]["distinguishability"], (0.0, 0.5, 1.0))
    maps, masks, titles, dists, counts, texts = [], [], [], [], [], []
    for b in picked:
        e = embed.behavior_embeddings(m1, b, data.stratified_sample(b, cfg.map_per_class, seed=cfg.seed),
                                      norm=cfg.norm, dtype=cfg.dtype, progress=False)
        maps.append(geo.map_2d(e.h, method=cfg.map_method, random_state=cfg.seed))
        records = data.load_persona(b)
        texts.append([records[i].statement for i in e.indices])
        masks.append(e.positive)
        p = geo.properties(e.h, e.positive, shrinkage=cfg.shrinkage)
        dists.append(p)
        counts.append((int(np.sum(e.positive)), int(np.sum(~np.asarray(e.positive)))))
        titles.append(f"{b}\n‖μ₊ − μ₋‖ = {p['distinguishability']:.2f}, d′ = {p['dprime']:.2f}")
    return Maps(str(cfg.map_per_class or "all"), dists[0]["dprime"], dists[1]["dprime"], dists[2]["dprime"],
                picked, maps, masks, titles, dists, counts, texts)


# ---------------------------------------------------------------------------------------------------
# The official five
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Five:
    """The official five behaviours' ranks (1 = least distinguishable) on each model, per model the
    rank correlation with the official order (``models[k].five_rho``), and the combined verdict of the
    one-sided permutation tests of that order (:func:`verdicts.rank_order`)."""

    ranks: dict = field(repr=False)
    table: Any = field(repr=False)
    models: tuple = field(repr=False)
    verdict: Any = field(repr=False, default=None)


@dataclass(frozen=True)
class ModelFive:
    five_rho: float


def official_five(cfg, props: Properties) -> Five:
    """Where Behaviors 1-5 of the official plots fall in each model's ranking."""
    import pandas as pd

    index = {b: i for i, b in enumerate(data.behaviors())}
    labels = _models.short_labels(cfg.models)
    ranks = {m: [int(props.tables[m]["distinguishability"].rank()[b]) for b in OFFICIAL_FIVE] for m in cfg.models}
    five = pd.DataFrame({
        "official": [f"Behavior {k}" for k in range(1, 6)],
        "#": [index[b] for b in OFFICIAL_FIVE],
        "behaviour": list(OFFICIAL_FIVE),
        **{f"rank, {labels[m]}": ranks[m] for m in cfg.models},
        **{f"dist., {labels[m]}": [props.tables[m]["distinguishability"][b] for b in OFFICIAL_FIVE] for m in cfg.models},
    })
    per_model = tuple(ModelFive(stats.spearman(np.arange(1, 6), five[f"rank, {labels[m]}"])) for m in cfg.models)
    verdict = verdicts.combine([verdicts.rank_order(np.arange(1.0, 6.0), np.asarray(ranks[m], dtype=float), seed=cfg.seed)
                                for m in cfg.models])
    return Five(ranks, five.style.format(precision=2).hide(axis="index").set_table_styles(COMPACT[:1]),
                per_model, verdict)


# ---------------------------------------------------------------------------------------------------
# Priority gaps
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelGaps:
    """One model's gaps of the two Figure 5 pairs with bootstrap intervals, the verdict word on
    |G(a)| − |G(b)|, and the checks over all pairs."""

    gap_a: float
    gap_b: float
    gap_a_lo: float
    gap_a_hi: float
    gap_b_lo: float
    gap_b_hi: float
    gap_diff_lo: float
    gap_diff_hi: float
    gap_outcome: str
    sign_identity: float
    gap_undefined: int
    gap_max: float
    cos_median: float
    negative_level: float


@dataclass(frozen=True)
class Gaps:
    """The priority-gap matrices (``gaps[model]``), per-model :class:`ModelGaps` and the verdicts on
    the pairs' order (``verdicts[model]``)."""

    sign_reading: str
    gaps: dict = field(repr=False)
    verdicts: dict = field(repr=False)
    models: tuple = field(repr=False)


OUTCOME_WORDS = {"agrees": "larger", "differs": "smaller"}   # else "not resolvably different"


def priority_gap_study(cfg, sample: Sample, props: Properties) -> Gaps:
    """Priority gaps of all ordered pairs, and the bootstrap of the Figure 5 pairs' gaps, on each model."""
    behaviors = sample.behaviors
    gaps, verdict, per_model = {}, {}, []
    for m in cfg.models:
        bvecs = props.bvecs[m]
        gaps[m] = geo.priority_gaps(bvecs)
        norms = np.linalg.norm(bvecs, axis=1)
        off = ~np.eye(len(behaviors), dtype=bool) & np.isfinite(gaps[m])
        sign_ok = np.sign(gaps[m][off]) == np.sign(norms[:, None] - norms[None, :])[off]
        ga = gaps[m][behaviors.index(PAIR_A[0]), behaviors.index(PAIR_A[1])]
        gb = gaps[m][behaviors.index(PAIR_B[0]), behaviors.index(PAIR_B[1])]
        boot = geo.bootstrap_gaps({b: (h, pos) for b, h, pos in sample.items[m]}, [PAIR_A, PAIR_B],
                                  n_boot=cfg.n_boot, seed=cfg.seed)
        diff_lo, diff_hi = geo.percentile_ci(np.abs(boot[PAIR_A]) - np.abs(boot[PAIR_B]))
        verdict[m] = verdicts.difference(min(max(abs(ga) - abs(gb), diff_lo), diff_hi), diff_lo, diff_hi,
                                         8 * cfg.per_class if cfg.per_class else None, unit="statements")
        a_lo, a_hi = geo.percentile_ci(boot[PAIR_A])
        b_lo, b_hi = geo.percentile_ci(boot[PAIR_B])
        unit = bvecs / norms[:, None]
        cos = (unit @ unit.T)[~np.eye(len(behaviors), dtype=bool)]
        per_model.append(ModelGaps(
            float(ga), float(gb), a_lo, a_hi, b_lo, b_hi, diff_lo, diff_hi,
            OUTCOME_WORDS.get(verdict[m].verdict, "not resolvably different"), float(sign_ok.mean()),
            int((~np.isfinite(gaps[m])).sum()), float(np.nanmax(np.abs(gaps[m]))), float(np.median(cos)),
            float(np.mean(geo.priority_levels(bvecs)[off] < 0))))
    return Gaps(sign_reading(min(g.sign_identity for g in per_model)), gaps, verdict, tuple(per_model))


def sign_reading(share: float) -> str:
    """The reading of the smallest share (over models) of defined off-diagonal gaps whose sign is that of
    ‖b_i‖ − ‖b_j‖: an identity of our algebra, so every pair must agree."""
    if share == 1.0:
        return "Priority gaps take their sign from distinguishability alone (checked on every defined pair)"
    return (f"Priority gaps should take their sign from distinguishability alone, but only a fraction {share:.3f} "
            "of the defined pairs does on some model: a numerical problem to look into")


@dataclass(frozen=True)
class Heatmap:
    """The first model's gap matrix in distinguishability order, with the two pairs' cells marked."""

    gaps: np.ndarray = field(repr=False)
    marks: list = field(repr=False)
    title: str = ""


def gap_heatmap_data(cfg, sample: Sample, props: Properties, gaps: Gaps) -> Heatmap:
    """The inputs of :func:`alignment_dynamics.plotting.gap_heatmap` for the first model."""
    m1 = cfg.models[0]
    order = np.argsort(props.tables[m1]["distinguishability"].to_numpy(), kind="stable")
    where = {sample.behaviors[i]: r for r, i in enumerate(order)}
    return Heatmap(gaps.gaps[m1][np.ix_(order, order)],
                   [(where[PAIR_A[0]], where[PAIR_A[1]], "(a)"), (where[PAIR_B[0]], where[PAIR_B[1]], "(b)")], m1)


# ---------------------------------------------------------------------------------------------------
# The constants of Theorem 4.1's hypotheses
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConstants:
    """One model's smallest constants c_v, c_n, β′ = β√d, the step η β′² c_n², and the median share of
    the top covariance direction (concentration over trace)."""

    c_v: float
    c_n: float
    beta_prime: float
    step: float
    top_share: float


@dataclass(frozen=True)
class Constants:
    """The official β and η, β′ at Llama-2's width, per-model :class:`ModelConstants`, and the table."""

    beta: float
    eta: float
    d_paper: int
    beta_prime_paper: float
    step_reading: str
    table: Any = field(repr=False)
    models: tuple = field(repr=False)


def theorem41_study(cfg, props: Properties) -> Constants:
    """:func:`geometry.theorem41_constants` on each model, with the data's bound √2 max‖h‖/√d on c_n."""
    import pandas as pd

    rows, per_model = {}, []
    for m in cfg.models:
        t = props.tables[m]
        d = int(t["d"].iloc[0])
        c = geo.theorem41_constants(t["c_v"], t["c_n"], d=d, beta=cfg.beta, eta=cfg.eta)
        c["c_n bound √2 max‖h‖/√d"] = np.sqrt(2) * t["max_norm"].max() / np.sqrt(d)
        rows[m] = c
        per_model.append(ModelConstants(c["c_v"], c["c_n"], c["beta_prime"], c["step"],
                                        float((t["concentration"] / t["trace"]).median())))
    table = (pd.DataFrame(rows).rename(index={"step": "η β′² c_n²"}).style.format(precision=3)
             .set_table_styles(COMPACT[:1]))
    reading = verdicts.step_reading(max(c.step for c in per_model))
    return Constants(cfg.beta, cfg.eta, D_PAPER, float(cfg.beta * np.sqrt(D_PAPER)), reading, table, tuple(per_model))


# ---------------------------------------------------------------------------------------------------
# Two models compared; label confidence
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelComparison:
    """The two models' rank correlation with its interval, the paired ratios of debiased relative
    distinguishability (``rel_*``, on the behaviours above both noise floors) and of d′ (``dprime_*``),
    and their readings."""

    rho: float
    rho_lo: float
    rho_hi: float
    rel_ratio: float
    rel_lo: float
    rel_hi: float
    rel_frac_greater: float
    dprime_ratio: float
    dprime_lo: float
    dprime_hi: float
    dprime_frac_greater: float
    rel_n: int
    rel_reading: str
    dprime_reading: str
    x: Any = field(repr=False)
    y: Any = field(repr=False)
    names: list = field(repr=False)
    axis_labels: tuple = field(repr=False, default=("", ""))


def model_comparison(cfg, props: Properties) -> ModelComparison:
    """Compare the first model's distinguishability with the second's across behaviours."""
    m1, m2 = cfg.models
    a, b = props.tables[m1], props.tables[m2]
    rho, lo, hi = stats.spearman_ci(a["distinguishability"], b["distinguishability"], seed=cfg.seed)
    both = (a["relative_distinguishability_debiased"] > 0) & (b["relative_distinguishability_debiased"] > 0)
    x, y = a["relative_distinguishability_debiased"][both], b["relative_distinguishability_debiased"][both]
    rel = stats.paired_ratio(x, y, seed=cfg.seed)
    dpr = stats.paired_ratio(a["dprime"], b["dprime"], seed=cfg.seed)
    return ModelComparison(rho, lo, hi, rel["ratio"], rel["lo"], rel["hi"], rel["frac_greater"], dpr["ratio"],
                           dpr["lo"], dpr["hi"], dpr["frac_greater"], int(both.sum()),
                           verdicts.ratio_reading(rel["lo"], rel["hi"]), verdicts.ratio_reading(dpr["lo"], dpr["hi"]),
                           x, y, list(a.index[both]),
                           (f"relative distinguishability, {m1}", f"relative distinguishability, {m2}"))


@dataclass(frozen=True)
class ModelConfidence:
    """One model's rank correlation of mean label confidence with distinguishability across behaviours
    (``conf_rho*``, with ρ² the share of the ranking it accounts for) and the mean within-behaviour
    correlation of confidence with the signed margin (``conf_within*``)."""

    conf_rho: float
    conf_rho_lo: float
    conf_rho_hi: float
    conf_rho_sq: float
    conf_within: float
    conf_within_lo: float
    conf_within_hi: float


@dataclass(frozen=True)
class Confidence:
    """Mean label confidence per behaviour (``mean_conf``), its range, per-model :class:`ModelConfidence`
    and the reading of the largest ρ²."""

    conf_min: float
    conf_max: float
    conf_reading: str
    mean_conf: Any = field(repr=False)
    models: tuple = field(repr=False)
    ylabel: tuple = field(repr=False, default=("",))


def confidence_study(cfg, sample: Sample, props: Properties) -> Confidence:
    """Does label confidence explain distinguishability (across behaviours, and within them)?"""
    m1 = cfg.models[0]
    behaviors = sample.behaviors
    confidence = {b: np.array([r.label_confidence for r in data.load_persona(b)])[sample.emb[m1][b].indices]
                  for b in behaviors}
    mean_conf = np.array([confidence[b].mean() for b in behaviors])
    per_model = []
    for m in cfg.models:
        rho, lo, hi = stats.spearman_ci(mean_conf, props.tables[m]["distinguishability"], seed=cfg.seed)
        w, wlo, whi = stats.mean_ci(geo.margin_correlations(sample.items[m], confidence), seed=cfg.seed)
        per_model.append(ModelConfidence(rho, lo, hi, rho ** 2, w, wlo, whi))
    share = max(stats.spearman(mean_conf, props.tables[m]["distinguishability"]) ** 2 for m in cfg.models)
    return Confidence(float(mean_conf.min()), float(mean_conf.max()), verdicts.confidence_share_reading(share),
                      mean_conf, tuple(per_model), (f"distinguishability, {m1}",))
