"""The bootstrap intervals of ``stats`` (``scipy.stats.bootstrap``) against the percentile bootstrap
this library used to write by hand (kept below as the reference): the numbers did not change."""

from __future__ import annotations

import numpy as np
import pytest

from alignment_dynamics import stats
from alignment_dynamics.stats import StatsError

# --- the reference: the hand-written implementation that stats.* replaced (geometry.py before) ----------


def _old_rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (tuple, list)):
        return np.random.default_rng(np.random.SeedSequence([int(s) for s in seed]))
    return np.random.default_rng(int(seed))


def _old_percentile(reps, level):
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def old_spearman_ci(x, y, *, n_boot=2000, seed=0, level=0.95):
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rho = stats.spearman(a, b)
    n = a.shape[0]
    idx = _old_rng(seed).integers(0, n, size=(int(n_boot), n))
    reps = stats.spearman_rows(a[idx], b[idx])
    reps = reps[np.isfinite(reps)]
    return (rho, *_old_percentile(reps, level))


def old_mean_ci(values, *, n_boot=2000, seed=0, level=0.95):
    v = np.asarray(values, dtype=np.float64)
    idx = _old_rng(seed).integers(0, v.shape[0], size=(int(n_boot), v.shape[0]))
    return (float(v.mean()), *_old_percentile(v[idx].mean(axis=1), level))


def old_paired_ratio(x, y, *, n_boot=2000, seed=0, level=0.95):
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    lr = np.log(a) - np.log(b)
    idx = _old_rng(seed).integers(0, lr.shape[0], size=(int(n_boot), lr.shape[0]))
    lo, hi = _old_percentile(np.median(lr[idx], axis=1), level)
    return {"ratio": float(np.exp(np.median(lr))), "lo": float(np.exp(lo)), "hi": float(np.exp(hi)),
            "frac_greater": float((a > b).mean())}


# --- agreement with the reference ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, (3, 1, 2)])
def test_spearman_ci_agrees_with_the_hand_written_bootstrap(seed):
    rng = np.random.default_rng(15)
    x = rng.standard_normal(60)
    y = 0.5 * x + rng.standard_normal(60)
    new = stats.spearman_ci(x, y, n_boot=4000, seed=seed)
    old = old_spearman_ci(x, y, n_boot=4000, seed=seed)
    assert new[0] == old[0]  # the point estimate is the same computation
    assert abs(new[1] - old[1]) < 0.03 and abs(new[2] - old[2]) < 0.03, (new, old)
    assert new[1] < new[0] < new[2]
    assert stats.spearman_ci(x, y, n_boot=4000, seed=seed) == new  # reproducible
    assert stats.spearman_ci(x, y, n_boot=4000, seed=1) != new  # and the seed matters


def test_spearman_ci_of_a_small_sample_skips_undefined_replicates():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # n = 5: many resamples repeat one pair, so rho is NaN there
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    idx = np.random.default_rng(0).integers(0, 5, size=(2000, 5))
    assert np.isnan(stats.spearman_rows(x[idx], y[idx])).any()  # this seed does draw undefined replicates
    rho, lo, hi = stats.spearman_ci(x, y, n_boot=2000, seed=0)
    _, old_lo, old_hi = old_spearman_ci(x, y, n_boot=2000, seed=0)
    assert np.isfinite([lo, hi]).all() and -1 <= lo <= rho <= hi <= 1
    assert abs(lo - old_lo) < 0.05 and abs(hi - old_hi) < 0.05
    with pytest.raises(StatsError, match="BCa interval is undefined"):
        stats.spearman_ci(x, y, n_boot=2000, seed=0, method="BCa")


def test_mean_ci_and_paired_ratio_agree_with_the_hand_written_bootstrap():
    rng = np.random.default_rng(16)
    v = rng.gamma(2.0, size=50)
    new, old = stats.mean_ci(v, n_boot=4000, seed=2), old_mean_ci(v, n_boot=4000, seed=2)
    assert new[0] == old[0]
    scale = v.std() / np.sqrt(v.size)  # the standard error: Monte-Carlo error of the bounds is a fraction of it
    assert abs(new[1] - old[1]) < 0.1 * scale and abs(new[2] - old[2]) < 0.1 * scale, (new, old)
    x = rng.lognormal(size=40)
    y = x * rng.lognormal(0.3, 0.5, size=40)
    new, old = stats.paired_ratio(x, y, n_boot=4000, seed=4), old_paired_ratio(x, y, n_boot=4000, seed=4)
    assert new["ratio"] == old["ratio"] and new["frac_greater"] == old["frac_greater"]
    assert abs(np.log(new["lo"] / old["lo"])) < 0.03 and abs(np.log(new["hi"] / old["hi"])) < 0.03, (new, old)


