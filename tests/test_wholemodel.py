"""Whole-model DPO (alignment_dynamics.wholemodel) on tiny random causal LMs built in code."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from alignment_dynamics import wholemodel as wm
from alignment_dynamics.dpo import reference

pytestmark = pytest.mark.usefixtures("one_thread", "user_cache")


def naive_logps(model, prompt, completion):
    """Sum of log-probs of ``completion`` after ``prompt``: the model's own forward, one sequence."""
    ids = torch.tensor([list(prompt) + list(completion)])
    logits = model(ids).logits[0]
    ls = torch.log_softmax(logits, -1)
    return sum(ls[len(prompt) - 1 + j, t] for j, t in enumerate(completion))


SMALL = wm.TrainSettings(beta=0.1, lr=1e-2, batch_size=8, steps=4, micro_batch=4)


# ---------------------------------------------------------------------------------------------------
# Packing and log-probs
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attn,tol", [("sdpa", 1e-12), ("eager", 1e-6)])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_packed_logps_equal_separate_sequences(tiny_lm, random_pairs, arch, attn, tol):
    # float64; eager attention takes its softmax in float32 (transformers), hence its looser tolerance
    model = tiny_lm(arch=arch, dtype=torch.float64)
    model.set_attn_implementation(attn)
    pairs = random_pairs(10)
    for kw in ({}, {"top_blocks": 2}, {"top_blocks": 2, "cached": False}):
        pol = wm.make_policy(model, attn_implementation=attn, **kw)
        layout = wm.Layout.for_pairs(pairs, micro_batch=4)
        trunk = wm.trunk_activations(pol, pairs, layout) if pol.cached else None
        lp = wm.all_logps(pol, pairs, layout, trunk)
        with torch.no_grad():
            want = torch.tensor([[float(naive_logps(model, pairs.prompt[i], pairs.a[i])),
                                  float(naive_logps(model, pairs.prompt[i], pairs.b[i]))] for i in range(len(pairs))],
                                dtype=torch.float64)
        np.testing.assert_allclose(lp.numpy(), want.numpy(), rtol=0, atol=tol)


def test_prompt_embeddings_are_the_last_prompt_token_state(tiny_lm, random_pairs):
    model = tiny_lm(dtype=torch.float64)
    pairs = random_pairs(6)
    pol = wm.make_policy(model, top_blocks=1, attn_implementation="sdpa")
    layout = wm.Layout.for_pairs(pairs, micro_batch=4)
    emb = wm.prompt_embeddings(pol, pairs, layout, wm.trunk_activations(pol, pairs, layout))
    with torch.no_grad():
        want = torch.stack([model(torch.tensor([pairs.prompt[i]]), output_hidden_states=True).hidden_states[-1][0, -1]
                            for i in range(len(pairs))])
    np.testing.assert_allclose(emb.numpy(), want.numpy(), rtol=0, atol=1e-12)


def test_logps_do_not_depend_on_batch_composition(tiny_lm, random_pairs):
    model = tiny_lm()
    pairs = random_pairs(12)
    pol = wm.make_policy(model)  # eager attention: row results do not depend on the other rows
    layout = wm.Layout.for_pairs(pairs, micro_batch=4)
    ordered = wm.all_logps(pol, pairs, layout)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        for chunk in (perm[:4], perm[4:7], perm[7:11], perm[11:]):
            got = wm.completion_logps(pol, pairs, chunk, layout).double()
            assert torch.equal(got, ordered[chunk])


# ---------------------------------------------------------------------------------------------------
# Step-0 invariants, and a step checked against the lib's reference loss and gradients
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{"method": "full"}, {"method": "lora"}, {"method": "full", "top_blocks": 2},
                                {"method": "lora", "top_blocks": 1}])
def test_step0_loss_is_ln2_and_margins_are_zero(tiny_lm, random_pairs, kw):
    model = tiny_lm()
    pairs = random_pairs(24)
    run = wm.train_dpo(wm.make_policy(model, **kw), pairs.take(range(16)), SMALL,
                       eval_sets={"test": pairs.take(range(16, 24))}, progress=False)
    for hist in (run.train, run.evals["test"]):
        assert hist["loss"][0] == math.log(2)
        assert hist["rewards/margins"][0] == 0.0
        assert hist["rewards/chosen"][0] == 0.0 and hist["rewards/rejected"][0] == 0.0
        assert hist["rewards/accuracies"][0] == 0.0  # ties
    assert run.train["loss"][-1] < math.log(2)  # and it trains
    assert len(run.evals["test"]["loss"]) == run.steps + 1 and len(run.train["loss"]) == run.steps


