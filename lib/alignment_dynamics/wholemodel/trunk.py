"""The frozen bottom's output: with ``top_blocks`` the hidden state entering the first trainable block
never changes, so it is computed once and cached on disk (content-addressed, atomic).
"""

from __future__ import annotations

from typing import Sequence

from .batches import Layout, Pairs, pack
from .checks import FinetuneError, maybe_progress, transformers_version
from .policy import block_view, decoder_and_head, pad_token_id, Policy


class TrunkActivations:
    """The hidden state entering block ``split`` for every position of every packed row (fixed shapes).
    """

    def __init__(self, pairs_rows: tuple, layout: Layout, values, key: str, bottom: str):
        self.rows = pairs_rows
        self.layout = layout
        self.values = values  # [n, L, d]
        self.key = key
        self.bottom = bottom  # digest of the frozen bottom that produced them

    def matches(self, policy: "Policy", pairs: Pairs, layout: Layout) -> bool:
        """Whether these activations are the frozen bottom's output of ``policy`` for ``pairs``."""
        return self.rows == pairs.rows() and self.layout == layout and self.bottom == policy.bottom_digest()

    def batch(self, idx: Sequence[int]):
        idx = list(idx)
        rows = idx + [idx[0]] * (self.layout.micro_batch - len(idx))
        return self.values[rows]


def trunk_activations(policy: Policy, pairs: Pairs, layout: Layout, *, cache: bool = True,
                      progress: bool = True) -> TrunkActivations:
    """The frozen bottom's output for every pair, from the disk cache when present.

    The key is the SHA-256 of the bottom's weights (embedding and blocks ``0:split``), the packed rows,
    the layout and the library versions, so a changed input can never return a stale entry.
    """
    import torch

    from .. import cache as adcache

    if policy.split == 0:
        raise FinetuneError("trunk activations need top_blocks (a frozen bottom); this policy trains every block")
    base, decoder, _ = decoder_and_head(policy.module)
    bottom = block_view(decoder, 0, policy.split, final_norm=False)
    device = next(base.parameters()).device
    dtype = next(decoder.layers[0].parameters()).dtype
    key = adcache.digest("trunk-v1", policy.bottom_digest(), pairs.rows(), layout.__dict__, str(dtype),
                         torch.__version__, transformers_version(), type(decoder).__name__)
    path = adcache.user_cache_dir("finetune", "trunk") / f"{key}.safetensors"
    if cache and path.exists():
        from safetensors.torch import load_file

        values = load_file(str(path))["values"].to(device)
        return TrunkActivations(pairs.rows(), layout, values, key, policy.bottom_digest())
    pad_id = pad_token_id(base)
    n, m = len(pairs), layout.micro_batch
    out = torch.empty((n, layout.seq_len, decoder.config.hidden_size), dtype=dtype)
    chunks = [list(range(s, min(s + m, n))) for s in range(0, n, m)]
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            for idx in maybe_progress(chunks, progress, "frozen bottom"):
                ids, pos, mask, *_ = pack(pairs, idx, layout, pad_id, dtype, device, decoder.config)
                hid = bottom(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
                out[idx[0]:idx[0] + len(idx)] = hid[:len(idx)].cpu()
    finally:
        base.train(was_training)
    if cache:
        from safetensors.torch import save_file

        with adcache.atomic_path(path) as tmp:
            save_file({"values": out.contiguous()}, str(tmp))
    return TrunkActivations(pairs.rows(), layout, out.to(device), key, policy.bottom_digest())
