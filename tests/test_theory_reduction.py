"""Last-layer DPO is logistic regression: every claim of book/dpo_last_layer.md, checked in float64
against the full-softmax reference (alignment_dynamics.dpo.reference), with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import theory as th


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normaliser_cancels_at_a_dense_head(seed):
    res = th.check_normaliser(seed, d=16, V=50, n=400)
    assert res["margin_max_abs_diff"] < 1e-12
    assert res["log_odds_max_abs_diff"] < 1e-12
    assert res["lse_mean_abs"] > 1.0  # the log-sum-exp is large, and still absent from the margin


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_has_two_opposite_rows_and_rank_one(seed):
    res = th.check_gradient_structure(seed, d=16, V=50, n=400)
    assert res["other_rows_max_abs"] == 0.0
    assert res["yes_plus_no_max_abs"] < 1e-15
    assert res["second_singular_ratio"] < 1e-12
    assert res["closed_form_max_abs_diff"] < 1e-14
    assert res["grad_max_abs"] > 1e-3  # not a vacuous zero gradient


def test_loss_at_reference_is_ln2():
    assert th.check_loss_at_start(0, d=16, V=50, n=400) < 1e-15


def test_200_step_trajectory_equals_logistic_regression():
    res = th.check_trajectory(0, d=16, V=50, n=400, beta=0.5, lr=1.0, steps=200)
    assert res["rows_moved"] == 2
    assert res["head_change_max_abs_diff"] < 1e-12
    assert res["final_head_max_abs_diff"] < 1e-12
    assert res["loss_max_abs_diff"] < 1e-12
    assert res["accuracy_max_abs_diff"] == 0 and res["reward_accuracy_max_abs_diff"] == 0
    assert res["head_change"][-1] > 1.0  # the head really moved
    assert res["loss"][-1] < 0.5 * math.log(2)


def test_momentum_keeps_two_rows_and_follows_heavy_ball():
    res = th.check_trajectory(1, d=16, V=50, n=200, beta=0.5, lr=0.5, steps=50, momentum=0.9)
    assert res["rows_moved"] == 2
    assert res["head_change_max_abs_diff"] < 1e-12 and res["final_head_max_abs_diff"] < 1e-12


@pytest.mark.parametrize("p_yes", [0.5, 0.3])
def test_first_step_formula(p_yes):
    res = th.check_first_step(3, d=16, V=50, n=400, beta=0.1, lr=0.5, p_yes=p_yes)
    assert res["rel_err"] < 1e-12
    assert res["W1_minus_closed_max_abs"] < 1e-15
    if p_yes == 0.5:
        assert res["rel_err_balanced"] < 1e-12
        np.testing.assert_allclose(res["measured"], math.sqrt(2) * 0.5 * 0.1 / 4 * res["distinguishability"],
                                   rtol=1e-12)
    else:  # the balanced formula is then wrong: the class balance enters the first step
        assert res["rel_err_balanced"] > 1e-3


def test_side_facts():
    res = th.check_side_facts(0, d=16, V=50, n=400, steps=20)
    assert res["other_log_ratio_max_change"] < 1e-12
    assert res["mean_logit_max_change"] < 1e-12
    assert res["chosen_up_iff_margin_positive"] == 1.0
    # both signs of the margin occur, so the "iff" above is exercised in both directions
    assert 0 < res["frac_margin_positive"] < 1


def test_when_the_reduction_breaks():
    tab = th.check_breaks(0, d=16, V=50, n=200, steps=10).set_index("scenario")
    assert tab.loc["paper setting (shared context, one token)", "rows_touched"] == 2
    assert tab.loc["paper setting (shared context, one token)", "rank"] == 1
    for name in ("distinct contexts for chosen and rejected", "two-token responses (answer + EOS)",
                 "weight decay 0.01"):
        assert tab.loc[name, "rows_touched"] == 50 and tab.loc[name, "rank"] > 1
    assert tab.loc["momentum 0.9", "rows_touched"] == 2 and tab.loc["momentum 0.9", "max_dev_from_logistic"] < 1e-12
    assert tab.loc["Adam (lr / 100)", "rows_touched"] == 2 and tab.loc["Adam (lr / 100)", "rank"] == 1
    assert tab.loc["Adam (lr / 100)", "max_dev_from_logistic"] > 1e-3
    assert tab.loc["weight decay 0.01", "max_dev_from_logistic"] > 1e-3


def test_first_step_norm_helpers_agree():
    rng = np.random.default_rng(5)
    H = rng.standard_normal((64, 7))
    s = np.repeat([1.0, -1.0], 32)
    v1 = th.first_step_v(H, s, beta=0.3, lr=0.7)
    dist = np.linalg.norm(H[:32].mean(0) - H[32:].mean(0))
    np.testing.assert_allclose(th.head_change(v1), th.first_step_norm_balanced(0.7, 0.3, dist), rtol=1e-13)
    np.testing.assert_allclose(th.logistic_gd(H, s, beta=0.3, lr=0.7, steps=1)[1], v1, rtol=1e-13)


def test_bad_inputs_raise_clear_errors():
    H = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels s must be"):
        th.logistic_gd(H, np.array([1, 0, 1, -1]), beta=1, lr=1, steps=1)
    with pytest.raises(ValueError, match="labels but H has"):
        th.logistic_gd(H, np.ones(3), beta=1, lr=1, steps=1)
    with pytest.raises(ValueError, match="beta must be a positive"):
        th.logistic_gd(H, np.ones(4), beta=0, lr=1, steps=1)
    with pytest.raises(ValueError, match="steps must be"):
        th.logistic_gd(H, np.ones(4), beta=1, lr=1, steps=-1)
    with pytest.raises(ValueError, match="momentum"):
        th.logistic_gd(H, np.ones(4), beta=1, lr=1, steps=1, momentum=1.0)
    with pytest.raises(ValueError, match="two distinct token ids"):
        th.answer_direction(10, 3, 3)
    with pytest.raises(ValueError, match="V must exceed"):
        th.reduction_problem(0, V=5)
    with pytest.raises(TypeError, match="rng must be"):
        th.reduction_problem("seed")
