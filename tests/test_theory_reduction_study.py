"""The sections of book/dpo_last_layer.md (alignment_dynamics.theory.reduction_study): each returns the
numbers of its check of .reduction, in the chapter's order of the one generator, and a verdict that
turns to "differs" when the identity it checks is broken."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import alignment_dynamics as ad
from alignment_dynamics import theory as th
from alignment_dynamics.theory import reduction_study as rs


@pytest.fixture
def cfg():
    return ad.config.resolve("dpo_last_layer", "smoke")


def test_start_checks_its_configuration(cfg):
    assert rs.start(cfg).kw == {"d": cfg.d, "V": cfg.v, "n": cfg.n}
    with pytest.raises(ValueError, match="dpo_last_layer"):
        rs.start(ad.config.resolve("priority", "smoke"))


def test_sections_reproduce_the_checks_in_order(cfg):
    study = rs.start(cfg)
    cancel, grad, traj = rs.normaliser(study), rs.gradient(study), rs.trajectory(study)
    rng = np.random.default_rng(cfg.seed)
    kw = {"d": cfg.d, "V": cfg.v, "n": cfg.n}
    n = th.check_normaliser(rng, **kw, beta=cfg.beta)
    g = th.check_gradient_structure(rng, **kw, beta=cfg.beta)
    t = th.check_trajectory(rng, **kw, beta=cfg.beta, lr=cfg.lr, steps=cfg.steps)
    assert cancel.cancel_diff == max(n["margin_max_abs_diff"], n["log_odds_max_abs_diff"])
    assert cancel.lse == n["lse_mean_abs"] and grad.sv_ratio == g["second_singular_ratio"]
    assert grad.n_other == cfg.v - 2
    assert traj.traj_head == t["head_change_max_abs_diff"] and traj.rows_moved == 2
    assert traj.ln2_diff == th.check_loss_at_start(rng, **kw, beta=cfg.beta)
    assert len(traj.curves["t"]) == cfg.steps + 1
    for res in (cancel, grad, traj):
        assert res.verdict.verdict == "agrees"


def test_first_step_and_side_facts(cfg):
    study = rs.start(cfg)
    fs, side = rs.first_step(study), rs.side_facts(study)
    assert fs.fs_p == pytest.approx(cfg.p_unbalanced, abs=0.01)
    assert fs.fs_err < 1e-12 and fs.fs_err_unbal < 1e-12
    assert fs.fs_off_unbal > 0.01  # the balanced formula is wrong for unbalanced data
    assert isinstance(fs.table, pd.DataFrame) and list(fs.table.columns) == ["balanced batch", "unbalanced batch"]
    assert side.side_steps == min(cfg.steps, cfg.side_steps) and side.up_iff == 1.0
    assert fs.verdict.verdict == side.verdict.verdict == "agrees"


def test_the_cancel_reading_follows_the_difference(cfg, monkeypatch):
    assert "absent from the margin" in rs.normaliser(rs.start(cfg)).cancel_reading
    real = rs.check_normaliser
    monkeypatch.setattr(rs, "check_normaliser", lambda *a, **k: {**real(*a, **k), "margin_max_abs_diff": 1e-6})
    res = rs.normaliser(rs.start(cfg))
    assert res.verdict.verdict == "differs" and "does not confirm" in res.cancel_reading


def test_a_broken_trajectory_differs(cfg, monkeypatch):
    real = rs.check_trajectory

    def three_rows(*a, **k):
        return {**real(*a, **k), "rows_moved": 3}

    monkeypatch.setattr(rs, "check_trajectory", three_rows)
    assert rs.trajectory(rs.start(cfg)).verdict.verdict == "differs"


def test_breaks_sentence_follows_the_table(cfg, monkeypatch):
    study = rs.start(cfg)
    res = rs.breaks(study)
    assert res.as_derived and "holds exactly there" in res.official_setting
    assert res.momentum_dev < rs.TOL < res.adam_dev
    real = rs.check_breaks

    def decay_keeps_two_rows(*a, **k):
        t = real(*a, **k).copy()
        t.loc[t["scenario"] == "weight decay 0.01", "rows_touched"] = 2
        return t

    monkeypatch.setattr(rs, "check_breaks", decay_keeps_two_rows)
    res = rs.breaks(rs.start(cfg))
    assert not res.as_derived and "cannot confirm" in res.official_setting
