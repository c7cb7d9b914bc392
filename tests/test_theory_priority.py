"""The priority statements of book/priority.md, asserted on every sampled instance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import theory as th


def test_sign_identity_and_gap_properties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = int(rng.integers(2, 20))
        bi, bj = rng.standard_normal(d) * rng.uniform(0.1, 3), rng.standard_normal(d) * rng.uniform(0.1, 3)
        lhs, rhs = th.sign_identity(bi, bj)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-12)
        assert abs(lhs) >= abs(np.linalg.norm(bi) - np.linalg.norm(bj)) - 1e-12
        g = th.priority_gap(bi, bj)
        assert g == pytest.approx(-th.priority_gap(bj, bi), rel=1e-12, abs=1e-15)
        assert np.sign(g) == np.sign(np.linalg.norm(bi) - np.linalg.norm(bj))


def test_priority_levels_refuse_cancelling_behaviours():
    b = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="undefined"):
        th.priority_levels([b, -b])
    with pytest.raises(ValueError, match="at least two"):
        th.priority_levels([b])
    with pytest.raises(ValueError, match="weights must be"):
        th.priority_levels([b, 2 * b], weights=[0.5, 0.6])


HEADLINE_VIOL = ["viol_gap_slowdown", "viol_first_step_order"]


def test_sweep_every_statement_holds():
    df, first, gap = th.sweep_priority(5, 16, steps=30, repeats=4)
    viol = df[["viol_margin_band", "viol_loss_lower", "viol_loss_upper", "viol_loss_order", "viol_loss_rise"]
              + HEADLINE_VIOL]
    assert (viol <= 0).all().all()
    assert (df["first_step_rel_err"] < 1e-10).all()
    assert (df["sign_identity_rel_err"] < 1e-10).all()
    assert (df["first_order_held"] == df["first_order_claims"]).all()
    np.testing.assert_allclose(first[:, 0], first[:, 1], rtol=1e-9, atol=1e-12)
    assert (~df["equal_sizes"]).any() and df["equal_sizes"].any()  # both regimes are exercised
    assert np.all(gap[:, 0] <= gap[:, 1] + 1e-12)
    rows = {r["bound"]: r for r in th.bound_summary_rows("priority", df)}
    assert all(th.goal_met(r) for r in rows.values()), rows
    for name, _ in th.HEADLINE_BOUNDS["priority"]:
        full = df[f"nonvac_{name}"] == 1
        assert full.any(), name
        tight = df.loc[full, f"tight_{name}"]
        assert ((tight > 0) & (tight < 1)).all(), name


def test_mutated_headline_bounds_fail():
    df, _, _ = th.sweep_priority(5, 16, steps=30, repeats=4, mutate=0.5)
    for col in HEADLINE_VIOL:
        assert (df[col] > 0).any(), col


def test_unequal_sizes_counterexample():
    """The issue's counterexample: n_i = 20, n_j = 180, ||b_i|| = 4.42 > ||b_j|| = 3.57, cosine 0.1. The
    equal-weight reading (||b_i||^2 > ||b_j||^2) predicts i first; the weighted condition predicts j first,
    and j's loss is indeed lower at t = 1, 5 and 20."""
    d = 2
    b_i = np.array([4.42, 0.0])
    b_j = 3.57 * np.array([0.1, math.sqrt(1 - 0.01)])
    w_i, w_j = 20 / 200, 180 / 200
    assert b_i @ b_i > b_j @ b_j
    cond = th.pair_condition(b_i, b_j, w_i, w_j)
    bbar = w_i * b_i + w_j * b_j
    np.testing.assert_allclose(cond, bbar @ (b_i - b_j), rtol=1e-12)
    assert cond < 0
    # equal weights: the condition is half the difference of squared norms
    np.testing.assert_allclose(th.pair_condition(b_i, b_j, 0.5, 0.5), 0.5 * (b_i @ b_i - b_j @ b_j), rtol=1e-12)
    # train on exact data: each behaviour is two points +- b/2 (class-balanced), sizes 20 and 180
    Hs, ss = [], []
    for b, n in ((b_i, 20), (b_j, 180)):
        Hs.append(np.concatenate([np.tile(b / 2, (n // 2, 1)), np.tile(-b / 2, (n // 2, 1))]))
        ss.append(np.concatenate([np.ones(n // 2), -np.ones(n // 2)]))
    H, s = np.concatenate(Hs), np.concatenate(ss)
    beta, lr = 0.64 / math.sqrt(d), 0.1
    v = th.logistic_gd(H, s, beta=beta, lr=lr, steps=20)
    L_i = th.dpo_loss_from_v(v, Hs[0], ss[0], beta)
    L_j = th.dpo_loss_from_v(v, Hs[1], ss[1], beta)
    for t in (1, 5, 20):
        assert L_i[t] > L_j[t]
    with pytest.raises(ValueError, match="sum to 1"):
        th.pair_condition(b_i, b_j, 0.5, 0.6)


def test_gap_slowdown_bound_and_equality_construction():
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = int(rng.integers(2, 12))
        bi, bj = rng.standard_normal(d) * rng.uniform(0.5, 3), rng.standard_normal(d) * rng.uniform(0.1, 3)
        if np.linalg.norm(bi) < np.linalg.norm(bj):
            bi, bj = bj, bi
        assert th.priority_gap(bi, bj) <= th.first_step_slowdown(bi, bj) + 1e-12
    # equality: b_j a non-negative multiple of b_i (the bound cannot be improved)
    b = rng.standard_normal(5)
    for c in (0.0, 0.3, 0.9, 1.0):
        np.testing.assert_allclose(th.priority_gap(b, c * b), th.first_step_slowdown(b, c * b), atol=1e-12)
        np.testing.assert_allclose(th.priority_gap(b, c * b), 1 - c, atol=1e-12)


def test_opposed_weak_behaviour_is_unlearned_first():
    res = th.priority_pair(3, d=32, n_per=100, beta_prime=0.64, lr=0.5, steps=20, deltas=[0.5, 1.2],
                           cos=[-0.7, 0.9], repeats=4)
    assert res["priority"][0] < 0 < res["priority"][1]
    assert res["rise_count"][0] == 4 and res["rise_count"][1] == 0
    assert res["first_step_err"] < 1e-12
    assert res["lr_threshold"] > 0 and res["lr_limit"] > 0


def test_margin_change_exact_at_first_step_direct():
    rng = np.random.default_rng(8)
    beh = th.make_behaviours(rng, 12, [0.3, 0.9, 0.6], cos=[0.2, 0.8, -0.5])
    beta, lr = 0.2, 0.7
    out = th.priority_run(beh, rng, n_per=40, beta=beta, lr=lr, steps=1, repeats=2)
    for r in range(2):
        for i in range(3):
            pred = th.margin_change_prediction(1, lr=lr, beta=beta, bbar=out["bbar"][r], b_i=out["b"][r, i])
            np.testing.assert_allclose(out["margin_change"][r, 1, i], pred, rtol=1e-12, atol=1e-14)
            # the lower bound ln 2 - (beta/2) v^T b_i does not involve G_i (pass zeros)
            lo, _ = th.loss_bounds_from_v(out["v"][r, 1], beta=beta, b_i=out["b"][r, i], G_i=np.zeros((12, 12)))
            assert lo <= out["loss"][r, 1, i] + 1e-15


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="at least two behaviours"):
        th.make_behaviours(0, 4, [1.0])
    with pytest.raises(ValueError, match="cos must be"):
        th.make_behaviours(0, 4, [1.0, 1.0], cos=[0.1, 2.0])
    beh = th.make_behaviours(0, 4, [1.0, 1.0])
    with pytest.raises(ValueError, match="n_per must be an even"):
        th.priority_run(beh, 0, n_per=3, beta=0.1, lr=0.1, steps=1, repeats=1)
