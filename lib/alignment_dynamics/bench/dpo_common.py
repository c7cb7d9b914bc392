"""What the parts of the DPO benchmark share: the heads (SmolLM2's, the paper's), the CPU sizes, the
synthetic inputs shaped like the persona data and like HH-RLHF, and the eager baseline loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import dpo


SMOLLM2 = dict(d=576, V=49152)
PAPER_HEAD = dict(d=4096, V=32000)
# CPU benchmark sizes: "full" (the sizes), "quick" (--quick, under ~45 s on 2 idle cores) and
# "tiny" (the book's smoke profile: seconds; the sweep keeps its shape but fewer behaviours)
SIZES = {
    "full": dict(vocab=49152, behaviours=135, sweep_repeats=5, ref_steps=10, f64_vocab=16384, f64_steps=100,
                 p3_pairs=8, p3_length=64, p3_repeats=5, compile=True),
    "quick": dict(vocab=49152, behaviours=135, sweep_repeats=2, ref_steps=3, f64_vocab=4096, f64_steps=20,
                  p3_pairs=8, p3_length=32, p3_repeats=2, compile=False),
    "tiny": dict(vocab=4096, behaviours=4, sweep_repeats=1, ref_steps=1, f64_vocab=512, f64_steps=10,
                 p3_pairs=2, p3_length=8, p3_repeats=1, compile=False),
}


def check_size(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"unknown benchmark size {size!r}; valid sizes: {list(SIZES)}")
    return SIZES[size]


def persona_like(behaviours: int, n: int, d: int, *, seed: int = 0, shift: float = 0.5) -> dict[str, torch.Tensor]:
    """Features of ``behaviours`` x ``n`` statements (fp32, rows grouped by behaviour), half Yes-preferred.

    Each behaviour has its own mean difference; the features have unit RMS like a normalised hidden
    state. Returns ``H`` ``[behaviours * n, d]``, ``yes`` (bool) and ``behaviour`` ids.
    """
    g = torch.Generator().manual_seed(seed)
    yes = (torch.arange(n) % 2 == 0).repeat(behaviours)
    mu = torch.randn(behaviours, d, generator=g) * shift / math.sqrt(d)
    beh = torch.arange(behaviours).repeat_interleave(n)
    H = torch.randn(behaviours * n, d, generator=g) + torch.where(yes, 1.0, -1.0)[:, None] * mu[beh]
    H = H / H.pow(2).mean(1, keepdim=True).sqrt()
    return {"H": H.contiguous(), "yes": yes, "behaviour": beh}


def hh_like(pairs: int, length: int, d: int, V: int, *, seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Multi-token preference pairs: chosen/rejected features ``[P, L, d]``, tokens ``[P, L]`` with padding.
    """
    g = torch.Generator().manual_seed(seed)
    Hw = torch.randn(pairs, length, d, generator=g).to(dtype)
    Hl = torch.randn(pairs, length, d, generator=g).to(dtype)
    tw = torch.randint(0, V, (pairs, length), generator=g)
    tl = torch.randint(0, V, (pairs, length), generator=g)
    lens = torch.randint(length // 2, length + 1, (2, pairs), generator=g)
    ar = torch.arange(length)
    mw, ml = ar[None] < lens[0][:, None], ar[None] < lens[1][:, None]
    W0 = (0.02 * torch.randn(V, d, generator=g)).to(dtype)
    return {"Hw": Hw, "Hl": Hl, "tw": tw, "tl": tl, "mw": mw, "ml": ml, "W0": W0}


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to fp32 (as TRL does); fp32 and float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def naive_dpo_loss(Hw, Hl, W, tw, tl, mw, ml, ref_c, ref_r, beta: float = 0.1) -> torch.Tensor:
    """The eager baseline: logits of all response tokens ([chosen; rejected]) -> log-softmax -> gather -> DPO.
    """
    P, L, d = Hw.shape
    Hc = torch.cat([Hw, Hl]).reshape(2 * P * L, d)
    t = torch.cat([tw, tl]).reshape(-1)
    m = torch.cat([mw, ml]).reshape(-1)
    logits = upcast(Hc @ W.T)
    logp = torch.log_softmax(logits, dim=-1).gather(1, t[:, None]).squeeze(1)
    seq = torch.where(m, logp, 0.0).view(2 * P, L).sum(1)
    loss, *_ = dpo.dpo_loss(seq[:P], seq[P:], ref_c, ref_r, beta)
    return loss
