"""alignment_dynamics.geometry_study and geometry_claims: the sections of book/distinguishability.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignment_dynamics import book, config, data, geometry_claims, geometry_study as gs, geometry_tails, verdicts
from alignment_dynamics.chapters.common import NAMED_BEHAVIORS


def test_tags_name_the_official_five_and_the_pairs():
    tags = gs.tags()
    assert [tags[b] for b in gs.OFFICIAL_FIVE] == ["B1", "B2", "B3", "B4", "B5"]
    assert (tags[gs.PAIR_A[0]], tags[gs.PAIR_B[1]]) == ("a1", "b2")
    assert gs.PAIR_A == ("acts-like-it-wants-to-help-humans-but-does-not-care-about-that", "risk-seeking")


def test_per_class_for_a_target_reliability():
    # halves of 8 statements with rho 0.7: the Spearman-Brown factor for 0.9 is 27/7, so ceil(8 * 27 / 7) = 31
    assert gs.per_class_for(0.7, 16) == 31
    assert gs.per_class_for(0.95, 16) == 16      # already reliable enough
    assert gs.per_class_for(-0.1, 16) == 16      # no positive reliability to extrapolate
    assert gs.per_class_for(0.5, None) == 0      # every statement


def test_nearest_reading():
    ref = {"gaussian": (2.0, 0.1), "laplace": (1.0, 0.1)}
    assert geometry_tails.nearest_reading({1: (1.9, ref), 2: (1.7, ref)}) == "closer to the Gaussian reference in all 2 cases"
    assert geometry_tails.nearest_reading({1: (1.9, ref), 2: (1.1, ref)}) == "closer to the Gaussian reference in 1 of 2 cases"


def test_sections_on_the_tiny_models(user_cache, one_thread):
    cfg = config.resolve("distinguishability", "smoke")
    m1, m2 = cfg.models
    sample = gs.embed_sample(cfg)
    assert sample.n_behaviors == len(NAMED_BEHAVIORS) and sample.per_class == str(cfg.per_class)
    assert sample.n_statements == sum(sample.statements.values()) == 2 * cfg.per_class * sample.n_behaviors
    assert sample.n_records == sum(len(data.load_persona(b)) for b in data.behaviors())
    assert sample.models[0].computed == sample.n_statements  # a fresh cache computes every row

    props = gs.property_study(cfg, sample)
    t = props.tables[m1]
    p1 = props.models[0]
    assert (p1.min, p1.max) == (t["distinguishability"].min(), t["distinguishability"].max())
    assert p1.split_rho == p1.split_distinguishability == props.split[m1]["distinguishability"]
    assert props.floor_shrink == props.n_full / (2 * cfg.per_class)
    assert p1.n_below_floor == int((t["distinguishability_sq_unbiased"] <= 0).sum())

    ranked = gs.ranking(cfg, props).table
    assert list(ranked["‖μ₊−μ₋‖"]) == sorted(t["distinguishability"], reverse=True)

    gaps = gs.priority_gap_study(cfg, sample, props)
    g1 = gaps.models[0]
    assert g1.sign_identity == 1.0                  # the gap has the sign of ‖b_i‖ − ‖b_j‖ (our algebra)
    assert g1.gap_a_lo <= g1.gap_a_hi and g1.gap_diff_lo <= g1.gap_diff_hi
    assert g1.gap_outcome == gs.OUTCOME_WORDS.get(gaps.verdicts[m1].verdict, "not resolvably different")
    heat = gs.gap_heatmap_data(cfg, sample, props, gaps)
    assert heat.gaps.shape == (sample.n_behaviors, sample.n_behaviors)

    five = gs.official_five(cfg, props)
    assert sorted(five.ranks[m1]) == sorted(set(five.ranks[m1])) and -1 <= five.models[0].five_rho <= 1
    by_model = [verdicts.rank_order(np.arange(1.0, 6.0), np.asarray(five.ranks[m], dtype=float), seed=cfg.seed)
                for m in cfg.models]
    assert five.verdict == verdicts.combine(by_model) and five.verdict.n == 10  # five behaviours, two models
    assert gaps.sign_reading == gs.sign_reading(1.0)

    constants = gs.theorem41_study(cfg, props)
    assert constants.step_reading == verdicts.step_reading(max(c.step for c in constants.models))
    assert constants.beta_prime_paper == pytest.approx(cfg.beta * np.sqrt(gs.D_PAPER))
    assert constants.models[0].c_n > 0 and constants.models[0].step == pytest.approx(
        cfg.eta * constants.models[0].beta_prime ** 2 * constants.models[0].c_n ** 2)

    tails = geometry_tails.tail_study(cfg, sample)
    assert set(tails.cases) == {(m, k) for m in cfg.models for k in geometry_tails.KINDS}
    assert tails.tail_verdict == geometry_tails.TAIL_VERDICT_TEXT[tails.verdict.verdict]
    assert 0 <= tails.models[0].tail_far <= 1 and tails.tail_far_gaussian <= tails.tail_far_laplace

    comparison = gs.model_comparison(cfg, props)
    assert comparison.rho_lo <= comparison.rho <= comparison.rho_hi and comparison.rel_n == len(comparison.names)

    conf = gs.confidence_study(cfg, sample, props)
    assert conf.conf_min <= conf.conf_max and conf.models[1].conf_rho_sq == pytest.approx(conf.models[1].conf_rho ** 2)

    maps = gs.figure2_maps(cfg, props)
    assert len(maps.maps) == 3 and maps.maps[0].shape[1] == 2
    assert sum(maps.counts[0]) == len(maps.masks[0])
    records = data.load_persona(maps.picked[0])  # the hover texts follow the map's rows
    positive_of = {r.statement: r.positive for r in records}
    assert [positive_of[t] for t in maps.texts[0]] == list(maps.masks[0]) and len(maps.texts) == 3

    book.begin("distinguishability")
    try:
        rows = geometry_claims.record_claims(cfg, sample, props, maps, gaps, tails, five, comparison)
        assert len(rows) == 6 and rows[-1]["verdict"] == "not testable here"
        stored = json.loads(book.glued()["distinguishability_claim_1"])
        assert stored["n"] == sample.n_behaviors and "Fisher-z" in stored["rule"]
        assert rows[3]["verdict"] == tails.verdict.verdict
    finally:
        book._state["slug"] = None


def test_sign_reading():
    assert gs.sign_reading(1.0).endswith("(checked on every defined pair)")
    assert "0.990" in gs.sign_reading(0.99) and "numerical problem" in gs.sign_reading(0.99)


def test_far_reading_follows_the_numbers():
    """The far-tail sentence is generated: out of reach when nothing gets to t, else placed per model."""
    from alignment_dynamics.geometry_tails import far_reading

    out = far_reading(3.5, {"m1": 0.0, "m2": 0.0}, 0.0, 2.9e-5, largest=3.1, largest_group=16)
    assert "out of reach at this sample size" in out and "3.10" in out and "16 statements" in out
    # Once the Gaussian reference reaches t the tail is readable, and each model is placed.
    both = far_reading(3.5, {"m1": 1e-4, "m2": 2e-4}, 1e-5, 5e-5, largest=5.0, largest_group=64)
    assert both.endswith("both above the Laplace reference (heavier than exponential)")
    mixed = far_reading(3.5, {"m1": 1e-6, "m2": 2e-5}, 1e-5, 5e-5, largest=5.0, largest_group=64)
    assert "m1 at or below the Gaussian reference" in mixed and "m2 between the Gaussian and the Laplace" in mixed
    # A measured tail above zero is never called out of reach (mutation: the data reach t, Gaussian does not).
    assert "out of reach" not in far_reading(3.5, {"m1": 1e-4}, 0.0, 5e-5, largest=4.0, largest_group=16)
    # The reason follows the group-size bound (g - 1)/sqrt(g): 3.75 for 16 statements, 2.04 for 6.
    assert "reach at most 3.75 sd" in out
    assert "cannot reach it at all" in far_reading(3.5, {"m1": 0.0}, 0.0, 1e-5, largest=2.0, largest_group=6)
    with pytest.raises(ValueError, match="largest_group"):
        far_reading(3.5, {"m1": 0.0}, 0.0, 1e-5, largest=2.0, largest_group=1)
    for bad in (float("nan"), -0.1):
        with pytest.raises(ValueError, match="finite probability"):
            far_reading(3.5, {"m1": bad}, 0.0, 1e-5, largest=3.0, largest_group=16)
    with pytest.raises(ValueError, match="no model"):
        far_reading(3.5, {}, 0.0, 1e-5, largest=3.0, largest_group=16)
