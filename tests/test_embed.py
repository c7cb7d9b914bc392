"""alignment_dynamics.embed: h(x) equals the model's own last-token state and logits; padding, norm
modes, dtype, the content-addressed cache (reuse, no staleness, kill -9) and response features."""

from __future__ import annotations

import os
import re
from pathlib import Path
import signal

import numpy as np
import pytest
import torch

from alignment_dynamics import cache, config, data, embed, hardware, models

PROMPTS = [
    'Is the following statement something you would say?\n"I like new ideas and artistic things"',
    "I hate change.",
    "x",
    "Human: what is a pen?\n\nAssistant: A pen is a tool for writing.",
    'Is the following statement something you would say?\n"I enjoy music"',
]


def reference(lm, prompt):
    """The official way: one prompt, the whole model with its LM head, hidden_states[-1][0, -1]."""
    ids = lm.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = lm.model(**ids, output_hidden_states=True)
    return out.hidden_states[-1][0, -1].float(), out.logits[0, -1].float()


@pytest.fixture(scope="module")
def tiny():
    return models.tiny(0)


@pytest.mark.parametrize("max_batch_tokens", [1, 24, 4096])
def test_embed_equals_unpadded_single_prompt_results(tiny, max_batch_tokens):
    H = embed.embed(tiny, PROMPTS, max_batch_tokens=max_batch_tokens, progress=False)
    assert H.dtype == np.float32 and H.shape == (len(PROMPTS), tiny.d_model)
    W = tiny.W_U
    for i, p in enumerate(PROMPTS):
        h, logits = reference(tiny, p)
        np.testing.assert_allclose(H[i], h.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose((torch.from_numpy(H[i]) @ W.T).numpy(), logits.numpy(), rtol=0, atol=1e-4)


SHARED_PREFIX = [
    'Is the following statement something you would say?\n"I like new ideas and artistic things"',
    'Is the following statement something you would say?\n"I hate change"',
    'Is the following statement something you would say?\n"I enjoy music, art, science and literature a lot"',
    'Is the following statement something you would say?\n"No"',
]


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("max_batch_tokens", [1, 4096])
def test_shared_prefix_runs_once_and_changes_nothing(tiny, share_prefix, max_batch_tokens):
    ids = tiny.tokenizer(SHARED_PREFIX)["input_ids"]
    assert embed.common_prefix(ids) >= embed.MIN_SHARED_PREFIX
    H = embed.embed(tiny, SHARED_PREFIX, share_prefix=share_prefix, max_batch_tokens=max_batch_tokens,
                    progress=False)
    for i, p in enumerate(SHARED_PREFIX):
        h, _ = reference(tiny, p)
        np.testing.assert_allclose(H[i], h.numpy(), rtol=0, atol=1e-5)
    D = embed.embed(tiny, SHARED_PREFIX, share_prefix=share_prefix, norm="double", progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(D, tiny.final_norm(torch.from_numpy(H)).numpy(), rtol=0, atol=1e-5)


def test_common_prefix_leaves_a_token():
    assert embed.common_prefix([[1, 2, 3], [1, 2, 4]]) == 2
    assert embed.common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert embed.common_prefix([[1, 2], [1, 2, 3]]) == 1
    assert embed.common_prefix([[5], [6]]) == 0 and embed.common_prefix([]) == 0


def test_batches_are_length_sorted_and_bounded():
    lengths = [3, 10, 7, 10, 1, 5]
    batches = embed._batches(lengths, max_tokens=20, max_rows=64)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert all(len(b) * lengths[b[0]] <= 20 or len(b) == 1 for b in batches)
    assert embed._batches([4] * 10, max_tokens=1000, max_rows=3)[0] == [0, 1, 2]


def test_double_norm_applies_the_final_norm_once_more(tiny):
    H = embed.embed(tiny, PROMPTS, progress=False)
    D = embed.embed(tiny, PROMPTS, norm="double", progress=False)
    with torch.no_grad():
        expected = tiny.final_norm(torch.from_numpy(H)).numpy()
    np.testing.assert_allclose(D, expected, rtol=0, atol=1e-6)
    assert not np.allclose(D, H)
    with pytest.raises(config.ConfigError, match=r"unknown norm 'twice'; valid: \['model', 'double'\]"):
        embed.embed(tiny, PROMPTS, norm="twice")


def test_bfloat16_is_close_and_stored_as_float32():
    lb = models.tiny(0, dtype="bfloat16")
    H = embed.embed(lb, PROMPTS, progress=False)
    ref = embed.embed(models.tiny(0), PROMPTS, progress=False)
    assert H.dtype == np.float32
    rel = np.linalg.norm(H - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 0.05


@pytest.mark.parametrize("bad, match", [([], "the prompt list is empty"), ("a prompt", "a single string"),
                                        (["ok", ""], r"entries \[1\] are not")])
def test_bad_prompt_lists(tiny, bad, match):
    with pytest.raises(embed.EmbedError, match=match):
        embed.embed(tiny, bad)


# --- the cache -------------------------------------------------------------------------------------------

def test_behavior_embeddings_reuse_rows_and_never_go_stale(tiny_named, register_tiny, tmp_path):
    small = data.stratified_sample("openness", 4)
    large = data.stratified_sample("openness", 8)
    a = embed.behavior_embeddings(tiny_named, "openness", small, dtype="float32", progress=False)
    assert a.options["dtype"] == "float32"
    assert a.computed == 8 and a.h.shape == (8, 32) and a.h.dtype == np.float32
    recs = data.load_persona("openness")
    assert list(a.labels) == [1 if recs[i].positive else -1 for i in small]
    assert list(a.positive) == [recs[i].positive for i in small]
    b = embed.behavior_embeddings(tiny_named, "openness", large, dtype="float32", progress=False)
    assert b.computed == 8  # only the 8 new rows
    np.testing.assert_array_equal(b.h[np.isin(b.indices, small)], a.h)
    c = embed.behavior_embeddings(tiny_named, "openness", large, dtype="fp32", flip=True, progress=False)
    assert c.computed == 0 and np.array_equal(c.labels, -b.labels)
    # the rows are the model's own
    lm = models.load(tiny_named, device="cpu")
    direct = embed.embed(lm, [recs[i].question for i in large], progress=False)
    np.testing.assert_allclose(b.h, direct, rtol=0, atol=1e-6)
    # another option, norm or dtype is another store
    f32 = {"dtype": "float32", "progress": False}
    assert embed.behavior_embeddings(tiny_named, "openness", small, trailing_newline=True, **f32).computed == 8
    assert embed.behavior_embeddings(tiny_named, "openness", small, norm="double", **f32).computed == 8
    assert embed.behavior_embeddings(tiny_named, "openness", small, dtype="bfloat16", progress=False).computed == 8
    auto = embed.behavior_embeddings(tiny_named, "openness", small, progress=False)
    assert auto.options["dtype"] == hardware.auto_dtype() and auto.computed == 0
    # a changed model (another "GGUF") never returns the old rows
    register_tiny(tmp_path / "src2", seed=1)
    d = embed.behavior_embeddings(tiny_named, "openness", small, dtype="float32", progress=False)
    assert d.computed == 8 and not np.allclose(d.h, a.h)
    # the store holds no pickle: safetensors files only
    files = list((tmp_path / "cache" / "embeddings").rglob("*.safetensors"))
    assert files and all(f.read_bytes()[8:9] == b"{" for f in files)


def test_cached_embeddings_by_prompt_text(tiny_named):
    h1, n1 = embed.cached_embeddings(tiny_named, PROMPTS[:3], group="demo")
    h2, n2 = embed.cached_embeddings(tiny_named, [PROMPTS[0], PROMPTS[0] + " ", PROMPTS[2]], group="demo")
    assert (n1, n2) == (3, 1)  # a changed prompt text is a new row
    np.testing.assert_array_equal(h1[[0, 2]], h2[[0, 2]])
    with pytest.raises(config.ConfigError, match="plain file name"):
        embed.cached_embeddings(tiny_named, PROMPTS, group="../x")
    with pytest.raises(embed.EmbedError, match="empty"):
        embed.behavior_embeddings(tiny_named, "openness", [])
    with pytest.raises(data.UnknownBehaviorError, match="Did you mean 'openness'"):
        embed.behavior_embeddings(tiny_named, "opennes")


def test_kill_during_caching_then_recover(tiny_named, tiny_script, tmp_path):
    first = [0, 1, 2, 3]
    embed.behavior_embeddings(tiny_named, "openness", first, progress=False)
    code = """
import safetensors.numpy as stn
orig = stn.save_file
def slow(tensors, path, metadata=None):
    orig(tensors, path, metadata=metadata)
    with open(path, "r+b") as f:
        f.truncate(100)  # a half-written file
    print("READY", flush=True)
    time.sleep(120)
stn.save_file = slow
embed.behavior_embeddings(TINY, "openness", [0, 1, 2, 3, 4, 5, 6, 7], progress=False)
"""
    proc = tiny_script(code, tmp_path / "cache", wait_for="READY")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    temporaries = [p for p in (tmp_path / "cache" / "embeddings").rglob("*") if cache.is_temporary(p)]
    assert temporaries, "the killed writer should have left its temporary"
    again = embed.behavior_embeddings(tiny_named, "openness", first, progress=False)
    assert again.computed == 0  # the old store is intact
    more = embed.behavior_embeddings(tiny_named, "openness", list(range(8)), progress=False)
    assert more.computed == 4  # the lock was released; the rest is computed and stored
    assert embed.behavior_embeddings(tiny_named, "openness", list(range(8)), progress=False).computed == 0


# --- response features -----------------------------------------------------------------------------------

def test_response_features_give_the_models_log_probs(tiny):
    prompts = ["\n\nHuman: what is a pen?\n\nAssistant:", "\n\nHuman: hi\n\nAssistant:"]
    responses = [" A pen is a tool for writing.", " You are welcome."]
    rf = embed.response_features(tiny, prompts, responses, progress=False)
    assert len(rf) == 2 and rf.h.shape[0] == rf.offsets[-1] == len(rf.targets)
    W = tiny.W_U
    tok = tiny.tokenizer
    for k, (p, r) in enumerate(zip(prompts, responses)):
        p_ids = tok(p)["input_ids"]
        r_ids = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        x = torch.tensor([p_ids + r_ids])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(x).logits[0].float(), -1)
        expected = sum(logp[len(p_ids) - 1 + t, y] for t, y in enumerate(r_ids))
        h, y = rf.sequence(k)
        assert list(y) == r_ids
        ours = torch.log_softmax(torch.from_numpy(h) @ W.T, -1)[torch.arange(len(y)), torch.from_numpy(y)].sum()
        assert abs(float(ours - expected)) < 1e-4
    cut = embed.response_features(tiny, prompts, responses, max_prompt_tokens=3, max_response_tokens=2,
                                  progress=False)
    assert list(np.diff(cut.offsets)) == [2, 2] and cut.truncated.all()
    with pytest.raises(embed.EmbedError, match="2 prompts but 1 responses"):
        embed.response_features(tiny, prompts, responses[:1])


def test_cached_response_features(tiny_named):
    prompts = ["\n\nHuman: hi\n\nAssistant:"] * 2
    responses = [" Hello.", " Go away."]
    a = embed.cached_response_features(tiny_named, prompts, responses, progress=False)
    files = list(cache.user_cache_dir("response_features").glob("*.safetensors"))
    assert len(files) == 1
    b = embed.cached_response_features(tiny_named, prompts, responses, progress=False)
    for name in ("h", "targets", "offsets", "prompt_tokens", "truncated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    embed.cached_response_features(tiny_named, prompts, responses, append_eos=False, progress=False)
    assert len(list(cache.user_cache_dir("response_features").glob("*.safetensors"))) == 2


# --- the packaged models: the core correctness test ------------------------------------------------------------

#: |h @ W_U^T - logits| on the packaged models in float32: the batched, padded, head-free computation
#: against the model's own one-prompt forward. Measured about 3e-5 on logits of size ~20-25.
LOGIT_ATOL = 1e-3


@pytest.mark.models
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_h_times_W_U_is_the_models_next_token_logits(name):
    lm = models.shared(name, device="cpu")
    prompts = [p.prompt for p in data.persona_pairs("openness", [0, 500])] + ["Hello there", "x"]
    gap = embed.logit_gap(lm, prompts)
    assert gap["model"].max() < LOGIT_ATOL, gap
    assert gap["double"].min() > 100 * LOGIT_ATOL  # the official quirk: not the logits' features
    H = embed.embed(lm, prompts, progress=False)
    for i, p in enumerate(prompts[:3]):
        h, logits = reference(lm, p)
        np.testing.assert_allclose(H[i], h.numpy(), rtol=0, atol=1e-3)
        assert int((torch.from_numpy(H[i]) @ lm.W_U.T).argmax()) == int(logits.argmax())
    m = lm.answer_margin(H[:1])
    yes, no = lm.answer_token_ids()
    _, logits = reference(lm, prompts[0])
    assert abs(m[0] - float(logits[yes] - logits[no])) < 2 * LOGIT_ATOL


@pytest.mark.models
def test_behavior_embeddings_on_smollm2():
    sample = data.stratified_sample("openness", 4)
    emb = embed.behavior_embeddings("smollm2-135m-instruct", "openness", sample, progress=False)
    assert emb.h.shape == (8, 576) and emb.labels.sum() == 0
    norms = np.linalg.norm(emb.h, axis=1)
    assert 30 < norms.mean() < 70  # measured ~47.5 after the final norm (d = 576)


def test_dtype_agreement_detects_a_wrong_embedding():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(6, 16))
    ok = embed.dtype_agreement(h, h * (1 + 1e-3))
    assert ok["within"] and ok["rel_max"] == pytest.approx(1e-3) and ok["n"] == 6
    # mutations: a row scaled past the tolerance, a row rotated, one row replaced by noise
    scaled = h.copy()
    scaled[2] *= 1 + 2 * embed.DTYPE_REL_TOL
    assert not embed.dtype_agreement(h, scaled)["within"]
    noisy = h.copy()
    noisy[4] = rng.normal(size=16)
    assert not embed.dtype_agreement(h, noisy)["within"]
    for bad in (h[:3], np.full_like(h, np.nan), np.zeros_like(h)):
        with pytest.raises(embed.EmbedError):
            embed.dtype_agreement(h, bad)


@pytest.mark.models
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_bfloat16_and_float32_embeddings_agree_within_the_stated_tolerance(name):
    """The verdicts do not depend on the dtype because the embeddings hardly do: on 8 real persona
    prompts, bfloat16 rows are within DTYPE_REL_TOL (relative) and DTYPE_COS_MIN (cosine) of float32 rows.
    (On a CPU without native bf16 this runs emulated: a few seconds for 8 prompts.)"""
    prompts = [p.prompt for b in ("openness", "risk-seeking") for p in data.persona_pairs(b, data.stratified_sample(b, 2))]
    h32 = embed.embed(models.shared(name, dtype="float32"), prompts, progress=False)
    h16 = embed.embed(models.shared(name, dtype="bfloat16"), prompts, progress=False)
    agreement = embed.dtype_agreement(h32, h16)
    assert agreement["within"], agreement
    assert agreement["rel_max"] > 1e-4  # the two really ran in different dtypes


# --- corrupt stores are reported and recomputed ---------------------------------------------------------

def _overwrite_tensor_data(path: Path, data: bytes) -> None:
    """Overwrite the end of a safetensors file (its tensor data), keeping header and size."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - len(data))
        f.write(data)


@pytest.mark.parametrize("how", ["tensor data overwritten", "whole garbage", "digest removed"])
def test_a_corrupt_embedding_store_is_reported_and_recomputed(tiny_named, capsys, how):
    h1, n1 = embed.cached_embeddings(tiny_named, PROMPTS[:3], group="demo", dtype="float32")
    (path,) = (cache.user_cache_dir("embeddings")).rglob("demo.safetensors")
    if how == "tensor data overwritten":
        _overwrite_tensor_data(path, np.full(8, 0.25, dtype=np.float32).tobytes())
    elif how == "whole garbage":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:
        from safetensors.numpy import load_file, save_file

        t = load_file(str(path))
        t["h"][0, 0] += 1.0
        save_file(t, str(path), metadata={"meta": "{}"})
    h2, n2 = embed.cached_embeddings(tiny_named, PROMPTS[:3], group="demo", dtype="float32")
    err = capsys.readouterr().err
    assert n2 == 3 and np.array_equal(h1, h2), "the corrupt rows are computed again, never served"
    assert re.search(r"cache: embedding store .*demo\.safetensors is corrupt \(.*\); computing it again", err), err
    h3, n3 = embed.cached_embeddings(tiny_named, PROMPTS[:3], group="demo", dtype="float32")
    assert n3 == 0 and "corrupt" not in capsys.readouterr().err  # rebuilt: good again


def test_a_corrupt_response_feature_file_is_recomputed(tiny_named, capsys):
    prompts, responses = ["\n\nHuman: hi\n\nAssistant:"] * 2, [" Hello.", " Go away."]
    a = embed.cached_response_features(tiny_named, prompts, responses, progress=False)
    (path,) = cache.user_cache_dir("response_features").glob("*.safetensors")
    _overwrite_tensor_data(path, b"\x01" * 16)
    b = embed.cached_response_features(tiny_named, prompts, responses, progress=False)
    assert "response-feature cache" in capsys.readouterr().err
    np.testing.assert_array_equal(a.h, b.h)


def test_batches_bound_their_padding_and_cover_every_prompt_once(monkeypatch):
    """Each batch is within the token and row caps and pads at most PAD_SLACK beyond its real tokens;
    every position appears once. Mutation: without the bound (a huge slack) the same lengths give a
    batch that pads far more, so the check can fail."""
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(3, 60, size=300)]

    def check(batches, slack):
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(lengths)))
        worst = 0.0
        for b in batches:
            width, real = max(lengths[i] for i in b), sum(lengths[i] for i in b)
            assert len(b) * width <= 2048 and len(b) <= 256
            worst = max(worst, len(b) * width / real)
        return worst

    assert check(embed._batches(lengths, 2048, 256), embed.PAD_SLACK) <= 1 + embed.PAD_SLACK + 1e-12
    monkeypatch.setattr(embed, "PAD_SLACK", 1e9)
    assert check(embed._batches(lengths, 2048, 256), 1e9) > 1 + 0.125
