"""alignment_dynamics.crossfit: predictor and outcome on disjoint statements.

The decisive test is the null: behaviours that are all equally distinguishable. Then the circular test
(‖b̂‖ and the loss drop on the same training statements) still finds a strong rank correlation — it
is the algebra of the first step, not a finding — while the cross-fitted one does not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment_dynamics import crossfit, lastlayer as dy

V, D, YES, NO = 23, 6, 3, 11


def make_set(rng, name, shift, n_per_class=30, d=D, common=3.0):
    c = np.full(d, common / math.sqrt(d))
    b = rng.standard_normal(d)
    b *= shift / np.linalg.norm(b)
    h = np.concatenate([c + b / 2 + rng.standard_normal((n_per_class, d)),
                        c - b / 2 + rng.standard_normal((n_per_class, d))])
    s = np.concatenate([np.ones(n_per_class), -np.ones(n_per_class)])
    tr = np.arange(2 * n_per_class) % 10 != 0
    idx = np.arange(2 * n_per_class)
    return dy.BehaviorSet(name, "synthetic", h[tr], s[tr], idx[tr], h[~tr], s[~tr], idx[~tr])


def make_facts(rng, d=D):
    W0 = rng.standard_normal((V, d)) * 0.3
    return dy.HeadFacts("synthetic", YES, NO, W0[YES].copy(), W0[NO].copy(), np.ones(d), 1e-5, V)


def test_fold_roles_are_disjoint_and_cover_the_sample():
    rng = np.random.default_rng(0)
    bs = make_set(rng, "b", 1.0)
    rot = crossfit.fold_sets(bs, n_folds=3, seed=1)
    assert len(rot) == 3
    all_idx = set(np.concatenate([bs.idx_train, bs.idx_test]).tolist())
    train_folds = [set(f.idx_train.tolist()) for _, f in rot]
    for bx, f in rot:
        assert not set(f.idx_train.tolist()) & set(f.idx_test.tolist())
        assert bx.shape == (D,)
    assert set().union(*train_folds) == all_idx and sum(map(len, train_folds)) == len(all_idx)
    # rotation r's outcome fold is the next rotation's training fold's successor, never its own training fold
    for r, (_, f) in enumerate(rot):
        assert set(f.idx_test.tolist()) == train_folds[(r + 1) % 3]


def _sets(rng, shifts):
    return [make_set(rng, f"b{i}", s) for i, s in enumerate(shifts)]


def test_speed_crossfit_finds_a_real_order():
    rng = np.random.default_rng(2)
    sets = _sets(rng, np.linspace(0.2, 3.0, 16))
    out = crossfit.speed_crossfit(sets, facts=make_facts(rng), steps=20, batch_size=16, seeds=[0], lr=200.0,
                                  beta=0.1, seed=3, n_boot=300)
    assert out.x.shape == out.y.shape == (3, 16)
    assert out.rho > 0.5 and out.verdict.verdict == "agrees" and out.verdict.n == 16
    assert out.batch == 16


def test_speed_crossfit_is_not_fooled_by_the_circular_algebra():
    rng = np.random.default_rng(4)
    sets = _sets(rng, np.full(16, 0.6))  # every behaviour equally distinguishable
    out = crossfit.speed_crossfit(sets, facts=make_facts(rng), steps=5, batch_size=None, seeds=[0], lr=0.5,
                                  beta=0.1, seed=5, n_boot=300)
    assert out.circular[0] > 0.8  # the construction, not a finding
    assert out.lo < out.circular[1]
    assert out.verdict.verdict != "agrees"


def test_pair_crossfit_null_and_signal():
    rng = np.random.default_rng(6)
    facts = make_facts(rng)
    sets = {bs.behavior: bs for bs in _sets(rng, np.full(10, 0.6))}
    names = sorted(sets)
    pairs = [(names[i], names[j]) for i in range(10) for j in range(i + 1, 10)][:20]
    null = crossfit.pair_crossfit(pairs, sets, facts=facts, steps=5, batch_size=None, seeds=[0], lr=0.5, beta=0.1,
                                  seed=1, n_boot=300)
    assert null.circular[0] > 0.8
    assert null.verdict.verdict in ("not resolvable at this sample size", "differs")
    sig = {bs.behavior: bs for bs in _sets(rng, np.linspace(0.2, 3.0, 10))}
    good = crossfit.pair_crossfit(pairs, sig, facts=facts, steps=5, batch_size=None, seeds=[0], lr=0.5, beta=0.1,
                                  seed=1, n_boot=300)
    assert good.share > null.share and good.lo <= good.share <= good.hi and good.n == 20
    with pytest.raises(dy.DynamicsError, match="no behaviour set"):
        crossfit.pair_crossfit([("x", "y")], sig, facts=facts, steps=1, batch_size=None, seeds=[0], lr=1.0, beta=0.1)
