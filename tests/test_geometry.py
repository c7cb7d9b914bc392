"""Tests of alignment_dynamics.geometry against direct float64 computations (loops, numpy.cov, eigvalsh)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import geometry as geo
from alignment_dynamics import stats
from alignment_dynamics.geometry import GeometryError


def _behaviour(rng, n_pos=30, n_neg=25, d=12, shift=1.0, scale=1.0):
    """Synthetic embeddings of one behaviour: anisotropic Gaussian classes, means ``shift`` apart."""
    a = rng.standard_normal((d, d)) * scale / math.sqrt(d)
    mu = rng.standard_normal(d)
    u = rng.standard_normal(d)
    u *= shift / np.linalg.norm(u)
    xp = mu + u / 2 + rng.standard_normal((n_pos, d)) @ a
    xn = mu - u / 2 + rng.standard_normal((n_neg, d)) @ a
    h = np.concatenate([xp, xn])
    labels = np.array([True] * n_pos + [False] * n_neg)
    perm = rng.permutation(len(h))
    return h[perm], labels[perm]


def _direct(h, labels):
    """The official code's three properties, written as it writes them."""
    yes, no = h[labels], h[~labels]
    yes_mean = np.mean(yes, axis=0)
    no_mean = np.mean(no, axis=0)
    yes_cov, no_cov = np.cov(yes, rowvar=False), np.cov(no, rowvar=False)
    return {
        "distinguishability": np.linalg.norm(yes_mean - no_mean),
        "concentration": max(np.linalg.norm(yes_cov, ord=2), np.linalg.norm(no_cov, ord=2)),
        "trace": max(np.trace(yes_cov), np.trace(no_cov)),
        "yes_cov": yes_cov,
        "no_cov": no_cov,
        "yes_mean": yes_mean,
        "no_mean": no_mean,
    }


# --------------------------------------------------------------------------------------- moments

@pytest.mark.parametrize("n_pos,n_neg,d", [(30, 25, 12), (6, 5, 40)])  # n > d and n < d (Gram path)
def test_properties_match_official_definitions(n_pos, n_neg, d):
    rng = np.random.default_rng(0)
    h, labels = _behaviour(rng, n_pos, n_neg, d)
    got = geo.properties(h, labels)
    ref = _direct(h, labels)
    for key in geo.PROPERTY_NAMES:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-12, err_msg=key)
    # eigvalsh as a second reference for the spectral norm
    top = max(np.linalg.eigvalsh(ref["yes_cov"])[-1], np.linalg.eigvalsh(ref["no_cov"])[-1])
    np.testing.assert_allclose(got["concentration"], top, rtol=1e-12)
    assert (got["n_pos"], got["n_neg"], got["d"]) == (n_pos, n_neg, d)


def test_means_by_loops_and_mean_norm():
    rng = np.random.default_rng(1)
    h, labels = _behaviour(rng, 7, 9, 5)
    m = geo.class_moments(h, labels)
    sp, sn = np.zeros(5), np.zeros(5)
    for row, lab in zip(h, labels):
        if lab:
            sp += row
        else:
            sn += row
    np.testing.assert_allclose(m.mean_pos, sp / 7, rtol=1e-14)
    np.testing.assert_allclose(m.mean_neg, sn / 9, rtol=1e-14)
    norms = [math.sqrt(sum(v * v for v in row)) for row in h]
    np.testing.assert_allclose(m.mean_norm, sum(norms) / len(norms), rtol=1e-14)
    props = geo.properties(h, labels)
    np.testing.assert_allclose(props["relative_distinguishability"], np.linalg.norm(sp / 7 - sn / 9) / m.mean_norm,
                               rtol=1e-12)


def test_pooled_covariance_dprime_and_constants():
    rng = np.random.default_rng(2)
    h, labels = _behaviour(rng, 20, 15, 6)
    ref = _direct(h, labels)
    pooled = (19 * ref["yes_cov"] + 14 * ref["no_cov"]) / 33
    m = geo.class_moments(h, labels)
    np.testing.assert_allclose(m.pooled, pooled, rtol=1e-12)
    p = geo.properties(h, labels)
    b = ref["yes_mean"] - ref["no_mean"]
    v = b / np.linalg.norm(b)
    np.testing.assert_allclose(p["dprime"], np.linalg.norm(b) / math.sqrt(v @ pooled @ v), rtol=1e-12)
    np.testing.assert_allclose(p["c_v"], ref["concentration"] / math.sqrt(6), rtol=1e-12)
    c_n = max(np.linalg.norm(ref["yes_mean"]) + math.sqrt(np.trace(ref["yes_cov"])),
              np.linalg.norm(ref["no_mean"]) + math.sqrt(np.trace(ref["no_cov"]))) / math.sqrt(6)
    np.testing.assert_allclose(p["c_n"], c_n, rtol=1e-12)
    sq = np.linalg.norm(b) ** 2 - np.trace(ref["yes_cov"]) / 20 - np.trace(ref["no_cov"]) / 15
    np.testing.assert_allclose(p["distinguishability_sq_unbiased"], sq, rtol=1e-12)


