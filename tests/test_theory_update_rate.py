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


def test_bernstein_lemma_exact_for_gaussian_means():
    """Exact, not Monte Carlo: for Gaussian means the lemma's radius is at least the exact quantile radius
    (the lemma holds), and the radius halved fails for this law at small eps (the mutation test)."""
    f = np.array([[th.bernstein_looseness(n, eps) for eps in (0.5, 0.1, 0.01, 1e-4)] for n in (1, 5, 50, 500)])
    assert (f >= 1.0).all()
    assert (0.5 * f < 1.0).any()
    np.testing.assert_allclose(th.bernstein_looseness(50, 0.5), 3.888, rtol=1e-3)


def test_phi_series_and_monotone():
    t = np.arange(0, 50)
    for k in (0.0, 1e-9, 1e-4, 0.05, 0.5):
        ph = th.phi(k, t)
        exact = k * np.array([sum(s * (1 + k) ** (tt - 1 - s) for s in range(tt)) for tt in t])
        np.testing.assert_allclose(ph, exact, rtol=1e-6, atol=1e-14)
    assert np.all(np.diff(th.phi(np.array([0.01, 0.02, 0.05]), 30.0)) > 0)
    with pytest.raises(ValueError, match="non-negative"):
        th.phi(-0.1, 3)


HEADLINE_VIOL = ["viol_energy_upper", "viol_convexity_lower", "viol_band_upper", "viol_band_lower",
                 "viol_scaling_lower"]


@pytest.fixture(scope="module")
def sweep():
    return th.sweep_update_rate(7, 24, steps=30, repeats=8)


def test_sweep_every_deterministic_bound_holds(sweep):
    df = sweep
    assert (df[["viol_linear"] + HEADLINE_VIOL] <= 0).all().all()
    assert (df["first_step_rel_err"] < 1e-10).all()
    # the theorem in the paper's scaling: Monte Carlo within 5 standard errors
    assert (df["mc_expected_upper_margin"] >= 0).all()
    assert (df["hp_fail_rate"] <= df["hp_fail_allowed"]).all()
    assert (df["realised_fail_rate"] <= df["realised_fail_allowed"]).all()  # scaling_population
    assert (df["mc_sgd_margin"] >= 0).all()  # SGD beyond the first step


def test_mutated_headline_bounds_fail():
    """Each headline bound moved by a factor 0.5 in the direction of violation (upper x 0.5, lower / 0.5)
    must make its own check fail on the same sweep: the checks can fail."""
    df = th.sweep_update_rate(7, 24, steps=30, repeats=8, mutate=0.5)
    for col in HEADLINE_VIOL:
        assert (df[col] > 0).any(), col
    assert (df["realised_fail_rate"] > df["realised_fail_allowed"]).any()  # scaling_population
    assert (df["mc_sgd_margin"] < 0).any()  # sgd_fluctuation


def test_headline_bounds_bind(sweep):
    """Non-vacuity floors (the book's goal where our bounds reach it) and strict order where non-vacuous."""
    rows = {r["bound"]: r for r in th.bound_summary_rows("update_rate", sweep)}
    for name in ("energy_upper", "convexity_lower", "band_upper", "band_lower", "scaling_lower", "sgd_fluctuation"):
        assert th.goal_met(rows[name]), rows[name]
    assert rows["energy_upper"]["median_tightness"] > 0.9 and rows["convexity_lower"]["median_tightness"] > 0.9
    assert rows["scaling_lower"]["median_tightness"] > 0.5 and rows["sgd_fluctuation"]["median_tightness"] > 0.6
    comp = {r["bound"]: r for r in th.bound_summary_rows("update_rate", sweep, companions=True)}
    assert comp["scaling_population"]["nonvacuous_share"] > 0.2  # the population version: binds less often
    for name, _ in th.HEADLINE_BOUNDS["update_rate"]:
        full = sweep[f"nonvac_{name}"] == 1
        assert full.any(), name
        tight = sweep.loc[full, f"tight_{name}"]
        if name == "sgd_fluctuation":  # a ratio of two Monte Carlo means: below 1 in expectation
            assert (tight > 0).all() and tight.median() < 1, name
        else:
            assert ((tight > 0) & (tight < 1)).all(), name  # strictly inside: the bound is not attained


def test_propagated_window_carries_and_extends_the_first_order_window():
    t = np.arange(201.0)
    for k in (0.0, 0.01, 0.1, 1.0, 1.9):
        ell = th.propagated_window(k, t)
        prop = (1 - k / 2) * np.maximum(t[1:] - th.phi(k, t[1:]), 0) ** 2 / t[1:]
        assert np.all(ell[1:] >= np.maximum.accumulate(prop) - 1e-12)  # the carried part never falls
        assert np.all(ell >= np.maximum(t - th.phi(k, t), 0) - 1e-12) and np.all(ell <= t + 1e-12)
    assert th.propagated_window(0.5, t)[-1] > 0 and (t - th.phi(0.5, t))[-1] < 0
    assert np.all(th.propagated_window(2.5, t) == np.maximum(t - th.phi(2.5, t), 0))


