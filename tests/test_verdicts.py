"""The verdict rules (``alignment_dynamics.verdicts``) and the statistics behind them (``stats``).

Every rule is tested on its four outcomes, with mutation-style cases: an interval that straddles the
rule's threshold must give "not resolvable at this sample size", however good the point estimate; a
wrong-sign estimate with a tight interval must give "differs".
"""

import math

import numpy as np
import pytest
from scipy.stats import binomtest, spearmanr

from alignment_dynamics import book, stats, verdicts as vd

U = "not resolvable at this sample size"


def test_vocabulary_is_shared():
    assert book.VERDICTS is vd.VERDICTS
    assert U in vd.VERDICTS and "not testable here" in vd.VERDICTS
    assert set(book.verdict_counts([])) == set(vd.VERDICTS)


def test_positive_rule_outcomes():
    assert vd.positive(0.6, 0.4, 0.8, 135).verdict == "agrees"
    assert vd.positive(0.2, 0.1, 0.3, 135).verdict == "partly agrees"  # shown positive and shown weak
    assert vd.positive(0.3, 0.1, 0.6, 135).verdict == "agrees"  # a strong association is not excluded
    assert vd.positive(-0.5, -0.7, -0.3, 135).verdict == "differs"
    assert vd.positive(math.nan, math.nan, math.nan, 135).verdict == "not testable here"


def test_positive_rule_mutations():
    # a great point estimate whose interval straddles 0 is not a result
    assert vd.positive(0.9, -0.05, 0.99, 5).verdict == U
    # a wrong-sign estimate with a tight interval differs
    assert vd.positive(-0.2, -0.25, -0.15, 135).verdict == "differs"
    # the old rule (rho >= 0.5 on the point estimate) would call this "partly"; the interval decides
    assert vd.positive(0.45, 0.2, 0.7, 135).verdict == "agrees"
    with pytest.raises(vd.VerdictError):
        vd.positive(0.9, 0.1, 0.5, 10)  # estimate outside its interval


def test_share_rule_and_wilson():
    assert vd.share(0.9, 0.85, 0.95, 300).verdict == "agrees"
    assert vd.share(0.7, 0.6, 0.75, 300).verdict == "partly agrees"
    assert vd.share(0.55, 0.45, 0.65, 300).verdict == U  # straddles chance
    assert vd.share(0.3, 0.25, 0.35, 300).verdict == "differs"
    assert vd.share(0.5, 0.4, 0.6, 100, chance=1 / 3, strong=0.45).verdict == "agrees"
    # two out of two named pairs resolve nothing
    v = vd.share_counts(2, 2)
    assert v.verdict == U and v.n == 2
    ci = binomtest(7, 10).proportion_ci(method="wilson")
    assert stats.wilson(7, 10)[1:] == pytest.approx((ci.low, ci.high))
    with pytest.raises(stats.StatsError):
        stats.wilson(3, 2)


def test_difference_and_paired():
    assert vd.difference(0.2, 0.1, 0.3, 3).verdict == "agrees"
    assert vd.difference(0.2, 0.1, 0.3, 3, expected=-1).verdict == "differs"
    assert vd.difference(-0.2, -0.3, -0.1, 3, expected=-1).verdict == "agrees"
    assert vd.difference(0.2, -0.1, 0.3, 3).verdict == U
    assert vd.paired_difference([0.5]).verdict == U  # one seed: unbounded interval
    v = vd.paired_difference([1.0, 1.1, 0.9, 1.05, 0.95])
    assert v.verdict == "agrees" and v.n == 5 and v.lo > 0
    assert vd.paired_difference([-1.0, -1.1, -0.9]).verdict == "differs"
    assert vd.paired_difference([1.0, -1.0, 0.5]).verdict == U


def test_absent_rule():
    assert vd.absent([(-0.1, 0.1), (-0.05, 0.15)], margin=0.2).verdict == "agrees"
    assert vd.absent([(0.1, 0.3), (-0.4, -0.1)], margin=0.2).verdict == "differs"
    assert vd.absent([(0.1, 0.3), (-0.1, 0.1)], margin=0.2).verdict == "partly agrees"
    # a wide interval containing 0 is not evidence of absence
    assert vd.absent([(-0.5, 0.6)], margin=0.2).verdict == U
    assert vd.absent([(math.nan, 0.1)], margin=0.2).verdict == "not testable here"


