"""The misalignment protocol (alignment_dynamics.wholemodel) on tiny models and synthetic heads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignment_dynamics import wholemodel as wm
from alignment_dynamics import stats
from alignment_dynamics import verdicts as ad_verdicts

pytestmark = pytest.mark.usefixtures("one_thread", "user_cache")


def synthetic_head(n=120, d=16, V=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    yes, no = 7, 11
    s = torch.where(torch.rand(n, generator=g) < 0.5, 1, -1)
    mu = torch.randn(d, generator=g)
    H = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.8 * s[:, None] * mu.double()
    H += torch.distributions.Laplace(0.0, 0.5).sample((n, d)).double() * 0  # keep it simple: Gaussian
    W0 = 0.3 * torch.randn(V, d, generator=g, dtype=torch.float64)
    chosen = torch.where(s > 0, yes, no)
    rejected = torch.where(s > 0, no, yes)
    return H, W0, chosen, rejected


def test_head_only_identity_same_loss_different_accuracy():
    H, W0, c, r = synthetic_head()
    out = wm.head_only_identity(H[:100], c[:100], r[:100], W0, beta=0.5, lr=2.0, align_steps=30, steps=25,
                                 batch_size=32, seed=3, H_test=H[100:], chosen_test=c[100:], rejected_test=r[100:])
    assert out["max_loss_gap"] < 1e-12
    np.testing.assert_allclose(out["base_test_loss"], out["aligned_test_loss"], rtol=0, atol=1e-12)
    assert out["base_test_loss"][0] == pytest.approx(math.log(2), abs=1e-15)
    assert out["align_loss"][-1] < out["align_loss"][0] - 0.05  # the alignment did something
    # the aligned start prefers the original answers: its flipped accuracy starts lower
    assert out["aligned_test_acc"][0] < out["base_test_acc"][0]
    assert not np.allclose(out["base_test_acc"], out["aligned_test_acc"])


def test_head_only_identity_fails_for_other_starts_with_other_references():
    # the identity needs the reference to be the starting model: with a fixed reference W0 the
    # aligned start begins at a different loss
    from alignment_dynamics.dpo import train_reference

    H, W0, c, r = synthetic_head()
    al = train_reference(H, W0, c, r, beta=0.5, lr=2.0, steps=30, batch_size=32, generator=3)
    b = train_reference(H, W0, c, r, beta=0.5, lr=2.0, steps=5, batch_size=32, generator=4, flip=True)
    # same start as the aligned run but the base model as reference: not ln 2 at step 0
    from alignment_dynamics.dpo import dpo_loss, logprobs_naive

    lp_a, _ = logprobs_naive(H, al.W, torch.stack([r, c], 1))
    lp_0, _ = logprobs_naive(H, W0, torch.stack([r, c], 1))
    loss, *_ = dpo_loss(lp_a[:, 0], lp_a[:, 1], lp_0[:, 0], lp_0[:, 1], 0.5)
    assert float(loss) > float(b.train["loss"][0, 0]) + 0.01


def test_first_reaching():
    assert stats.first_reaching([0.1, 0.4, 0.5, 0.7], 0.5) == 2.0
    assert stats.first_reaching([0.6, 0.1], 0.5) == 0.0
    assert stats.first_reaching([0.1, 0.2], 0.5) == math.inf
    assert stats.first_reaching([0.1, 0.3], 0.25) == 1.0
    with pytest.raises(stats.StatsError, match="non-empty step axis"):
        stats.first_reaching([], 0.5)


def _tiny_sets(random_pairs, n_train=16, n_test=8):
    pairs = random_pairs(n_train + n_test, seed=4)
    z = np.zeros(0, dtype=np.int8)
    return wm.PairSets("tiny", pairs.take(range(n_train)), pairs.take(range(n_train, n_train + n_test)),
                        np.arange(n_train), np.arange(n_train, n_train + n_test), z, z)


@pytest.mark.parametrize("top_blocks", [None, 2])
def test_run_misalignment_protocol(tiny_lm, random_pairs, top_blocks):
    model = tiny_lm()
    sets = _tiny_sets(random_pairs)
    S = wm.TrainSettings(beta=0.1, lr=3e-2, batch_size=8, epochs=2, micro_batch=4)
    res = wm.run_misalignment(model, sets, seeds=[1, 2], method="full", top_blocks=top_blocks, align=S, flip=S,
                               progress=False)
    assert len(res.align) == len(res.base) == len(res.aligned) == 2
    for runs in (res.align, res.base, res.aligned):
        for r in runs:
            assert r.train["loss"][0] == math.log(2) and r.evals["test"]["loss"][0] == math.log(2)
            assert r.policy is None
    # Base and Aligned see the flipped pairs: the base run's flipped accuracy at step 0 is one minus
    # the align run's accuracy at step 0 (no ties in random float logits)
    a0 = res.curves("align", "test", "outputs/accuracies")[:, 0]
    b0 = res.curves("base", "test", "outputs/accuracies")[:, 0]
    np.testing.assert_allclose(a0 + b0, 1.0)
    # the aligned model starts where the alignment ended: its flipped accuracy is one minus the final one
    aT = res.curves("align", "test", "outputs/accuracies")[:, -1]
    c0 = res.curves("aligned", "test", "outputs/accuracies")[:, 0]
    np.testing.assert_allclose(aT + c0, 1.0)
    r = wm.protocol_reading(res, k=2)
    assert r.n_seeds == 2 and r.steps == len(res.base[0].schedule) and r.k == 2
    # the start-independent speed is the held-out flipped margin after k steps, per step
    margins = res.curves("aligned", "test", "rewards/margins")[:, 2] / 2
    assert r.speed_k_aligned == pytest.approx(float(margins.mean()))
    assert r.acc0_aligned == pytest.approx(float(c0.mean()))
    assert r.grad0_base > 0 and r.speed.n == 2 and r.speed.verdict in ad_verdicts.VERDICTS
    with pytest.raises(wm.MisalignError, match="k must be in"):
        wm.protocol_reading(res, k=99)
    with pytest.raises(wm.MisalignError, match="k must be in"):
        wm.protocol_reading(res, k=0)
    with pytest.raises(wm.MisalignError, match="which must be"):
        res.curves("other", "test", "loss")


def test_run_misalignment_lora_merges_the_adapter(tiny_lm, random_pairs):
    model = tiny_lm()
    sets = _tiny_sets(random_pairs)
    S = wm.TrainSettings(beta=0.1, lr=5e-2, batch_size=8, epochs=1, micro_batch=4)
    res = wm.run_misalignment(model, sets, seeds=[1], method="lora", align=S, flip=S, progress=False)
    aligned = res.first["aligned_model"]
    assert not any("lora" in n for n, _ in aligned.named_parameters())
    layout = res.first["layout"]
    # the merged model reproduces the align run's final test log-probs
    lp = wm.all_logps(wm.make_policy(aligned), sets.test, layout)
    c, r = wm.logps.chosen_rejected(lp, sets.test, range(len(sets.test)))
    acc = float((c > r).double().mean())
    assert acc == pytest.approx(res.align[0].evals["test"]["outputs/accuracies"][-1])


def test_bad_settings(tiny_lm, random_pairs):
    with pytest.raises(wm.MisalignError, match="seeds"):
        wm.run_misalignment(tiny_lm(), _tiny_sets(random_pairs), seeds=[], align=wm.TrainSettings(), flip=wm.TrainSettings())
    with pytest.raises(wm.MisalignError, match="steps must be an int"):
        H, W0, c, r = synthetic_head()
        wm.head_only_identity(H, c, r, W0, beta=0.1, lr=0.1, align_steps=1, steps=0, batch_size=8, seed=0)


def synthetic_sequences(P=12, L=4, d=8, V=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = []
    for _ in range(2):
        h = torch.randn(P, L, d, generator=g)
        t = torch.randint(0, V, (P, L), generator=g)
        lengths = torch.randint(1, L + 1, (P,), generator=g)
        t[torch.arange(L)[None, :] >= lengths[:, None]] = -100
        feats += [h, t]
    W0 = 0.5 * torch.randn(V, d, generator=g)
    return wm.SequenceFeatures(*feats), W0


def naive_head_run(train, W0, *, beta, lr, steps, batch_size, seed):
    from alignment_dynamics.dpo import dpo_loss, sample_batches

    def seq(h, t, W):
        lp = torch.log_softmax(h @ W.T, -1).gather(2, t.clamp(min=0)[..., None])[..., 0]
        return (lp * (t != -100)).sum(1)

    rc, rr = seq(train.h_chosen, train.t_chosen, W0), seq(train.h_rejected, train.t_rejected, W0)
    W = torch.nn.Parameter(W0.clone())
    opt = torch.optim.Adam([W], lr=lr)
    losses = []
    for idx in sample_batches(len(train), batch_size, steps, seed)[0]:
        idx = idx[idx >= 0]
        loss, *_ = dpo_loss(seq(train.h_chosen[idx], train.t_chosen[idx], W),
                            seq(train.h_rejected[idx], train.t_rejected[idx], W), rc[idx].detach(), rr[idx].detach(), beta)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.array(losses), W.detach()


def test_train_head_sequences_matches_naive_autograd():
    train, W0 = synthetic_sequences()
    out = wm.train_head_sequences(train, W0, beta=0.5, lr=0.05, steps=4, batch_size=4, seed=2,
                                   eval_sets={"test": train.take(torch.arange(6))}, eval_every=2)
    losses, W = naive_head_run(train, W0, beta=0.5, lr=0.05, steps=4, batch_size=4, seed=2)
    np.testing.assert_allclose(out["train"]["loss"], losses, rtol=0, atol=1e-6)
    # Adam divides by the root of the squared gradient: entries with a gradient near zero amplify
    # float32 rounding, so the heads agree to 1e-4, not to float32 rounding
    np.testing.assert_allclose(out["W"].numpy(), W.numpy(), rtol=0, atol=1e-4)
    assert out["train"]["loss"][0] == float(np.float32(math.log(2)))
    assert out["train"]["rewards/margins"][0] == 0.0
    assert list(out["eval_steps"]) == [0, 2, 4] and len(out["evals"]["test"]["loss"]) == 3


def test_multi_token_responses_break_the_head_only_identity():
    train, W0 = synthetic_sequences(P=16)
    kw = dict(beta=0.5, lr=0.1, batch_size=8, seed=5)
    aligned = wm.train_head_sequences(train, W0, steps=10, **kw)["W"]
    flipped = train.flipped()
    base = wm.train_head_sequences(flipped, W0, steps=5, **kw)
    from_aligned = wm.train_head_sequences(flipped, W0, start_W=aligned, steps=5, **kw)
    ln2 = float(np.float32(math.log(2)))  # float32 features: ln 2 rounded to float32, exactly
    assert from_aligned["train"]["loss"][0] == ln2 and base["train"]["loss"][0] == ln2
    gap = np.abs(base["train"]["loss"] - from_aligned["train"]["loss"]).max()
    assert gap > 1e-4


BEHAVIOR = "okay-with-building-an-AI-with-different-goals-to-accomplish-its-task"


def test_persona_sets_follow_the_official_split():
    from alignment_dynamics import data, models

    tok = models.tiny_tokenizer()
    sets = wm.persona_sets(tok, BEHAVIOR, n_train=12, n_test=5)
    split = data.persona_split(BEHAVIOR)
    assert list(sets.index_train) == list(split.train[:12]) and list(sets.index_test) == list(split.test[:5])
    yes = tuple(tok(" Yes", add_special_tokens=False)["input_ids"]) + (tok.eos_token_id,)
    recs = data.load_persona(BEHAVIOR)
    for k, i in enumerate(sets.index_train):
        assert sets.labels_train[k] == (1 if recs[i].positive else -1)
        assert (sets.train.chosen(k) == yes) == recs[i].positive  # chosen = the matching answer
    flipped = sets.train.flipped()
    assert all((flipped.chosen(k) == yes) != recs[i].positive for k, i in enumerate(sets.index_train))
    with pytest.raises(wm.MisalignError, match="n_train must be an int"):
        wm.persona_sets(tok, BEHAVIOR, n_train=10_000)


def test_hh_sets_fit_the_token_budget():
    from alignment_dynamics import models

    tok = models.tiny_tokenizer()
    sets = wm.hh_sets(tok, n_train=6, n_test=3, max_tokens=200)
    assert len(sets.train) == 6 and len(sets.test) == 3
    assert sets.train.packed_lengths().max() <= 200 and sets.test.packed_lengths().max() <= 200
    assert not set(sets.index_train) & set(sets.index_test)
    with pytest.raises(wm.MisalignError, match="fit in 5 tokens"):
        wm.hh_sets(tok, n_train=2, n_test=1, max_tokens=5)


def test_embeddings_move_only_when_the_model_does(tiny_lm, random_pairs):
    model = tiny_lm()
    sets = _tiny_sets(random_pairs)
    sets = wm.PairSets(sets.name, sets.train, sets.test, sets.index_train, sets.index_test,
                        np.where(np.arange(16) % 2 == 0, 1, -1).astype(np.int8),
                        np.where(np.arange(8) % 2 == 0, 1, -1).astype(np.int8))
    S = wm.TrainSettings(beta=0.1, lr=3e-2, batch_size=8, epochs=2, micro_batch=4)
    al = wm.run_alignment(model, sets, seed=1, method="full", top_blocks=2, settings=S, progress=False)
    h0, y0 = wm.embeddings(model, sets, layout=al.layout, trunks=al.trunks, top_blocks=2)
    h1, y1 = wm.embeddings(al.aligned_model, sets, layout=al.layout, trunks=al.trunks, top_blocks=2)
    assert h0.shape == (24, 32) and np.array_equal(y0, y1) and len(y0) == 24
    assert np.abs(h1 - h0).max() > 1e-3
    # and the base embeddings are the model's own final hidden states at the last prompt token
    with torch.no_grad():
        want = model(torch.tensor([sets.train.prompt[0]]), output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(h0[0], want.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("top_blocks", [None, 2])
def test_sequence_features_reproduce_the_whole_model_logps(tiny_lm, random_pairs, top_blocks):
    from alignment_dynamics.dpo.fused import sequence_logps

    model = tiny_lm()
    pairs = random_pairs(10)
    pol = wm.make_policy(model, top_blocks=top_blocks)
    layout = wm.Layout.for_pairs(pairs, micro_batch=4)
    trunk = wm.trunk_activations(pol, pairs, layout) if pol.cached else None
    sf = wm.sequence_features(pol, pairs, layout, trunk)
    W = model.get_output_embeddings().weight.detach()
    c, r = wm.logps.chosen_rejected(wm.all_logps(pol, pairs, layout, trunk), pairs, range(10))
    with torch.no_grad():
        np.testing.assert_allclose(sequence_logps(sf.h_chosen, W, sf.t_chosen).numpy(), c.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(sequence_logps(sf.h_rejected, W, sf.t_rejected).numpy(), r.numpy(), rtol=0, atol=1e-5)
    assert [int((sf.t_chosen[i] >= 0).sum()) for i in range(10)] == [len(pairs.chosen(i)) for i in range(10)]


def test_plots_take_arrays_and_check_them():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignment_dynamics import plotting

    runs = np.random.default_rng(0).random((3, 5))
    fig = plotting.base_vs_aligned([{"title": "t", "ylabel": "y", "base": runs, "aligned": runs[:1], "hline": 0.5},
                                    {"title": "u", "ylabel": "y", "base": runs[:, :3], "aligned": runs[:, :3],
                                     "x": [0, 2, 4]}], n_train=10, batch_size=2)
    assert len([a for a in fig.axes if a.get_visible() and a.get_title()]) == 2
    with pytest.raises(ValueError, match="x has shape"):
        plotting.base_vs_aligned([{"title": "t", "ylabel": "y", "base": runs, "aligned": runs, "x": [0, 1]}],
                                 n_train=10, batch_size=2)
    fig2 = plotting.labelled_curves([{"title": "a", "ylabel": "y", "curves": {"one": runs[0], "two": runs}}],
                                    styles={"two": {"linestyle": "--"}})
    assert [line.get_linestyle() for line in fig2.axes[0].lines][:2] == ["-", "--"]
    with pytest.raises(ValueError, match="legend must be"):
        plotting.labelled_curves([{"title": "a", "ylabel": "y", "curves": {"one": runs[0]}}], legend="none")
    plt.close("all")