def test_population_distinguishability_bound_holds_and_sees_the_noise():
    """Item 4: the sample's normalised distinguishability is above delta_eps with frequency <= eps (within
    5 standard errors), and the noise orthogonal to b lifts delta_eps above delta itself. (Its mutation,
    the bound / 0.5, is caught on the sweep: test_mutated_headline_bounds_fail.)"""
    rng = np.random.default_rng(3)
    model = th.make_two_class(rng, 64, delta=0.1, family="gaussian", trace_per_dim=1.0, decay=0.3)
    eps, R, n = 0.1, 400, 64
    pop = th.population_distinguishability_bound(model, n // 2, n // 2, eps)
    H, s = model.sample(rng, n // 2, n // 2, R)
    st = th.sample_statistics(H, s)
    dh = np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1) / 8.0
    assert np.mean(dh < pop["delta_eps"]) <= eps + 5 * np.sqrt(eps * (1 - eps) / R)
    assert pop["delta_eps"] > model.distinguishability / 8.0 and pop["along_b_vacuous"] == 1.0


def test_sgd_fluctuation_exact_at_the_first_step():
    """At t = 1, E||W^SGD_1 - W^GD_1||^2 equals the bound (no contraction has acted yet)."""
    rng = np.random.default_rng(4)
    model = th.make_two_class(rng, 16, delta=0.5)
    H, s = model.sample(rng, 32, 32, 4000)
    v_gd = th.logistic_gd(H, s, beta=0.16, lr=0.5, steps=1)
    v_sgd, var = th.logistic_sgd(H, s, beta=0.16, lr=0.5, steps=1, batch=8, rng=rng)
    d2 = 2 * np.sum((v_sgd[:, 1] - v_gd[:, 1]) ** 2, -1)
    b2 = th.sgd_fluctuation_bound(var, lr=0.5, beta=0.16)[:, 1] ** 2
    diff = d2 - b2
    assert abs(diff.mean()) <= 5 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert np.all(th.sgd_fluctuation_bound(var, lr=0.5, beta=0.16)[:, 1]
                  <= th.sgd_rate_bound(1, lr=0.5, beta=0.16, M2=th.sample_statistics(H, s)["M2"], n=64, batch=8) + 1e-12)


def test_margin_change_concentration_check_and_mutation():
    df = th.check_margin_concentration(np.random.default_rng(2), dims=(16, 128), n_fresh=2000)
    assert (df["margin"] >= 0).all() and (df["exact_excess"] <= 0).all()
    assert (df["exact_rel_err"] <= df["exact_tolerance"]).all()
    spiked = df[df["case"] == "spiked"]
    assert (spiked["tightness"] > 0.9).all()  # the construction attains the bound
    bad = th.check_margin_concentration(np.random.default_rng(2), dims=(16, 128), n_fresh=2000, mutate=0.5)
    assert (bad["margin"] < 0).any()


def test_energy_and_convexity_bounds_direct():
    """The loss-drop sandwich on one instance at every step, and its asymptotic exactness at t = 1 as the
    step goes to 0 (the constants cannot be improved)."""
    rng = np.random.default_rng(5)
    model = th.make_two_class(rng, 16, delta=0.8, family="gaussian", center_norm=1.0)
    H, s = model.sample(rng, 64, 64)
    beta = 0.64 / 4
    st = th.sample_statistics(H, s)
    for lr in (1.0, 1e-3):
        v = th.logistic_gd(H, s, beta=beta, lr=lr, steps=40)
        meas = th.head_change(v)
        L = th.dpo_loss_from_v(v, H, s, beta)
        kap = th.kappa_of(lr, beta, st["G_norm"])
        en = th.energy_upper_bound(L[0], L, np.arange(41), lr=lr, kappa=kap)
        cv = th.convexity_lower_bound(L[0], L, beta=beta, mhat_norm=np.linalg.norm(st["m_hat"]))
        assert np.all(meas <= en * (1 + 1e-9)) and np.all(meas >= cv * (1 - 1e-9))
    # lr = 1e-3: both within 1e-3 of the measured first step
    assert meas[1] / en[1] > 0.999 and cv[1] / meas[1] > 0.999
    assert np.isinf(th.energy_upper_bound(0.7, 0.6, 3, lr=1.0, kappa=2.0))


def test_mutate_bound_direction():
    np.testing.assert_allclose(th.mutate_bound([2.0, -2.0], "upper", 0.5), [1.0, -4.0])
    np.testing.assert_allclose(th.mutate_bound([2.0, -2.0], "lower", 0.5), [4.0, -1.0])
    np.testing.assert_allclose(th.mutate_bound([2.0], "lower", 1.0), [2.0])
    with pytest.raises(ValueError, match="mutation factor"):
        th.mutate_bound(1.0, "upper", 0.0)
    with pytest.raises(ValueError, match="kind must be"):
        th.mutate_bound(1.0, "both", 0.5)


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