def test_exact_bound_and_rank_order():
    assert vd.exact(1e-12).verdict == "agrees" and vd.exact(1e-3).verdict == "differs"
    assert vd.bound(0.3).verdict == "agrees" and vd.bound(1.2).verdict == "differs"
    x = np.arange(5.0)
    # rho = 1 over five items: p = 1/120 < 0.05
    assert vd.rank_order(x, x).verdict == "agrees"
    assert vd.rank_order(x, -x).verdict == "differs"
    # rho = 0.8 over five items is not significant at 0.05 (p = 0.05 + ...): not resolvable
    y = np.array([1.0, 0.0, 3.0, 2.0, 4.0])
    assert spearmanr(x, y).statistic == pytest.approx(0.8)
    v = vd.rank_order(x, y)
    assert v.verdict == U and v.extra["p_greater"] == pytest.approx(8 / 120)


def test_combine():
    a, p, d, u = (vd.Verdict(v, 0.0, None, None, 1, "r") for v in ("agrees", "partly agrees", "differs", U))
    assert vd.combine([a, a]).verdict == "agrees"
    assert vd.combine([a, d]).verdict == "partly agrees"
    assert vd.combine([d, u]).verdict == "differs"
    assert vd.combine([u, u]).verdict == U
    assert vd.combine([a, d]).n == 2


def test_verdict_words_and_row():
    v = vd.positive(0.6, 0.4, 0.8, 135)
    assert v.phrase() == "agrees with the paper's claim"
    assert v.sentence("ρ") == "ρ: 0.60 [0.40, 0.80], n = 135 behaviours, which agrees with the paper's claim."
    assert v.row() == {"verdict": "agrees", "estimate": 0.6, "interval": [0.4, 0.8], "n": 135, "rule": v.rule}
    assert vd.paired_difference([0.5]).row()["interval"] == [None, None]


def test_claim_row_carries_numbers():
    book.begin("training_dynamics")
    row = book.claim("c", "m", vd.positive(0.6, 0.4, 0.8, 135))
    assert row["estimate"] == 0.6 and row["interval"] == [0.4, 0.8] and row["n"] == 135
    old = book.claim("c", "m", "agrees")  # the old way still works
    assert old["verdict"] == "agrees" and old["n"] is None
    with pytest.raises(book.GlueError):
        book.claim("c", "m", "maybe")


def test_pair_share_by_behaviour_is_wider_than_wilson_when_behaviours_repeat():
    rng = np.random.default_rng(0)
    names = [f"b{i}" for i in range(20)]
    # each behaviour has a fixed 'goodness'; pairs agree when they contain a good behaviour
    good = {b: rng.random() < 0.5 for b in names}
    members = [tuple(rng.choice(names, 2, replace=False)) for _ in range(300)]
    agree = np.array([float(good[a] or good[b]) for a, b in members])
    p, lo, hi = stats.pair_share_by_behaviour(agree, members, n_boot=2000, seed=1)
    _, wlo, whi = stats.wilson(int(agree.sum()), len(agree))
    assert lo <= p <= hi
    assert hi - lo > 1.5 * (whi - wlo)


def test_crossfit_spearman_and_folds():
    rng = np.random.default_rng(0)
    t = rng.normal(size=40)
    x = t + 0.3 * rng.normal(size=(3, 40))
    y = t + 0.3 * rng.normal(size=(3, 40))
    rho, lo, hi = stats.crossfit_spearman(x, y, n_boot=500, seed=0)
    assert lo <= rho <= hi and lo > 0.5
    rho0, lo0, hi0 = stats.crossfit_spearman(rng.normal(size=(3, 40)), rng.normal(size=(3, 40)), n_boot=500)
    assert lo0 < 0 < hi0
    s = np.array([1] * 10 + [-1] * 11)
    f = stats.stratified_folds(s, 3, seed=0)
    for k in range(3):
        assert abs((f[s > 0] == k).sum() - 10 / 3) < 1 and abs((f[s < 0] == k).sum() - 11 / 3) < 1
    with pytest.raises(stats.StatsError):
        stats.stratified_folds(np.array([1, 1, -1]), 3, seed=0)


def test_t_interval():
    m, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2 < hi
    assert stats.t_interval([4.0])[1] == -math.inf


def test_crossfit_spearman_rejects_a_constant_input():
    import numpy as np

    x = np.arange(10.0)[None, :]
    with pytest.raises(stats.StatsError, match="constant"):
        stats.crossfit_spearman(x, np.ones_like(x), n_boot=50)


def test_count_is_rule():
    assert vd.count_is(2, 2, n=300, unit="rows").verdict == "agrees"
    assert vd.count_is(3, 2).verdict == "differs" and vd.count_is(0, 2).verdict == "differs"
    v = vd.count_is(2, 2, n=300, unit="rows")
    assert (v.estimate, v.n) == (2.0, 300) and "exactly 2" in v.rule
    with pytest.raises(vd.VerdictError, match="non-negative int"):
        vd.count_is(2.0, 2)
    with pytest.raises(vd.VerdictError, match="non-negative int"):
        vd.count_is(2, -1)