def test_fisher_distance_matches_inverse_and_is_scale_free():
    rng = np.random.default_rng(3)
    h, labels = _behaviour(rng, 8, 7, 20)  # fewer statements than dimensions: S is singular
    m = geo.class_moments(h, labels)
    lam = 0.3
    s_l = (1 - lam) * m.pooled + lam * np.trace(m.pooled) / 20 * np.eye(20)
    ref = math.sqrt(m.b @ np.linalg.inv(s_l) @ m.b)
    np.testing.assert_allclose(geo.fisher_distance(m.b, m.pooled, lam), ref, rtol=1e-10)
    a = geo.properties(h, labels, shrinkage=lam)
    b = geo.properties(3.7 * h, labels, shrinkage=lam)
    for key in ("fisher", "dprime", "relative_distinguishability"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(b["distinguishability"], 3.7 * a["distinguishability"], rtol=1e-12)
    # λ = 1: the identity metric scaled by the mean variance
    np.testing.assert_allclose(geo.fisher_distance(m.b, m.pooled, 1.0),
                               np.linalg.norm(m.b) / math.sqrt(np.trace(m.pooled) / 20), rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, "0.1", True])
def test_fisher_rejects_bad_shrinkage(bad):
    with pytest.raises(GeometryError, match="shrinkage"):
        geo.fisher_distance(np.ones(3), np.eye(3), bad)


def test_fisher_rejects_mismatched_cov():
    with pytest.raises(GeometryError, match="3 × 3"):
        geo.fisher_distance(np.ones(3), np.eye(4))


def test_unbiased_squared_distinguishability_is_unbiased():
    """With μ₊ = μ₋ the plug-in ‖μ̂₊ − μ̂₋‖² is positive on average, the corrected one is not."""
    rng = np.random.default_rng(4)
    d, n = 30, 10
    plug, corr = [], []
    for _ in range(400):
        h = rng.standard_normal((2 * n, d))
        lab = np.arange(2 * n) < n
        p = geo.properties(h, lab)
        plug.append(p["distinguishability"] ** 2)
        corr.append(p["distinguishability_sq_unbiased"])
    corr = np.array(corr)
    se = corr.std(ddof=1) / math.sqrt(len(corr))
    assert abs(corr.mean()) < 5 * se
    expected_bias = d / n + d / n  # tr Σ / n per class
    np.testing.assert_allclose(np.mean(plug), expected_bias, rtol=5 * np.std(plug) / math.sqrt(400) / expected_bias)


def test_torch_bfloat16_input_is_computed_in_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    h, labels = _behaviour(rng, 12, 10, 8)
    t = torch.tensor(h, dtype=torch.bfloat16)
    got = geo.properties(t, torch.tensor(labels))
    ref = _direct(t.double().numpy(), labels)
    np.testing.assert_allclose(got["distinguishability"], ref["distinguishability"], rtol=1e-12)
    np.testing.assert_allclose(got["concentration"], ref["concentration"], rtol=1e-12)


@pytest.mark.parametrize("labels", [
    np.array([1, 1, 1, 0, 0, 0]),
    np.array([1, 1, 1, -1, -1, -1]),
    np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]),
    np.array([" Yes"] * 3 + [" No"] * 3),
])
def test_label_forms(labels):
    assert geo.positive_mask(labels).tolist() == [True] * 3 + [False] * 3


# --------------------------------------------------------------------------------------- bad input

def test_bad_shapes_and_labels():
    rng = np.random.default_rng(6)
    h, labels = _behaviour(rng, 5, 5, 4)
    with pytest.raises(GeometryError, match=r"\(n, d\)"):
        geo.properties(h[:, 0], labels)
    with pytest.raises(GeometryError, match=r"\(n, d\)"):
        geo.properties(h[None], labels)
    with pytest.raises(GeometryError, match="10 embeddings"):
        geo.properties(h, labels[:-1])
    with pytest.raises(GeometryError, match="1-D"):
        geo.properties(h, labels[:, None])
    with pytest.raises(GeometryError, match="leading space"):
        geo.properties(h, np.array(["Yes"] * 5 + ["No"] * 5))
    with pytest.raises(GeometryError, match=r"\{0, 1\}"):
        geo.properties(h, np.arange(10))
    with pytest.raises(GeometryError, match="empty"):
        geo.properties(np.zeros((0, 4)), np.zeros(0, dtype=bool))
    with pytest.raises(GeometryError, match="array of numbers"):
        geo.properties([["a", "b"]], [True])