@pytest.fixture
def float64_rmsnorm(monkeypatch):
    """transformers' LlamaRMSNorm computes in float32 even for float64 inputs, which limits any float64
    gradient check to ~1e-7; compute it in the input's dtype instead (same formula)."""
    from transformers.models.llama import modeling_llama

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)


def test_dpo_step_matches_reference_loss_and_gradients(tiny_lm, random_pairs, float64_rmsnorm):
    model = tiny_lm(dtype=torch.float64)
    pairs = random_pairs(8)
    beta, lr = 0.1, 0.5
    pol = wm.make_policy(model, attn_implementation="sdpa")
    layout = wm.Layout.for_pairs(pairs, micro_batch=4)
    # perturb the policy so that policy and reference differ
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for p in pol.module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    ref_model = model  # the reference: the unperturbed model
    idx = list(range(8))
    # ours: packed rows, two micro-batches
    ref_lp = wm.all_logps(wm.make_policy(ref_model, attn_implementation="sdpa"), pairs, layout)
    pol.module.zero_grad()
    total = 0.0
    for mb in (idx[:4], idx[4:]):
        lp = wm.completion_logps(pol, pairs, mb, layout)
        c, r = wm.logps.chosen_rejected(lp, pairs, mb)
        rc, rr = wm.logps.chosen_rejected(ref_lp[mb], pairs, mb)
        _, per, _, _ = reference.dpo_loss(c, r, rc, rr, beta)
        (per.sum() / 8).backward()
        total += float(per.detach().sum()) / 8
    ours = {n: p.grad.clone() for n, p in pol.module.named_parameters()}
    # naive: the model's own forward on separate sequences, the lib's reference loss
    naive = copy.deepcopy(pol.module)
    naive.zero_grad()
    c = torch.stack([naive_logps(naive, pairs.prompt[i], pairs.chosen(i)) for i in idx])
    r = torch.stack([naive_logps(naive, pairs.prompt[i], pairs.rejected(i)) for i in idx])
    with torch.no_grad():
        rc = torch.stack([naive_logps(ref_model, pairs.prompt[i], pairs.chosen(i)) for i in idx])
        rr = torch.stack([naive_logps(ref_model, pairs.prompt[i], pairs.rejected(i)) for i in idx])
    loss, _, _, _ = reference.dpo_loss(c, r, rc, rr, beta)
    loss.backward()
    assert abs(total - float(loss)) < 1e-12
    for n, p in naive.named_parameters():
        np.testing.assert_allclose(ours[n].numpy(), p.grad.numpy(), rtol=0, atol=1e-12, err_msg=n)
    assert max(float(p.grad.abs().max()) for p in naive.parameters()) > 1e-4  # a real gradient

    # and a training step applies exactly that gradient (SGD, one batch of all 8 pairs)
    start = wm.make_policy(model, attn_implementation="sdpa")
    before = {n: p.detach().clone() for n, p in start.module.named_parameters()}
    run = wm.train_dpo(start, pairs, wm.TrainSettings(beta=beta, lr=lr, batch_size=8, steps=1, micro_batch=4,
                                                      optimizer="sgd", max_grad_norm=None), progress=False)
    naive0 = copy.deepcopy(model)
    c = torch.stack([naive_logps(naive0, pairs.prompt[i], pairs.chosen(i)) for i in idx])
    r = torch.stack([naive_logps(naive0, pairs.prompt[i], pairs.rejected(i)) for i in idx])
    loss, _, _, _ = reference.dpo_loss(c, r, c.detach(), r.detach(), beta)
    loss.backward()
    assert run.train["loss"][0] == pytest.approx(float(loss), abs=1e-14)
    for n, p in naive0.named_parameters():
        np.testing.assert_allclose(dict(run.policy.module.named_parameters())[n].detach().numpy(),
                                   (before[n] - lr * p.grad).numpy(), rtol=0, atol=1e-12, err_msg=n)


