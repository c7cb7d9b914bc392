"""alignment_dynamics.lastlayer: the experiments of training_dynamics and prioritization.

The runs are checked against the float64 full-vocabulary reference trainer (losses, both accuracies,
margins, head change, per behaviour and with oversampling); the learning-rate algebra and its scale
invariance; the data plumbing (official splits on nested samples, the two-behaviour stream); the
statistics (partial rank correlations, Wilson intervals, verdict rules) on cases with known answers;
and the prioritisation helpers against the priority theorem's first-order algebra.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignment_dynamics import config, data, dpo, geometry, lastlayer as dy, models, plotting, stats, threads

V, D, YES, NO = 23, 7, 3, 11


def make_set(rng, name="b", n_pos=13, n_neg=11, n_test=(3, 4), *, shift=0.8, common=4.0, d=D):
    """A synthetic behaviour: class means c ± b/2 around a large common mean c (like real embeddings)."""
    c = np.full(d, common / math.sqrt(d))
    b = rng.standard_normal(d)
    b *= shift / np.linalg.norm(b)

    def draw(npos, nneg):
        h = np.concatenate([c + b / 2 + rng.standard_normal((npos, d)), c - b / 2 + rng.standard_normal((nneg, d))])
        s = np.concatenate([np.ones(npos), -np.ones(nneg)])
        return h, s

    htr, s_tr = draw(n_pos, n_neg)
    hte, s_te = draw(*n_test)
    return dy.BehaviorSet(name, "synthetic", htr, s_tr, np.arange(len(s_tr)), hte, s_te, np.arange(len(s_te)) + 1000)


def make_facts(rng, d=D, model="synthetic"):
    W0 = rng.standard_normal((V, d)) * 0.3
    gain = 1.0 + 0.3 * rng.standard_normal(d)
    return dy.HeadFacts(model, YES, NO, W0[YES].copy(), W0[NO].copy(), gain, 1e-5, V), W0


def reference_run(group, W0, *, lr, beta, steps, batch, seed, replicate=None):
    """train_reference on the pooled (replicated) pairs; eval on each behaviour's own sets."""
    rep = replicate or [1] * len(group)
    H = torch.from_numpy(np.concatenate([bs.h_train for bs, r in zip(group, rep) for _ in range(r)]))
    s = np.concatenate([bs.s_train for bs, r in zip(group, rep) for _ in range(r)])
    chosen = torch.from_numpy(np.where(s > 0, YES, NO))
    rejected = torch.from_numpy(np.where(s > 0, NO, YES))
    sets = {}
    for part in ("train", "test"):
        h = np.concatenate([bs.part(part)[0] for bs in group])
        ss = np.concatenate([bs.part(part)[1] for bs in group])
        bid = np.concatenate([np.full(bs.part(part)[0].shape[0], i) for i, bs in enumerate(group)])
        sets[part] = (torch.from_numpy(h), torch.from_numpy(np.where(ss > 0, YES, NO)),
                      torch.from_numpy(np.where(ss > 0, NO, YES)), torch.from_numpy(bid))
    return dpo.train_reference(H, torch.from_numpy(W0), chosen, rejected, beta=beta, lr=lr, steps=steps,
                               batch_size=batch, generator=seed, eval_sets=sets, n_behaviors=len(group))


