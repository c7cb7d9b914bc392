"""alignment_dynamics.persona_study: the sections of book/persona_data.md as result objects."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from alignment_dynamics import book, config, data, persona_study as ps
from alignment_dynamics.validate import InputError


@pytest.fixture(scope="module")
def summary():
    return ps.dataset_summary()


def test_dataset_summary_counts_follow_the_table(summary):
    t = summary.table
    assert summary.n_behaviors == len(t) == len(data.behaviors())
    assert summary.n_records == int(t["records"].sum())
    assert summary.n_full == int((t["records"] == ps.FULL_FILE).sum())
    assert summary.min_records == int(t["records"].min())
    assert len(summary.short_files) == summary.n_behaviors - summary.n_full
    assert (summary.short_files["records"] < ps.FULL_FILE).all()
    assert summary.fingerprint == data.fingerprint("anthropic-persona")[:16]


def test_balance_text_says_whether_every_file_is_balanced():
    assert "right half the time in every behaviour" in ps.balance_text(135, 135)
    other = ps.balance_text(130, 135)
    assert "5" in other and "not right" in other


def test_named_behaviors_finds_the_official_indices(summary):
    named = ps.named_behaviors(summary)
    assert (named.index_buddhism, named.index_average_util) == (100, 108)
    assert named.official_order and "not the indices" not in named.order_text
    assert list(named.table.index) == sorted(ps.NAMED_ROLES)
    assert named.table.loc[87, "behavior"] == "openness" and named.table.loc[87, "role"] == "Figure 1"
    with pytest.raises(InputError, match="out of range"):
        ps.named_behaviors(summary, {135: "beyond the list"})


def test_named_behaviors_notices_a_case_folding_order(summary, monkeypatch):
    folded = sorted(data.behaviors(), key=str.casefold)  # what a locale-aware sort would give
    monkeypatch.setattr(data, "behaviors", lambda: folded)
    named = ps.named_behaviors(summary)
    assert not named.official_order and "not the indices" in named.order_text
    assert named.index_average_util < named.index_buddhism


def test_confidence_texts_follow_the_numbers():
    floor, cls = ps.confidence_texts(0.51, 0.80, 0.90)
    assert "holds" in floor and cls.startswith("Negative")
    floor, cls = ps.confidence_texts(0.49, 0.90, 0.80)
    assert "below" in floor and cls.startswith("Positive")
    assert "equally" in ps.confidence_texts(0.6, 0.7, 0.7)[1]


def test_label_confidence_summarises_both_classes():
    res = ps.label_confidence(["openness"])
    pos, neg = data.label_confidence_by_class(["openness"])
    both = np.concatenate([pos, neg])
    assert res.conf_min == both.min() and res.conf_median == np.median(both)
    assert res.conf_above_09 == pytest.approx((both >= 0.9).mean())
    assert res.conf_mean_pos == pytest.approx(pos.mean()) and res.conf_mean_neg == pytest.approx(neg.mean())


def test_pair_demo_flips_the_answers():
    demo = ps.pair_demo("openness")
    assert demo.flipped.chosen == demo.pair.rejected and demo.flipped.rejected == demo.pair.chosen
    assert demo.flipped.label == -demo.pair.label
    assert repr(demo.pair.prompt) in demo.text and demo.text.count("\n") == 2


def test_split_demo_uses_the_pair_stream():
    res = ps.split_demo("openness", seed=1234)
    assert res.n_train + res.n_test == len(data.load_persona("openness"))
    assert res.second == data.behaviors()[ps.SECOND_PAIR_INDEX[1]]
    alone = data.persona_split(res.second, seed=1234)
    _, two = data.two_behavior_split(data.behaviors()[0], res.second, seed=1234)
    assert res.test_overlap == len(set(alone.test) & set(two.test)) < res.n_test_b


def test_logit_reading_uses_both_limits():
    assert ps.logit_reading(1e-6, 5.0) == "our h reproduces the logits; those features are not the ones that produce the logits"
    assert "misses" in ps.logit_reading(10 * ps.LOGIT_TOL, 5.0)
    assert "come close" in ps.logit_reading(1e-6, ps.LOGIT_OFF / 2)


def test_agreement_is_the_share_of_signs_that_match():
    assert ps.agreement(np.array([1.0, -2.0, 3.0, -0.5]), np.array([1, -1, 1, 1])) == 0.75
    with pytest.raises(InputError, match="one length"):
        ps.agreement(np.ones(3), np.ones(2))


@pytest.fixture
def smoke_cfg():
    return config.resolve("persona_data", "smoke")


def test_model_sections_on_the_tiny_models(user_cache, one_thread, smoke_cfg):
    cfg = smoke_cfg
    tokens = ps.token_summary(cfg, ps.pair_demo(cfg.behavior).pair.prompt)
    assert tokens.single_tokens and tokens.n_token_prompts == 2 * cfg.tokens_per_class * len(data.behaviors())
    assert tokens.first_tokens.startswith(cfg.models[0] + " [")
    logits = ps.logit_check(cfg)
    assert logits.identity_holds and logits.logit_gap < ps.LOGIT_TOL
    demo = ps.embed_demo(cfg)
    assert demo.demo_n == 2 * cfg.embed_per_class and set(demo.emb) == set(cfg.models)
    assert demo.h_norm == pytest.approx(np.linalg.norm(demo.emb[cfg.models[0]].h, axis=1).mean())
    margins = ps.reference_margins(cfg, demo)
    pos, neg = margins.margins[cfg.models[0]]
    assert len(pos) + len(neg) == demo.demo_n and 0.0 <= margins.agree_first <= 1.0


def test_record_claims_decides_from_the_numbers(summary, smoke_cfg):
    book.begin("persona_data")
    try:
        named = ps.named_behaviors(summary)
        shown = ps.Examples(1234, ["a"], ["b"])
        tokens = ps.TokenSummary(1, 1.0, False, "m: 1 / 2", "", "", [], None)
        logits = ps.LogitCheck(1e-6, 5.0, True, True, "", None)
        unbalanced = dataclasses.replace(summary, n_balanced=summary.n_behaviors - 1)
        rows = ps.record_claims(smoke_cfg, unbalanced, named, shown, tokens, logits)
        assert [r["verdict"] for r in rows] == ["agrees", "differs", "agrees", "differs", "agrees"]
        assert json.loads(book.glued()["persona_data_claim_2"])["verdict"] == "differs"
    finally:
        book._state["slug"] = None
