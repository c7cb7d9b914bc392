"""The shared validation of the library's public functions (issue 15): NaN, inf, empty inputs and invalid
beta, eta, n are clear errors (alignment_dynamics.validate), never NaN results."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from alignment_dynamics import config, dpo, stats, theory, validate

RNG = np.random.default_rng(0)
H = RNG.standard_normal((8, 3))
S = np.array([1, -1] * 4, dtype=float)
NAN_H = H.copy()
NAN_H[2, 1] = np.nan
INF_H = H.copy()
INF_H[0, 0] = np.inf
EMPTY = np.zeros((0, 3))


def test_the_module_is_a_leaf_and_config_reexports_it():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(validate))
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative, "validate.py imports nothing from the package"
    assert config.ConfigError is validate.ConfigError and config.suggest is validate.suggest
    assert issubclass(validate.InputError, ValueError)


CASES = [
    ("logistic_gd NaN", lambda: theory.logistic_gd(NAN_H, S, beta=0.5, lr=1.0, steps=3), r"H has 1 non-finite"),
    ("logistic_gd inf", lambda: theory.logistic_gd(INF_H, S, beta=0.5, lr=1.0, steps=3), r"non-finite"),
    ("logistic_gd empty", lambda: theory.logistic_gd(EMPTY, [], beta=0.5, lr=1.0, steps=3), r"H is empty"),
    ("logistic_gd beta nan", lambda: theory.logistic_gd(H, S, beta=float("nan"), lr=1.0, steps=3), r"beta must be a finite"),
    ("logistic_gd lr 0", lambda: theory.logistic_gd(H, S, beta=0.5, lr=0, steps=3), r"lr must be a positive"),
    ("logistic_gd steps 2.5", lambda: theory.logistic_gd(H, S, beta=0.5, lr=1.0, steps=2.5), r"steps must be an integer"),
    ("dpo_loss_from_v beta -1", lambda: theory.dpo_loss_from_v(np.zeros(3), H, S, beta=-1), r"beta must be a positive"),
    ("dpo_loss_from_v NaN v", lambda: theory.dpo_loss_from_v(np.full(3, np.nan), H, S, beta=1), r"v has 3 non-finite"),
    ("first_step_v beta 0", lambda: theory.first_step_v(H, S, beta=0, lr=1.0), r"beta must be a positive"),
    ("first_step_v NaN", lambda: theory.first_step_v(NAN_H, S, beta=1, lr=1.0), r"non-finite"),
    ("first_step_v labels", lambda: theory.first_step_v(H, S * 2, beta=1, lr=1.0), r"labels must be \+1 or -1"),
    ("kappa_of lr -1", lambda: theory.kappa_of(-1, 0.5, 2.0), r"lr must be a positive"),
    ("kappa_of G nan", lambda: theory.kappa_of(1, 0.5, np.nan), r"G_norm has 1 non-finite"),
    ("kappa_of G < 0", lambda: theory.kappa_of(1, 0.5, -1.0), r"G_norm .* must be >= 0"),
    ("sample_statistics empty", lambda: theory.sample_statistics(EMPTY, []), r"H is empty"),
    ("sample_statistics NaN", lambda: theory.sample_statistics(NAN_H, S), r"non-finite"),
    ("bernstein_radius n 0", lambda: theory.bernstein_radius(0.05, 0, 1.0), r"n must be an integer >= 1, got 0"),
    ("bernstein_radius alpha inf", lambda: theory.bernstein_radius(0.05, 10, np.inf), r"alpha must be a finite"),
    ("update_rate_curves n odd", lambda: theory.update_rate_curves(0, d=4, n=9, beta_prime=0.64, lr=0.1, steps=2,
                                                                   deltas=[0.5]), r"n must be even .* got 9; use 8 or 10"),
    ("update_rate_curves deltas empty", lambda: theory.update_rate_curves(0, d=4, n=8, beta_prime=0.64, lr=0.1, steps=2,
                                                                          deltas=[]), r"deltas is empty"),
    ("spearman constant", lambda: stats.spearman([1.0, 1.0, 1.0, 1.0], [1, 2, 3, 4]), r"x is constant"),
    ("spearman NaN", lambda: stats.spearman([1.0, np.nan, 3.0], [1, 2, 3]), r"non-finite"),
]


@pytest.mark.parametrize("name, call, message", CASES, ids=[c[0] for c in CASES])
def test_numpy_functions_refuse_bad_input_clearly(name, call, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning / scipy warning on the way
        with pytest.raises(ValueError, match=message):
            call()


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


T_H, T_W = _t(H), _t(RNG.standard_normal((5, 3)))
TOK = torch.tensor([1, 2, 3, 4, 0, 1, 2, 3])


TORCH_CASES = [
    ("logprobs_naive NaN H", lambda: dpo.logprobs_naive(_t(NAN_H), T_W, TOK), r"H has 1 non-finite"),
    ("logprobs_naive inf W", lambda: dpo.logprobs_naive(T_H, _t(np.full((5, 3), np.inf)), TOK), r"W has 15 non-finite"),
    ("logprobs_naive empty", lambda: dpo.logprobs_naive(_t(EMPTY), T_W, TOK[:0]), r"H is empty"),
    ("selective_logprobs NaN", lambda: __import__("alignment_dynamics.dpo.fused", fromlist=["x"]).selective_logprobs(
        _t(NAN_H), T_W, TOK), r"H has 1 non-finite"),
    ("dpo_loss NaN", lambda: dpo.dpo_loss(_t([np.nan]), _t([0.0]), _t([0.0]), _t([0.0]), beta=0.1),
     r"policy_chosen_logps has 1 non-finite"),
    ("dpo_loss empty", lambda: dpo.dpo_loss(_t([]), _t([]), _t([]), _t([]), beta=0.1), r"is empty"),
    ("dpo_loss beta -1", lambda: dpo.dpo_loss(_t([0.0]), _t([0.0]), _t([0.0]), _t([0.0]), beta=-1), r"beta must be a positive"),
    ("train_reference NaN", lambda: dpo.train_reference(_t(NAN_H), T_W, TOK, TOK.roll(1), beta=0.1, lr=1.0, steps=2,
                                                       batch_size=None, generator=0), r"H has 1 non-finite"),
    ("train_reference beta inf", lambda: dpo.train_reference(T_H, T_W, TOK, TOK.roll(1), beta=float("inf"), lr=1.0,
                                                            steps=2, batch_size=None, generator=0), r"beta must be a finite"),
    ("train_two_row NaN", lambda: dpo.train_two_row(_t(NAN_H), _t(S), beta=0.1, lr=1.0, steps=2, batch_size=None,
                                                   generator=0), r"H has 1 non-finite"),
    ("train_two_row empty", lambda: dpo.train_two_row(_t(EMPTY), _t([]), beta=0.1, lr=1.0, steps=2, batch_size=None,
                                                     generator=0), r"H is empty"),
    ("train_two_row lr -1", lambda: dpo.train_two_row(T_H, _t(S), beta=0.1, lr=-1.0, steps=2, batch_size=None,
                                                     generator=0), r"lr must be a positive"),
]


@pytest.mark.parametrize("name, call, message", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_functions_refuse_bad_input_clearly(name, call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_good_input_still_works():
    v = theory.logistic_gd(H, S, beta=0.5, lr=1.0, steps=3)
    assert np.isfinite(v).all() and v.shape == (4, 3)
    assert np.isfinite(theory.dpo_loss_from_v(v[-1], H, S, beta=0.5))
    assert theory.bernstein_radius(0.05, 10, 1.0) > 0
    assert -1 <= stats.spearman([1, 2, 3, 4], [1, 3, 2, 4]) <= 1
    loss, *_ = dpo.dpo_loss(_t([-1.0]), _t([-2.0]), _t([-1.5]), _t([-1.5]), beta=0.1)
    assert torch.isfinite(loss)