# ---------------------------------------------------------------------------------------------------
# Runs against the float64 reference
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [8, None])
def test_single_behaviour_runs_match_the_full_vocabulary_reference(batch):
    rng = np.random.default_rng(0)
    bs = make_set(rng)
    facts, W0 = make_facts(rng)
    lr, beta, steps, seed = 0.7, 0.3, 12, 5
    runs = dy.train_runs([[bs]], facts=facts, steps=steps, batch_size=batch, seeds=[seed], lr=lr, beta=beta,
                         progress=False)
    ref = reference_run([bs], W0, lr=lr, beta=beta, steps=steps, batch=batch, seed=seed)
    for part in ("train", "test"):
        ev = ref.eval_by_behavior[part]
        np.testing.assert_allclose(runs.loss[part][0, :, 0], ev["loss"][0, :, 0].numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(runs.margin[part][0, :, 0], ev["rewards/margins"][0, :, 0].numpy() / beta,
                                   rtol=0, atol=1e-10)
        np.testing.assert_array_equal(runs.policy_accuracy[part][0, :, 0], ev["outputs/accuracies"][0, :, 0].numpy())
        np.testing.assert_array_equal(runs.reward_accuracy[part][0, :, 0], ev["rewards/accuracies"][0, :, 0].numpy())
    np.testing.assert_allclose(runs.head_change[0], ref.head_change[0].numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(runs.batch_loss[0], ref.train["loss"][0].numpy(), rtol=0, atol=1e-12)
    # the exact first step, from the first batch's own statistics
    np.testing.assert_allclose(runs.first_step, runs.head_change[:, 1], rtol=1e-12)
    assert runs.policy_accuracy["train"][0, 0, 0] == np.mean(bs.s_train * (bs.h_train @ facts.a) > 0)
    # the share of statements on which the policy prefers Yes, at W_0 and at the reference's final head
    W_T = ref.W.numpy()
    for part in ("train", "test"):
        h = bs.part(part)[0]
        assert runs.policy_yes[part][0, 0, 0] == np.mean(h @ facts.a > 0)
        assert runs.policy_yes[part][0, -1, 0] == np.mean(h @ (W_T[YES] - W_T[NO]) > 0)


def test_joint_and_oversampled_runs_match_the_reference_per_behaviour():
    rng = np.random.default_rng(1)
    group = [make_set(rng, "x", 9, 10), make_set(rng, "y", 12, 8, shift=2.0)]
    facts, W0 = make_facts(rng)
    for replicate in ([1, 1], [3, 1]):
        runs = dy.train_runs([group], facts=facts, steps=10, batch_size=16, seeds=[2], lr=0.5, beta=0.4,
                             replicate=[replicate], progress=False)
        ref = reference_run(group, W0, lr=0.5, beta=0.4, steps=10, batch=16, seed=2, replicate=replicate)
        ev = ref.eval_by_behavior["train"]
        assert runs.loss["train"].shape == (1, 11, 2)
        np.testing.assert_allclose(runs.loss["train"][0], ev["loss"][0].numpy(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(runs.policy_accuracy["test"][0], ref.eval_by_behavior["test"]["outputs/accuracies"][0].numpy())
        np.testing.assert_allclose(runs.head_change[0], ref.head_change[0].numpy(), rtol=1e-10, atol=1e-14)


def test_oversampling_equals_training_on_copied_data():
    rng = np.random.default_rng(15)
    a, b = make_set(rng, "a", 9, 6), make_set(rng, "b", 5, 10, shift=2.0)
    copied = dy.BehaviorSet("a", a.model, np.concatenate([a.h_train] * 3), np.concatenate([a.s_train] * 3),
                            np.concatenate([a.idx_train] * 3), a.h_test, a.s_test, a.idx_test)
    facts, _ = make_facts(rng)
    kw = dict(facts=facts, steps=8, batch_size=12, seeds=[4], lr=0.6, beta=0.3, progress=False)
    r_rep = dy.train_runs([[a, b]], replicate=[[3, 1]], **kw)
    r_cop = dy.train_runs([[copied, b]], **kw)
    np.testing.assert_allclose(r_rep.head_change, r_cop.head_change, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r_rep.loss["train"][..., 1], r_cop.loss["train"][..., 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r_rep.loss["train"][..., 0], r_cop.loss["train"][..., 0], rtol=0, atol=1e-12)
    # the theorem's first step is exact for the oversampled group too (full batch)
    full = dy.train_runs([[a, b]], replicate=[[3, 1]], **{**kw, "batch_size": None, "steps": 1})
    ov = dy.margin_overlay([a, b], full, 0)
    np.testing.assert_allclose(full.margin["train"][0][1], ov["imbalance"][:, 1], rtol=1e-10)


def test_runs_are_ordered_group_lr_seed_and_reproducible():
    rng = np.random.default_rng(2)
    sets = [make_set(rng, "a"), make_set(rng, "b")]
    facts, _ = make_facts(rng)
    kw = dict(facts=facts, steps=5, batch_size=4, seeds=[1, 2], lr=[0.1, 1.0], beta=0.2, progress=False)
    r1 = dy.train_runs([[s] for s in sets], **kw)
    r2 = dy.train_runs([[s] for s in sets], chunk=3, **kw)
    assert r1.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert r1.lr.tolist() == [0.1, 0.1, 1.0, 1.0] * 2 and r1.seed.tolist() == [1, 2] * 4
    np.testing.assert_array_equal(r1.loss["train"], r2.loss["train"])  # chunking changes nothing
    assert not np.array_equal(r1.loss["train"][0], r1.loss["train"][1])  # seeds differ
    sub = r1.select(r1.seed == 2)
    assert sub.runs == 4 and set(sub.seed.tolist()) == {2}
    one = r1.select(r1.lr == 1.0)
    np.testing.assert_allclose(one.curves(["b", "a"], "policy_accuracy", "test"),
                               [one.policy_accuracy["test"][one.group == g][:, :, 0].mean(0) for g in (1, 0)])
    with pytest.raises(dy.DynamicsError, match="no single-behaviour runs of \\['c'\\]"):
        one.curves(["c"])
    with pytest.raises(dy.DynamicsError, match="metric must be one of"):
        one.curves(["a"], "speed")


def test_empty_test_sets_give_nan_and_runs_still_train():
    rng = np.random.default_rng(3)
    full = make_set(rng, "full")
    empty = dy.BehaviorSet("empty", "synthetic", full.h_train, full.s_train, full.idx_train,
                           np.zeros((0, D)), np.zeros(0), np.zeros(0, dtype=int))
    facts, _ = make_facts(rng)
    runs = dy.train_runs([[full], [empty]], facts=facts, steps=4, batch_size=4, seeds=[1], lr=0.3, beta=0.2,
                         progress=False)
    assert np.isfinite(runs.loss["test"][0]).all() and np.isnan(runs.loss["test"][1]).all()
    np.testing.assert_array_equal(runs.loss["train"][0], runs.loss["train"][1])


def test_train_runs_rejects_bad_input_clearly():
    rng = np.random.default_rng(4)
    bs = make_set(rng)
    facts, _ = make_facts(rng)
    kw = dict(facts=facts, steps=3, seeds=[1], lr=0.1, beta=0.1, progress=False)
    with pytest.raises(dy.DynamicsError, match="exceeds the 24 training pairs"):
        dy.train_runs([[bs]], batch_size=100, **kw)
    with pytest.raises(dy.DynamicsError, match="same number of behaviours"):
        dy.train_runs([[bs], [bs, bs]], batch_size=4, **kw)
    with pytest.raises(dy.DynamicsError, match="positive int per behaviour"):
        dy.train_runs([[bs]], batch_size=4, replicate=[[0]], **kw)
    with pytest.raises(dy.DynamicsError, match="lr must be a positive"):
        dy.train_runs([[bs]], batch_size=4, **{**kw, "lr": -1.0})
    other, _ = make_facts(rng, d=D + 1)
    with pytest.raises(dy.DynamicsError, match="same width"):
        dy.train_runs([[bs]], batch_size=4, **{**kw, "facts": other})


# ---------------------------------------------------------------------------------------------------
# The learning rate
# ---------------------------------------------------------------------------------------------------

def test_effective_step_algebra_and_beta_modes():
    assert dy.effective_step(0.1, 0.01, 4096 * 2.0) == pytest.approx(0.1 * 1e-4 * 8192)
    kappa = dy.official_effective_step(3.0)
    assert kappa == pytest.approx(0.1 * 0.01 ** 2 * 4096 * 3.0)
    lr = dy.matched_lr(kappa, 0.01, 2000.0)
    assert dy.effective_step(lr, 0.01, 2000.0) == pytest.approx(kappa)
    assert dy.beta_for("official", 576) == 0.01
    assert dy.beta_for("matched", 4096) == pytest.approx(0.01)
    assert dy.beta_for("matched", 576) == pytest.approx(0.64 / 24)
    with pytest.raises(config.ConfigError, match="valid: \\['official', 'matched'\\]"):
        dy.beta_for("offical", 576)
    with pytest.raises(dy.DynamicsError, match="d must be a positive int"):
        dy.beta_for("matched", 0)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(dy.DynamicsError, match="positive finite"):
            dy.effective_step(bad, 0.01, 1.0)


def test_losses_depend_on_the_scale_only_through_the_effective_step():
    """h -> c h with eta -> eta / c^2: identical margins, losses and reward accuracies; ||W - W0|| / c."""
    rng = np.random.default_rng(5)
    bs = make_set(rng)
    facts, _ = make_facts(rng)
    c = 3.7
    scaled = dy.BehaviorSet(bs.behavior, bs.model, c * bs.h_train, bs.s_train, bs.idx_train, c * bs.h_test, bs.s_test,
                            bs.idx_test)
    kw = dict(facts=facts, steps=20, batch_size=8, seeds=[3], beta=0.2, progress=False)
    r1 = dy.train_runs([[bs]], lr=0.9, **kw)
    r2 = dy.train_runs([[scaled]], lr=0.9 / c ** 2, **kw)
    for part in ("train", "test"):
        np.testing.assert_allclose(r1.loss[part], r2.loss[part], rtol=0, atol=1e-12)
        np.testing.assert_allclose(r1.margin[part], r2.margin[part], rtol=0, atol=1e-10)
        np.testing.assert_array_equal(r1.reward_accuracy[part], r2.reward_accuracy[part])
    np.testing.assert_allclose(r2.head_change, r1.head_change / c, rtol=1e-10, atol=1e-15)
    # at a fixed eta * beta^2 the losses agree and the head change scales as 1 / beta
    r3 = dy.train_runs([[bs]], lr=0.9 / 4, **{**kw, "beta": 0.4})
    np.testing.assert_allclose(r3.loss["train"], r1.loss["train"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r3.head_change, r1.head_change / 2, rtol=1e-10, atol=1e-15)


def test_lr_choice_matches_the_official_effective_step():
    rng = np.random.default_rng(6)
    fa, _ = make_facts(rng, model="proxy")
    fb, _ = make_facts(rng, model="other")
    sa = [make_set(rng, "p1"), make_set(rng, "p2")]
    sb = [make_set(rng, "o1", common=9.0)]
    data_ = {"proxy": (fa, sa), "other": (fb, sb)}
    ch = dy.lr_choice(data_, proxy="proxy")
    q2 = dy.mean_sq_norm(sa, transform=fa.double_norm) / D
    for m in data_:
        assert ch[m]["beta"] == 0.01
        assert ch[m]["kappa"] == pytest.approx(dy.official_effective_step(q2))
    assert ch["other"]["lr"] < ch["proxy"]["lr"]  # larger features, smaller step
    matched = dy.lr_choice(data_, proxy="proxy", beta_mode="matched")
    assert matched["other"]["lr"] == 0.1 and matched["other"]["beta"] == pytest.approx(0.64 / math.sqrt(D))
    assert dy.lr_choice(data_, proxy="proxy", lr=0.3)["other"]["lr"] == 0.3
    with pytest.raises(dy.DynamicsError, match="proxy model 'llama' must be among"):
        dy.lr_choice(data_, proxy="llama")
    # sets embedded with the official double norm: their own scale is the official one
    twice = dy.lr_choice(data_, proxy="proxy", norm="double")
    assert twice["proxy"]["q_official"] == pytest.approx(dy.mean_sq_norm(sa) / D)
    assert math.isnan(dy.feature_scale(fa, sa, "double")["q_once"])
    assert len(dy.lr_scenarios(data_, proxy="proxy", norm="double")) == 3
    with pytest.raises(config.ConfigError, match="unknown norm"):
        dy.feature_scale(fa, sa, "triple")
    rows = dy.lr_scenarios(data_, proxy="proxy")
    assert rows[0]["q"] == 1.0 and len(rows) == 5
    assert [r["in_range"] for r in rows] == [True, True, True, True, False]
    assert rows[1]["q"] == pytest.approx(dy.mean_sq_norm(sa) / D)


def test_mean_sq_norm_and_double_norm():
    rng = np.random.default_rng(7)
    sets = [make_set(rng, "a"), make_set(rng, "b")]
    pooled = np.concatenate([s.h_train for s in sets])
    assert dy.mean_sq_norm(sets) == pytest.approx((pooled ** 2).sum(1).mean())
    facts, _ = make_facts(rng)
    h = pooled[:5]
    expect = facts.gain * h / np.sqrt((h ** 2).mean(1, keepdims=True) + facts.eps)
    np.testing.assert_allclose(facts.double_norm(h), expect)
    with pytest.raises(dy.DynamicsError, match=f"h must be \\(n, {D}\\)"):
        facts.double_norm(np.zeros((2, D + 1)))
    with pytest.raises(dy.DynamicsError, match="at least one behaviour set"):
        dy.mean_sq_norm([])


# ---------------------------------------------------------------------------------------------------
# Data: head facts of a real (tiny) model, official splits on nested samples
# ---------------------------------------------------------------------------------------------------

def test_head_facts_reads_the_answer_rows_and_the_final_norm(tiny_named, monkeypatch):
    facts = dy.head_facts(tiny_named)
    lm = models.load(tiny_named)
    yes, no = lm.answer_token_ids()
    assert (facts.yes_id, facts.no_id) == (yes, no)
    np.testing.assert_allclose(facts.a, (lm.W_U[yes] - lm.W_U[no]).double().numpy(), rtol=1e-6)
    h = torch.randn(4, lm.d_model)
    with torch.no_grad():
        once = lm.final_norm(h).double().numpy()
    np.testing.assert_allclose(facts.double_norm(h.double().numpy()), once, rtol=1e-5, atol=1e-6)
    # the second call reads the cache without loading the model
    monkeypatch.setattr(models, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded again")))
    again = dy.head_facts(tiny_named)
    np.testing.assert_array_equal(again.gain, facts.gain)
    assert again.eps == facts.eps and again.vocab_size == facts.vocab_size


def test_behavior_set_splits_the_nested_sample_officially(tiny_named):
    name = "openness"
    sample = data.stratified_sample(name, 10, seed=1234)
    bs = dy.behavior_set(tiny_named, name, 10, dtype="float32")
    split = data.persona_split(name)
    assert sorted(np.concatenate([bs.idx_train, bs.idx_test]).tolist()) == sample
    assert set(bs.idx_train) <= set(split.train) and set(bs.idx_test) <= set(split.test)
    recs = data.load_persona(name)
    assert all((s > 0) == recs[i].positive for i, s in zip(bs.idx_train, bs.s_train))
    h_all, _ = bs.part("all")
    assert h_all.shape == (20, models.load(tiny_named).d_model)
    np.testing.assert_allclose(bs.b("all"), h_all[np.concatenate([bs.s_train, bs.s_test]) > 0].mean(0)
                               - h_all[np.concatenate([bs.s_train, bs.s_test]) < 0].mean(0))
    with pytest.raises(dy.DynamicsError, match="part must be"):
        bs.part("dev")
    assert bs.computed == 20  # a fresh cache: every prompt was embedded
    again = dy.behavior_set(tiny_named, name, 10, dtype="float32")
    assert again.computed == 0  # then every row comes from the cache
    np.testing.assert_array_equal(again.h_train, bs.h_train)


def test_joint_splits_continue_one_stream():
    a, b = "desire-to-influence-world", "subscribes-to-Islam"
    assert dy.joint_splits([a, b]) == list(data.two_behavior_split(a, b))
    three = dy.joint_splits([a, b, "risk-seeking"])
    assert three[:2] == dy.joint_splits([a, b]) and three[0] == data.persona_split(a)
    with pytest.raises(config.ConfigError):
        dy.joint_splits([a, "no-such-behaviour"])


def test_behavior_set_needs_both_classes():
    h = np.zeros((4, D))
    with pytest.raises(dy.DynamicsError, match="needs both classes"):
        dy.BehaviorSet("x", "m", h, np.ones(4), np.arange(4), h, np.ones(4), np.arange(4))
    with pytest.raises(dy.DynamicsError, match="disagree in shape"):
        dy.BehaviorSet("x", "m", h, np.ones(3), np.arange(4), h, np.ones(4), np.arange(4))


# ---------------------------------------------------------------------------------------------------
# Speed measures and statistics
# ---------------------------------------------------------------------------------------------------

def test_steps_to_level_and_change_slope():
    acc = np.array([[0.5, 0.8, 0.95, 0.97], [0.2, 0.3, 0.4, 0.5], [0.91, 0.5, 0.95, 0.95]])
    np.testing.assert_array_equal(stats.first_reaching(acc, 0.9), [2, np.inf, 0])
    t = np.arange(11.0)
    assert dy.change_slope(3 * t) == pytest.approx(3.0)
    np.testing.assert_allclose(dy.change_slope(np.stack([t, 2 * t])), [1.0, 2.0])
    with pytest.raises(dy.DynamicsError, match="at least two steps"):
        dy.change_slope(np.zeros(1))


def test_speed_table_aggregates_over_seeds():
    rng = np.random.default_rng(8)
    sets = [make_set(rng, "weak", shift=0.1), make_set(rng, "strong", shift=4.0, common=0.0)]
    facts, _ = make_facts(rng)
    runs = dy.train_runs([[s] for s in sets], facts=facts, steps=30, batch_size=8, seeds=[1, 2, 3], lr=2.0, beta=0.5,
                         progress=False)
    tab = dy.speed_table(runs, k_early=5)
    assert list(tab.index) == ["weak", "strong"]
    loss = runs.loss["train"][:, :, 0]
    assert tab.loc["strong", "loss_drop_end"] == pytest.approx(np.mean(dy.LN2 - loss[runs.group == 1, -1]))
    assert tab.loc["strong", "loss_drop_end"] > tab.loc["weak", "loss_drop_end"]
    assert (tab["steps_to_level"] <= runs.steps + 1).all()
    acc = runs.policy_accuracy["train"][:, :, 0]
    for g, name in enumerate(["weak", "strong"]):
        hit = (acc[runs.group == g] >= 0.9).any(axis=1)
        assert tab.loc[name, "reached"] == pytest.approx(hit.mean())
    never = tab["reached"] == 0
    assert (tab.loc[never, "steps_to_level"] == runs.steps + 1).all()
    with pytest.raises(dy.DynamicsError, match="one learning rate"):
        dy.speed_table(dy.train_runs([[sets[0]]], facts=facts, steps=3, batch_size=4, seeds=[1], lr=[0.1, 0.2],
                                     beta=0.1, progress=False), k_early=1)


def _manual_partial(x, y, z):
    from scipy.stats import rankdata

    rx, ry, rz = rankdata(x), rankdata(y), rankdata(z)
    X = np.stack([np.ones_like(rz), rz], 1)
    ex = rx - X @ np.linalg.lstsq(X, rx, rcond=None)[0]
    ey = ry - X @ np.linalg.lstsq(X, ry, rcond=None)[0]
    return np.corrcoef(ex, ey)[0, 1]


def test_partial_spearman_removes_a_common_cause():
    rng = np.random.default_rng(9)
    z = rng.standard_normal(200)
    x = z + 0.3 * rng.standard_normal(200)
    y = np.exp(z) + 0.3 * rng.standard_normal(200)  # x and y related only through z
    assert dy.partial_spearman(x, y) == pytest.approx(stats.spearman(x, y))
    assert dy.partial_spearman(x, y, z) == pytest.approx(_manual_partial(x, y, z))
    assert abs(dy.partial_spearman(x, y, z)) < 0.2 < stats.spearman(x, y)
    rho, lo, hi = dy.partial_spearman_ci(x, y, z, n_boot=300, seed=1)
    assert lo <= rho <= hi and lo < 0.05
    assert dy.partial_spearman_ci(x, y, z, n_boot=300, seed=1) == (rho, lo, hi)
    with pytest.raises(dy.DynamicsError, match="must not contain NaN"):
        dy.partial_spearman(np.r_[x[:-1], np.nan], y)
    with pytest.raises(dy.DynamicsError, match="same length"):
        dy.partial_spearman(x[:5], y)


def test_speed_correlations_and_outliers():
    import pandas as pd

    rng = np.random.default_rng(10)
    d = rng.uniform(1, 5, 60)
    tab = pd.DataFrame({"dist": d, "conc": d + rng.standard_normal(60), "speed": d ** 2, "flat": np.ones(60)},
                       index=[f"b{i}" for i in range(60)])
    tab.loc["b7", "speed"] = -10.0
    c = dy.speed_correlations(tab, ["speed", "flat"], ["dist", "conc"], n_boot=200, seed=0)
    row = c[(c.speed == "speed") & (c.property == "dist")].iloc[0]
    assert row.rho > 0.9 and row.lo <= row.rho <= row.hi
    assert c[c.speed == "flat"][["rho", "prho"]].isna().all().all()
    out = dy.rank_outliers(tab["dist"], tab["speed"], list(tab.index), k=1)
    assert list(out.index) == ["b7"]
    assert math.isnan(dy.finite_spearman([1, 2, np.nan, 4], [1, 2, 3, np.nan]))
    assert dy.finite_spearman([1, 2, 3, 4, np.inf], [1, 2, 3, 4, 5]) == pytest.approx(1.0)


def test_wilson_interval_known_values():
    p, lo, hi = stats.wilson(5, 10)
    assert p == 0.5 and lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert stats.wilson(0, 10)[1:] == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert stats.wilson(10, 10)[1] == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(stats.StatsError, match="successes must be at most n = 10"):
        stats.wilson(11, 10)
    with pytest.raises(stats.StatsError, match="n must be an int >= 1"):
        stats.wilson(0, 0)


def test_random_groups_are_distinct_and_seeded():
    names = [f"b{i}" for i in range(8)]
    g = dy.random_groups(names, 2, 28, seed=1)
    assert len({frozenset(x) for x in g}) == 28 and all(len(set(x)) == 2 for x in g)
    assert dy.random_groups(names, 3, 10, seed=1) == dy.random_groups(names, 3, 10, seed=1)
    with pytest.raises(dy.DynamicsError, match="only 28 distinct groups"):
        dy.random_groups(names, 2, 29, seed=1)


def test_group_priorities_follow_the_official_definitions():
    rng = np.random.default_rng(11)
    group = [make_set(rng, "x", 10, 10), make_set(rng, "y", 10, 10, shift=2.0)]
    pr = dy.group_priorities(group)
    b = np.stack([bs.b() for bs in group])
    np.testing.assert_allclose(pr["levels"], geometry.priority_levels(b)[[0, 1], [1, 0]])
    assert pr["gap"] == pytest.approx(geometry.priority_gap(b[0], b[1]))
    assert np.sign(pr["gap"]) == np.sign(np.linalg.norm(b[0]) - np.linalg.norm(b[1]))
    heavy = dy.group_priorities(group, [3, 1])
    np.testing.assert_allclose(heavy["weights"], [0.75, 0.25])
    np.testing.assert_allclose(heavy["bbar"], 0.75 * b[0] + 0.25 * b[1])


def test_order_agreement_and_final_gains():
    pred = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    gain = np.array([[0.5, 0.1, 0.3], [0.3, 0.2, 0.1]])
    a = dy.order_agreement(pred, gain)
    assert a["top"].tolist() == [True, False] and a["order"].tolist() == [True, False]
    np.testing.assert_allclose(a["tau"], [1.0, -1.0])
    with pytest.raises(dy.DynamicsError, match="final_gains|metric must be"):
        dy.final_gains(None, metric="speed")


def test_balancing_replication_equalises_first_order_gains():
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    assert dy.balancing_replication(1.0 * e1, 2.0 * e2) == 4  # orthogonal: the ratio of squared norms
    bl, bh = np.array([1.0, 0.2, 0.0]), np.array([0.3, 2.0, 0.5])
    c = bl @ bh
    ratio = (bh @ bh - c) / (bl @ bl - c)
    w = np.array([ratio, 1.0]) / (ratio + 1.0)
    bbar = w[0] * bl + w[1] * bh
    assert bbar @ bl == pytest.approx(bbar @ bh)  # the weights the rounding starts from
    assert dy.balancing_replication(bl, bh) == round(ratio)
    assert dy.balancing_replication(np.array([1.0, 0.0]), np.array([2.0, 0.0]), max_factor=9) == 9  # infeasible
    with pytest.raises(dy.DynamicsError, match="max_factor"):
        dy.balancing_replication(e1, e2, max_factor=0)


def test_priority_outcomes_reweighting_and_margin_theorem():
    rng = np.random.default_rng(12)
    strong, weak = make_set(rng, "strong", 20, 20, shift=3.0), make_set(rng, "weak", 20, 20, shift=0.5)
    facts, _ = make_facts(rng)
    groups = [[strong, weak], [weak, strong]]
    runs = dy.train_runs(groups, facts=facts, steps=25, batch_size=None, seeds=[1], lr=1.0, beta=0.3, progress=False)
    out = dy.priority_outcomes(groups, runs)
    assert (out["gap"] > 0).tolist() == [True, False]
    assert out["agree_loss"].all()
    plan = dy.reweighting_plan(groups, max_factor=50)
    assert plan[0][0] == 1 and plan[0][1] > 1 and plan[1][0] > 1 and plan[1][1] == 1
    assert [dy.less_distinguishable(g) for g in groups] == [1, 0]
    # the theorem over one full-batch step: exact with each set's own class balance
    ov = dy.margin_overlay(groups[0], runs, 0)
    np.testing.assert_allclose(runs.margin["train"][0][1], ov["imbalance"][:, 1], rtol=1e-10)
    np.testing.assert_allclose(ov["theorem"], ov["imbalance"], rtol=1e-10)  # classes exactly balanced here
    assert 0 <= ov["band_holds_until"] <= runs.steps
    bins = dy.agreement_by_bins(np.array([0.01, 0.02, 0.3, 0.9]), np.array([False, True, True, True]), [0, 0.1, 1])
    assert bins["n"].tolist() == [2, 2] and bins["p"].tolist() == [0.5, 1.0]
    with pytest.raises(dy.DynamicsError, match="increasing"):
        dy.agreement_by_bins([0.1], [True], [1, 0])


def test_reweighting_helps_the_lagging_behaviour_and_is_accounted_for():
    rng = np.random.default_rng(16)
    groups = [[make_set(rng, f"s{i}", 20, 20, shift=3.0), make_set(rng, f"w{i}", 20, 20, shift=1.0)] for i in range(3)]
    groups[1] = groups[1][::-1]
    facts, _ = make_facts(rng)
    kw = dict(facts=facts, steps=15, batch_size=None, seeds=[1], lr=1.0, beta=0.3, progress=False)
    before = dy.priority_outcomes(groups, dy.train_runs(groups, **kw))
    plan = dy.reweighting_plan(groups, max_factor=20)
    after = dy.priority_outcomes(groups, dy.train_runs(groups, replicate=plan, **kw))
    eff = dy.reweighting_effect(groups, before, after)
    low = [dy.less_distinguishable(g) for g in groups]
    np.testing.assert_allclose(eff["low_before"], [np.asarray(g)[lw] for g, lw in zip(before["gains_loss"], low)])
    assert (eff["low_after"] > eff["low_before"]).all() and (eff["high_after"] < eff["high_before"]).all()
    assert eff["shrinks"].all() and eff["shrinks_p"] == 1.0 and eff["low_last_before"] == 1.0
    with pytest.raises(dy.DynamicsError, match="same pairs"):
        dy.reweighting_effect(groups, before, after.iloc[::-1].reset_index(drop=True))


def test_update_rate_overlay_bounds_and_first_step():
    rng = np.random.default_rng(13)
    sets = [make_set(rng, "u", 20, 20), make_set(rng, "v", 25, 15, shift=2.0)]
    facts, _ = make_facts(rng)
    runs = dy.train_runs([[s] for s in sets], facts=facts, steps=40, batch_size=8, seeds=[1, 2], lr=2.0, beta=0.3,
                         progress=False)
    ov = dy.update_rate_overlay(sets, runs)
    assert ov["first_step_error"].max() < 1e-12
    assert (runs.head_change <= ov["bound"] + 1e-12).all()
    balanced = runs.group == 0
    np.testing.assert_allclose(ov["first_order"][balanced], ov["distinguishability"][balanced], rtol=1e-12)
    with pytest.raises(dy.DynamicsError, match="the set given is"):
        dy.update_rate_overlay(sets[::-1], runs)


def test_first_step_terms_are_exact_without_within_class_noise():
    rng = np.random.default_rng(14)
    d, n_pos, n_neg, B, reps = 5, 17, 13, 8, 1200
    mu_p, mu_n = rng.standard_normal(d) + 12.0, rng.standard_normal(d) + 12.0
    h = np.concatenate([np.tile(mu_p, (n_pos, 1)), np.tile(mu_n, (n_neg, 1))])
    s = np.r_[np.ones(n_pos), -np.ones(n_neg)]
    bs = dy.BehaviorSet("q", "synthetic", h, s, np.arange(30), h[:0], s[:0], np.arange(0))
    terms = dy.first_step_terms(bs, B)
    assert terms["ratio"] > 5  # a large common mean: the batch's imbalance dominates
    facts, _ = make_facts(rng, d=d)
    runs = dy.train_runs([[bs]], facts=facts, steps=1, batch_size=B, seeds=list(range(reps)), lr=1.0, beta=0.1,
                         progress=False)
    m_sq = (runs.head_change[:, 1] / (math.sqrt(2) * 0.05)) ** 2  # ||m_B||^2 of each first batch
    se = m_sq.std(ddof=1) / math.sqrt(reps)
    assert abs(m_sq.mean() - terms["class_means"]) < 5 * se
    with pytest.raises(dy.DynamicsError, match="batch_size must be an int in 1..30"):
        dy.first_step_terms(bs, 100)


def test_first_step_check_orders_by_distinguishability_and_fails_when_reversed():
    rng = np.random.default_rng(21)
    shifts = [0.2, 0.6, 1.0, 1.6, 2.4, 3.2]
    sets = {f"b{i}": make_set(rng, f"b{i}", 20, 20, shift=sh) for i, sh in enumerate(shifts)}
    facts, _ = make_facts(rng)
    runs = dy.train_runs([[bs] for bs in sets.values()], facts=facts, steps=2, batch_size=40, seeds=[1, 2],
                         lr=1.0, beta=0.3, progress=False)
    dist = [np.linalg.norm(bs.b("train")) for bs in sets.values()]
    check = dy.first_step_check(runs, sets, dist, 64, seed=0)
    assert check.batch == min(bs.n_train for bs in sets.values())  # capped at the smallest training set
    assert check.verdict.verdict == "agrees" and len(check.first) == len(shifts)
    # a wrong predictor (the order reversed) must not agree
    assert dy.first_step_check(runs, sets, dist[::-1], 64, seed=0).verdict.verdict == "differs"
    with pytest.raises(dy.DynamicsError, match="one distinguishability per group"):
        dy.first_step_check(runs, sets, dist[:2], 64)


def test_single_threaded_restores_the_thread_count():
    before = torch.get_num_threads()
    with threads.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------------------------
# Configuration and plots
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("slug", ["training_dynamics", "prioritization"])
def test_chapter_configs_share_the_distinguishability_sample(slug):
    for profile in config.PROFILES:
        cfg = config.resolve(slug, profile)
        dist = config.resolve("distinguishability", profile)
        assert cfg.sweep_per_class == dist.per_class and cfg.sweep_behaviors == dist.behaviors
        assert cfg.dtype == dist.dtype
    with pytest.raises(config.ConfigError, match="exactly two different models"):
        config.resolve(slug, "fast", models=["smollm2-135m-instruct"])
    with pytest.raises(config.ConfigError, match="BETA_MODE must be one of"):
        config.resolve(slug, "fast", beta_mode="paper")
    with pytest.raises(config.ConfigError, match="LR must be"):
        config.resolve(slug, "fast", lr=-0.1)


def test_plots_draw_their_data_and_check_shapes():
    import matplotlib.pyplot as plt

    t = np.arange(6)
    y = np.linspace(0, 1, 12).reshape(2, 6)

    def data(line):
        return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)

    # curves: per behaviour a training line and a test line, then the reference level
    fig = plotting.curves_grid(t, [{"title": "x", "train": y, "test": y / 2, "labels": ["a", "b"]}], ylabel="loss",
                               hline=0.5, n_train=100, batch_size=10)
    ax = fig.axes[0]
    assert len(ax.lines) == 5 and ax.get_ylabel() == "loss" and ax.get_title() == "x"
    for k in range(2):
        np.testing.assert_array_equal(data(ax.lines[2 * k]), (t, y[k]))
        np.testing.assert_array_equal(data(ax.lines[2 * k + 1]), (t, y[k] / 2))
    assert set(data(ax.lines[4])[1]) == {0.5}
    plt.close(fig)
    # measured curves, one black line per behaviour and theory entry, the band left out of the y range
    fig = plotting.theory_overlay_grid(t, [{"title": "x", "measured": y + 0.1, "labels": ["a", "b"],
                                            "theory": {"th": y}, "points": {"p": (1, [0.2, 0.3])},
                                            "band": (y - 0.1, y + 10)}], ylabel="c", clip_band=True)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_ylabel() == "c"
    np.testing.assert_array_equal(data(ax.lines[0])[1], y[0] + 0.1)
    np.testing.assert_array_equal(data(ax.lines[3])[1], y[1])
    assert ax.get_ylim()[1] < 2  # the band reaches 11
    np.testing.assert_array_equal(ax.collections[-1].get_offsets(), [[1, 0.2], [1, 0.3]])
    plt.close(fig)
    # one line per model on a log x axis, its mark a vertical line at the marked step size
    fig = plotting.lr_sensitivity({"m": ([0.1, 1.0], [0.1, 0.2])}, marks={"m": {"η": 0.3}}, xlabel="κ", ylabel="y",
                                  band=(0.2, 0.5))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and (ax.get_xlabel(), ax.get_ylabel()) == ("κ", "y")
    np.testing.assert_array_equal(data(ax.lines[0]), ([0.1, 1.0], [0.1, 0.2]))
    assert set(data(ax.lines[1])[0]) == {0.3}
    plt.close(fig)
    # the points, the highlighted one ringed and named
    fig = plotting.speed_grid([{"x": [1, 2, 3], "y": [3, 2, 1], "names": ["a", "b", "c"], "highlight": ["b"],
                                "note": "ρ"}])
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), [[1, 3], [2, 2], [3, 1]])
    np.testing.assert_array_equal(ax.collections[1].get_offsets(), [[2, 2]])
    assert [a.get_text() for a in ax.texts] == ["b"] and ax.get_title() == "ρ"
    plt.close(fig)
    # one tick per bin, the chance level
    fig = plotting.agreement_bins(["a", "b"], {"m": ([0.5, 0.9], [0.3, 0.8], [0.7, 1.0])}, chance=0.5, xlabel="x",
                                  ylabel="y")
    ax = fig.axes[0]
    assert [tl.get_text() for tl in ax.get_xticklabels()] == ["a", "b"]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [0.5, 0.9])
    assert set(data(ax.lines[-1])[1]) == {0.5}
    plt.close(fig)
    # one panel per dict, each with its points and the diagonal over the common range
    fig = plotting.balance_panels([{"x": [1, 2], "y": [2, 1], "title": "t"}, {"x": [0, 3], "y": [3, 0], "title": "u"}],
                                  xlabel="x", ylabel="y")
    assert [ax.get_title() for ax in fig.axes] == ["t", "u"]
    np.testing.assert_array_equal(fig.axes[1].collections[0].get_offsets(), [[0, 3], [3, 0]])
    np.testing.assert_array_equal(data(fig.axes[0].lines[0]), ([0, 3], [0, 3]))
    plt.close(fig)
    with pytest.raises(ValueError, match="train must be"):
        plotting.curves_grid(t, [{"train": y[:, :3], "labels": ["a", "b"]}], ylabel="")
    with pytest.raises(ValueError, match="measured must be"):
        plotting.theory_overlay_grid(t, [{"measured": y, "labels": ["a"]}], ylabel="")
    with pytest.raises(ValueError, match="at least one panel"):
        plotting.speed_grid([])


def test_gap_size_comparison_decides_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(7)
    big = 400
    # pair (a): very different distinguishabilities (large |gap|); pair (b): similar ones (small |gap|)
    a = [make_set(rng, "a1", big, big, shift=0.3), make_set(rng, "a2", big, big, shift=3.0)]
    b = [make_set(rng, "b1", big, big, shift=2.0), make_set(rng, "b2", big, big, shift=2.2)]
    out = dy.gap_size_comparison(a, b, n_boot=200, seed=1)
    assert out["gap_a"] > out["gap_b"] and 0 < out["diff_lo"] <= out["diff_hi"]
    assert out["verdict"].verdict == "agrees"
    assert dy.gap_size_comparison(b, a, n_boot=200, seed=1)["verdict"].verdict == "differs"
    # two copies of the same pair: the difference is noise, undecided
    same = dy.gap_size_comparison(b, [make_set(rng, "c1", 20, 20, shift=2.0), make_set(rng, "c2", 20, 20, shift=2.2)],
                                  n_boot=200, seed=1)
    assert same["diff_lo"] < 0 < same["diff_hi"] and same["verdict"].verdict == "not resolvable at this sample size"
    with pytest.raises(dy.DynamicsError, match="exactly two"):
        dy.gap_size_comparison(a[:1], b, n_boot=50, seed=1)


# ---------------------------------------------------------------------------------------------------
# The prioritisation chapter's result objects (lastlayer.prioritization_study, lastlayer.pair_sweep_study)
# ---------------------------------------------------------------------------------------------------

def _model_set(rng, model, *args, **kw):
    """:func:`make_set` as embedded by ``model``."""
    import dataclasses

    return dataclasses.replace(make_set(rng, *args, **kw), model=model)


def _prio_cfg(**over):
    from types import SimpleNamespace

    kw = dict(models=["synthetic", "other"], sweep_behaviors=None, sweep_per_class=6, per_class=6, seed=5,
              norm="model", dtype="auto", proxy="synthetic", beta_mode="official", lr=1.0, steps=12,
              batch_size=None, figure_models=2, pair_a=("a1", "a2"), pair_b=("b1", "b2"), n_boot=50,
              pair_batch=None, triple_batch=None, n_pairs=8, n_triples=3, seeds=2, crossfit_folds=3,
              crossfit_seeds=1, max_replication=8, gap_bins=[0.0, 0.2, 100.0])
    kw.update(over)
    return SimpleNamespace(**kw)


def _prio_data(rng, cfg, shifts=(0.3, 0.8, 1.5, 2.5, 3.5)):
    """A SweepData of synthetic sets (one per shift, named 'x<k>') for the two synthetic models."""
    ps = dy.prioritization_study
    names = tuple(f"x{k}" for k in range(len(shifts)))
    facts, sweep, choice = {}, {}, {}
    for m in cfg.models:
        facts[m], _ = make_facts(rng, model=m)
        sweep[m] = {n: _model_set(rng, m, n, 24, 24, n_test=(12, 12), shift=s) for n, s in zip(names, shifts)}
        choice[m] = {"lr": cfg.lr, "beta": 0.3, "kappa": 0.1}
    return ps.SweepData(tuple(cfg.models), {m: m for m in cfg.models}, names, facts, sweep, choice, {}, None)


def test_study_keys_name_models_by_position_and_intervals_by_stem():
    keys = dy.study_keys
    assert keys.model_keys(["p", "q"]) == {"m1_name": "p", "m2_name": "q"}
    with pytest.raises(dy.DynamicsError, match="non-empty list of model names"):
        keys.model_keys([])
    assert keys.interval_values("m2_x", (0.5, 0.25, 0.75)) == {"m2_x_p": 0.5, "m2_x_lo": 0.25, "m2_x_hi": 0.75}
    assert keys.interval_values("x", (1, 2), ("a", "b")) == {"x_a": 1, "x_b": 2}
    with pytest.raises(dy.DynamicsError, match="3 values for the 2 names"):
        keys.interval_values("x", (1, 2, 3), ("a", "b"))


def test_sweep_data_embeds_every_behaviour_and_matches_the_lr_choice(monkeypatch):
    ps = dy.prioritization_study
    rng = np.random.default_rng(21)
    cfg = _prio_cfg(sweep_behaviors=["u", "v"], lr=None, models=["synthetic", "other"])
    facts = {m: make_facts(rng, model=m)[0] for m in cfg.models}
    sets = {(m, b): _model_set(rng, m, b) for m in cfg.models for b in cfg.sweep_behaviors}
    monkeypatch.setattr(ps, "head_facts", lambda m: facts[m])
    monkeypatch.setattr(ps, "behavior_set", lambda m, b, *a, **k: sets[m, b])
    out = ps.sweep_data(cfg)
    assert out.behaviors == ("u", "v") and list(out.sweep["other"]) == ["u", "v"]
    want = dy.lr_choice({m: (facts[m], [sets[m, "u"], sets[m, "v"]]) for m in cfg.models}, proxy="synthetic", lr=None)
    assert out.values["m2_lr"] == want["other"]["lr"] and out.values["m1_beta"] == want["synthetic"]["beta"]
    assert out.values["sweep_per_class"] == "6" and ps.sweep_data(_prio_cfg(
        sweep_behaviors=["u", "v"], sweep_per_class=None)).values["sweep_per_class"] == "all"


def test_figure5_pairs_name_who_is_learned_first_and_who_is_more_distinguishable(monkeypatch):
    ps = dy.prioritization_study
    rng = np.random.default_rng(22)
    cfg = _prio_cfg(steps=20)
    data_ = _prio_data(rng, cfg)
    # pair (a): the first member far more distinguishable; pair (b): the second one
    shifts = {"a1": 3.0, "a2": 0.4, "b1": 0.4, "b2": 3.0}
    sets = {(m, b): _model_set(rng, m, b, 30, 30, shift=s) for m in cfg.models for b, s in shifts.items()}
    monkeypatch.setattr(ps, "behavior_set", lambda m, b, *a, **k: sets[m, b])
    monkeypatch.setattr(ps, "joint_splits", lambda names, seed: [None] * len(names))
    fig5 = ps.figure5_pairs(cfg, data_)
    v = fig5.values
    for k in (1, 2):
        assert v[f"m{k}_more_dist_a"] == "a1" and v[f"m{k}_more_dist_b"] == "b2"
        assert v[f"m{k}_learned_first_a"] == "a1" and v[f"m{k}_learned_first_b"] == "b2"
        assert v[f"m{k}_gap_pair_a"] > 0 > v[f"m{k}_gap_pair_b"]
        assert v[f"m{k}_drop_first_a"] > v[f"m{k}_drop_second_a"]
        assert v[f"m{k}_first_is_more_a"] == v[f"m{k}_first_is_more_b"] == 1
    assert fig5.first_is_more == {"synthetic": 2, "other": 2}
    assert v["embedded"] == 0 and v["batch_size"] is None
    assert set(fig5.runs) == {(m, t) for m in cfg.models for t in "ab"}
    assert list(fig5.info["pair"]) == ["a", "b", "a", "b"] and fig5.table is not None
    # the margins: the first full-batch step is exact; values per pair
    margins = ps.margin_study(cfg, data_, fig5)
    assert margins.values["first_step_err"] < 1e-9 and margins.model == "synthetic"
    assert {"band_until_a", "kappa_b", "ratio_balanced_a", "ratio_own_b"} <= set(margins.values)
    gaps = ps.gap_sizes(cfg, data_, fig5)
    assert gaps.values["m1_gapdiff_lo"] <= gaps.values["m1_gapdiff_hi"]
    assert gaps.values["reversal_text"].startswith("Comparing the two pairs' gaps: on synthetic")
    with pytest.raises(dy.DynamicsError, match="two behaviours each"):
        ps.figure5_pairs(_prio_cfg(pair_a=("a1",)), data_)
    for plot in (plotting.prioritization.pair_curves(fig5), plotting.prioritization.margin_panels(fig5, margins)):
        assert len(plot.axes) >= 2
        plot.clf()


def test_pair_sweep_scores_every_pair_and_triple_and_counts_its_misses():
    sw = dy.pair_sweep_study
    rng = np.random.default_rng(23)
    cfg = _prio_cfg()
    data_ = _prio_data(rng, cfg)
    out = sw.pair_sweep(cfg, data_)
    assert len(out.pairs) == 8 and len(out.triples) == 3 and out.seeds == (5, 6)
    v = out.values
    assert v["pairs_per_behaviour"] == pytest.approx(16 / len({b for p in out.pairs for b in p}))
    for k, m in enumerate(cfg.models, start=1):
        o, to = out.outcomes[m], out.triple_outcomes[m]
        hits = int(o["agree_loss"].sum())
        assert (v[f"m{k}_pairs_loss_p"], v[f"m{k}_pairs_loss_lo"], v[f"m{k}_pairs_loss_hi"]) == stats.wilson(hits, 8)
        assert v[f"m{k}_triples_order_accuracy_p"] == stats.wilson(int(to["order_accuracy"].sum()), 3)[0]
        assert v[f"m{k}_n_wrong"] == 8 - hits
        assert v[f"m{k}_median_gap"] == pytest.approx(np.median(np.abs(o["gap"])))
        assert out.bins[m]["n"].sum() == 8
    assert v["m1_pairs_loss_p"] >= 0.75  # well-separated distinguishabilities: the gap's sign is mostly right
    # crossfit: its values are the PairCrossFit's numbers, and its verdicts are keyed for the glue
    xf = sw.pair_crossfits(cfg, data_, out)
    x = xf.by_model["other"]
    assert (xf.values["m2_pairs_xfit_p"], xf.values["m2_pairs_circ_hi"]) == (x.share, x.circular[2])
    assert xf.verdicts["m2_pairs_xfit"] is x.verdict and xf.values["xfit_folds"] == 3
    # reweighting, on the first model only
    rw = sw.reweighting_study(cfg, data_, out)
    assert rw.model == "synthetic" and len(rw.plan) == 8
    assert rw.values["rw_median_factor"] == float(np.median([max(r) for r in rw.plan])) >= 1
    assert rw.values["rw_shrinks_p"] == rw.effect["shrinks_p"] == rw.verdict.estimate
    assert rw.values["rw_low_gain"] == rw.effect["low_ratio"] > 1  # the lagging member gains
    for plot in (plotting.prioritization.gap_bins(out), plotting.prioritization.reweighting_panels(rw)):
        assert plot.axes
        plot.clf()


def test_claim_rows_follow_the_results_and_are_recorded(monkeypatch):
    from alignment_dynamics import book, verdicts

    ps, sw = dy.prioritization_study, dy.pair_sweep_study
    rng = np.random.default_rng(24)
    cfg = _prio_cfg(figure_models=1)
    data_ = _prio_data(rng, cfg)
    sets = {(m, b): _model_set(rng, m, b, 30, 30, shift=s) for m in cfg.models
            for b, s in {"a1": 3.0, "a2": 0.4, "b1": 0.4, "b2": 3.0}.items()}
    monkeypatch.setattr(ps, "behavior_set", lambda m, b, *a, **k: sets[m, b])
    monkeypatch.setattr(ps, "joint_splits", lambda names, seed: [None] * len(names))
    fig5 = ps.figure5_pairs(cfg, data_)
    gaps, margins = ps.gap_sizes(cfg, data_, fig5), ps.margin_study(cfg, data_, fig5)
    sweep = sw.pair_sweep(cfg, data_)
    xfit, rw = sw.pair_crossfits(cfg, data_, sweep), sw.reweighting_study(cfg, data_, sweep)
    rows = sw.claim_rows(cfg, data_, fig5, gaps, margins, sweep, xfit, rw)
    assert len(rows) == 2 * 1 + 2 * 4 + 2  # figure model rows, per-model rows, first step and reweighting
    assert rows[0]["verdict"].row() == verdicts.share_counts(2, 2).row()
    assert rows[-2]["verdict"].verdict == "agrees"  # the first step is exact
    assert rows[-1]["verdict"] is rw.verdict
    p, lo, hi = sweep.shares["other"]["triples_top", "loss"]
    assert rows[-3]["verdict"].row() == verdicts.share(p, lo, hi, 3, chance=1 / 3, unit="triples").row()
    book.begin("prioritization")
    table = book.record_claims(rows)
    assert len(table.data) == len(rows) == len(book._state["claims"])
    assert [r["claim"] for r in book._state["claims"]] == [r["claim"] for r in rows]
    with pytest.raises(book.GlueError, match="lacks"):
        book.record_claims([{"claim": "c"}])


def test_prioritization_sentences_follow_the_numbers():
    import pandas as pd

    ps, sw = dy.prioritization_study, dy.pair_sweep_study
    assert "as the theorem says it must" in ps.first_step_text(3e-16)
    assert "does not reproduce the identity" in ps.first_step_text(1e-6)  # above the exact rule's 1e-9
    assert ps.band_summary(3e-16, [4, 7], 100).startswith("The theorem's first step is exact")
    assert "only up to step 4 of 100" in ps.band_summary(3e-16, [4, 7], 100)
    assert "for all 100 steps" in ps.band_summary(3e-16, [100, 100], 100)
    assert "is not reproduced here" in ps.band_summary(1e-3, [100], 100)
    with pytest.raises(dy.DynamicsError, match="at least one pair"):
        ps.band_summary(0.0, [], 100)

    def outcomes(gaps, agree):
        return pd.DataFrame({"gap": gaps, "agree_loss": agree})

    small = outcomes([0.01, -0.02, 0.3, -0.4, 0.5], [False, False, True, True, True])
    large = outcomes([0.01, -0.02, 0.3, -0.4, 0.5], [True, True, False, False, True])
    assert "2 on p (median |gap| 0.015, against 0.300" in sw.misses_text({"p": small})
    assert "smaller gaps than the typical pair" in sw.misses_text({"p": small, "q": small})
    assert "not confined to small gaps" in sw.misses_text({"p": large})
    assert "on others not" in sw.misses_text({"p": small, "q": large})
    assert sw.misses_text({"p": outcomes([0.1], [True])}) == "Misses of the gap's sign: none on p."
    price, total = sw.reweighting_texts({"low_ratio": 2.0, "high_ratio": 0.5, "total_ratio": 0.9})
    assert price.startswith("The price is paid by the other behaviour") and "multiplied by 2.00" in price
    assert "does not create progress" in total
    price, total = sw.reweighting_texts({"low_ratio": 2.0, "high_ratio": 1.1, "total_ratio": 1.3})
    assert price.startswith("The other behaviour does not pay") and "adds progress" in total


# ---------------------------------------------------------------------------------------------------
# The training-dynamics chapter's result objects (lastlayer.dynamics_study, lastlayer.sweep_study)
# ---------------------------------------------------------------------------------------------------

_TD_SHIFTS = (0.3, 1.0, 1.8, 2.6, 3.5, 4.5, 5.5, 7.0)


def _td_cfg(**over):
    from types import SimpleNamespace

    names = [f"t{k}" for k in range(len(_TD_SHIFTS))]
    kw = dict(models=["synthetic", "other"], sweep_behaviors=names, sweep_per_class=6, per_class=6, seed=3,
              norm="model", dtype="auto", proxy="synthetic", beta_mode="official", lr=1.0, steps=8, batch_size=32,
              sweep_batch=16, lr_grid=[0.1, 1.0, 10.0], quantiles=[0.1, 0.3, 0.5, 0.7, 0.9],
              official_five=names[3:], seeds=2, k_early=3, acc_level=0.9, n_boot=30, crossfit_folds=3,
              crossfit_seeds=1)
    kw.update(over)
    return SimpleNamespace(**kw)


def _td_study(monkeypatch, **over):
    """Every section of the training-dynamics study on synthetic behaviours whose distinguishability
    grows with their index (the sets of the sweep and of the figures are the same)."""
    ds = dy.dynamics_study
    rng = np.random.default_rng(31)
    cfg = _td_cfg(**over)
    facts = {m: make_facts(rng, model=m)[0] for m in cfg.models}
    sets = {(m, b): _model_set(rng, m, b, 24 + j % 3, 24 - j % 3, n_test=(12, 12), shift=s)  # class balances differ
            for m in cfg.models for j, (b, s) in enumerate(zip(cfg.sweep_behaviors, _TD_SHIFTS))}
    monkeypatch.setattr(ds, "head_facts", lambda m: facts[m])
    monkeypatch.setattr(ds, "behavior_set", lambda m, b, *a, **k: sets[m, b])
    data_ = ds.dynamics_data(cfg)
    lr = ds.learning_rate(cfg, data_)
    fig = ds.figure_runs(cfg, data_, lr)
    return cfg, data_, lr, fig


def test_dynamics_study_sections_report_what_they_measured(monkeypatch):
    ds = dy.dynamics_study
    cfg, data_, lr, fig = _td_study(monkeypatch)
    v = data_.values
    assert v["n_behaviors"] == 8 and v["sweep_per_class"] == "6" and v["sweep_n_train"] == 48
    fast = config.profile_settings("training_dynamics", "fast")
    assert (v["fast_sweep_per_class"], v["fast_sweep_batch"]) == (str(fast["sweep_per_class"]), fast["sweep_batch"])
    assert data_.props["other"]["distinguishability"].is_monotonic_increasing  # the shifts order them
    scales = ds.feature_scales(cfg, data_)
    assert scales.values["m2_q_ratio"] == scales.table.data.loc["q / mean g²", "other"]
    assert np.isnan(ds.feature_scales(_td_cfg(norm="double"), data_).values["m1_q_ratio"])
    assert lr.values["m1_lr"] == 1.0 and lr.values["kappa_lo"] <= lr.values["kappa_hi"]
    assert lr.values["m2_kappa"] == pytest.approx(dy.effective_step(1.0, lr.values["m2_beta"],
                                                                    lr.choice["other"]["mean_sq_norm"]))
    sens = ds.lr_sensitivity(cfg, data_, lr)
    best = int(np.argmax(sens.drop["synthetic"]))
    assert sens.values["m1_kappa_best"] == pytest.approx(sens.kappa["synthetic"][best])
    assert sens.values["m1_drop_at_official"] == pytest.approx(sens.drop["synthetic"][0])  # 0.1 is on the grid
    # the figure behaviours: the quantiles of distinguishability, least first
    assert fig.quantile_five["synthetic"] == geometry.pick_by_quantile(data_.props["synthetic"]["distinguishability"],
                                                                       cfg.quantiles) == ["t1", "t2", "t4", "t5", "t6"]
    assert fig.official_five["other"] == ["t3", "t4", "t5", "t6", "t7"]
    assert fig.tags["other"][0] == "B1: t1" and fig.values["fig_n_train"] == 48 and fig.values["embedded"] == 0
    assert fig.values["m1_b5_drop"] > fig.values["m1_b1_drop"] > 0 and fig.values["m1_five_rho"] == 1.0
    order = ds.code_order(cfg, data_)
    assert order.values["m1_code_order_rho"] == 1.0 and order.verdicts["m2_code_order"].estimate == 1.0
    with pytest.raises(dy.DynamicsError, match="five behaviours"):
        ds.code_order(_td_cfg(official_five=["t1"]), data_)
    head = ds.head_change(cfg, data_, fig)
    assert head.values["m1_first_step_err"] < 1e-9 and head.values["m2_ratio_bound"] <= 1.0
    assert head.measured["synthetic"].shape == (5, cfg.steps + 1) and head.values["m1_change_rho"] == 1.0
    acc = ds.accuracy(cfg, data_, fig)
    assert 0 <= acc.values["m1_acc0"] <= 1 and acc.values["m1_acc_end"] > acc.values["m1_acc0"]
    pt = plotting.training_dynamics
    for plot in (pt.sensitivity(data_, sens), pt.loss_curves(data_, lr, fig), pt.official_rate_curves(data_, fig),
                 pt.official_five_curves(data_, fig), pt.head_change_curves(data_, fig, head),
                 pt.head_change_bound(data_, fig, head), pt.accuracy_curves(data_, fig)):
        assert plot.axes
        plot.clf()


def test_sweep_study_correlates_speed_and_builds_the_claims(monkeypatch):
    from alignment_dynamics import book, verdicts

    ds, ss = dy.dynamics_study, dy.sweep_study
    cfg, data_, lr, fig = _td_study(monkeypatch)
    speed = ss.speed_sweep(cfg, data_, lr)
    v = speed.values
    assert speed.seeds == (3, 4) and v["steps"] == 8
    assert v["m1_loss_drop_end_distinguishability_rho"] > 0.9  # more distinguishable, faster
    assert v["m2_rho_dist_conc"] == stats.spearman(speed.speeds["other"]["distinguishability"],
                                                   speed.speeds["other"]["concentration"])
    assert ss.speed_correlation(speed, "other", "slope")[0] == v["m2_slope_distinguishability_rho"]
    np.testing.assert_equal(ss.speed_correlation(speed, "other", "steps_to_level")[2],
                            v["m2_neg_steps_distinguishability_hi"])  # NaN where no run reaches the level
    with pytest.raises(dy.DynamicsError, match="no correlation"):
        ss.speed_correlation(speed, "llama", "slope")
    assert speed.table.shape[0] == 5 * 3
    misfit = ss.misfits(cfg, data_, fig, speed)
    assert misfit.values["m1_misfits"].count('"') == 4 and "fig_batch" in misfit.values
    assert misfit.first_step_official["synthetic"].estimate == 1.0
    xfit = ss.speed_crossfits(cfg, data_, lr, speed)
    x = xfit.by_model["synthetic"]
    assert (xfit.values["m1_xfit_rho"], xfit.values["m1_circ_hi"]) == (x.rho, x.circular[2])
    assert xfit.verdicts["m1_circ"] is x.circular_verdict
    ref = ss.reference(cfg, data_, speed)
    assert "no full-data reference" in ref.values["reference_full_text"]  # synthetic models are not covered
    head = ds.head_change(cfg, data_, fig)
    claims = ss.claims(cfg, data_, head, speed, misfit, xfit, ref)
    assert len(claims.rows) == 2 * 9
    rho, lo, hi = (v[f"m2_slope_distinguishability_{q}"] for q in ("rho", "lo", "hi"))
    assert claims.verdicts["m2_slope_v"].row() == verdicts.positive(rho, lo, hi, 8).row()
    exact = [r for r in claims.rows if r["claim"].startswith("The first step is")]
    assert [r["verdict"].verdict for r in exact] == ["agrees", "agrees"]
    book.begin("training_dynamics")
    assert len(book.record_claims(claims.rows).data) == len(claims.rows)
    for plot in (plotting.training_dynamics.speed_panels(data_, speed), plotting.training_dynamics.full_data(data_, ref)):
        assert plot.axes
        plot.clf()


def test_head_change_texts_follow_the_exact_and_bound_rules():
    texts = dy.dynamics_study.head_change_texts
    ok = texts(["p", "q"], [1e-15, 2e-15], [0.1, 0.2], steps=10)
    assert ok["first_step_text"].startswith("The exact first step holds to 1.0e-15 and 2.0e-15")
    assert ok["bound_text"].startswith("The curves stay below the linear bound (at most 0.100 and 0.200")
    assert ok["first_step_summary"] == "our theory's first step is exact"
    bad = texts(["p", "q"], [1e-15, 1e-3], [0.1, 1.5], steps=10)  # q breaks the identity and the bound
    assert "misses the exact formula on q" in bad["first_step_text"] and "not reproduced on q" in bad["first_step_summary"]
    assert bad["bound_text"].startswith("The curves cross the linear bound on q")
    with pytest.raises(dy.DynamicsError, match="one error and one ratio per model"):
        texts(["p"], [0.0, 0.0], [0.1], steps=10)


def test_q_ratio_text_says_where_the_norm_weight_argument_holds():
    text = dy.dynamics_study.q_ratio_text
    assert text({"p": 0.95, "q": 0.004}) == ("On p the argument holds to a factor 0.95; on q it fails by orders of "
                                             "magnitude (factor 0.004).")
    assert "cannot be checked" in text({"p": float("nan")})
    with pytest.raises(dy.DynamicsError, match="at least one model"):
        text({})


def test_trend_text_reads_each_models_interval_by_the_positive_rule():
    text = dy.sweep_study.trend_text
    assert text("The loss drop", {"p": (0.8, 0.6, 0.9), "q": (0.7, 0.55, 0.85)}, 100) == \
        "The loss drop rises with distinguishability"
    assert text("S", {"p": (0.3, 0.1, 0.45)}, 100) == "S rises weakly with distinguishability"
    assert text("S", {"p": (-0.5, -0.7, -0.3)}, 100) == "S falls with distinguishability"
    mixed = text("S", {"p": (0.8, 0.6, 0.9), "q": (0.1, -0.2, 0.3)}, 100)
    assert mixed == "S rises with distinguishability on p; is not resolvably related to distinguishability on q"
    with pytest.raises(dy.DynamicsError, match="at least one model"):
        text("S", {}, 10)


def test_best_step_text_says_where_the_median_drop_peaks():
    text = dy.dynamics_study.best_step_text
    k = [0.1, 1.0, 10.0]
    inner = text({"p": (k, [0.1, 0.3, 0.2]), "q": (k, [0.1, 0.4, -0.5])})
    assert inner == "Larger steps help up to a point: the median drop is largest at κ = 1 on p; κ = 1 on q, and falls beyond it"
    assert text({"p": (k, [0.1, 0.2, 0.3])}).startswith("Larger steps help over the whole grid, up to its largest step (κ = 10")
    assert "smallest step already gives" in text({"p": (k, [0.3, 0.2, 0.1])})
    with pytest.raises(dy.DynamicsError, match="one κ and one drop per rate"):
        text({"p": ([0.1], [0.2, 0.3])})


def test_closer_prediction_and_the_sentences_built_on_it():
    from alignment_dynamics.lastlayer.checks import closer_prediction

    assert closer_prediction(0.9, 2.0) == "a" and closer_prediction(3.0, 0.5) == "b"
    assert closer_prediction(2.0, 0.5) == "tie" and closer_prediction(-1.0, 5.0) == "b"
    assert closer_prediction(float("nan"), 0.1) == "b"
    bend = dy.dynamics_study.bend_text
    assert bend({"p": (0.3, 0.95), "q": (0.4, 1.1)}).startswith("After the last step the measured change lies "
                                                              "closer to the distinguishability rate")
    assert "closer to the first-order line on q" in bend({"p": (0.3, 0.95), "q": (1.0, 3.0)})
    balance = dy.prioritization_study.balance_text
    assert balance({"a": (1.0, 0.4), "b": (0.9, 0.3)}).startswith("After the last step the balanced prediction")
    assert "closer one for pair (b)" in balance({"a": (1.0, 0.4), "b": (0.3, 0.9)})
    for f in (bend, balance):
        with pytest.raises(dy.DynamicsError, match="at least one"):
            f({})
