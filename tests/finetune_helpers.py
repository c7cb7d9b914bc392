"""Shared pieces of the whole-model DPO tests (imported by tests/test_finetune.py and test_misalign.py)."""

from __future__ import annotations

import pytest
import torch

from alignment_dynamics import finetune as ft
from dpo_helpers import one_thread  # noqa: F401  (an autouse fixture where imported)

V = 61


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """Each test writes its caches to its own temporary folder, without progress bars."""
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")


def tiny_llama(seed: int = 0, dtype=torch.float32, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0,
                      eos_token_id=1, bos_token_id=2)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


def tiny_gemma3(seed: int = 0, dtype=torch.float32):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"] * 2, pad_token_id=0,
                           eos_token_id=1, bos_token_id=2, attn_implementation="eager")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(cfg)
    return model.to(dtype).eval()


def random_pairs(n: int, seed: int = 1, prompt=(3, 9), answer=(1, 4)) -> ft.Pairs:
    g = torch.Generator().manual_seed(seed)

    def rnd(lo, hi):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        return torch.randint(3, V, (k,), generator=g).tolist()

    P, C, R = [], [], []
    while len(P) < n:
        p, c, r = rnd(*prompt), rnd(*answer), rnd(*answer)
        if c != r:
            P.append(p), C.append(c), R.append(r)
    return ft.Pairs.from_ids(P, C, R)
