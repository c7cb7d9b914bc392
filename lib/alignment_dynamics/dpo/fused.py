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

Three implementations, chosen by ``impl``:

* ``"torch"`` (any device; the CPU path): row chunks × vocabulary tiles in plain torch;
* ``"gemm"`` (:mod:`.gemm_path`; the GPU default): the large products in cuBLAS through ``torch.mm``
  (bf16 operands with an fp32 result, or fp32), one slab of logits at a time, and Triton row kernels
  for the online log-sum-exp, the softmax-times-c term and the sparse term; with c ≡ 0 the backward is
  a per-token segment sum written straight into the gradient (no V × d fp32 buffer);
* ``"triton"`` (:mod:`.triton_kernels`): fully fused Triton kernels (a forward LSE kernel that never
  writes logits, a softmax-times-c kernel and an fp32-accumulating dW kernel). Kept by name: on an H200
  its ``tl.dot`` GEMMs ran well below cuBLAS (fp32 without TF32 has no tensor cores).

``"auto"`` picks ``"gemm"`` for CUDA tensors when Triton is importable, else ``"torch"``.

:func:`fused_dpo_loss` puts the DPO loss on top, for shared contexts (one row per pair, K = 2) and for
distinct contexts or multi-token responses (per-sequence sums of token log-probs with masks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .reference import (IGNORE_INDEX, check_beta, check_loss_type, check_matrix, check_tokens, dpo_loss)

IMPLS = ("auto", "torch", "gemm", "triton")
_BUDGET_BYTES = 64 << 20  # a chunk's tile of logits on the CPU path
_ONE_PASS_BYTES = 32 << 20  # a chunk's logits in the one-pass DPO on the CPU (one buffer, L3-sized)
_ONE_PASS_BYTES_CUDA = 256 << 20  # ... and on a GPU (large GEMMs; the fp32 dW it writes is V x d anyway)


def triton_available() -> bool:
    """Whether Triton can run here: importable, and CUDA present or ``TRITON_INTERPRET=1`` set."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """The implementation ``impl`` stands for with these inputs (``"auto"`` -> ``"torch"``/``"gemm"``).

    ``"auto"``: ``"gemm"`` (cuBLAS GEMMs and Triton row kernels) for CUDA tensors that are not float64
    when Triton is importable, else ``"torch"``. ``"gemm"`` and ``"triton"`` need Triton and CUDA
    tensors (or ``TRITON_INTERPRET=1`` for CPU tensors) and take float32, bfloat16 or float16.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {list(IMPLS)}")
    on_cuda = all(t.is_cuda for t in tensors)
    if impl == "auto":
        ok = on_cuda and triton_available() and all(t.dtype != torch.float64 for t in tensors)
        return "gemm" if ok else "torch"
    if impl in ("gemm", "triton"):
        if not triton_available():
            raise RuntimeError(f"impl={impl!r} needs Triton with CUDA, or TRITON_INTERPRET=1 (the CPU interpreter)")
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(f"impl={impl!r} needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
        if any(t.dtype == torch.float64 for t in tensors):
            raise ValueError(f"impl={impl!r} takes float32, bfloat16 or float16 inputs; use impl='torch' for float64")
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
        if impl == "gemm":
            from . import gemm_path as gp

            lse, z = gp.forward(H, W, safe, chunk_rows=chunk_rows, vocab_chunk=vocab_tile)
        else:
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
        ctx.save_for_backward(H, W, safe, ignore, lse)
        ctx.opts = (impl, acc, chunk_rows, vocab_tile, need_dh)
        ctx.mark_non_differentiable(lse)
        return logp, lse

    @staticmethod
    def backward(ctx, g_logp, g_lse):
        H, W, targets, ignore, lse = ctx.saved_tensors  # targets: ignored entries replaced by token 0
        impl, acc, chunk_rows, vocab_tile, need_dh = ctx.opts
        want_w = ctx.needs_input_grad[1]
        want_h = ctx.needs_input_grad[0] and need_dh
        g = g_logp.to(acc).masked_fill(ignore, 0.0)
        if impl == "gemm":
            from . import gemm_path as gp

            dW, dH = gp.backward(H, W, targets, lse, g, want_w=want_w, want_h=want_h,
                                 chunk_rows=chunk_rows, vocab_chunk=vocab_tile)
            return (dH.to(H.dtype) if dH is not None else None, dW, None, None, None, None, None, None)
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
    tensors when available; see :func:`resolve_impl`). The result equals
    :func:`alignment_dynamics.dpo.logprobs_naive`.
    """
    check_matrix("H", H)
    check_matrix("W", W)
    if H.shape[1] != W.shape[1]:
        raise ValueError(f"H has d={H.shape[1]} but W has d={W.shape[1]} (W is [V, d])")
    if H.device != W.device:
        raise ValueError(f"H is on {H.device} but W is on {W.device}")
    squeeze = targets.dim() == 1
    t2 = targets.view(-1, 1) if squeeze else targets
    if t2.dim() != 2:
        raise ValueError(f"targets must be [N] or [N, K], got shape {tuple(targets.shape)}")
    t2 = check_tokens("targets", t2, H.shape[0], W.shape[0], allow_ignore=True).to(H.device)
    asked, impl = impl, resolve_impl(impl, H, W)
    acc = _acc_dtype(H, W, accum_dtype)
    if impl != "torch" and acc == torch.float64:  # the GPU paths accumulate in fp32
        if asked != "auto":
            raise ValueError(f"impl={impl!r} accumulates in float32; use impl='torch' for accum_dtype=torch.float64")
        impl = "torch"
    cr, tv = _tiles(H.shape[0], W.shape[0], torch.finfo(acc).bits // 8, chunk_rows, vocab_tile)
    if impl == "gemm":  # its own slab sizes (gemm_path.chunks) unless given
        cr, tv = (cr if chunk_rows is not None else None), (tv if vocab_tile is not None else None)
    need = H.requires_grad if need_dh is None else bool(need_dh)
    logp, lse = _SelectiveLogprobs.apply(H, W, t2, impl, acc, cr, tv, need)
    return (logp.view(-1) if squeeze else logp), lse


# ---------------------------------------------------------------------------------------------------
# DPO on top
# ---------------------------------------------------------------------------------------------------

@dataclass
class FusedDPOOutput:
    """What :func:`fused_dpo_loss` returns: the loss and TRL's per-pair quantities (rewards detached)."""

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
    """
    rows, t, (P, L) = _sequence_rows(H, tokens, mask)
    logp, _ = selective_logprobs(rows, W, t, **kw)
    return logp.view(P, L).sum(dim=1)


def _sequence_rows(H, tokens, mask):
    """(rows [P·L, d], tokens [P·L] with -100 where masked, (P, L)) of one side's sequences."""
    if H.dim() == 2:
        if tokens.dim() != 1:
            raise ValueError(f"with H [P, d], tokens must be [P]; got shape {tuple(tokens.shape)}")
        return H, tokens, (H.shape[0], 1)
    if H.dim() != 3 or tokens.shape != H.shape[:2]:
        raise ValueError(f"H must be [P, L, d] with tokens [P, L]; got H {tuple(H.shape)}, tokens {tuple(tokens.shape)}")
    t = tokens
    if mask is not None:
        if mask.shape != tokens.shape:
            raise ValueError(f"mask must have the tokens' shape {tuple(tokens.shape)}, got {tuple(mask.shape)}")
        t = tokens.masked_fill(~mask.bool(), IGNORE_INDEX)
    P, L, d = H.shape
    return H.reshape(P * L, d), t.reshape(P * L), (P, L)


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
        Wa = W.to(acc)
        dW = torch.empty(W.shape, dtype=acc, device=W.device) if W.requires_grad else None
        written = False
        pc = torch.zeros(P, dtype=acc, device=W.device)
        pr = torch.zeros(P, dtype=acc, device=W.device)
        ref_c, ref_r = ref_c.to(acc), ref_r.to(acc)
        bounds = _pair_chunks(pair, P, chunk_rows)
        scale = 1.0 / P if mean else 1.0
        for a, b, p0, p1, width in bounds:
            Z = H[a:b].to(acc) @ Wa.T  # the chunk's logits: the only chunk-sized buffer
            tt = t[a:b]
            zt = Z.gather(1, tt[:, None]).squeeze(1)
            m = Z.amax(dim=1)
            Z.sub_(m[:, None]).exp_()  # in place: exp(z - max)
            ssum = Z.sum(dim=1)
            logp = zt - (m + torch.log(ssum))
            pp, sg = pair[a:b], sign[a:b]
            sums = _side_sums(logp, pp - p0, sg, p1 - p0, width)
            pc[p0:p1], pr[p0:p1] = sums[:, 0], sums[:, 1]
            if dW is None:
                continue
            delta = (pc[p0:p1] - ref_c[p0:p1]) - (pr[p0:p1] - ref_r[p0:p1])
            dl = loss_derivative(delta, beta, loss_type, ls) * scale
            g = sg * dl[pp - p0]
            Z.mul_((-g / ssum)[:, None])                  # -g p  (softmax times the row's c)
            Z.scatter_add_(1, tt[:, None], g[:, None])     # + g e_y
            if written:
                dW.addmm_(Z.T, H[a:b].to(acc))
            else:  # the first chunk writes dW (no zero fill and re-read of a V x d buffer)
                torch.mm(Z.T, H[a:b].to(acc), out=dW)
                written = True
        if dW is not None and not written:
            dW.zero_()
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


def _pair_chunks(pair: torch.Tensor, P: int, chunk_rows: int) -> list[tuple[int, int, int, int, int]]:
    """Row ranges [a, b) holding whole pairs [p0, p1), each with about ``chunk_rows`` rows (at least one
    pair), and the most rows any of those pairs has."""
    counts = torch.bincount(pair, minlength=P).tolist()
    out, a, p0, rows, width = [], 0, 0, 0, 1
    for p, c in enumerate(counts):
        if rows and rows + c > chunk_rows:
            out.append((a, a + rows, p0, p, width))
            a, p0, rows, width = a + rows, p, 0, 1
        rows += c
        width = max(width, c)
    out.append((a, a + rows, p0, P, width))
    return out


def _side_sums(vals: torch.Tensor, pair: torch.Tensor, sign: torch.Tensor, n_pairs: int, width: int) -> torch.Tensor:
    """``[n_pairs, 2]`` sums of ``vals`` per (pair, chosen/rejected side), deterministic on every device.

    Rows are sorted by pair, chosen rows first within a pair, so each (pair, side) is one contiguous run;
    each run is laid out in a row of a zero-padded [2·n_pairs, width] table (every cell written once) and
    summed along it. No atomics (``index_add_`` on CUDA would make the sums order-dependent).
    """
    key = 2 * pair + (sign < 0).long()
    pos = torch.arange(key.numel(), device=key.device) - torch.searchsorted(key, key)
    table = torch.zeros(2 * n_pairs, width, dtype=vals.dtype, device=vals.device)
    table[key, pos] = vals
    return table.sum(dim=1).view(n_pairs, 2)


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
      ``strategy="recompute"`` scores both sides in one :func:`selective_logprobs` call (three GEMMs,
      O(N) memory, any upstream use of the log-probs); ``"one_pass"`` computes the loss and dW together
      over chunks of whole pairs (two GEMMs, chunk-sized logits, an fp32 dW buffer; only ``loss``
      carries gradient, W's only). ``"auto"`` (:func:`choose_strategy`): one pass for a scalar loss with
      a frozen ``H`` (and no ``vocab_tile``/``need_dh``) on the torch path, and on the GEMM path when W
      is already in the accumulation dtype (fp32: the buffer is the gradient itself); else recompute.

    ``ref_*_logps`` are the reference model's sequence log-probs (precompute them with the same
    function on W_0). Keyword arguments go to :func:`selective_logprobs` (``impl``, ``chunk_rows``,
    ...). Returns a :class:`FusedDPOOutput`.
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
        if choose_strategy(H, W, H_rejected, strategy=strategy, reduction=reduction, **kw) == "one_pass":
            return _one_pass(H, W, chosen, rejected, ref_chosen_logps, ref_rejected_logps, beta, H_rejected,
                             chosen_mask, rejected_mask, loss_type, label_smoothing, reduction, kw)
        # recompute: both sides in one call (one LSE pass, one dW, no second V x d gradient to add)
        rc_, tc_, (P, Lc) = _sequence_rows(H, chosen, chosen_mask)
        rr_, tr_, (Pr, Lr) = _sequence_rows(H_rejected, rejected, rejected_mask)
        if Pr != P:
            raise ValueError(f"chosen ({P}) and rejected ({Pr}) must describe the same pairs")
        if rc_.shape[1] != rr_.shape[1]:
            raise ValueError(f"chosen features have d={rc_.shape[1]} but rejected features have d={rr_.shape[1]}")
        if rc_.dtype != rr_.dtype:
            raise ValueError(f"H ({rc_.dtype}) and H_rejected ({rr_.dtype}) must have one dtype")
        logp, _ = selective_logprobs(torch.cat([rc_, rr_]), W, torch.cat([tc_, tr_]), **kw)
        pc = logp[:P * Lc].view(P, Lc).sum(dim=1)
        pr = logp[P * Lc:].view(P, Lr).sum(dim=1)
    ref_c, ref_r = ref_chosen_logps.to(pc.dtype), ref_rejected_logps.to(pc.dtype)
    loss, per, cr, rr = dpo_loss(pc, pr, ref_c, ref_r, beta, loss_type, label_smoothing, reduction)
    return FusedDPOOutput(loss, per, pc, pr, cr, rr)


def choose_strategy(H: torch.Tensor, W: torch.Tensor, H_rejected: torch.Tensor, *, strategy: str = "auto",
                    reduction: str = "mean", **kw) -> str:
    """What ``fused_dpo_loss(..., H_rejected=..., strategy=strategy)`` runs: ``"one_pass"`` or ``"recompute"``.

    ``"auto"`` takes one pass (two GEMMs instead of three) for a scalar loss with frozen features and no
    ``vocab_tile``/``need_dh``, on the torch path, and on the GEMM path when W is in the accumulation
    dtype (fp32): there the one pass's fp32 dW buffer is the gradient itself, while with bf16 W it
    would be an extra V × d fp32 buffer, so bf16 recomputes (its dW is reduced over all rows inside
    cuBLAS, chunk by chunk, and needs no such buffer).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {list(STRATEGIES)}")
    if strategy != "auto":
        return strategy
    impl = resolve_impl(kw.get("impl", "auto"), H, W)
    eligible = (reduction != "none" and not H.requires_grad and not H_rejected.requires_grad
                and set(kw) <= {"impl", "chunk_rows", "accum_dtype"})
    if not eligible:
        return "recompute"
    if impl == "torch":
        return "one_pass"
    if impl == "gemm" and _acc_dtype(H, W, kw.get("accum_dtype", torch.float32)) == W.dtype:
        return "one_pass"
    return "recompute"


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
        check_tokens(name, tt, tt.shape[0], V)
    pair = torch.cat([pc_, pr_])
    order = torch.argsort(pair, stable=True)
    Hall = torch.cat([Hc, Hr])[order]
    t_all, pair, sign = torch.cat([tc, tr])[order], pair[order], torch.cat([sc, sr])[order]
    budget = _ONE_PASS_BYTES_CUDA if W.is_cuda else _ONE_PASS_BYTES
    chunk_rows = kw.get("chunk_rows") or max(1, budget // (V * (torch.finfo(acc).bits // 8)))
    loss, per, pc, pr = _OnePassDPO.apply(W, Hall, t_all, pair, sign, ref_c, ref_r, beta, loss_type,
                                          label_smoothing, reduction == "mean", acc, chunk_rows)
    rc, rr = ref_c.to(acc), ref_r.to(acc)
    return FusedDPOOutput(loss, per, pc, pr, beta * (pc - rc), beta * (pr - rr))