def test_within_rule_and_its_tolerance():
    assert vd.within(1e-16, tol=1e-10).verdict == "agrees"
    assert vd.within(1e-9, tol=1e-10).verdict == "differs"       # the threshold scaled down is crossed
    assert vd.within(1e-9, tol=1e-8).verdict == "agrees"         # ... and scaled up is not
    assert vd.within(0.0, tol=0.0).verdict == "agrees" and vd.within(1e-300, tol=0.0).verdict == "differs"
    assert vd.within(float("nan"), tol=1e-10).verdict == "not testable here"
    v = vd.within(1e-16, tol=1e-10, n=100, unit="steps", what="max |loss difference|")
    assert v.n == 100 and v.estimate == 1e-16 and "max |loss difference| at most 1e-10" in v.rule
    with pytest.raises(vd.VerdictError, match="tol"):
        vd.within(0.0, tol=-1.0)
    with pytest.raises(vd.VerdictError, match=">= 0"):
        vd.within(-1e-3, tol=1e-2)


def test_float_identity_rule():
    assert vd.float_identity(3e-16).verdict == "agrees"
    assert vd.float_identity(3e-12).verdict == "differs"  # above the default 1e-12
    assert vd.float_identity(3e-12, tol=1e-11).verdict == "agrees"  # the threshold is the rule's
    assert vd.float_identity(float("inf")).verdict == "differs"
    assert vd.float_identity(float("nan")).verdict == "not testable here"
    v = vd.float_identity(1e-13, n=7, unit="steps")
    assert v.estimate == 1e-13 and v.n == 7 and "1e-12" in v.rule
    with pytest.raises(vd.VerdictError, match="non-negative"):
        vd.float_identity(-1.0)
    with pytest.raises(vd.VerdictError, match="tol"):
        vd.float_identity(0.0, tol=0.0)

def test_same_scale_agrees_within_the_factor_only():
    assert vd.same_scale(1.0).verdict == vd.AGREES
    assert vd.same_scale(9.9).verdict == vd.AGREES and vd.same_scale(1 / 9.9).verdict == vd.AGREES
    assert vd.same_scale(10.1).verdict == vd.DIFFERS and vd.same_scale(0.099).verdict == vd.DIFFERS
    assert vd.same_scale(3.0, factor=2).verdict == vd.DIFFERS  # the factor is the rule's, not a constant
    assert vd.same_scale(float("nan")).verdict == vd.UNTESTABLE
    with pytest.raises(vd.VerdictError, match="above 1"):
        vd.same_scale(1.0, factor=1)
    with pytest.raises(vd.VerdictError, match="must be positive"):
        vd.same_scale(-2.0)


def test_numbers_without_an_interval_separate_the_size():
    """An estimate with a sample size but no interval reads "0.17, n = 9 behaviours", never "0.17 n = 9"."""
    v = vd.Verdict(vd.UNRESOLVED, 0.17, None, None, 9, "rule", "behaviours")
    assert v.numbers() == "0.17, n = 9 behaviours"
    assert vd.Verdict(vd.AGREES, 0.5, 0.1, 0.9, 4, "r", "seeds").numbers() == "0.50 [0.10, 0.90], n = 4 seeds"
    assert vd.Verdict(vd.AGREES, None, None, None, 3, "r").numbers() == "n = 3"
    assert vd.Verdict(vd.AGREES, 0.5, None, None, None, "r").numbers() == "0.50"
    assert vd.Verdict(vd.AGREES, 0.5, None, None, 1, "r", "seeds").numbers() == "0.50, n = 1 seed"


def test_by_model_phrase_says_both_only_when_alike():
    a = vd.Verdict(vd.AGREES, 0.4, 0.3, 0.5, 135, "r")
    u = vd.Verdict(vd.UNRESOLVED, 0.1, -0.1, 0.3, 135, "r")
    assert vd.by_model_phrase([a, a]) == f"{a.phrase()} on both models"
    mixed = vd.by_model_phrase([a, u])
    assert mixed == f"{a.phrase()} on the first model and {u.phrase()} on the second model"
    assert "both" not in mixed
    assert vd.by_model_phrase([u, a, a]) == (f"{u.phrase()} on the first model, {a.phrase()} on the second "
                                                   f"model and {a.phrase()} on the third model")
    assert vd.by_model_phrase([a, u], ["m1", "m2"]).endswith(f"{u.phrase()} on m2")
    assert vd.by_model_phrase([a]) == a.phrase()
    with pytest.raises(vd.VerdictError):
        vd.by_model_phrase([])
    with pytest.raises(vd.VerdictError):
        vd.by_model_phrase([a, a], ["m1"])
