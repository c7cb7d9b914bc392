"""The sections of book/update_rate.md (alignment_dynamics.theory.update_rate_study): each reproduces its
computation of theory.update_rate, and its decisions and sentences turn when a statement is broken."""

from __future__ import annotations

import numpy as np
import pytest

import alignment_dynamics as ad
from alignment_dynamics import theory as th
from alignment_dynamics.theory import update_rate_study as us


@pytest.fixture(scope="module")
def cfg():
    return ad.config.resolve("update_rate", "smoke")


def test_sections_need_the_update_rate_configuration():
    with pytest.raises(ValueError, match="update_rate configuration"):
        us.tails(ad.config.resolve("accuracy", "smoke"))


def test_tails_bernstein_margin(cfg):
    t = us.tails(cfg)
    assert t.holds and t.tail_excess <= 1e-8 and t.tail_excess_small > 0
    b = us.bernstein(cfg)
    assert b.bern_trials == cfg.bern_trials and b.bern_loose_half >= 1 and b.bern_loose_small >= 1
    m = us.margin(cfg)
    ref = th.check_margin_concentration(np.random.default_rng(cfg.seed), dims=tuple(cfg.margin_dims), n=cfg.margin_n,
                                        delta=cfg.margin_delta, beta_prime=cfg.beta_prime, lr=cfg.lr,
                                        n_fresh=cfg.margin_fresh)
    assert m.margin_exact_err == ref["exact_rel_err"].max() and m.holds
    assert (m.margin_dmin, m.margin_dmax) == (min(cfg.margin_dims), max(cfg.margin_dims))


def test_sgd_check_and_its_sentence(cfg, monkeypatch):
    res = us.sgd_check(cfg)
    assert res.holds and res.sgd_first_z <= us.MC_SE and res.sgd_sentence.startswith("every step")
    assert res.sgd_n == 2 * cfg.sgd_check["per_class"] and res.sgd_repeats == cfg.sgd_check_repeats
    # a bound too small by half must fail the check
    real = us.sgd_fluctuation_bound
    monkeypatch.setattr(us, "sgd_fluctuation_bound", lambda *a, **k: 0.5 * real(*a, **k))
    bad = us.sgd_check(cfg)
    assert not bad.holds and bad.sgd_sentence.startswith("not every step")


def test_curves(cfg):
    res = us.curves(cfg)
    cs = th.update_rate_curves(cfg.seed, d=cfg.d, n=cfg.n, beta_prime=cfg.beta_prime, lr=cfg.lr, steps=cfg.steps,
                               deltas=cfg.curve_deltas, repeats=cfg.curve_repeats, eps1=cfg.eps, eps2=cfg.eps)
    assert res.curve_ratio == cs[-1]["measured"][-1] / cs[0]["measured"][-1]
    assert res.curve_ratio > 1 and res.holds and res.curve_deltas == "0.25, 0.5, 1, 1.5"


def test_sweep_and_its_sentences(cfg, monkeypatch):
    res = us.sweep(cfg)
    assert res.n_instances == cfg.n_instances and res.holds and res.n_viol == 0 and res.mc_ok
    assert res.cantelli_k == pytest.approx(np.sqrt(2 / cfg.eps - 1))
    assert res.sentence_6 == th.bound_sentence(res.bounds[5]) and -1 <= res.rank_corr <= 1
    real = us.sweep_update_rate

    def broken(*a, **k):
        sw = real(*a, **k).copy()
        sw.loc[0, "viol_band_upper"] = 0.3
        sw.loc[0, "hp_fail_rate"] = sw.loc[0, "hp_fail_allowed"] + 0.1
        return sw

    monkeypatch.setattr(us, "sweep_update_rate", broken)
    bad = us.sweep(cfg)
    assert bad.n_viol == 1 and not bad.mc_ok and not bad.holds
    assert bad.det_sentence.startswith("A deterministic statement fails") and bad.mc_sentence.startswith("Not every")
