"""The sections of book/accuracy.md (alignment_dynamics.theory.accuracy_study): each reproduces its
computation of theory.accuracy, and its decisions and sentences turn when a statement is broken."""

from __future__ import annotations

import pytest

import alignment_dynamics as ad
from alignment_dynamics import theory as th
from alignment_dynamics.theory import accuracy_study as acs


@pytest.fixture(scope="module")
def cfg():
    return ad.config.resolve("accuracy", "smoke")


def test_sections_need_the_accuracy_configuration():
    with pytest.raises(ValueError, match="accuracy configuration"):
        acs.curves(ad.config.resolve("priority", "smoke"))


def test_curves(cfg, monkeypatch):
    res = acs.curves(cfg)
    cs = th.accuracy_curves(cfg.seed, d=cfg.d, n=cfg.n, beta_prime=cfg.beta_prime, lr_frac=cfg.lr_frac,
                            steps=cfg.steps, deltas=cfg.curve_deltas, **cfg.curve_instance)
    assert res.curve_acct_hi == cs[-1]["accuracy"][-1] and res.curve_acc0_lo == min(c["accuracy"][0] for c in cs)
    assert res.curve_deltas == "0.25, 0.5, 1, 2" and res.holds and res.measured_order
    # reverse the instances: the measured order must then fail
    monkeypatch.setattr(acs, "accuracy_curves", lambda *a, **k: cs[::-1])
    assert not acs.curves(cfg).measured_order


def test_sweep_and_its_sentences(cfg, monkeypatch):
    res = acs.sweep(cfg)
    assert res.n_instances == cfg.n_instances and res.n_viol == 0 and res.mc_ok
    assert res.det_sentence.startswith("Every deterministic") and res.mc_sentence.startswith("The expectations hold")
    assert res.sentence_3 == th.bound_sentence(res.bounds[2]) and len(res.tightness_x) == res.n_instances
    real = acs.sweep_accuracy

    def broken(*a, **k):
        sw = real(*a, **k).copy()
        sw.loc[0, "viol_official"] = 0.2
        sw.loc[1, "mc_loss_margin"] = -1.0
        return sw

    monkeypatch.setattr(acs, "sweep_accuracy", broken)
    bad = acs.sweep(cfg)
    assert bad.n_viol == 1 and not bad.mc_ok
    assert bad.det_sentence.startswith("A deterministic statement fails on 1") and bad.mc_sentence.startswith("Not every")