def test_one_class_empty_or_singleton():
    rng = np.random.default_rng(7)
    h = rng.standard_normal((6, 3))
    with pytest.raises(GeometryError, match="0 negative"):
        geo.properties(h, np.ones(6, dtype=bool))
    with pytest.raises(GeometryError, match="1 positive"):
        geo.properties(h, np.arange(6) == 0)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_embeddings(value):
    rng = np.random.default_rng(8)
    h, labels = _behaviour(rng, 5, 5, 4)
    h[3, 2] = value
    with pytest.raises(GeometryError, match=r"non-finite.*row\(s\) \[3\]"):
        geo.properties(h, labels)


def test_property_table_reports_the_behaviour():
    rng = np.random.default_rng(9)
    ok = ("a", *_behaviour(rng, 5, 5, 4))
    bad_h, bad_l = _behaviour(rng, 5, 5, 4)
    bad_h[0, 0] = np.nan
    with pytest.raises(GeometryError, match="behaviour 'b'"):
        geo.property_table([ok, ("b", bad_h, bad_l)])
    with pytest.raises(GeometryError, match="same embedding dimension"):
        geo.property_table([ok, ("c", *_behaviour(rng, 5, 5, 6))])
    with pytest.raises(GeometryError, match="unique"):
        geo.property_table([ok, ok])
    with pytest.raises(GeometryError, match="at least one"):
        geo.property_table([])


def test_property_table_rows_and_b():
    rng = np.random.default_rng(10)
    items = [(f"beh{k}", *_behaviour(rng, 9, 11, 5, shift=k)) for k in range(4)]
    df, b = geo.property_table(items)
    assert list(df.index) == [f"beh{k}" for k in range(4)]
    for k, (_, h, lab) in enumerate(items):
        ref = _direct(h, lab)
        np.testing.assert_allclose(b[k], ref["yes_mean"] - ref["no_mean"], rtol=1e-13)
        np.testing.assert_allclose(df["trace"].iloc[k], ref["trace"], rtol=1e-12)


