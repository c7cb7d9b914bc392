"""The named verdict rules of book/distinguishability.md (alignment_dynamics.verdicts, at the end) and
the intervals they rest on (alignment_dynamics.stats): each must use its sample size and be able to say
"not resolvable"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import stats, verdicts
from alignment_dynamics.stats import StatsError
from alignment_dynamics.verdicts import AGREES, DIFFERS, PARTLY, UNRESOLVED, UNTESTABLE, VerdictError


def test_spearman_z_interval_values_and_sample_size():
    r, lo, hi = stats.spearman_z_interval(0.5, 28)
    se = math.sqrt((1 + 0.125) / 25)
    assert (lo, hi) == pytest.approx((math.tanh(math.atanh(0.5) - 1.959964 * se),
                                      math.tanh(math.atanh(0.5) + 1.959964 * se)), abs=1e-5)
    assert (lo, hi) == pytest.approx((0.1328, 0.7463), abs=2e-3)
    _, lo2, hi2 = stats.spearman_z_interval(0.5, 280)
    assert lo < lo2 < 0.5 < hi2 < hi
    assert stats.spearman_z_interval(1.0, 10) == (1.0, 1.0, 1.0)
    with pytest.raises(StatsError, match="n must be"):
        stats.spearman_z_interval(0.5, 3)
    with pytest.raises(StatsError, match="rho must lie"):
        stats.spearman_z_interval(1.5, 30)


def test_spearman_z_interval_covers_at_its_level():
    rng = np.random.default_rng(0)
    n, reps, rho = 40, 400, 0.6
    cov = [[1, rho], [rho, 1]]
    true = 6 / math.pi * math.asin(rho / 2)  # Spearman's rho of a bivariate normal
    hits = 0
    for _ in range(reps):
        x, y = rng.multivariate_normal([0, 0], cov, size=n).T
        _, lo, hi = stats.spearman_z_interval(stats.spearman(x, y), n)
        hits += lo <= true <= hi
    assert abs(hits / reps - 0.95) < 5 * math.sqrt(0.95 * 0.05 / reps)


def test_dprime_se():
    assert stats.dprime_se(0.0, 10, 10) == pytest.approx(math.sqrt(0.2))
    assert stats.dprime_se(1.0, 10, 10) == pytest.approx(math.sqrt(0.2 + 1 / 40))
    assert stats.dprime_se(1.0, 100, 100) < stats.dprime_se(1.0, 10, 10)
    with pytest.raises(StatsError, match="n_pos"):
        stats.dprime_se(1.0, 1, 10)


def test_stable_ranking_uses_the_number_of_behaviours():
    assert verdicts.stable_ranking({"a": 0.8, "b": 0.7}, 135).verdict == AGREES
    assert verdicts.stable_ranking({"a": 0.8, "b": 0.7}, 5).verdict == UNRESOLVED   # the same rho, 5 behaviours
    assert verdicts.stable_ranking({"a": -0.6}, 135).verdict == DIFFERS
    assert verdicts.stable_ranking({"a": 0.2}, 135).verdict == PARTLY             # reproducible but weak
    assert verdicts.stable_ranking({"a": 0.8, "b": -0.6}, 135).verdict == PARTLY
    assert verdicts.stable_ranking({"a": 0.8}, 3).verdict == UNTESTABLE
    assert verdicts.stable_ranking({"a": float("nan")}, 135).verdict == UNTESTABLE
    v = verdicts.stable_ranking({"a": 0.8, "b": 0.7}, 135)
    assert v.n == 135 and v.lo < 0.8 < v.hi and "Fisher-z" in v.rule
    with pytest.raises(VerdictError):
        verdicts.stable_ranking({}, 135)


def test_ordered_dprime_uses_the_panels_sizes():
    assert verdicts.ordered_dprime(0.5, 2.0, (100, 100), (100, 100)).verdict == AGREES
    assert verdicts.ordered_dprime(0.5, 2.0, (3, 3), (3, 3)).verdict == UNRESOLVED
    assert verdicts.ordered_dprime(2.0, 0.5, (100, 100), (100, 100)).verdict == DIFFERS
    assert verdicts.ordered_dprime(float("nan"), 0.5, (100, 100), (100, 100)).verdict == UNTESTABLE
    v = verdicts.ordered_dprime(0.5, 2.0, (100, 100), (100, 100))
    se = math.hypot(stats.dprime_se(0.5, 100, 100), stats.dprime_se(2.0, 100, 100))
    assert v.estimate == pytest.approx(1.5) and v.hi - v.lo == pytest.approx(2 * 1.959964 * se, rel=1e-5)
    assert v.n == 400


def test_tails_not_heavier():
    case = {("m", "random"): (1.8, 1.0, 0.05)}
    assert verdicts.tails_not_heavier(case, 10).verdict == AGREES
    assert verdicts.tails_not_heavier({("m", "random"): (0.7, 1.0, 0.05)}, 10).verdict == DIFFERS
    assert verdicts.tails_not_heavier({("m", "random"): (1.02, 1.0, 0.05)}, 10).verdict == UNRESOLVED
    assert verdicts.tails_not_heavier({("m", "random"): (1.8, 1.0, 1.0)}, 3).verdict == UNRESOLVED  # wide reference
    assert verdicts.tails_not_heavier(case, 1).verdict == UNTESTABLE
    mixed = {("m", "random"): (1.8, 1.0, 0.05), ("m", "mean_difference"): (0.7, 1.0, 0.05)}
    assert verdicts.tails_not_heavier(mixed, 10).verdict == PARTLY
    v = verdicts.tails_not_heavier(case, 10)
    from scipy.stats import t
    assert v.hi - v.lo == pytest.approx(2 * t.ppf(0.975, 9) * 0.05 * math.sqrt(1.1))


def test_readings():
    assert verdicts.ratio_reading(1.1, 1.5) == "larger"
    assert verdicts.ratio_reading(0.5, 0.9) == "smaller"
    assert verdicts.ratio_reading(0.9, 1.1) == "not clearly different"
    assert "small part" in verdicts.confidence_share_reading(0.2)
    assert "substantial" in verdicts.confidence_share_reading(0.3)
    assert "neighbouring" in verdicts.reliability_reading({"a": 0.95, "b": 0.91}, n_full=1000)
    coarse = verdicts.reliability_reading({"a": 0.95, "b": 0.7}, n_full=1000)
    assert "coarse order" in coarse and "1000 statements" in coarse
    assert "not even" in verdicts.reliability_reading({"a": 0.95, "b": 0.5}, n_full=1000)
    with pytest.raises(VerdictError):
        verdicts.ratio_reading(1.5, 1.1)
    with pytest.raises(VerdictError):
        verdicts.confidence_share_reading(1.5)


def test_step_reading_against_the_limit():
    assert verdicts.step_reading(0.01).startswith("far below 4")
    assert verdicts.step_reading(1.0).startswith("below 4")
    assert verdicts.step_reading(4.0).startswith("not below 4")
    assert verdicts.step_reading(1.0, limit=100).startswith("far below 100")
    with pytest.raises(VerdictError):
        verdicts.step_reading(-1.0)
