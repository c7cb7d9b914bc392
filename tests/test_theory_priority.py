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


def test_sweep_every_statement_holds():
    df, first = th.sweep_priority(5, 16, steps=30, repeats=4)
    viol = df[["viol_margin_band", "viol_loss_lower", "viol_loss_upper", "viol_loss_order", "viol_loss_rise"]]
    assert (viol <= 0).all().all()
    assert (df["first_step_rel_err"] < 1e-10).all()
    assert (df["sign_identity_rel_err"] < 1e-10).all()
    assert (df["first_order_held"] == df["first_order_claims"]).all()
    np.testing.assert_allclose(first[:, 0], first[:, 1], rtol=1e-9, atol=1e-12)


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
