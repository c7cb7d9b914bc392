"""The sections of book/priority.md (alignment_dynamics.theory.priority_study): each reproduces its
computation of theory.priority, and its decisions turn when the statement they rest on is broken."""

from __future__ import annotations

import pytest

import alignment_dynamics as ad
from alignment_dynamics import theory as th
from alignment_dynamics.theory import priority_study as ps


@pytest.fixture(scope="module")
def cfg():
    return ad.config.resolve("priority", "smoke")


def test_sections_need_the_priority_configuration():
    with pytest.raises(ValueError, match="priority configuration"):
        ps.pairs(ad.config.resolve("dpo_last_layer", "smoke"))


def test_pairs(cfg, monkeypatch):
    res = ps.pairs(cfg)
    a = th.priority_pair(cfg.seed, **cfg.pair_a, d=cfg.d, n_per=cfg.n_per, beta_prime=cfg.beta_prime, lr=cfg.lr,
                         steps=cfg.steps, repeats=cfg.pair_repeats)
    assert res.a_gap == a["gap"] and res.a_p_lo == a["priority"][0] and res.b_repeats == cfg.pair_repeats
    assert res.b_p_lo < 0 and res.as_predicted and res.faster
    real = ps.priority_pair

    def fewer_rises(seed, **kw):
        out = real(seed, **kw)
        return {**out, "rise_count": [out["rise_count"][0] - 1, out["rise_count"][1]]}

    monkeypatch.setattr(ps, "priority_pair", fewer_rises)
    assert not ps.pairs(cfg).as_predicted


def test_unequal(cfg, monkeypatch):
    res = ps.unequal(cfg)
    ex = th.unequal_sizes_example(**cfg.unequal)
    assert res.uneq_diff_5 == ex["loss_i"][5] - ex["loss_j"][5] and res.uneq_n_j == cfg.unequal["n_j"]
    assert res.uneq_equal_cond > 0 > res.uneq_weighted_cond and res.j_leads
    monkeypatch.setattr(ps, "unequal_sizes_example",
                        lambda **kw: {**ex, "loss_i": ex["loss_j"], "loss_j": ex["loss_i"]})
    assert not ps.unequal(cfg).j_leads


def test_sweep_and_its_violation_count(cfg, monkeypatch):
    res = ps.sweep(cfg)
    assert res.n_instances == cfg.n_instances and res.holds and res.n_viol == 0
    assert res.holds_sentence.startswith("Every statement holds") and res.rise_ok
    assert res.rise_sentence.endswith("of a behaviour with a negative priority level its loss rose at the first step")
    assert res.sentence_1 == th.bound_sentence(res.bounds[0]) and res.first.shape[1] == 2
    real = ps.sweep_priority

    def one_violation(*a, **k):
        sw, first, gaps = real(*a, **k)
        sw = sw.copy()
        sw.loc[0, "viol_loss_upper"] = 0.1
        sw.loc[1, "viol_loss_rise"] = 0.1
        return sw, first, gaps

    monkeypatch.setattr(ps, "sweep_priority", one_violation)
    bad = ps.sweep(cfg)
    assert bad.n_viol == 2 and not bad.holds and bad.holds_sentence.startswith("Not every statement")
    assert not bad.rise_ok and bad.rise_sentence.startswith("on 1 instance a behaviour")