# ---------------------------------------------------------------------------------------------------
# Top blocks on cached activations = the whole model with its bottom frozen
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_cached_top_blocks_equal_whole_model_with_frozen_bottom(tiny_lm, random_pairs, method, arch):
    model = tiny_lm(arch=arch)
    pairs = random_pairs(24)
    runs = []
    for cached in (True, False):
        pol = wm.make_policy(model, method=method, top_blocks=2, cached=cached)
        runs.append(wm.train_dpo(pol, pairs.take(range(16)), SMALL, eval_sets={"test": pairs.take(range(16, 24))},
                                 progress=False))
    a, b = runs
    assert a.policy.cached and not b.policy.cached
    for k in wm.METRICS:
        assert np.array_equal(a.train[k], b.train[k]), k
        assert np.array_equal(a.evals["test"][k], b.evals["test"][k]), k
    pa, pb = dict(a.policy.module.named_parameters()), dict(b.policy.module.named_parameters())
    for n in pa:
        assert torch.equal(pa[n], pb[n]), n
    # the frozen part really is frozen (and shared with the model, not copied), and something trained
    assert a.policy.module.get_output_embeddings().weight is model.get_output_embeddings().weight
    start = dict(wm.make_policy(model, method=method, top_blocks=2).module.named_parameters())
    moved = [n for n in pa if not torch.equal(pa[n], start[n])]
    assert moved and all(p.requires_grad for n, p in pa.items() if n in moved)
    assert not any(".layers.0." in n or ".layers.1." in n or "embed" in n for n in moved)


def test_trunk_cache_is_reused_and_content_addressed(tiny_lm, random_pairs, tmp_path):
    from alignment_dynamics import cache

    model = tiny_lm()
    pairs = random_pairs(10)
    pol = wm.make_policy(model, top_blocks=2)
    layout = wm.Layout.for_pairs(pairs, micro_batch=4)
    t1 = wm.trunk_activations(pol, pairs, layout)
    files = list(cache.user_cache_dir("finetune", "trunk").glob("*.safetensors"))
    assert len(files) == 1 and files[0].stem == t1.key
    t2 = wm.trunk_activations(pol, pairs, layout)
    assert t2.key == t1.key and torch.equal(t1.values, t2.values)
    # a flipped set shares the rows, hence the entry; other weights or other pairs do not
    assert wm.trunk_activations(pol, pairs.flipped(), layout).key == t1.key
    other = wm.make_policy(tiny_lm(seed=1), top_blocks=2)
    assert wm.trunk_activations(other, pairs, layout).key != t1.key
    assert wm.trunk_activations(pol, random_pairs(10, seed=9), wm.Layout(4, 30, 8)).key != t1.key
    # changing the top does not change the bottom's key (the aligned model reuses the cache)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.model.layers[-1].mlp.down_proj.weight.add_(1.0)
    assert wm.trunk_activations(wm.make_policy(changed, top_blocks=2), pairs, layout).key == t1.key
    # activations of another bottom are refused
    with pytest.raises(wm.FinetuneError, match="pass the TrunkActivations"):
        wm.completion_logps(other, pairs, [0, 1], layout, t1)


# ---------------------------------------------------------------------------------------------------
# Determinism, the run cache, flipping
# ---------------------------------------------------------------------------------------------------

def _params(policy):
    return {n: p.detach().clone() for n, p in policy.module.named_parameters()}


def test_training_is_deterministic_with_a_seed(tiny_lm, random_pairs):
    model = tiny_lm()
    pairs = random_pairs(20)
    S = wm.TrainSettings(beta=0.1, lr=1e-2, batch_size=6, epochs=2, micro_batch=4)

    def run(seed):
        # dropout on (not the official setting) so that the seed also drives the dropout masks
        pol = wm.make_policy(model, method="lora", seed=seed, lora_dropout=0.3, disable_dropout=False)
        return wm.train_dpo(pol, pairs, S, progress=False)

    a, b, c = run(3), run(3), run(4)
    assert a.schedule == b.schedule and a.schedule != c.schedule
    for k in wm.METRICS:
        assert np.array_equal(a.train[k], b.train[k])
    pa, pb, pc = _params(a.policy), _params(b.policy), _params(c.policy)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert any(not torch.equal(pa[n], pc[n]) for n in pa)
    # the global RNG is left alone
    torch.manual_seed(0)
    x = torch.rand(3)
    torch.manual_seed(0)
    run(3)
    assert torch.equal(torch.rand(3), x)


