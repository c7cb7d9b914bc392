"""The claims of `book/distinguishability.md`: each row's measured text and its verdict, decided by
the named rules of :mod:`alignment_dynamics.verdicts` from the section results of
:mod:`alignment_dynamics.geometry_study`."""

from __future__ import annotations

from . import book, verdicts
from .geometry_study import Five, Gaps, Maps, ModelComparison, Properties, Sample
from .geometry_tails import Tails


def record_claims(cfg, sample: Sample, props: Properties, maps: Maps, gaps: Gaps, tails: Tails, five: Five,
                  comparison: ModelComparison) -> list[dict]:
    """Record the chapter's six claim rows (:func:`alignment_dynamics.book.claim`) and return them."""
    m1, m2 = cfg.models
    t1 = props.tables[m1]
    split = {m: props.split[m]["distinguishability"] for m in cfg.models}
    g = dict(zip(cfg.models, gaps.models))
    rows = [
        book.claim("Behaviours differ in preference distinguishability, and the differences are stable",
                   f"split-half rank correlation {split[m1]:.2f} ({m1}), {split[m2]:.2f} ({m2}); "
                   f"distinguishability {t1['distinguishability'].min():.2f}–{t1['distinguishability'].max():.2f} ({m1})",
                   verdicts.stable_ranking(split, sample.n_behaviors)),
        book.claim("UMAP of last-layer embeddings shows behaviours whose positive and negative statements separate "
                   "to different degrees (Figure 2)",
                   f"d′ = {maps.low_dprime:.2f} (least), {maps.mid_dprime:.2f} (median), {maps.high_dprime:.2f} "
                   f"(most distinguishable; {m1})",
                   verdicts.ordered_dprime(maps.low_dprime, maps.high_dprime, maps.counts[0], maps.counts[2])),
        book.claim("Pair (a) of Figure 5 has a larger priority gap than pair (b)",
                   "; ".join(f"{m}: G(a) = {g[m].gap_a:.3f}, G(b) = {g[m].gap_b:.3f}, |G(a)| {g[m].gap_outcome}"
                             for m in cfg.models) + f" (bootstrap, {cfg.per_class or 'all'} statements per class)",
                   verdicts.combine([gaps.verdicts[m] for m in cfg.models])),
        book.claim("Embeddings of preferred and non-preferred data are α-subexponential",
                   "tail exponent k (1 = exponential, ~2 = Gaussian) " + "; ".join(
                       f"{m}, {kind.replace('_', ' ')}: {meas:.2f}" for (m, kind), (meas, _) in tails.cases.items()),
                   tails.verdict),
        book.claim("The official code's Behaviors 1–5 run from least to most distinguishable",
                   f"rank correlation with the official order {five.models[0].five_rho:.2f} ({m1}), "
                   f"{five.models[1].five_rho:.2f} ({m2})",
                   five.verdict,
                   source="official code; our reading"),
        book.claim("Aligned models may be more exposed to misalignment (here: does the instruction-tuned model "
                   "separate preferences more?)",
                   f"median ratio of debiased relative distinguishability {m1}/{m2} = {comparison.rel_ratio:.2f} "
                   f"[{comparison.rel_lo:.2f}, {comparison.rel_hi:.2f}]; rank correlation across behaviours "
                   f"{comparison.rho:.2f}", "not testable here"),
    ]
    return rows
