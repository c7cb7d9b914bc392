"""The accuracy statements of book/accuracy.md, asserted on every sampled instance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import theory as th


HEADLINE_VIOL = ["viol_guarantee_horizon", "viol_guarantee_post", "viol_loss_prior", "viol_guarantee_prior"]


@pytest.fixture(scope="module")
def sweep():
    return th.sweep_accuracy(11, 16, steps=40, repeats=8)


def test_sweep_every_bound_holds(sweep):
    df = sweep
    det = df[["viol_lemma", "viol_reward", "viol_official", "viol_comparator"] + HEADLINE_VIOL]
    assert (det <= 0).all().all()
    assert (df["first_step_rel_err"] < 1e-10).all()
    assert (df["mc_official_margin"] >= 0).all() and (df["mc_reward_margin"] >= 0).all()
    assert (df["mc_unconditional_margin"] >= 0).all()
    assert (df["mc_loss_margin"] >= 0).all()
    assert (df["prob_fail_max"] <= df["prob_fail_allowed"]).all()


def test_mutated_headline_bounds_fail():
    df = th.sweep_accuracy(11, 16, steps=40, repeats=8, mutate=0.5)
    for col in HEADLINE_VIOL:
        assert (df[col] > 0).any(), col


def test_headline_bounds_bind(sweep):
    rows = {r["bound"]: r for r in th.bound_summary_rows("accuracy", sweep)}
    assert all(th.goal_met(r) for r in rows.values()), rows
    comp = {r["bound"]: r for r in th.bound_summary_rows("accuracy", sweep, companions=True)}
    assert comp["guarantee_prior"]["nonvacuous_share"] >= 0.5  # at the last step: binds often, but loosely
    assert (sweep["t_star_median"] >= 2).all()  # the horizon is never the exact first step
    assert (sweep["boundary_best"] > 0.3).mean() >= 0.5  # the boundary route is strong early in training
    for name, _ in th.HEADLINE_BOUNDS["accuracy"]:
        full = sweep[f"nonvac_{name}"] == 1
        assert full.any(), name
        tight = sweep.loc[full, f"tight_{name}"]
        assert ((tight > 0) & (tight <= 1)).all(), name
        assert (tight < 1).any(), name


def test_sharp_margin_remainder_bounds_the_true_remainder():
    rng = np.random.default_rng(9)
    model = th.make_two_class(rng, 16, delta=0.6, center_norm=1.2, decay=0.7)
    H, s = model.sample(rng, 40, 40)
    beta, lr, T = 0.16, 2.0, 30
    v = th.logistic_gd(H, s, beta=beta, lr=lr, steps=T)
    st = th.sample_statistics(H, s)
    t = np.arange(T + 1.0)
    rho = th.remainder_bound(t, lr=lr, beta=beta, mhat_norm=np.linalg.norm(st["m_hat"]), G_norm=st["G_norm"], M1=st["M1"])
    rem = th.margin_remainder(H, st["m_hat"], t, lr=lr, beta=beta, rho=rho)  # (T+1, n)
    R = v - lr * beta * t[:, None] * st["m_hat"][None] / 2
    true = np.abs(2 * R @ H.T)
    assert np.all(true <= rem * (1 + 1e-9) + 1e-15)
    cs = 2 * rho[:, None] * np.linalg.norm(H, axis=-1)[None]
    assert np.all(rem <= cs + 1e-15) and np.any(rem[2:] < 0.9 * cs[2:])  # sharper somewhere
    assert np.any(true[2:] > 0.5 * rem[2:])  # and not loose by construction


def test_unconditional_bound_adds_the_step_condition():
    m = th.make_two_class(0, 16, delta=1.0)
    pb = th.AccuracyProblem(m, np.zeros(16), 40, 40, 0.1, 0.1)
    t = np.arange(5)
    p = th.kappa_tail_bound(pb)
    assert 0 < p < 1
    np.testing.assert_allclose(th.unconditional_error_bound(pb, t),
                               np.minimum(th.expected_error_bound(pb, t) + p, 1.0))
    # a step beyond the limit 2 / (beta^2 E||h||^2): no control of kappa, the bound is 1
    big = th.AccuracyProblem(m, np.zeros(16), 40, 40, 0.1, 1e4)
    assert th.kappa_tail_bound(big) == 1.0


def test_boundary_guarantee_direct():
    """The decision-boundary guarantee is a lower bound at every step, exact at t = 0."""
    rng = np.random.default_rng(6)
    m = th.make_two_class(rng, 16, delta=1.0)
    a = th.random_offset(rng, m, 2.0, -0.3)
    H, s = m.sample(rng, 60, 60)
    beta, lr = 0.16, 2.0
    v = th.logistic_gd(H, s, beta=beta, lr=lr, steps=30)
    acc = th.linear_accuracy(th.decision_direction(a, v), H, s)
    st = th.sample_statistics(H, s)
    t = np.arange(31)
    rho = th.remainder_bound(t, lr=lr, beta=beta, mhat_norm=np.linalg.norm(st["m_hat"]), G_norm=st["G_norm"],
                             M1=st["M1"])
    g = th.boundary_guarantee(a, st["m_hat"], H, s, t, lr=lr, beta=beta, rho=rho)
    assert np.all(acc >= g - 1e-15) and g[0] == acc[0]
    assert g[1] > acc[0]  # it sees the first step's progress


def test_guarantee_is_informative_on_an_easy_instance():
    """On well-separated data the bound is far from vacuous, and still below the measured accuracy."""
    curves = th.accuracy_curves(1, d=64, n=256, beta_prime=0.64, lr_frac=0.5, steps=100, deltas=[2.0], repeats=4)
    c = curves[0]
    assert 1 - c["bound_error"][-1] > 0.5
    assert c["error"][-1] <= c["bound_error"][-1]
    assert c["loss"][-1] <= c["bound_loss"][-1]
    assert np.all(np.diff(c["bound_loss"][1:]) <= 1e-12)  # the loss bound does not increase with t


def test_tail_lemma_on_fixed_classifiers():
    rng = np.random.default_rng(2)
    for family in th.FAMILIES:
        m = th.make_two_class(rng, 16, delta=1.0, family=family)
        pi = {+1: 0.4, -1: 0.6}
        for _ in range(20):
            theta = rng.standard_normal(16) + 3 * m.b / np.linalg.norm(m.b)
            assert th.population_error(m, theta, pi) <= th.lemma_error_bound(m, theta, pi) + 1e-15


def test_realised_error_bound_is_a_bound():
    rng = np.random.default_rng(3)
    m = th.make_two_class(rng, 16, delta=0.5)
    a = th.random_offset(rng, m, 3.0, -0.5)
    H, s = m.sample(rng, 60, 40)
    beta = 0.2
    v = th.logistic_gd(H, s, beta=beta, lr=1.0, steps=30)
    loss = th.dpo_loss_from_v(v, H, s, beta)
    err = 1 - th.linear_accuracy(th.decision_direction(a, v), H, s)
    bound = th.realised_error_bound(loss, beta=beta, a=a, H=H, s=s)
    assert np.all(err <= bound + 1e-12)
    assert np.all(1 - th.linear_accuracy(v[1:], H, s) <= loss[1:] / math.log(2) + 1e-12)


def test_comparator_lemma_on_gd():
    """L(v_t) <= L(u) + ||u||^2 / (lr t) for any u when kappa <= 1."""
    rng = np.random.default_rng(4)
    m = th.make_two_class(rng, 8, delta=0.6)
    H, s = m.sample(rng, 50, 50)
    beta = 0.3
    G = np.linalg.eigvalsh(H.T @ H / 100)[-1]
    lr = 2.0 / (beta ** 2 * G)  # kappa = 1 exactly
    v = th.logistic_gd(H, s, beta=beta, lr=lr, steps=60)
    L = th.dpo_loss_from_v(v, H, s, beta)
    assert np.all(np.diff(L) <= 1e-12)  # monotone
    for _ in range(10):
        u = rng.standard_normal(8) * rng.uniform(0.1, 5)
        Lu = th.dpo_loss_from_v(u, H, s, beta)
        t = np.arange(1, 61)
        assert np.all(L[1:] <= Lu + u @ u / (lr * t) + 1e-12)


def test_bad_inputs_raise_clear_errors():
    m = th.make_two_class(0, 4, delta=1.0)
    with pytest.raises(ValueError, match="offset a must have shape"):
        th.AccuracyProblem(m, np.zeros(3), 5, 5, 0.1, 0.1)
    with pytest.raises(ValueError, match="both classes"):
        th.AccuracyProblem(m, np.zeros(4), 0, 5, 0.1, 0.1)
    pb = th.AccuracyProblem(m, np.zeros(4), 5, 5, 0.1, 0.1)
    with pytest.raises(ValueError, match="x must lie"):
        th.comparator_loss(pb, m.b / np.linalg.norm(m.b), 10.0)
    with pytest.raises(ValueError, match="kind must be"):
        th.expected_error_bound(pb, [1, 2], kind="test")
    with pytest.raises(ValueError, match="cos must lie"):
        th.random_offset(0, m, 1.0, 2.0)
