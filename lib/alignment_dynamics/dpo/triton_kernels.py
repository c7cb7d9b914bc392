"""Triton kernels of the fused linear log-probs (the GPU path of :mod:`.fused`).

* :func:`lse_forward` -- a fused log-sum-exp kernel: each program owns a block of rows and a slice of
  the vocabulary, computes logit tiles with ``tl.dot`` (fp32 accumulation) and keeps a running max and
  sum; logits are never written. Slices are combined exactly afterwards (split-V, so that small batches
  still fill the GPU).
* :func:`dense_backward` -- per row chunk: a kernel recomputing logit tiles and writing
  G = −c·softmax (in the operands' dtype), then a kernel accumulating dW += Gᵀ H_c into an fp32 buffer
  (each dW tile owned by one program: deterministic, no atomics).
* :func:`sparse_dw` -- the sparse term dW[y] += g·h as a segment sum over token-sorted entries
  (deterministic, no atomics).

All kernels also run under Triton's CPU interpreter (``TRITON_INTERPRET=1``), which the CI tests use.
The interpreter has no bf16 matrix product, so there the tiles are upcast to fp32 before ``tl.dot``
(``UPCAST``); bf16 products themselves are exercised by the GPU tests.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _precision() -> str:
    """Always full fp32 products ("ieee"), whatever ``allow_tf32`` says.

    Measured on an H200 (2026-11-26, N=512, V=32000, d=256): with Triton's "tf32" the log-probs were
    6.6e-4 off float64 in relative norm, 7.7 times the error of cuBLAS's own TF32 products (8.6e-5). This
    path is no longer the GPU default (the GEMM path is), so it keeps fp32 accuracy instead.
    """
    return "ieee"


def _operands(H: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both operands in one dtype (the wider one), row-major."""
    if H.dtype != W.dtype:
        H, W = H.float(), W.float()
    return H.contiguous(), W.contiguous()


def _blocks(dtype: torch.dtype, kind: str) -> dict:
    if _INTERPRET:
        return dict(BLOCK_N=16, BLOCK_V=16, BLOCK_D=16, num_warps=1)
    wide = dtype == torch.float32
    if kind == "dw":
        return dict(BLOCK_V=128, BLOCK_D=128, BLOCK_N=32 if wide else 64, num_warps=8, num_stages=3)
    return dict(BLOCK_N=128, BLOCK_V=128, BLOCK_D=32 if wide else 64, num_warps=8, num_stages=3)