# --------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_replicates_equal_direct_resamples():
    rng = np.random.default_rng(11)
    h, labels = _behaviour(rng, 9, 7, 12)  # n < d for the concentration Gram path
    reps = geo.bootstrap(h, labels, n_boot=5, seed=42, which=geo.BOOTSTRAP_PROPERTIES)
    # redo the draws: same stream, positives first, then negatives, as multinomial counts
    g = np.random.default_rng(42)
    xp, xn = h[labels], h[~labels]
    cp = g.multinomial(9, np.full(9, 1 / 9), size=5)
    cn = g.multinomial(7, np.full(7, 1 / 7), size=5)
    for r in range(5):
        hp = np.repeat(xp, cp[r], axis=0)
        hn = np.repeat(xn, cn[r], axis=0)
        hh = np.concatenate([hp, hn])
        lab = np.array([True] * len(hp) + [False] * len(hn))
        ref = geo.properties(hh, lab)
        direct = _direct(hh, lab)
        for key in set(geo.BOOTSTRAP_PROPERTIES) - {"b"}:
            np.testing.assert_allclose(reps[key][r], ref[key], rtol=1e-10, err_msg=key)
        np.testing.assert_allclose(reps["b"][r], direct["yes_mean"] - direct["no_mean"], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(reps["concentration"][r], direct["concentration"], rtol=1e-10)


def test_bootstrap_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(12)
    h, labels = _behaviour(rng, 40, 40, 10, shift=2.0)
    a = geo.bootstrap(h, labels, n_boot=300, seed=1)
    b = geo.bootstrap(h, labels, n_boot=300, seed=1)
    c = geo.bootstrap(h, labels, n_boot=300, seed=2)
    np.testing.assert_array_equal(a["distinguishability"], b["distinguishability"])
    assert not np.array_equal(a["distinguishability"], c["distinguishability"])
    lo, hi = geo.percentile_ci(a["distinguishability"])
    est = geo.properties(h, labels)["distinguishability"]
    assert lo < est < hi


def test_bootstrap_bad_input():
    rng = np.random.default_rng(13)
    h, labels = _behaviour(rng, 5, 5, 3)
    with pytest.raises(GeometryError, match="n_boot"):
        geo.bootstrap(h, labels, n_boot=1)
    with pytest.raises(GeometryError, match="which"):
        geo.bootstrap(h, labels, which=("fisher",))
    with pytest.raises(GeometryError, match="seed"):
        geo.bootstrap(h, labels, seed="x")
    with pytest.raises(GeometryError, match="level"):
        geo.percentile_ci([1.0, 2.0], level=1.0)


def test_bootstrap_table_matches_per_behaviour_streams():
    rng = np.random.default_rng(14)
    items = [(f"b{k}", *_behaviour(rng, 10, 10, 4, shift=k + 1)) for k in range(3)]
    ci, reps = geo.bootstrap_table(items, n_boot=50, seed=7)
    for k, (_, h, lab) in enumerate(items):
        r = geo.bootstrap(h, lab, n_boot=50, seed=(7, k))
        np.testing.assert_array_equal(reps["distinguishability"][k], r["distinguishability"])
        lo, hi = geo.percentile_ci(r["distinguishability"])
        np.testing.assert_allclose([ci["distinguishability_lo"].iloc[k], ci["distinguishability_hi"].iloc[k]],
                                   [lo, hi], rtol=1e-12)


# --------------------------------------------------------------------------------------- ranks

def test_spearman_rows_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(15)
    a = rng.standard_normal((6, 15))
    b = np.round(rng.standard_normal((6, 15)), 1)  # with ties
    rows = stats.spearman_rows(a, b)
    np.testing.assert_allclose(rows, [spearmanr(a[i], b[i]).statistic for i in range(6)], rtol=1e-12)
    with pytest.raises(stats.StatsError, match="one length"):
        stats.spearman([1, 2, 3], [1, 2])


def test_stratified_halves_are_disjoint_and_balanced():
    labels = np.array([True] * 11 + [False] * 8)
    a, b = geo.stratified_halves(labels, seed=0)
    assert not set(a) & set(b)
    assert labels[a].sum() == labels[b].sum() == 5
    assert (~labels[a]).sum() == (~labels[b]).sum() == 4
    with pytest.raises(GeometryError, match="at least 4"):
        geo.stratified_halves(np.array([True] * 3 + [False] * 8))


def test_split_half_stability():
    rng = np.random.default_rng(16)
    items = [(f"b{k}", *_behaviour(rng, 40, 40, 6, shift=0.5 * k)) for k in range(8)]
    rho, t1, t2 = geo.split_half_stability(items, seed=0, keys=("distinguishability", "dprime"))
    assert rho["distinguishability"] > 0.9 and set(rho) == {"distinguishability", "dprime"}
    for k, (_, h, lab) in enumerate(items):
        a, b = geo.stratified_halves(lab, seed=(0, k))
        np.testing.assert_allclose(t1["distinguishability"].iloc[k], geo.properties(h[a], lab[a])["distinguishability"],
                                   rtol=1e-12)
        np.testing.assert_allclose(t2["fisher"].iloc[k], geo.properties(h[b], lab[b])["fisher"], rtol=1e-12)
    # no signal: the halves do not agree
    items = [(f"b{k}", *_behaviour(rng, 40, 40, 6, shift=1.0)) for k in range(30)]
    rho0, _, _ = geo.split_half_stability(items, seed=0)
    assert rho0["distinguishability"] < rho["distinguishability"]
    with pytest.raises(GeometryError, match="unknown properties"):
        geo.split_half_stability(items, keys=("nope",))


def test_pick_by_quantile():
    vals = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 5.0, "e": 4.0}
    assert geo.pick_by_quantile(vals) == ["b", "a", "d"]
    assert geo.pick_by_quantile(vals, (0.25,)) == ["c"]
    with pytest.raises(GeometryError, match="quantiles"):
        geo.pick_by_quantile(vals, (1.5,))
    with pytest.raises(GeometryError, match="at least one"):
        geo.pick_by_quantile({})


# --------------------------------------------------------------------------------------- priority

def _official_gaps(dists):
    """The official priority_levels.ipynb loop, flattened row by row."""
    n = len(dists)
    priorities = np.zeros(n * n)
    for i in range(n):
        for j in range(n):
            b_bar = 0.5 * (dists[i] + dists[j])
            p_1 = (np.dot(b_bar, dists[i])) / np.linalg.norm(b_bar)
            p_2 = (np.dot(b_bar, dists[j])) / np.linalg.norm(b_bar)
            gap = (p_1 - p_2) / max(np.linalg.norm(dists[i]), np.linalg.norm(dists[j]))
            priorities[n * i + j] = gap
    return priorities


