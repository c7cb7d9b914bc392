"""Log-probabilities of both completions, by one code path for policy and reference, and the hidden
states behind them (the prompt embeddings h(x), the features that score each completion token).
"""

from __future__ import annotations

from typing import Sequence

from .batches import Layout, Pairs, pack
from .checks import FinetuneError, maybe_progress
from .policy import block_view, decoder_and_head, pad_token_id, Policy
from .trunk import TrunkActivations


def _final_hidden(policy: Policy, pairs: Pairs, idx: Sequence[int], layout: Layout,
                  trunk: TrunkActivations | None):
    """The final hidden states (after the final norm) of a packed micro-batch, and its packing tensors."""
    base, decoder, head = decoder_and_head(policy.module)
    device, dtype = head.weight.device, head.weight.dtype
    ids, pos, mask, src, tgt, wsum = pack(pairs, idx, layout, pad_token_id(base), dtype, device, decoder.config)
    if policy.cached:
        if trunk is None or not trunk.matches(policy, pairs, layout):
            raise FinetuneError("this policy reads the frozen bottom from the cache: pass the TrunkActivations "
                                "of these pairs and layout (trunk_activations(policy, pairs, layout))")
        top = block_view(decoder, policy.split, len(decoder.layers), final_norm=True)
        hid = top(inputs_embeds=trunk.batch(idx), attention_mask=mask, position_ids=pos,
                  use_cache=False).last_hidden_state
    else:
        hid = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    return hid, src, tgt, wsum


def completion_logps(policy: Policy, pairs: Pairs, idx: Sequence[int], layout: Layout,
                     trunk: TrunkActivations | None = None):
    """Summed log-probabilities of completions ``a`` and ``b`` of the pairs ``idx`` (one micro-batch).

    Returns a tensor [len(idx), 2]; gradients flow to the policy's trainable weights. Only the scored
    positions go through the output head, and a model's final logit soft-capping is applied.
    """
    import torch

    base, _, head = decoder_and_head(policy.module)
    hid, src, tgt, wsum = _final_hidden(policy, pairs, idx, layout, trunk)
    rows = hid.reshape(-1, hid.shape[-1])[src]
    logits = head(rows)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-softmax in fp32 at least, as TRL does
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    tok = torch.log_softmax(logits, dim=-1).gather(1, tgt[:, None])[:, 0]
    per = (tok[:, None] * wsum.to(tok.dtype)).reshape(layout.micro_batch, layout.rows_per_pair, 2).sum(1)
    return per[:len(idx)]


def prompt_embeddings(policy: Policy, pairs: Pairs, layout: Layout, trunk: TrunkActivations | None = None,
                      *, progress: bool = False):
    """h(x): the final hidden state (after the final norm) at each prompt's last token, [n, d] float64.

    This is the paper's embedding (`paper.md` §2.3), computed by the policy's own forward pass, so it
    shows how whole-model training moves the representation.
    """
    import torch

    def last_prompt_token(idx):
        hid, *_ = _final_hidden(policy, pairs, idx, layout, trunk)
        last = torch.tensor([len(pairs.prompt[i]) - 1 for i in idx], device=hid.device)
        return hid[torch.arange(len(idx), device=hid.device), last]

    return _evaluate_chunks(policy, len(pairs), layout, last_prompt_token, progress, "embeddings")


def completion_features(policy: Policy, pairs: Pairs, layout: Layout, trunk: TrunkActivations | None = None,
                        *, progress: bool = False):
    """The final hidden states that predict each completion token, with the tokens: ``(h_a, t_a, h_b, t_b)``.

    ``h_a`` is ``[n, L_a, d]`` (float32) and ``t_a`` ``[n, L_a]`` (``-100`` on padding), likewise for
    completion ``b``: exactly the rows :func:`completion_logps` sends through the head, so a head
    trained on them (last-layer DPO on multi-token responses) starts from the same log-probs.
    """
    import torch

    R = layout.rows_per_pair
    rows, which, tokens = [], [], []

    def scored(idx):
        hid, src, tgt, wsum = _final_hidden(policy, pairs, idx, layout, trunk)
        m = len(idx)
        rows.append(hid.reshape(-1, hid.shape[-1])[src].reshape(layout.micro_batch, R, -1)[:m].float().cpu())
        side = torch.where(wsum[:, 0] > 0, 0, torch.where(wsum[:, 1] > 0, 1, -1))
        which.append(side.reshape(layout.micro_batch, R)[:m].cpu())
        tokens.append(tgt.reshape(layout.micro_batch, R)[:m].cpu())
        return torch.zeros(m)

    _evaluate_chunks(policy, len(pairs), layout, scored, progress, "completion features")
    H, S, T = torch.cat(rows), torch.cat(which), torch.cat(tokens)
    out = []
    for side, lens in ((0, [len(a) for a in pairs.a]), (1, [len(b) for b in pairs.b])):
        Ls = max(lens)
        h = torch.zeros((len(pairs), Ls, H.shape[-1]), dtype=torch.float32)
        t = torch.full((len(pairs), Ls), -100, dtype=torch.long)
        for i in range(len(pairs)):
            sel = S[i] == side
            h[i, :lens[i]] = H[i][sel]
            t[i, :lens[i]] = T[i][sel]
        out += [h, t]
    return tuple(out)


def _evaluate_chunks(policy: Policy, n: int, layout: Layout, fn, progress: bool, desc: str):
    """``fn(idx)`` over consecutive micro-batches, in eval mode and without gradients; float64 on the CPU."""
    import torch

    module = policy.module
    was = module.training
    module.eval()
    out = []
    try:
        with torch.no_grad():
            chunks = [list(range(s, min(s + layout.micro_batch, n))) for s in range(0, n, layout.micro_batch)]
            for idx in maybe_progress(chunks, progress, desc):
                out.append(fn(idx).double().cpu())
    finally:
        module.train(was)
    return torch.cat(out)


def chosen_rejected(logps_ab, pairs: Pairs, idx: Sequence[int]):
    """The log-probs ``[n, 2]`` of completions ``a`` and ``b`` of pairs ``idx`` as (chosen, rejected)."""
    import torch

    first = torch.tensor([pairs.chosen_first[i] for i in idx], device=logps_ab.device)
    chosen = torch.where(first, logps_ab[:, 0], logps_ab[:, 1])
    rejected = torch.where(first, logps_ab[:, 1], logps_ab[:, 0])
    return chosen, rejected


def all_logps(policy: Policy, pairs: Pairs, layout: Layout, trunk: TrunkActivations | None = None,
              *, progress: bool = False):
    """:func:`completion_logps` for every pair, in eval mode and without gradients ([n, 2], float64 on CPU).
    """
    return _evaluate_chunks(policy, len(pairs), layout, lambda idx: completion_logps(policy, pairs, idx, layout, trunk),
                            progress, "log-probs")
