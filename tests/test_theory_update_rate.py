"""The update-rate statements of book/update_rate.md: the tail families, the tail lemmas, the deterministic
bound and the theorem in the paper's scaling, asserted on every sampled instance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import theory as th


def test_gaussian_tail_constant():
    a = th.gaussian_tail_constant()
    np.testing.assert_allclose(a, 0.5568143132, rtol=1e-8)
    from scipy.special import log_ndtr

    z = np.linspace(1e-3, 30, 30001)
    assert np.all(log_ndtr(-z) <= -z / a + 1e-9)  # Q(z) <= exp(-z / a) everywhere
    assert np.any(log_ndtr(-z) > -z / (0.999 * a))  # and a is the smallest such constant


def test_tail_constants_hold_and_are_minimal():
    tab = th.check_tail_constants(0, d=8, n_dirs=8)
    assert (tab["log-excess at alpha"] <= 1e-8).all()
    assert (tab["log-excess at 0.99 alpha"] > 0).all()


@pytest.mark.parametrize("family", th.FAMILIES)
def test_samplers_have_the_stated_mean_covariance_and_projected_law(family):
    rng = np.random.default_rng(11)
    d, n = 6, 40000
    A = th.random_orthogonal(rng, d) * np.sqrt(np.linspace(0.5, 2.0, d))
    mu = rng.standard_normal(d)
    cls = th.ClassConditional(mu, A, family)
    X = cls.sample(rng, n)
    se = np.sqrt(np.diag(cls.cov) / n)
    assert np.all(np.abs(X.mean(0) - mu) < 5 * se)
    # the variance of one projection, within 5 standard errors (its fourth moment sets the error)
    e = th.random_unit(rng, d)
    y = (X - mu) @ e
    var = e @ cls.cov @ e
    se_var = np.sqrt(np.var(y ** 2) / n)
    assert abs(np.mean(y ** 2) - var) < 5 * se_var
    # the exact error of a fixed classifier against its Monte Carlo frequency
    theta = rng.standard_normal(d)
    p = float(cls.error(theta, +1, tau=0.3))
    freq = np.mean(X @ theta <= 0.3)
    assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-12
    # the exact variance of ||h||^2
    v = cls.norm_sq_var
    z = np.sum(X ** 2, 1)
    assert abs(np.var(z) - v) < 0.1 * v  # a loose check: the 4th moment of ||h||^2 is heavy for the mixture


def test_bernstein_lemma_monte_carlo():
    tab = th.check_bernstein(0, n=30, trials=20000)
    assert (tab["empirical"] <= tab["eps"] + 5 * tab["se"]).all()


def test_phi_series_and_monotone():
    t = np.arange(0, 50)
    for k in (0.0, 1e-9, 1e-4, 0.05, 0.5):
        ph = th.phi(k, t)
        exact = k * np.array([sum(s * (1 + k) ** (tt - 1 - s) for s in range(tt)) for tt in t])
        np.testing.assert_allclose(ph, exact, rtol=1e-6, atol=1e-14)
    assert np.all(np.diff(th.phi(np.array([0.01, 0.02, 0.05]), 30.0)) > 0)
    with pytest.raises(ValueError, match="non-negative"):
        th.phi(-0.1, 3)


def test_sweep_every_deterministic_bound_holds():
    df = th.sweep_update_rate(7, 24, steps=30, repeats=8)
    assert (df[["viol_linear", "viol_band_upper", "viol_band_lower"]] <= 0).all().all()
    assert (df["first_step_rel_err"] < 1e-10).all()
    # the theorem in the paper's scaling: Monte Carlo within 5 standard errors
    assert (df["mc_expected_upper_margin"] >= 0).all()
    assert (df["hp_fail_rate"] <= df["hp_fail_allowed"]).all()
    assert (df["realised_fail_rate"] <= df["realised_fail_allowed"]).all()
    # the bounds are not vacuous in the trivial sense: ratios are positive and at most 1
    assert ((df["ratio_linear"] > 0) & (df["ratio_linear"] <= 1)).all()
    assert (df["band_use"] <= 1 + 1e-9).all()


def test_sweep_is_deterministic():
    a = th.sweep_update_rate(3, 4, steps=10, repeats=4)
    b = th.sweep_update_rate(3, 4, steps=10, repeats=4)
    assert a.equals(b)


def test_two_sided_bound_direct():
    """The deterministic band, on one instance, at every step (no sweep machinery)."""
    rng = np.random.default_rng(4)
    model = th.make_two_class(rng, 32, delta=0.7, family="laplace")
    H, s = model.sample(rng, 100, 100)
    beta, lr = 0.64 / math.sqrt(32), 0.3
    v = th.logistic_gd(H, s, beta=beta, lr=lr, steps=80)
    meas = th.head_change(v)
    st = th.sample_statistics(H, s)
    t = np.arange(81)
    lo, main, up = th.first_order_band(t, lr=lr, beta=beta, mhat_norm=np.linalg.norm(st["m_hat"]),
                                       G_norm=st["G_norm"], M1=st["M1"])
    assert np.all(meas <= up * (1 + 1e-9)) and np.all(meas >= lo * (1 - 1e-9) - 1e-15)
    assert np.all(meas <= th.linear_upper_bound(t, lr=lr, beta=beta, M1=st["M1"]) * (1 + 1e-9))


def test_make_two_class_sets_distinguishability_and_constants():
    m = th.make_two_class(0, 50, delta=0.8, center_norm=1.2, trace_per_dim=0.5)
    np.testing.assert_allclose(m.distinguishability, 0.8 * math.sqrt(50), rtol=1e-12)
    np.testing.assert_allclose(m.plus.trace, 0.5 * 50, rtol=1e-12)
    assert m.c_n * math.sqrt(50) >= np.linalg.norm(m.plus.mean) + math.sqrt(m.plus.trace) - 1e-9
    assert m.c_v * math.sqrt(50) >= m.minus.cov_norm - 1e-9


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown tail family"):
        th.make_two_class(0, 4, delta=1.0, family="cauchy")
    with pytest.raises(ValueError, match="factor must be"):
        th.ClassConditional(np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="delta must be"):
        th.make_two_class(0, 4, delta=-1.0)
    with pytest.raises(ValueError, match="eps must lie"):
        th.bernstein_radius(1.5, 10, 1.0)
    with pytest.raises(ValueError, match="different dimensions"):
        th.TwoClass(th.ClassConditional(np.zeros(2), np.eye(2)), th.ClassConditional(np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match="no finite ratios"):
        th.summarize_ratios([np.nan])