def test_priority_gaps_match_official_loop_and_identities():
    rng = np.random.default_rng(17)
    b = rng.standard_normal((9, 7)) * rng.uniform(0.2, 3, size=(9, 1))
    g = geo.priority_gaps(b)
    np.testing.assert_allclose(g.ravel(), _official_gaps(list(b)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, -g.T, atol=1e-15)
    assert np.all(np.diag(g) == 0)
    norms = np.linalg.norm(b, axis=1)
    off = ~np.eye(9, dtype=bool)
    assert np.array_equal(np.sign(g)[off], np.sign(norms[:, None] - norms[None, :])[off])
    # the closed form of the sign identity
    bar = np.linalg.norm((b[:, None, :] + b[None, :, :]) / 2, axis=2)
    closed = (norms[:, None] ** 2 - norms[None, :] ** 2) / (2 * bar) / np.maximum(norms[:, None], norms[None, :])
    np.testing.assert_allclose(g, closed, rtol=1e-10, atol=1e-15)
    p = geo.priority_levels(b)
    for i in range(9):
        for j in range(9):
            bb = (b[i] + b[j]) / 2
            np.testing.assert_allclose(p[i, j], bb @ b[i] / np.linalg.norm(bb), rtol=1e-12)
    np.testing.assert_allclose(geo.priority_gap(b[2], b[5]), g[2, 5], rtol=1e-14)


def test_priority_gap_guard_when_bbar_vanishes():
    b = np.array([[1.0, 2.0, 0.5], [-1.0, -2.0, -0.5], [0.3, 0.1, 0.0], [0.0, 0.0, 0.0]])
    g = geo.priority_gaps(b)
    assert np.isnan(g[0, 1]) and np.isnan(g[1, 0])
    assert np.isnan(g[3, 3])  # both zero
    assert np.isfinite(g[0, 2]) and np.isfinite(g[0, 3])
    assert np.isfinite(geo.priority_gaps(b, rtol=0.0)[0, 2])
    with pytest.raises(GeometryError, match="undefined"):
        geo.priority_gap(b[0], b[1])
    with pytest.raises(GeometryError, match="same shape"):
        geo.priority_gap(b[0], b[1, :2])
    with pytest.raises(GeometryError, match=r"\(n, d\)"):
        geo.priority_gaps(b[0])


# --------------------------------------------------------------------------------------- Theorem 4.1

def test_theorem41_constants():
    out = geo.theorem41_constants([0.1, 0.3], [1.0, 1.2], d=4096, beta=0.01, eta=0.1, norm_weight=[0.5, -2.0])
    np.testing.assert_allclose(out["beta_prime"], 0.64, rtol=1e-14)
    assert out["c_v"] == 0.3 and out["c_n"] == 1.2
    np.testing.assert_allclose(out["step"], 0.1 * 0.64 ** 2 * 1.2 ** 2, rtol=1e-14)
    np.testing.assert_allclose(out["c_n_bound"], 2 * math.sqrt(2), rtol=1e-14)
    with pytest.raises(GeometryError, match="beta"):
        geo.theorem41_constants([0.1], [1.0], d=10, beta=0)
    with pytest.raises(GeometryError, match="d must"):
        geo.theorem41_constants([0.1], [1.0], d=0, beta=0.1)
    with pytest.raises(GeometryError, match="eta"):
        geo.theorem41_constants([0.1], [1.0], d=10, beta=0.1, eta=-1)


def test_rms_normalised_features_satisfy_the_c_n_bound():
    """[derived] ‖μ‖ + (tr Σ)^½ ≤ √2 max|g| √d for RMS-normalised features (paper.md §4)."""
    rng = np.random.default_rng(18)
    d = 16
    g = rng.uniform(0.2, 3.0, d)
    cns = []
    for shift in (0.0, 3.0, 30.0):
        raw = rng.standard_normal((50, d)) * rng.uniform(0.1, 10, d) + shift
        h = raw / np.sqrt((raw ** 2).mean(1, keepdims=True)) * g
        cns.append(geo.properties(h, np.arange(50) < 25)["c_n"])
    out = geo.theorem41_constants(np.zeros(3), cns, d=d, beta=0.01, norm_weight=g)
    assert out["c_n"] <= out["c_n_bound"]


# --------------------------------------------------------------------------------------- tails

def test_directional_projections():
    rng = np.random.default_rng(19)
    h, labels = _behaviour(rng, 20, 15, 6, shift=2)
    v = geo.unit_directions(6, 4, seed=0)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-14)
    raw = geo.directional_projections(h, labels, v, standardize=False)
    xp, xn = h[labels], h[~labels]
    ref = np.concatenate([(xp - xp.mean(0)) @ v.T, (xn - xn.mean(0)) @ v.T]).T
    np.testing.assert_allclose(raw["random"], ref, rtol=1e-12, atol=1e-14)
    u = xp.mean(0) - xn.mean(0)
    u /= np.linalg.norm(u)
    np.testing.assert_allclose(raw["mean_difference"], np.concatenate([(xp - xp.mean(0)) @ u, (xn - xn.mean(0)) @ u]),
                               rtol=1e-12, atol=1e-14)
    std = geo.directional_projections(h, labels, v)
    np.testing.assert_allclose(std["random"][:, :20].std(axis=1, ddof=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(std["mean_difference"][20:].std(ddof=1), 1.0, rtol=1e-12)
    with pytest.raises(GeometryError, match="columns"):
        geo.directional_projections(h, labels, np.ones((2, 5)))


def test_survival_and_subexponential_scale():
    x = np.array([-3.0, 1.0, 2.0, -2.0, 0.5])
    np.testing.assert_allclose(geo.survival(x, [0.0, 1.0, 2.0, 2.5, 3.0, 4.0]), [1.0, 0.8, 0.6, 0.2, 0.2, 0.0])
    rng = np.random.default_rng(20)
    y = rng.laplace(scale=0.7, size=4000)
    alpha = geo.subexponential_scale(y)
    t = np.sort(np.abs(y))
    assert np.all(geo.survival(y, t) <= 2 * np.exp(-t / alpha) * (1 + 1e-12))  # the bound holds
    assert np.any(geo.survival(y, t) >= 2 * np.exp(-t / (0.99 * alpha)))  # and is the smallest
    assert 0.5 < alpha < 1.2  # near the true scale 0.7


def test_reference_samples_are_standardised_per_group():
    x = geo.reference_samples([5, 5, 8], "laplace", seed=0)
    assert x.shape == (18,)
    for part in (x[:10].reshape(2, 5), x[10:].reshape(1, 8)):
        np.testing.assert_allclose(part.mean(axis=1), 0, atol=1e-14)
        np.testing.assert_allclose(part.std(axis=1, ddof=1), 1, rtol=1e-12)
    assert np.abs(x[:10]).max() <= 4 / math.sqrt(5) + 1e-12  # Samuelson's bound (g − 1)/√g
    with pytest.raises(GeometryError, match="law"):
        geo.reference_samples(5, "cauchy")
    with pytest.raises(GeometryError, match="group_sizes"):
        geo.reference_samples([2, 5], "gaussian")


def test_pooled_projections_groups():
    rng = np.random.default_rng(26)
    items = [(f"b{k}", *_behaviour(rng, 10, 8, 6, shift=2)) for k in range(3)]
    out = geo.pooled_projections(items, n_directions=2, seed=5)
    assert out["random"].shape == (sum(out["random_groups"]),) == (3 * 2 * 18,)
    assert out["mean_difference"].shape == (sum(out["mean_difference_groups"]),) == (3 * 18,)
    one = geo.directional_projections(items[1][1], items[1][2], geo.unit_directions(6, 2, seed=(5, 1)),
                                      cross_fit_seed=(5, 1))
    np.testing.assert_array_equal(out["mean_difference"][18:36], one["mean_difference"])
    items[2] = ("bad", np.ones((6, 6)), np.array([1, 1, 1, 0, 0, 0]))
    with pytest.raises(GeometryError, match="behaviour 'bad'"):
        geo.pooled_projections(items, n_directions=2, seed=5, cross_fit=False)


def test_weibull_tail_exponent_tells_laplace_from_gaussian():
    ref = geo.reference_tail_exponents(5000, seed=0, n_rep=5)
    lap, gau = ref["laplace"][0], ref["gaussian"][0]
    assert 0.85 < lap < 1.15
    assert gau > lap + 0.3
    with pytest.raises(GeometryError, match="lower"):
        geo.weibull_tail_exponent(np.ones(100), lower=0.9, upper=0.5)
    with pytest.raises(GeometryError, match="too few"):
        geo.weibull_tail_exponent(np.arange(1.0, 8.0))


# --------------------------------------------------------------------------------------- maps

def test_pca_map_is_exact_and_deterministic():
    rng = np.random.default_rng(21)
    h = rng.standard_normal((30, 8)) * np.arange(1, 9)
    z = geo.map_2d(h, method="pca")
    xc = h - h.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(xc, rowvar=False))
    top = evecs[:, ::-1][:, :2]
    ref = xc @ top
    for k in range(2):
        s = np.sign(ref[:, k] @ z[:, k])
        np.testing.assert_allclose(z[:, k], s * ref[:, k], rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(z, geo.map_2d(h.copy(), method="pca"))
    with pytest.raises(GeometryError, match="umap' or 'pca"):
        geo.map_2d(h, method="tsne")


def test_umap_map_is_deterministic():
    rng = np.random.default_rng(22)
    h = rng.standard_normal((40, 6))
    a = geo.map_2d(h, method="umap", random_state=1234, n_neighbors=10)
    b = geo.map_2d(h, method="umap", random_state=1234, n_neighbors=10)
    assert a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)


def test_signed_margins_by_loop():
    rng = np.random.default_rng(23)
    h, labels = _behaviour(rng, 10, 12, 5, shift=3)
    got = geo.signed_margins(h, labels)
    mp, mn = h[labels].mean(0), h[~labels].mean(0)
    u = (mp - mn) / np.linalg.norm(mp - mn)
    for k in range(len(h)):
        s = 1.0 if labels[k] else -1.0
        np.testing.assert_allclose(got[k], s * sum(u[j] * (h[k, j] - (mp[j] + mn[j]) / 2) for j in range(5)),
                                   rtol=1e-10, atol=1e-13)
    assert (got > 0).mean() > 0.8  # well separated classes sit on their own side
    with pytest.raises(GeometryError, match="undefined"):
        geo.signed_margins(np.ones((4, 2)), np.array([1, 1, 0, 0]))


def test_cross_fitted_projections_use_the_other_half():
    rng = np.random.default_rng(24)
    h, labels = _behaviour(rng, 12, 10, 5, shift=2)
    v = geo.unit_directions(5, 2, seed=1)
    out = geo.directional_projections(h, labels, v, standardize=False, cross_fit_seed=(3, 0))
    a, b = geo.stratified_halves(labels, seed=(3, 0))
    expected = {True: [], False: []}
    for fit, use in ((a, b), (b, a)):
        u = h[fit][labels[fit]].mean(0) - h[fit][~labels[fit]].mean(0)
        u /= np.linalg.norm(u)
        for cls in (True, False):
            rows = h[use][labels[use] == cls]
            expected[cls].append((rows - rows.mean(0)) @ u)
    np.testing.assert_allclose(out["mean_difference"], np.concatenate(expected[True] + expected[False]),
                               rtol=1e-12, atol=1e-14)
    assert out["mean_difference"].shape == (2 * (6 + 5),)
    assert out["random"].shape == (2, 22)


def test_properties_extra_keys():
    rng = np.random.default_rng(25)
    h, labels = _behaviour(rng, 10, 10, 30, shift=0.1)  # noise dominates
    p = geo.properties(h, labels)
    ref = _direct(h, labels)
    floor = np.trace(ref["yes_cov"]) / 10 + np.trace(ref["no_cov"]) / 10
    np.testing.assert_allclose(p["noise_fraction"], floor / ref["distinguishability"] ** 2, rtol=1e-12)
    np.testing.assert_allclose(p["max_norm"], np.linalg.norm(h, axis=1).max(), rtol=1e-14)
    expect = math.sqrt(max(p["distinguishability_sq_unbiased"], 0)) / p["mean_norm"]
    np.testing.assert_allclose(p["relative_distinguishability_debiased"], expect, rtol=1e-12)
    # ‖μ‖ + (tr Σ)^½ ≤ √2 (E‖h‖²)^½ ≤ √2 max ‖h‖: the c_n bound from the data alone
    assert p["c_n"] <= math.sqrt(2) * p["max_norm"] / math.sqrt(30)


def test_rank_intervals():
    reps = np.array([[1.0, 2.0, 3.0, 1.5], [2.0, 1.0, 4.0, 2.5], [3.0, 3.0, 5.0, 0.5]])
    lo, hi = geo.rank_intervals(reps, level=0.5)
    ranks = np.array([[1, 2, 1, 2], [2, 1, 2, 3], [3, 3, 3, 1]], dtype=float)
    np.testing.assert_allclose(lo, np.quantile(ranks, 0.25, axis=1))
    np.testing.assert_allclose(hi, np.quantile(ranks, 0.75, axis=1))


def test_spearman_brown():
    assert geo.spearman_brown(0.5) == pytest.approx(2 / 3)
    assert geo.spearman_brown(1.0) == 1.0
    assert geo.spearman_brown(-0.4) == 0.0
    assert geo.spearman_brown(0.5, 4) == pytest.approx(0.8)
    assert geo.spearman_brown(0.5, 1) == pytest.approx(0.5)
    with pytest.raises(GeometryError, match="correlation"):
        geo.spearman_brown(1.5)
    with pytest.raises(GeometryError, match="factor"):
        geo.spearman_brown(0.5, 0)
    f = geo.spearman_brown_factor(0.54, 0.9)
    assert geo.spearman_brown(0.54, f) == pytest.approx(0.9)
    with pytest.raises(GeometryError, match="target"):
        geo.spearman_brown_factor(0.5, 1.0)


# --------------------------------------------------------------------------------------- plots

def test_geometry_plots_return_figures_and_check_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignment_dynamics import plotting as P

    rng = np.random.default_rng(27)
    names = [f"b{k}" for k in range(12)]
    v = rng.uniform(1, 2, 12)
    fig = P.sorted_with_intervals([{"values": v, "lo": v - 0.1, "hi": v + 0.1, "names": names, "title": "m"}],
                                  ylabel="d", highlight={"b3": "B1"})
    assert fig.axes[0].texts[0].get_text() == "B1"
    fig = P.paired_scatter(v, v[::-1], xlabel="x", ylabel="y", names=names, highlight=["b0"], diagonal=True)
    assert fig.axes[0].texts[0].get_text() == "b0"
    g = geo.priority_gaps(rng.standard_normal((12, 4)))
    P.gap_heatmap(g, marks=[(0, 1, "(a)")])
    z = [rng.standard_normal((10, 2))] * 3
    m = [np.arange(10) < 5] * 3
    P.class_scatter_panels(z, m, ["x", "y", "z"])
    plt.close("all")
    with pytest.raises(ValueError, match="same length"):
        P.class_scatter_panels(z, m[:2], ["x", "y", "z"])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        P.class_scatter_panels([np.zeros((10, 3))], [m[0]], ["x"])
    with pytest.raises(ValueError, match="square"):
        P.gap_heatmap(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="same shape"):
        P.paired_scatter([1, 2], [1, 2, 3], xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="same length"):
        P.sorted_with_intervals([{"values": v, "names": names[:3]}], ylabel="d")
    plt.close("all")


@pytest.mark.parametrize("n_pos,n_neg,d,lam", [(6, 5, 40, 0.1), (6, 5, 40, 1.0), (30, 25, 12, 0.3)])
def test_fisher_in_properties_equals_the_covariance_path(n_pos, n_neg, d, lam):
    """The Woodbury path (n < d) and the d × d path agree with fisher_distance on the pooled covariance."""
    rng = np.random.default_rng(28)
    h, labels = _behaviour(rng, n_pos, n_neg, d, shift=1.5)
    m = geo.class_moments(h, labels)
    pooled = (np.cov(h[labels], rowvar=False) * (n_pos - 1) + np.cov(h[~labels], rowvar=False) * (n_neg - 1)) \
        / (n_pos + n_neg - 2)
    np.testing.assert_allclose(m.pooled, pooled, rtol=1e-12)
    np.testing.assert_allclose(geo.properties(h, labels, shrinkage=lam)["fisher"],
                               geo.fisher_distance(m.b, pooled, lam), rtol=1e-9)
    with pytest.raises(GeometryError, match="shrinkage"):
        geo.properties(h, labels, shrinkage=0.0)


def test_margin_correlations():
    rng = np.random.default_rng(29)
    items = [(f"b{k}", *_behaviour(rng, 10, 10, 4, shift=2)) for k in range(3)]
    values = {name: rng.uniform(size=20) for name, _, _ in items}
    got = geo.margin_correlations(items, values)
    for k, (name, h, lab) in enumerate(items):
        np.testing.assert_allclose(got[k], stats.spearman(values[name], geo.signed_margins(h, lab)), rtol=1e-14)
    with pytest.raises(GeometryError, match="no values"):
        geo.margin_correlations(items, {})


def test_bootstrap_gaps_match_priority_gaps_of_the_replicates():
    rng = np.random.default_rng(30)
    data = {n: _behaviour(rng, 12, 10, 5, shift=s) for n, s in (("x", 1.0), ("y", 2.0), ("z", 3.0))}
    out = geo.bootstrap_gaps(data, [("x", "z"), ("z", "y")], n_boot=20, seed=4)
    bx = geo.bootstrap(*data["x"], n_boot=20, seed=(4, 0), which=("b",))["b"]
    bz = geo.bootstrap(*data["z"], n_boot=20, seed=(4, 2), which=("b",))["b"]
    by = geo.bootstrap(*data["y"], n_boot=20, seed=(4, 1), which=("b",))["b"]
    for r in range(20):
        np.testing.assert_allclose(out[("x", "z")][r], geo.priority_gap(bx[r], bz[r]), rtol=1e-12)
        np.testing.assert_allclose(out[("z", "y")][r], geo.priority_gap(bz[r], by[r]), rtol=1e-12)
    # the b replicates are the class-mean differences of the resamples
    full = geo.bootstrap(*data["x"], n_boot=20, seed=(4, 0), which=("b", "distinguishability"))
    np.testing.assert_allclose(np.linalg.norm(full["b"], axis=1), full["distinguishability"], rtol=1e-12)
    with pytest.raises(GeometryError, match="no embeddings"):
        geo.bootstrap_gaps(data, [("x", "w")])


def test_tail_curves_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignment_dynamics import plotting as P

    t = np.linspace(0, 3, 10)
    s = np.exp(-t)
    fig = P.tail_curves([{"title": "a", "curves": {"m": (t, s)}, "references": {"ref": (t, s)}},
                         {"title": "b", "curves": {"m": (t, s)}}])
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="at least one"):
        P.tail_curves([])
    plt.close("all")
