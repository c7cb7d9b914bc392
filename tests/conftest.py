"""Shared fixtures of the test suite.

Library tier: ``root``; ``one_thread`` and ``user_cache`` (a module opts in with
``pytestmark = pytest.mark.usefixtures(...)``); ``tiny_lm``, the one factory of tiny random causal LMs
over token ids; ``random_pairs``; ``tiny_named`` / ``register_tiny`` (a tiny model registered as a
packaged model); ``tiny_script`` (a subprocess that sees that model).

The book tier: ``run_build`` (run the build like ``make book``) and ``smoke_build`` (one smoke build of
the whole book per session). A test that uses either, directly or through another fixture, is marked
``book`` here automatically, so ``pytest -m "not book"`` (``make test-fast``) never builds the book.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_BUILD = ROOT / "_build" / "test-smoke"
TINY_VOCAB = 61  # the token ids of tiny_lm and random_pairs: 0 pad, 1 eos, 2 bos, 3.. ordinary
TINY_NAME = "tiny-test"  # the registry name of register_tiny's model


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# --- the library tier -------------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin contention on a busy 2-core machine.
    Restores the thread count afterwards."""
    from alignment_dynamics import threads

    with threads.one_thread():
        yield


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """The test's own user cache (a temporary folder), without progress bars; returns the folder."""
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_path / "cache"


def _tiny_lm(seed: int = 0, *, arch: str = "llama", vocab: int = TINY_VOCAB, hidden: int = 32, layers: int = 4,
             dtype=None):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    ids = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3 // 2, num_hidden_layers=layers,
               num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if arch == "llama":
        cls, cfg = LlamaForCausalLM, LlamaConfig(**ids, tie_word_embeddings=True)
    elif arch == "gemma3":
        if layers % 2:
            raise ValueError("a tiny Gemma 3 alternates sliding and full attention: layers must be even")
        cls, cfg = Gemma3ForCausalLM, Gemma3TextConfig(
            **ids, head_dim=hidden // 4, sliding_window=4, layer_types=["sliding_attention", "full_attention"] * (layers // 2),
            attn_implementation="eager")
    else:
        raise ValueError(f"arch must be 'llama' or 'gemma3', got {arch!r}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.to(dtype or torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_lm():
    """The factory of tiny random causal LMs built in code: ``tiny_lm(seed=0, *, arch="llama"|"gemma3",
    vocab=61, hidden=32, layers=4, dtype=torch.float32)`` returns a transformers model (tied head, 4 heads,
    2 KV heads) in eval mode, its weights drawn by transformers under ``seed`` without touching the global
    RNG. (A tiny model *with a tokenizer* is the library's ``models.tiny``, which the smoke profile runs.)"""
    return _tiny_lm


def _random_pairs(n: int, seed: int = 1, prompt=(3, 9), answer=(1, 4), vocab: int = TINY_VOCAB):
    from alignment_dynamics import wholemodel as wm
    import torch

    g = torch.Generator().manual_seed(seed)

    def rnd(lo, hi):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        return torch.randint(3, vocab, (k,), generator=g).tolist()

    P, C, R = [], [], []
    while len(P) < n:
        p, c, r = rnd(*prompt), rnd(*answer), rnd(*answer)
        if c != r:
            P.append(p), C.append(c), R.append(r)
    return wm.Pairs.from_ids(P, C, R)


@pytest.fixture(scope="session")
def random_pairs():
    """``random_pairs(n, seed=1, prompt=(3, 9), answer=(1, 4), vocab=61)``: ``n`` preference pairs of random
    token ids (prompt and answer lengths drawn from the half-open ranges; chosen differs from rejected)."""
    return _random_pairs


@pytest.fixture
def register_tiny(monkeypatch):
    """``register_tiny(folder, seed=0)`` registers ``models.tiny_spec`` (the factory of the registered
    ``tiny-random-llama`` models) as ``tiny-test``, its recipe file (its "GGUF") written into ``folder``:
    conversion, loading, fingerprints and the embedding cache then run as for the packaged models, in well
    under a second. Returns the name; the registry is restored after the test."""
    from alignment_dynamics import models

    def register(folder: Path, seed: int = 0) -> str:
        monkeypatch.setitem(models.REGISTRY, TINY_NAME, models.tiny_spec(TINY_NAME, seed, folder=Path(folder)))
        monkeypatch.setattr(models, "_SHARED", {})
        return TINY_NAME

    return register


@pytest.fixture
def tiny_named(user_cache, tmp_path, register_tiny) -> str:
    """The name of a tiny model registered from ``tmp_path/src``, with the test's own user cache."""
    return register_tiny(tmp_path / "src")


# What a tiny_script runs first: the registry entry of register_tiny, its recipe in the user cache.
_PRELUDE = f"""
import sys, time
from pathlib import Path
from alignment_dynamics import models, embed, cache
TINY = {TINY_NAME!r}
models.REGISTRY[TINY] = models.tiny_spec(TINY, 0, folder=Path(cache.user_cache_dir('fake-gguf')))
"""


def _tiny_script(code: str, cache_dir: Path, *, wait_for: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"), ALIGNMENT_DYNAMICS_CACHE=str(cache_dir), TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, "-c", _PRELUDE + code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    if wait_for is None:
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, out
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == wait_for:
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f"the script ended before printing {wait_for!r}:\n{''.join(lines)}")


@pytest.fixture(scope="session")
def tiny_script():
    """``tiny_script(code, cache_dir, *, wait_for=None)``: run ``python -c`` with this checkout's library,
    ``cache_dir`` as the user cache, and ``TINY`` (the tiny model of register_tiny, its recipe in
    ``cache_dir/fake-gguf``) registered. Without ``wait_for``: (returncode, output). With it: the running
    process once it printed that line (the caller kills it)."""
    return _tiny_script


# --- the book tier ----------------------------------------------------------------------------------


# The fixtures that build the book: a test using any of them belongs to the book tier.
BOOK_FIXTURES = frozenset({"run_build", "smoke_build"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BOOK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.book)


def _run_build(*args: str, build_dir: Path, timeout: float = 3600, env: dict | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m alignment_dynamics.build`` like ``make book`` does, from the repo root."""
    cmd = [sys.executable, "-m", "alignment_dynamics.build", "--build-dir", str(build_dir), *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"build failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def run_build():
    """``run_build(*args, build_dir=..., timeout=3600, env=None, check=False)``: run
    ``python -m alignment_dynamics.build`` from the repo root; returns the CompletedProcess."""
    return _run_build


@pytest.fixture(scope="session")
def smoke_build(run_build) -> Path:
    """The whole book built with PROFILE=smoke through the real pipeline (``-n -W``), from an empty
    build folder. Returns the build folder; the build's own exit status is asserted in test_build.py.
    """
    if SMOKE_BUILD.exists() and not os.environ.get("AD_TEST_KEEP_BUILD"):
        shutil.rmtree(SMOKE_BUILD)
    proc = run_build("--profile", "smoke", build_dir=SMOKE_BUILD)
    (SMOKE_BUILD / "build.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    (SMOKE_BUILD / "build.rc").write_text(str(proc.returncode))
    return SMOKE_BUILD
