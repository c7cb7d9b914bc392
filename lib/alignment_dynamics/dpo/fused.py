"""Fused linear log-probs and DPO: selected-token log-probs of ``H @ W.T`` without the N x V logits.

For multi-token responses (HH-RLHF) every response token is scored, and the N x V logits of all of
them do not fit in memory (``dpo-kernels.md`` §2). :func:`selective_logprobs` is an autograd op that
returns log π(y_nk | h_n) = h_n · W[y_nk] − LSE_n:

* **forward**: an online (running max, running sum) log-sum-exp over vocabulary tiles of row chunks,
  and the target logits as indexed dot products, all accumulated in fp32 (float64 for float64 inputs);
  it saves only (H, W, targets, lse): O(N) extra memory;
* **backward** with upstream g[N, K]: dW = Σ_nk g_nk e_{y_nk} h_nᵀ − Σ_n c_n p_n h_nᵀ with
  c_n = Σ_k g_nk and p_n = softmax(W h_n). The first (sparse) term is a deterministic scatter of N·K
  rows; the second (dense) term is recomputed tile by tile from (H, W, lse) and accumulated in fp32.
  **Rows with c_n = 0 are skipped exactly**: with shared contexts and a loss of Δ only, every row has
  c_n = 0 and the op reduces by itself to the closed form of the two-row trainer. Nothing is filtered:
  every softmax entry of every row with c_n ≠ 0 enters the gradient. dH is produced only when asked.

Two implementations, chosen by ``impl``: ``"torch"`` (any device; the CPU path) and ``"triton"``
(:mod:`.triton_kernels`: a fused forward LSE kernel that never writes logits, and a backward of a
softmax-times-c kernel, an fp32-accumulating dW kernel and a deterministic segment-sum kernel for the
sparse term). ``"auto"`` picks Triton for CUDA tensors when Triton is importable.

:func:`fused_dpo_loss` puts the DPO loss on top, for shared contexts (one row per pair, K = 2) and for
distinct contexts or multi-token responses (per-sequence sums of token log-probs with masks).

Used in: `book/kernels.md`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .reference import (IGNORE_INDEX, _check_matrix, _check_tokens, check_beta, check_loss_type, dpo_loss)

IMPLS = ("auto", "torch", "triton")
_BUDGET_BYTES = 64 << 20  # a chunk's tile of logits on the CPU path
_ONE_PASS_BYTES = 32 << 20  # a chunk's logits in the one-pass DPO (one buffer, L3-sized)


def triton_available() -> bool:
    """Whether Triton can run here: importable, and CUDA present or ``TRITON_INTERPRET=1`` set.

    Used in: `book/kernels.md`.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """The implementation ``impl`` stands for with these inputs (``"auto"`` -> ``"torch"``/``"triton"``).

    Used in: `book/kernels.md`.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {list(IMPLS)}")
    on_cuda = all(t.is_cuda for t in tensors)
    if impl == "auto":
        ok = on_cuda and triton_available() and all(t.dtype != torch.float64 for t in tensors)
        return "triton" if ok else "torch"
    if impl == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' needs Triton with CUDA, or TRITON_INTERPRET=1 (the CPU interpreter)")
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
        if any(t.dtype == torch.float64 for t in tensors):
            raise ValueError("the Triton path takes float32, bfloat16 or float16 inputs; use impl='torch' for float64")
    return impl


def _acc_dtype(H: torch.Tensor, W: torch.Tensor, accum_dtype: torch.dtype) -> torch.dtype:
    if accum_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"accum_dtype must be torch.float32 or torch.float64, got {accum_dtype}")
    return torch.float64 if torch.float64 in (H.dtype, W.dtype) else accum_dtype


def _tiles(N: int, V: int, itemsize: int, chunk_rows: int | None, vocab_tile: int | None) -> tuple[int, int]:
    tv = min(V, 16384) if vocab_tile is None else vocab_tile
    if isinstance(tv, int) and tv >= 1:
        cr = max(1, _BUDGET_BYTES // (tv * itemsize)) if chunk_rows is None else chunk_rows
    else:
        cr = chunk_rows or 1
    for name, v in (("chunk_rows", cr), ("vocab_tile", tv)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return min(cr, max(N, 1)), min(tv, V)


# ---------------------------------------------------------------------------------------------------
# The torch path
# ---------------------------------------------------------------------------------------------------

def _lse_torch(H, W, acc, chunk_rows, vocab_tile):
    N, V = H.shape[0], W.shape[0]
    lse = torch.empty(N, dtype=acc, device=H.device)
    for a in range(0, N, chunk_rows):
        Hc = H[a:a + chunk_rows].to(acc)
        m = torch.full((Hc.shape[0],), float("-inf"), dtype=acc, device=H.device)
        s = torch.zeros(Hc.shape[0], dtype=acc, device=H.device)
        for v0 in range(0, V, vocab_tile):
            Z = Hc @ W[v0:v0 + vocab_tile].to(acc).T
            m_new = torch.maximum(m, Z.amax(dim=1))
            s = s * torch.exp(m - m_new) + torch.exp(Z - m_new[:, None]).sum(dim=1)
            m = m_new
        lse[a:a + chunk_rows] = m + torch.log(s)
    return lse


def _dense_torch(H, W, lse, c, rows, acc, chunk_rows, vocab_tile, dW, dH):
    """dW -= Σ_n c_n p_n h_nᵀ (and dH_n -= c_n p_nᵀ W) over the given rows, tile by tile."""
    V = W.shape[0]
    for a in range(0, rows.numel(), chunk_rows):
        idx = rows[a:a + chunk_rows]
        Hc, lc, cc = H[idx].to(acc), lse[idx], c[idx]
        dHc = torch.zeros_like(Hc) if dH is not None else None
        for v0 in range(0, V, vocab_tile):
            Wt = W[v0:v0 + vocab_tile].to(acc)
            G = torch.exp(Hc @ Wt.T - lc[:, None]) * cc[:, None]
            if dW is not None:
                dW[v0:v0 + vocab_tile].addmm_(G.T, Hc, alpha=-1.0)
            if dHc is not None:
                dHc.addmm_(G, Wt, alpha=-1.0)
        if dH is not None:
            dH.index_add_(0, idx, dHc)


def _sparse_torch(H, n_idx, y_idx, g, dW):
    """dW[y] += g · h_n for each (n, y, g) (index_add_: deterministic on the CPU)."""
    dW.index_add_(0, y_idx, g[:, None] * H[n_idx].to(dW.dtype))


# ---------------------------------------------------------------------------------------------------
# The autograd op
# ---------------------------------------------------------------------------------------------------

class _SelectiveLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, H, W, targets, impl, acc, chunk_rows, vocab_tile, need_dh):
        ignore = targets == IGNORE_INDEX
        safe = targets.masked_fill(ignore, 0)
        if impl == "triton":
            from . import triton_kernels as tk

            lse = tk.lse_forward(H, W)
        else:
            lse = _lse_torch(H, W, acc, chunk_rows, vocab_tile)
        z = torch.empty(targets.shape, dtype=acc, device=H.device)
        for a in range(0, H.shape[0], chunk_rows):
            b = a + chunk_rows
            z[a:b] = torch.einsum("nd,nkd->nk", H[a:b].to(acc), W[safe[a:b]].to(acc))
        logp = (z - lse[:, None]).masked_fill(ignore, 0.0)
        ctx.save_for_backward(H, W, targets, lse)
        ctx.opts = (impl, acc, chunk_rows, vocab_tile, need_dh)
        ctx.mark_non_differentiable(lse)
        return logp, lse

    @staticmethod
    def backward(ctx, g_logp, g_lse):
        H, W, targets, lse = ctx.saved_tensors
        impl, acc, chunk_rows, vocab_tile, need_dh = ctx.opts
        want_w = ctx.needs_input_grad[1]
        want_h = ctx.needs_input_grad[0] and need_dh
        ignore = targets == IGNORE_INDEX
        g = g_logp.to(acc).masked_fill(ignore, 0.0)
        c = g.sum(dim=1)
        dW = torch.zeros(W.shape, dtype=acc, device=W.device) if want_w else None
        dH = torch.zeros(H.shape, dtype=acc, device=H.device) if want_h else None
        keep = (~ignore) & (g != 0)
        n_idx = torch.nonzero(keep)[:, 0]
        y_idx = targets[keep]
        g_flat = g[keep]
        rows = torch.nonzero(c != 0).flatten()  # the c == 0 shortcut: these rows have no dense term
        if impl == "triton":
            from . import triton_kernels as tk

            if dW is not None:
                tk.sparse_dw(H, n_idx, y_idx, g_flat, dW)
            if rows.numel():
                tk.dense_backward(H, W, lse, c, rows, chunk_rows, dW, dH)
        else:
            if dW is not None:
                _sparse_torch(H, n_idx, y_idx, g_flat, dW)
            if rows.numel():
                _dense_torch(H, W, lse, c, rows, acc, chunk_rows, vocab_tile, dW, dH)
        if dH is not None:
            dH.index_add_(0, n_idx, g_flat[:, None] * W[y_idx].to(acc))
        return (dH.to(H.dtype) if dH is not None else None, dW.to(W.dtype) if dW is not None else None,
                None, None, None, None, None, None)


def selective_logprobs(H: torch.Tensor, W: torch.Tensor, targets: torch.Tensor, *, chunk_rows: int | None = None,
                       vocab_tile: int | None = None, accum_dtype: torch.dtype = torch.float32,
                       need_dh: bool | None = None, impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Selected-token log-probs ``(logp[N, K], lse[N])`` of ``H @ W.T`` without materialising N x V.

    ``H`` is ``[N, d]``, ``W`` is ``[V, d]``, ``targets`` is ``[N, K]`` (or ``[N]``) token ids, with
    ``-100`` for ignored entries (log-prob 0, no gradient). Accumulation is in ``accum_dtype`` (fp32;
    float64 when an input is float64); outputs are in that dtype and gradients come back in the
    inputs' dtypes. ``chunk_rows`` and ``vocab_tile`` set the tiles (defaults: 64 MB of logits per tile
    on the torch path). ``need_dh`` (default: whether ``H`` requires grad) asks for dH. ``lse`` is
    returned without gradient. ``impl``: ``"torch"``, ``"triton"`` or ``"auto"`` (Triton for CUDA
    tensors when available). The result equals :func:`alignment_dynamics.dpo.logprobs_naive`.

    Used in: `book/kernels.md`.
    """
    _check_matrix("H", H)
    _check_matrix("W", W)
    if H.shape[1] != W.shape[1]:
        raise ValueError(f"H has d={H.shape[1]} but W has d={W.shape[1]} (W is [V, d])")
    if H.device != W.device:
        raise ValueError(f"H is on {H.device} but W is on {W.device}")
    squeeze = targets.dim() == 1
    t2 = targets.view(-1, 1) if squeeze else targets
    if t2.dim() != 2:
        raise ValueError(f"targets must be [N] or [N, K], got shape {tuple(targets.shape)}")
    t2 = _check_tokens("targets", t2, H.shape[0], W.shape[0], allow_ignore=True).to(H.device)
    impl = resolve_impl(impl, H, W)
    acc = _acc_dtype(H, W, accum_dtype)
    cr, tv = _tiles(H.shape[0], W.shape[0], torch.finfo(acc).bits // 8, chunk_rows, vocab_tile)
    need = H.requires_grad if need_dh is None else bool(need_dh)
    logp, lse = _SelectiveLogprobs.apply(H, W, t2, impl, acc, cr, tv, need)
    return (logp.view(-1) if squeeze else logp), lse


# ---------------------------------------------------------------------------------------------------
# DPO on top
# ---------------------------------------------------------------------------------------------------

@dataclass
class FusedDPOOutput:
    """What :func:`fused_dpo_loss` returns: the loss and TRL's per-pair quantities (rewards detached).

    Used in: `book/kernels.md`.
    """

    loss: torch.Tensor
    per_pair: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def sequence_logps(H: torch.Tensor, W: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                   **kw) -> torch.Tensor:
    """Per-sequence sums of token log-probs: ``H`` ``[P, L, d]`` (or ``[P, d]`` with ``tokens`` ``[P]``),
    ``tokens`` ``[P, L]``, ``mask`` ``[P, L]`` (True where a token counts; default: tokens != -100).
    Keyword arguments go to :func:`selective_logprobs`.

    Used in: `book/kernels.md`.
    """
    if H.dim() == 2:
        if tokens.dim() != 1:
            raise ValueError(f"with H [P, d], tokens must be [P]; got shape {tuple(tokens.shape)}")
        logp, _ = selective_logprobs(H, W, tokens, **kw)
        return logp
    if H.dim() != 3 or tokens.shape != H.shape[:2]:
        raise ValueError(f"H must be [P, L, d] with tokens [P, L]; got H {tuple(H.shape)}, tokens {tuple(tokens.shape)}")
    t = tokens
    if mask is not None:
        if mask.shape != tokens.shape:
            raise ValueError(f"mask must have the tokens' shape {tuple(tokens.shape)}, got {tuple(mask.shape)}")
        t = tokens.masked_fill(~mask.bool(), IGNORE_INDEX)
    P, L, d = H.shape
    logp, _ = selective_logprobs(H.reshape(P * L, d), W, t.reshape(P * L), **kw)
    return logp.view(P, L).sum(dim=1)


STRATEGIES = ("auto", "recompute", "one_pass")


class _OnePassDPO(torch.autograd.Function):
    """DPO loss and dW in one pass over chunks of whole pairs (2 GEMMs instead of 3).

    Rows are sorted by pair; each chunk holds complete pairs, so the pair's loss, dℓ/dΔ and the
    row gradients c_n (e_y − p_n) are all known while the chunk's logits are in memory. dW is
    accumulated in the accumulation dtype; the backward only scales it by the upstream gradient.
    """

    @staticmethod
    def forward(ctx, W, H, t, pair, sign, ref_c, ref_r, beta, loss_type, ls, mean, acc, chunk_rows):
        from .reference import loss_derivative, loss_from_delta

        P = ref_c.numel()
        V = W.shape[0]
        Wa = W.to(acc)
        dW = torch.zeros(W.shape, dtype=acc, device=W.device) if W.requires_grad else None
        pc = torch.zeros(P, dtype=acc, device=W.device)
        pr = torch.zeros(P, dtype=acc, device=W.device)
        ref_c, ref_r = ref_c.to(acc), ref_r.to(acc)
        bounds = _pair_chunks(pair, P, chunk_rows)
        scale = 1.0 / P if mean else 1.0
        for a, b, p0, p1 in bounds:
            Z = H[a:b].to(acc) @ Wa.T  # the chunk's logits: the only chunk-sized buffer
            tt = t[a:b]
            zt = Z.gather(1, tt[:, None]).squeeze(1)
            m = Z.amax(dim=1)
            Z.sub_(m[:, None]).exp_()  # in place: exp(z - max)
            ssum = Z.sum(dim=1)
            logp = zt - (m + torch.log(ssum))
            pp, sg = pair[a:b], sign[a:b]
            pc.index_add_(0, pp, torch.where(sg > 0, logp, 0.0))
            pr.index_add_(0, pp, torch.where(sg < 0, logp, 0.0))
            if dW is None:
                continue
            delta = (pc[p0:p1] - ref_c[p0:p1]) - (pr[p0:p1] - ref_r[p0:p1])
            dl = loss_derivative(delta, beta, loss_type, ls) * scale
            g = sg * dl[pp - p0]
            Z.mul_((-g / ssum)[:, None])                  # -g p  (softmax times the row's c)
            Z.scatter_add_(1, tt[:, None], g[:, None])     # + g e_y
            dW.addmm_(Z.T, H[a:b].to(acc))
        per = loss_from_delta((pc - ref_c) - (pr - ref_r), beta, loss_type, ls)
        loss = per.mean() if mean else per.sum()
        ctx.save_for_backward(dW if dW is not None else torch.empty(0))
        ctx.w_dtype = W.dtype
        ctx.mark_non_differentiable(per, pc, pr)
        return loss, per, pc, pr

    @staticmethod
    def backward(ctx, g_loss, g_per, g_pc, g_pr):
        (dW,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * 13
        if bool(g_loss == 1) and dW.dtype == ctx.w_dtype:
            return (dW,) + (None,) * 12  # the usual loss.backward(): hand over the buffer, no copy
        return ((dW * g_loss).to(ctx.w_dtype),) + (None,) * 12


def _pair_chunks(pair: torch.Tensor, P: int, chunk_rows: int) -> list[tuple[int, int, int, int]]:
    """Row ranges [a, b) holding whole pairs [p0, p1), each with about ``chunk_rows`` rows (at least one pair)."""
    counts = torch.bincount(pair, minlength=P).tolist()
    out, a, p0, rows = [], 0, 0, 0
    for p, c in enumerate(counts):
        if rows and rows + c > chunk_rows:
            out.append((a, a + rows, p0, p))
            a, p0, rows = a + rows, p, 0
        rows += c
    out.append((a, a + rows, p0, P))
    return out


def _flatten_pairs(H, t, mask, sign):
    """Rows of one side as (H [M, d], t [M], pair [M], sign [M]), dropping ignored tokens."""
    if H.dim() == 2:
        H, t = H[:, None, :], t[:, None]
        mask = None if mask is None else mask[:, None]
    if H.dim() != 3 or t.shape != H.shape[:2]:
        raise ValueError(f"H must be [P, L, d] with tokens [P, L]; got H {tuple(H.shape)}, tokens {tuple(t.shape)}")
    if mask is not None:
        if mask.shape != t.shape:
            raise ValueError(f"mask must have the tokens' shape {tuple(t.shape)}, got {tuple(mask.shape)}")
        t = t.masked_fill(~mask.bool(), IGNORE_INDEX)
    P, L, d = H.shape
    keep = (t != IGNORE_INDEX).reshape(-1)
    pair = torch.arange(P, device=H.device).repeat_interleave(L)[keep]
    return H.reshape(P * L, d)[keep], t.reshape(-1)[keep], pair, torch.full_like(pair, sign)


def fused_dpo_loss(H: torch.Tensor, W: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
                   ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *, beta: float,
                   H_rejected: torch.Tensor | None = None, chosen_mask: torch.Tensor | None = None,
                   rejected_mask: torch.Tensor | None = None, loss_type: str = "sigmoid",
                   label_smoothing: float = 0.0, reduction: str = "mean", strategy: str = "auto",
                   **kw) -> FusedDPOOutput:
    """The DPO loss of a linear head on frozen features, without the N x V logits.

    * Shared contexts (``H_rejected=None``): ``H`` is ``[P, d]`` and ``chosen``/``rejected`` are ``[P]``
      single tokens scored from the same row (K = 2 per row) through :func:`selective_logprobs`:
      c_n = 0 on every row, so the backward is the sparse two-row update and costs O(P·d).
    * Distinct contexts or multi-token responses: ``H`` (the chosen responses' features) and
      ``H_rejected`` are ``[P, d]`` with ``[P]`` tokens, or ``[P, L, d]`` with ``[P, L]`` tokens and
      optional masks (or ``-100`` entries); sequence log-probs are sums over the response tokens.
      ``strategy="recompute"`` goes through :func:`selective_logprobs` (three GEMMs, O(N) memory, any
      upstream use of the log-probs); ``"one_pass"`` computes the loss and dW together over chunks of
      whole pairs (two GEMMs, chunk-sized logits; only ``loss`` carries gradient, W's only).
      ``"auto"``: one pass on the torch path for a scalar loss with a frozen ``H`` (and no
      ``vocab_tile``/``need_dh``), else recompute.

    ``ref_*_logps`` are the reference model's sequence log-probs (precompute them with the same
    function on W_0). Keyword arguments go to :func:`selective_logprobs` (``impl``, ``chunk_rows``,
    ...). Returns a :class:`FusedDPOOutput`.

    Used in: `book/kernels.md`.
    """
    beta = check_beta(beta)
    check_loss_type(loss_type, label_smoothing)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {list(STRATEGIES)}")
    if H_rejected is None:
        if H.dim() != 2 or chosen.dim() != 1 or rejected.dim() != 1:
            raise ValueError("shared contexts take H [P, d] with chosen and rejected [P]; for multi-token "
                             "responses pass H_rejected (the rejected responses' features)")
        logp, _ = selective_logprobs(H, W, torch.stack([chosen, rejected], dim=1), **kw)
        pc, pr = logp[:, 0], logp[:, 1]
    else:
        impl = resolve_impl(kw.get("impl", "auto"), H, W)
        one_pass = strategy == "one_pass" or (
            strategy == "auto" and impl == "torch" and reduction != "none"
            and not H.requires_grad and not H_rejected.requires_grad
            and set(kw) <= {"impl", "chunk_rows", "accum_dtype"})
        if one_pass:
            return _one_pass(H, W, chosen, rejected, ref_chosen_logps, ref_rejected_logps, beta, H_rejected,
                             chosen_mask, rejected_mask, loss_type, label_smoothing, reduction, kw)
        pc = sequence_logps(H, W, chosen, chosen_mask, **kw)
        pr = sequence_logps(H_rejected, W, rejected, rejected_mask, **kw)
    ref_c, ref_r = ref_chosen_logps.to(pc.dtype), ref_rejected_logps.to(pc.dtype)
    loss, per, cr, rr = dpo_loss(pc, pr, ref_c, ref_r, beta, loss_type, label_smoothing, reduction)
    return FusedDPOOutput(loss, per, pc, pr, cr, rr)


def _one_pass(H, W, chosen, rejected, ref_c, ref_r, beta, H_rejected, chosen_mask, rejected_mask, loss_type,
              label_smoothing, reduction, kw) -> FusedDPOOutput:
    from .reference import REDUCTIONS

    if reduction not in ("mean", "sum"):
        raise ValueError(f"strategy='one_pass' needs reduction 'mean' or 'sum', got {reduction!r} "
                         f"(valid reductions: {list(REDUCTIONS)})")
    if H.requires_grad or H_rejected.requires_grad:
        raise ValueError("strategy='one_pass' gives dW only; use strategy='recompute' when H requires grad")
    if H.device != W.device or H_rejected.device != W.device:
        raise ValueError("H, H_rejected and W must be on one device")
    bad = set(kw) - {"impl", "chunk_rows", "accum_dtype"}
    if bad:
        raise ValueError(f"strategy='one_pass' does not take {sorted(bad)}")
    acc = _acc_dtype(H, W, kw.get("accum_dtype", torch.float32))
    V = W.shape[0]
    Hc, tc, pc_, sc = _flatten_pairs(H, chosen, chosen_mask, 1)
    Hr, tr, pr_, sr = _flatten_pairs(H_rejected, rejected, rejected_mask, -1)
    if Hc.shape[1] != W.shape[1] or Hr.shape[1] != W.shape[1]:
        raise ValueError(f"features have d={Hc.shape[1]}/{Hr.shape[1]} but W has d={W.shape[1]}")
    P = ref_c.numel()
    if (H.shape[0], H_rejected.shape[0]) != (P, P) or ref_r.numel() != P:
        raise ValueError(f"chosen ({H.shape[0]}), rejected ({H_rejected.shape[0]}) and the reference log-probs "
                         f"({ref_c.numel()}, {ref_r.numel()}) must describe the same pairs")
    for name, tt in (("chosen", tc), ("rejected", tr)):
        _check_tokens(name, tt, tt.shape[0], V)
    pair = torch.cat([pc_, pr_])
    order = torch.argsort(pair, stable=True)
    Hall = torch.cat([Hc, Hr])[order]
    t_all, pair, sign = torch.cat([tc, tr])[order], pair[order], torch.cat([sc, sr])[order]
    chunk_rows = kw.get("chunk_rows") or max(1, _ONE_PASS_BYTES // (V * (torch.finfo(acc).bits // 8)))
    loss, per, pc, pr = _OnePassDPO.apply(W, Hall, t_all, pair, sign, ref_c, ref_r, beta, loss_type,
                                          label_smoothing, reduction == "mean", acc, chunk_rows)
    rc, rr = ref_c.to(acc), ref_r.to(acc)
    return FusedDPOOutput(loss, per, pc, pr, beta * (pc - rc), beta * (pr - rr))