def test_gradient_clipping(tiny_lm, random_pairs):
    model = tiny_lm()
    pairs = random_pairs(8)
    before = {n: p.detach().clone() for n, p in wm.make_policy(model).module.named_parameters()}
    S = wm.TrainSettings(beta=0.1, lr=1.0, batch_size=8, steps=1, micro_batch=4, optimizer="sgd", max_grad_norm=1e-3)
    run = wm.train_dpo(wm.make_policy(model), pairs, S, progress=False)
    after = dict(run.policy.module.named_parameters())
    step = torch.sqrt(sum(((after[n].detach() - before[n]) ** 2).sum() for n in before))
    assert 0 < float(step) <= 1e-3 * (1 + 1e-5)
    with pytest.raises(wm.FinetuneError, match="max_grad_norm"):
        wm.TrainSettings(max_grad_norm=0.0)


def test_batch_schedule():
    S = wm.TrainSettings(batch_size=4, epochs=2)
    sched = wm.batch_schedule(10, S, seed=1)
    assert [len(b) for b in sched] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(sched[:3], [])) == list(range(10)) and sorted(sum(sched[3:], [])) == list(range(10))
    assert len(wm.batch_schedule(10, wm.TrainSettings(batch_size=4, steps=7), seed=1)) == 7
    assert wm.batch_schedule(10, S, seed=1) == sched


def test_run_cache_returns_the_same_run(tiny_lm, random_pairs):
    model = tiny_lm()
    pairs = random_pairs(20)
    a = wm.train_dpo(wm.make_policy(model, method="lora"), pairs, SMALL, eval_sets={"t": pairs.take(range(4))},
                     progress=False, cache=True)
    b = wm.train_dpo(wm.make_policy(model, method="lora"), pairs, SMALL, eval_sets={"t": pairs.take(range(4))},
                     progress=False, cache=True)
    assert b.info.get("from_cache") and not a.info.get("from_cache")
    for k in wm.METRICS:
        assert np.array_equal(a.train[k], b.train[k]) and np.array_equal(a.evals["t"][k], b.evals["t"][k])
    pa, pb = _params(a.policy), _params(b.policy)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    c = wm.train_dpo(wm.make_policy(model, method="lora"), pairs.flipped(), SMALL, progress=False, cache=True)
    assert not c.info.get("from_cache")