@triton.jit
def _lse_kernel(H, W, M_OUT, S_OUT, N, V, D, v_per_split, stride_h, stride_w,
                BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                UPCAST: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    m = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_N,), tl.float32)
    v_lo = pid_s * v_per_split
    v_hi = tl.minimum(v_lo + v_per_split, V)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        rv = v0 + tl.arange(0, BLOCK_V)
        acc = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dm = (d0 + rd) < D
            h = tl.load(H + rn[:, None] * stride_h + (d0 + rd)[None, :], mask=(rn[:, None] < N) & dm[None, :], other=0.0)
            w = tl.load(W + rv[:, None] * stride_w + (d0 + rd)[None, :], mask=(rv[:, None] < v_hi) & dm[None, :], other=0.0)
            if UPCAST:
                h, w = h.to(tl.float32), w.to(tl.float32)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
        acc = tl.where(rv[None, :] < v_hi, acc, float("-inf"))
        m_new = tl.maximum(m, tl.max(acc, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(acc - m_new[:, None]), axis=1)
        m = m_new
    out = pid_s * N + rn
    tl.store(M_OUT + out, m, mask=rn < N)
    tl.store(S_OUT + out, s, mask=rn < N)


def lse_forward(H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """log Σ_v exp(h_n · W_v) for every row of ``H`` (fp32 ``[N]``), without writing any logit."""
    H, W = _operands(H, W)
    N, D = H.shape
    V = W.shape[0]
    cfg = _blocks(H.dtype, "lse")
    bn, bv = cfg["BLOCK_N"], cfg["BLOCK_V"]
    n_blocks = triton.cdiv(N, bn)
    if _INTERPRET:
        splits = min(triton.cdiv(V, bv), 2)
    else:
        sms = torch.cuda.get_device_properties(H.device).multi_processor_count
        splits = max(1, min(triton.cdiv(V, bv), triton.cdiv(2 * sms, n_blocks)))
    v_per_split = triton.cdiv(triton.cdiv(V, splits), bv) * bv
    splits = triton.cdiv(V, v_per_split)
    m = torch.empty(splits, N, dtype=torch.float32, device=H.device)
    s = torch.empty(splits, N, dtype=torch.float32, device=H.device)
    _lse_kernel[(n_blocks, splits)](H, W, m, s, N, V, D, v_per_split, H.stride(0), W.stride(0),
                                    PRECISION=_precision(), UPCAST=_INTERPRET, **cfg)
    mx = m.max(dim=0).values
    return mx + torch.log((s * torch.exp(m - mx)).sum(dim=0))


@triton.jit
def _softmax_c_kernel(H, W, LSE, C, G, N, V, D, stride_h, stride_w, stride_g,
                      BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                UPCAST: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rv = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    rd = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dm = (d0 + rd) < D
        h = tl.load(H + rn[:, None] * stride_h + (d0 + rd)[None, :], mask=(rn[:, None] < N) & dm[None, :], other=0.0)
        w = tl.load(W + rv[:, None] * stride_w + (d0 + rd)[None, :], mask=(rv[:, None] < V) & dm[None, :], other=0.0)
        if UPCAST:
            h, w = h.to(tl.float32), w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
    lse = tl.load(LSE + rn, mask=rn < N, other=0.0)
    c = tl.load(C + rn, mask=rn < N, other=0.0)
    g = -c[:, None] * tl.exp(acc - lse[:, None])
    tl.store(G + rn[:, None] * stride_g + rv[None, :], g.to(G.dtype.element_ty),
             mask=(rn[:, None] < N) & (rv[None, :] < V))


@triton.jit
def _dw_kernel(G, H, DW, N, V, D, stride_g, stride_h, stride_dw,
               BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
               UPCAST: tl.constexpr):
    pid_v = tl.program_id(0)
    pid_d = tl.program_id(1)
    rv = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_V, BLOCK_D), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        g = tl.load(G + rn[:, None] * stride_g + rv[None, :], mask=(rn[:, None] < N) & (rv[None, :] < V), other=0.0)
        h = tl.load(H + rn[:, None] * stride_h + rd[None, :], mask=(rn[:, None] < N) & (rd[None, :] < D), other=0.0)
        if UPCAST:
            g, h = g.to(tl.float32), h.to(tl.float32)
        acc = tl.dot(tl.trans(g), h, acc, input_precision=PRECISION)
    ptr = DW + rv[:, None] * stride_dw + rd[None, :]
    msk = (rv[:, None] < V) & (rd[None, :] < D)
    tl.store(ptr, tl.load(ptr, mask=msk, other=0.0) + acc, mask=msk)


def dense_backward(H: torch.Tensor, W: torch.Tensor, lse: torch.Tensor, c: torch.Tensor, rows: torch.Tensor,
                   chunk_rows: int, dW: torch.Tensor | None, dH: torch.Tensor | None) -> None:
    """dW -= Σ_n c_n p_n h_nᵀ (fp32 buffer ``dW``) and dH_n -= c_n p_nᵀ W, over ``rows``, chunk by chunk."""
    Hs, Ws = _operands(H, W)
    V, D = Ws.shape
    cfg = _blocks(Hs.dtype, "lse")
    cfg_dw = _blocks(Hs.dtype, "dw")
    prec = _precision()
    itemsize = Hs.element_size()
    if not _INTERPRET:  # keep the G chunk under ~256 MB
        chunk_rows = max(cfg["BLOCK_N"], min(rows.numel(), (256 << 20) // (V * itemsize)))
    for a in range(0, rows.numel(), chunk_rows):
        idx = rows[a:a + chunk_rows]
        Hc = Hs[idx].contiguous()
        n = Hc.shape[0]
        G = torch.empty(n, V, dtype=Hs.dtype, device=Hs.device)
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(V, cfg["BLOCK_V"]))
        _softmax_c_kernel[grid](Hc, Ws, lse[idx].contiguous(), c[idx].to(torch.float32).contiguous(), G, n, V, D,
                                Hc.stride(0), Ws.stride(0), G.stride(0), PRECISION=prec, UPCAST=_INTERPRET, **cfg)
        if dW is not None:
            grid = (triton.cdiv(V, cfg_dw["BLOCK_V"]), triton.cdiv(D, cfg_dw["BLOCK_D"]))
            _dw_kernel[grid](G, Hc, dW, n, V, D, G.stride(0), Hc.stride(0), dW.stride(0), PRECISION=prec, UPCAST=_INTERPRET, **cfg_dw)
        if dH is not None:
            dH.index_add_(0, idx, (G.to(dH.dtype) @ Ws.to(dH.dtype)))


@triton.jit
def _segment_kernel(H, N_IDX, GV, STARTS, COUNTS, TOKENS, DW, D, stride_h, stride_dw, BLOCK_D: tl.constexpr):
    seg = tl.program_id(0)
    pid_d = tl.program_id(1)
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = rd < D
    start = tl.load(STARTS + seg)
    count = tl.load(COUNTS + seg)
    tok = tl.load(TOKENS + seg)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for j in range(0, count):
        n = tl.load(N_IDX + start + j)
        gv = tl.load(GV + start + j)
        h = tl.load(H + n * stride_h + rd, mask=dm, other=0.0).to(tl.float32)
        acc += gv * h
    ptr = DW + tok * stride_dw + rd
    tl.store(ptr, tl.load(ptr, mask=dm, other=0.0) + acc, mask=dm)


def sparse_dw(H: torch.Tensor, n_idx: torch.Tensor, y_idx: torch.Tensor, g: torch.Tensor, dW: torch.Tensor) -> None:
    """dW[y] += g·h_n for every entry, as deterministic per-token segment sums (fp32 ``dW``)."""
    if y_idx.numel() == 0:
        return
    Hc = H.contiguous()
    order = torch.argsort(y_idx, stable=True)
    ys = y_idx[order]
    tokens, counts = torch.unique_consecutive(ys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    D = Hc.shape[1]
    block = 16 if _INTERPRET else 128
    grid = (tokens.numel(), triton.cdiv(D, block))
    _segment_kernel[grid](Hc, n_idx[order].contiguous(), g[order].to(torch.float32).contiguous(), starts.contiguous(),
                          counts.contiguous(), tokens.contiguous(), dW, D, Hc.stride(0), dW.stride(0), BLOCK_D=block)