def test_bca_is_available():
    rng = np.random.default_rng(17)
    x = rng.standard_normal(60)
    y = x + rng.standard_normal(60)
    rho, lo, hi = stats.spearman_ci(x, y, n_boot=2000, seed=0, method="BCa")
    _, plo, phi = stats.spearman_ci(x, y, n_boot=2000, seed=0)
    assert lo < rho < hi and (lo, hi) != (plo, phi)
    m, lo, hi = stats.mean_ci(x, n_boot=2000, seed=0, method="BCa")
    assert lo < m < hi


# --- exact cases ----------------------------------------------------------------------------------


def test_exact_cases():
    m, lo, hi = stats.mean_ci([1.0, 2.0, 3.0, 4.0], seed=0)
    assert m == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    x = np.array([2.0, 4.0, 8.0, 1.0, 3.0])
    out = stats.paired_ratio(x, x / 2, seed=0)  # every ratio is 2: so is every replicate
    np.testing.assert_allclose([out["ratio"], out["lo"], out["hi"]], 2.0, rtol=1e-12)
    assert out["frac_greater"] == 1.0
    y = np.array([1.0, 8.0, 2.0, 2.0, 3.0])
    out = stats.paired_ratio(x, y, seed=0)
    np.testing.assert_allclose(out["ratio"], np.exp(np.median(np.log(x / y))), rtol=1e-12)
    assert out["lo"] <= out["ratio"] <= out["hi"]
    assert out["frac_greater"] == 0.4


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: stats.spearman_ci([1, 2, 3], [1, 2]), "one length"),
    (lambda: stats.spearman_ci([[1, 2, 3]], [[1, 2, 3]]), "1-D"),
    (lambda: stats.spearman_ci([1, 2], [2, 1]), "at least 3"),
    (lambda: stats.spearman_ci([1, 1, 1, 1], [1, 2, 3, 4]), "constant"),
    (lambda: stats.spearman_ci([1, 2, np.nan, 4], [1, 2, 3, 4]), "finite"),
    (lambda: stats.spearman_ci([1, 2, 3, 4], [1, 3, 2, 4], n_boot=5), "n_boot"),
    (lambda: stats.spearman_ci([1, 2, 3, 4], [1, 3, 2, 4], level=1.0), "level"),
    (lambda: stats.spearman_ci([1, 2, 3, 4], [1, 3, 2, 4], seed="x"), "seed"),
    (lambda: stats.spearman_ci([1, 2, 3, 4], [1, 3, 2, 4], method="normal"), "method"),
    (lambda: stats.mean_ci([1.0]), "at least 2"),
    (lambda: stats.mean_ci([[1.0, 2.0]]), "1-D"),
    (lambda: stats.mean_ci([1.0, np.inf]), "finite"),
    (lambda: stats.paired_ratio([1.0, -1.0], [1.0, 1.0]), "positive"),
    (lambda: stats.paired_ratio([1.0, 2.0], [0.0, 1.0]), "positive"),
    (lambda: stats.paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0]), "one length"),
    (lambda: stats.paired_ratio([1.0], [2.0]), "at least 2"),
])
def test_bad_input_says_what_is_wrong(call, match):
    with pytest.raises(StatsError, match=match):
        call()


def test_generator_streams():
    assert stats.generator(5).integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    g = np.random.default_rng(1)
    assert stats.generator(g) is g
    a = stats.generator((1, 2)).integers(1 << 30)
    assert a == np.random.default_rng(np.random.SeedSequence([1, 2])).integers(1 << 30)
    assert a != stats.generator((1, 3)).integers(1 << 30)
    for bad in (True, 1.5, (), (1, "2")):
        with pytest.raises(StatsError, match="seed"):
            stats.generator(bad)