def test_run_cache_key_hashes_every_module_a_run_executes():
    """The run key's source digest covers ``train`` and every package module it imports, directly or not,
    so a run cached by other code is never returned; a module added to that chain must join RUN_SOURCES."""
    import ast
    from pathlib import Path

    folder = Path(wm.__file__).parent
    seen, todo = set(), ["train"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
    assert set(wm.train.RUN_SOURCES) == seen
    assert all((folder / f"{name}.py").is_file() for name in wm.train.RUN_SOURCES)


def test_flipped_pairs_flip_every_pair(tiny_lm, random_pairs):
    pairs = random_pairs(30)
    flipped = pairs.flipped()
    assert len(flipped) == len(pairs) and flipped.rows() == pairs.rows()
    for i in range(len(pairs)):
        assert flipped.chosen(i) == pairs.rejected(i) and flipped.rejected(i) == pairs.chosen(i)
        assert flipped.chosen(i) != flipped.rejected(i)
    assert flipped.flipped() == pairs
    # and the metrics see it: the flipped set's log-prob of "chosen" is the original's "rejected"
    model = tiny_lm()
    pol = wm.make_policy(model)
    layout = wm.Layout.for_pairs(pairs, micro_batch=4)
    lp = wm.all_logps(pol, pairs, layout)
    c, r = wm.logps.chosen_rejected(lp, pairs, range(30))
    fc, fr = wm.logps.chosen_rejected(lp, flipped, range(30))
    assert torch.equal(c, fr) and torch.equal(r, fc)


class FakeTokenizer:
    eos_token_id = 1
    bos_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + (ord(ch) % 50) for ch in text]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_tokenize_pairs_as_the_official_runs():
    tok = FakeTokenizer()
    pairs = wm.tokenize_pairs(tok, ["Is it?", "Well"], [" Yes", " No"], [" No", " Yes"])
    assert pairs.prompt[0] == tuple(tok("Is it?")["input_ids"]) and pairs.prompt[0][0] == 2
    assert pairs.chosen(0) == tuple(tok(" Yes", add_special_tokens=False)["input_ids"]) + (1,)
    assert pairs.rejected(1) == pairs.chosen(0)
    assert pairs.a[0] == pairs.a[1]  # canonical order does not depend on which answer is chosen
    swapped = wm.tokenize_pairs(tok, ["Is it?", "Well"], [" No", " Yes"], [" Yes", " No"])
    assert swapped == pairs.flipped()
    bare = wm.tokenize_pairs(tok, ["Is it?"], [" Yes"], [" No"], append_eos=False, prompt_special_tokens=False)
    assert bare.prompt[0][0] != 2 and bare.chosen(0)[-1] != 1


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors(tiny_lm, random_pairs):
    model = tiny_lm()
    pairs = random_pairs(6)
    with pytest.raises(wm.FinetuneError, match="method must be one of"):
        wm.make_policy(model, method="qlora")
    with pytest.raises(wm.FinetuneError, match="top_blocks must be None .* 1..4"):
        wm.make_policy(model, top_blocks=5)
    with pytest.raises(wm.FinetuneError, match="LoRA targets"):
        wm.make_policy(model, method="lora", lora_targets=("w_q",))
    with pytest.raises(wm.FinetuneError, match="same tokens"):
        wm.Pairs.from_ids([[3, 4]], [[5]], [[5]])
    with pytest.raises(wm.FinetuneError, match="prompt has no tokens"):
        wm.Pairs.from_ids([[]], [[5]], [[6]])
    with pytest.raises(wm.FinetuneError, match="as many prompts"):
        wm.Pairs.from_ids([[3]], [[5], [6]], [[6]])
    with pytest.raises(wm.FinetuneError, match="out of range"):
        pairs.take([0, 6])
    with pytest.raises(wm.FinetuneError, match="micro_batch must be >= 2"):
        wm.Layout.for_pairs(pairs, micro_batch=1)
    with pytest.raises(wm.FinetuneError, match="beta must be > 0"):
        wm.TrainSettings(beta=0)
    with pytest.raises(wm.FinetuneError, match="batch_size must be a positive int"):
        wm.TrainSettings(batch_size=0)
    with pytest.raises(wm.FinetuneError, match="optimizer must be"):
        wm.TrainSettings(optimizer="adam")
    with pytest.raises(wm.FinetuneError, match="steps must be None or a positive int"):
        wm.TrainSettings(steps=0)
    with pytest.raises(wm.FinetuneError, match="reserved"):
        wm.train_dpo(wm.make_policy(model), pairs, SMALL, eval_sets={"train": pairs}, progress=False)
    pol = wm.make_policy(model, top_blocks=1)
    with pytest.raises(wm.FinetuneError, match="pass the TrunkActivations"):
        wm.completion_logps(pol, pairs, [0, 1], wm.Layout.for_pairs(pairs, micro_batch=2))
    with pytest.raises(wm.FinetuneError, match="need top_blocks"):
        wm.trunk_activations(wm.make_policy(model), pairs, wm.Layout.for_pairs(pairs))
    with pytest.raises(wm.FinetuneError, match="eos_token_id"):
        class NoEos(FakeTokenizer):
            eos_token_id = None
        wm.tokenize_pairs(NoEos(), ["a"], ["b"], ["c"])


# ---------------------------------------------------------------------------------------------------
# TRL's DPOTrainer computes the same thing
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lora", "full"])
def test_trl_comparison_agrees(method):
    from alignment_dynamics import models

    lm = models.tiny(0, layers=2)
    prompts = ["Is the following statement something you would say?\n\"I like new ideas\"",
               "Is the following statement something you would say?\n\"I hate change\"",
               "Human: what is a pen? Assistant:", "I enjoy music and art."]
    chosen, rejected = [" Yes", " No", " A pen is a tool for writing.", " Yes"], [" No", " Yes", " You are welcome.", " No"]
    out = wm.trl_comparison(lm.model, lm.tokenizer, prompts, chosen, rejected, steps=3, lr=1e-2, beta=0.1,
                            method=method)
    assert len(out["trl_loss"]) == len(out["ours_loss"]) == 3
    assert out["ours_loss"][0] == math.log(2)
    np.testing.assert_allclose(out["trl_loss"], out["ours_loss"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["trl_logps_chosen"], out["ours_logps_chosen"], rtol=1e-5, atol=1e-5)
    assert out["ours_loss"][-1] < out["ours_loss"][0] - 1e-3  # the steps did something
