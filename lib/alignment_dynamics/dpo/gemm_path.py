"""The GEMM path of the fused linear log-probs (``impl="gemm"``): cuBLAS products, Triton row kernels.

Stage 1 of ``dpo-kernels.md`` §3.3. The large products go to cuBLAS through ``torch.mm``; Triton does
only the row-wise work, which is memory-bound and gains from fusion:

* **forward** (:func:`forward`): the logits are formed one *slab* at a time (a block of rows × a chunk
  of the vocabulary, fp32 output of a bf16 or fp32 GEMM: fp32 accumulation, no rounding of the logits
  to bf16), and a row kernel folds each slab into a running max and sum per row (the online
  log-sum-exp) and picks the target logits out of it. One slab buffer exists at a time.
* **backward** (:func:`backward`), with upstream g[N, K] and c_n = Σ_k g_nk:
  - when some c_n ≠ 0 (distinct contexts, multi-token responses): per vocabulary chunk the slab is
    recomputed, a row kernel writes G = Σ_k g_nk e_{y_nk} − c_n softmax(z_n) (the sparse and the dense
    term together, in the operands' dtype), and one GEMM gives that chunk's rows of
    dW = Gᵀ H, reduced over all rows inside cuBLAS with an fp32 output, then rounded once into the
    gradient. No V × d fp32 buffer is needed (only a chunk × d one), and no row of dW is ever
    accumulated in bf16. When the rows do not fit one slab, the chunk's fp32 buffer sums the row
    blocks in a fixed order;
  - when c ≡ 0 (shared contexts with a loss of Δ only): no GEMM at all. The sparse term
    dW[y] = Σ g·h is a per-token segment sum (entries sorted by token, each token row summed in fp32
    registers by one program and written once, straight into a gradient of W's dtype): deterministic,
    without atomics and without host synchronisation.

Everything is deterministic: fixed chunk orders, cuBLAS GEMMs, and no atomics. The path also runs on
the CPU under Triton's interpreter (``TRITON_INTERPRET=1``), where the GEMMs upcast bf16 operands to
fp32 (the same products: bf16 × bf16 is exact in fp32) because ``torch.mm(..., out_dtype=)`` exists
only on CUDA. (The interpreter truncates fp32 → bf16 where the GPU rounds to nearest even, so its
bf16 gradients are up to twice as far from float64 as the GPU's.)
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
SLAB_BYTES = 128 << 20  # the fp32 slab of logits (and, in the backward, G beside it): rows × vocabulary chunk
_MIN_CHUNK = 128  # narrowest vocabulary chunk chosen automatically (keeps the GEMMs efficient)
_BLOCK_V = 16 if _INTERPRET else 1024  # columns per step of a row kernel
_BLOCK_D = 16 if _INTERPRET else 256  # feature columns per program of the segment kernel
_BLOCK_E = 4 if _INTERPRET else 32  # entries of one token's run summed per step
_STATE = {"mm_out_dtype": None, "fallback": None}  # whether torch.mm(..., out_dtype=float32) works here


def mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with fp32 accumulation and an fp32 result, the operands in their own dtype.

    fp32 operands: a plain ``torch.mm`` (cuBLAS SGEMM; TF32 only if the user enabled it). bf16/fp16
    operands on CUDA: ``torch.mm(a, b, out_dtype=torch.float32)`` (a tensor-core GEMM writing fp32).
    Elsewhere, or if this torch lacks ``out_dtype``, the operands are upcast to fp32 first: the same
    products and sums, slower (recorded in :func:`fallback_reason`).
    """
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return torch.mm(a, b)
    if a.is_cuda and _STATE["mm_out_dtype"] is not False:
        try:
            out = torch.mm(a, b, out_dtype=torch.float32)
            _STATE["mm_out_dtype"] = True
            return out
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            _STATE["mm_out_dtype"] = False
            _STATE["fallback"] = f"torch.mm(out_dtype=float32) unavailable ({type(exc).__name__}: {str(exc)[:160]})"
    return torch.mm(a.float(), b.float())


def fallback_reason() -> str | None:
    """Why :func:`mm_f32` upcasts half-precision operands on CUDA (None: it does not, or was not called)."""
    return _STATE["fallback"]


def operands(H: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both operands in one dtype (the wider one when they differ), row-major."""
    if H.dtype != W.dtype:
        H, W = H.float(), W.float()
    return H.contiguous(), W.contiguous()


def chunks(N: int, V: int, bytes_per: int, chunk_rows: int | None = None, vocab_chunk: int | None = None,
           budget: int = SLAB_BYTES) -> tuple[int, int]:
    """(rows per block, vocabulary columns per chunk) so that one slab holds at most ``budget`` bytes.

    All rows in one block when they fit a slab at least ``_MIN_CHUNK`` columns wide; explicit
    ``chunk_rows`` / ``vocab_chunk`` win.
    """
    N, V = max(int(N), 1), max(int(V), 1)
    if vocab_chunk is None:
        vc = budget // (N * bytes_per)
        vc = max(_MIN_CHUNK, vc // _MIN_CHUNK * _MIN_CHUNK)
    else:
        vc = vocab_chunk
    vc = min(vc, V)
    rows = chunk_rows if chunk_rows is not None else max(1, budget // (vc * bytes_per))
    return min(rows, N), vc


# ---------------------------------------------------------------------------------------------------
# Row kernels
# ---------------------------------------------------------------------------------------------------

@triton.jit
def _lse_rows_kernel(Z, stride_z, M, S, T, ZT, ncols, v0, K: tl.constexpr, BLOCK_V: tl.constexpr,
                     FIRST: tl.constexpr, LAST: tl.constexpr):
    """One row of a slab: fold its logits into the running (M, S) and pick the targets that fall in it.
    The first chunk starts from (-inf, 0) and zero targets; the last writes M = max + log(sum), the LSE."""
    n = tl.program_id(0)
    row = Z + n.to(tl.int64) * stride_z
    if FIRST:  # start from the first step's columns (every chunk has at least one)
        cols = tl.arange(0, BLOCK_V)
        z = tl.load(row + cols, mask=cols < ncols, other=float("-inf"))
        m = tl.max(z, axis=0)
        s = tl.sum(tl.exp(z - m), axis=0)
        start = BLOCK_V
    else:
        m = tl.load(M + n)
        s = tl.load(S + n)
        start = 0
    for c0 in range(start, ncols, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        z = tl.load(row + cols, mask=cols < ncols, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))  # finite: every step has at least one real column
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    if LAST:
        tl.store(M + n, m + tl.log(s))
    else:
        tl.store(M + n, m)
        tl.store(S + n, s)
    for k in tl.static_range(K):
        y = tl.load(T + n * K + k) - v0
        inside = (y >= 0) & (y < ncols)
        zy = tl.load(row + y, mask=inside, other=0.0)
        if FIRST:
            old = 0.0
        else:
            old = tl.load(ZT + n * K + k)
        tl.store(ZT + n * K + k, tl.where(inside, zy, old))


@triton.jit
def _grad_rows_kernel(Z, stride_z, G, stride_g, LSE, C, T, GV, ncols, v0, K: tl.constexpr, BLOCK_V: tl.constexpr):
    """One row of a slab: G = Σ_k g_k e_{y_k} − c · exp(z − lse), written in G's dtype."""
    n = tl.program_id(0)
    zrow = Z + n.to(tl.int64) * stride_z
    grow = G + n.to(tl.int64) * stride_g
    lse = tl.load(LSE + n)
    c = tl.load(C + n)
    for c0 in range(0, ncols, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        msk = cols < ncols
        z = tl.load(zrow + cols, mask=msk, other=0.0)
        gt = -c * tl.exp(z - lse)
        for k in tl.static_range(K):
            y = tl.load(T + n * K + k) - v0
            gk = tl.load(GV + n * K + k)
            gt += tl.where(cols == y, gk, 0.0)
        tl.store(grow + cols, gt.to(G.dtype.element_ty), mask=msk)


@triton.jit
def _token_rows_kernel(H, stride_h, ORDER, GV, YS, END, DW, stride_dw, D, K: tl.constexpr, BLOCK_E: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    """Entry i of the token-sorted list (YS = tokens sorted, ORDER = their flat entry indices n·K + k,
    END[i] = one past the last entry with token YS[i]): if it starts its token's run, sum g·h over the
    run in fp32, BLOCK_E entries at a time (a long run, such as every pair's " Yes", is not summed one
    row after another), and write that token's row of dW once; other entries do nothing."""
    i = tl.program_id(0)
    pid_d = tl.program_id(1)
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = rd < D
    re = tl.arange(0, BLOCK_E)
    tok = tl.load(YS + i)
    prev = tl.load(YS + i - 1, mask=i > 0, other=-1)
    cnt = tl.where(prev != tok, tl.load(END + i) - i, 0)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for j0 in range(0, cnt, BLOCK_E):
        em = (j0 + re) < cnt
        e = tl.load(ORDER + i + j0 + re, mask=em, other=0)
        n = e // K
        gv = tl.load(GV + e, mask=em, other=0.0)
        h = tl.load(H + n[:, None] * stride_h + rd[None, :], mask=em[:, None] & dm[None, :], other=0.0).to(tl.float32)
        # an ignored entry (g = 0) adds nothing, even next to an inf feature
        acc += tl.sum(tl.where(gv[:, None] != 0.0, gv[:, None] * h, 0.0), axis=0)
    live = (tl.zeros((BLOCK_D,), tl.int64) + cnt) > 0  # a vector mask (the interpreter rejects vector & scalar)
    tl.store(DW + tok * stride_dw + rd, acc.to(DW.dtype.element_ty), mask=dm & live)


# ---------------------------------------------------------------------------------------------------
# Forward and backward
# ---------------------------------------------------------------------------------------------------

def forward(H: torch.Tensor, W: torch.Tensor, targets: torch.Tensor, *, chunk_rows: int | None = None,
            vocab_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lse[N], z[N, K])``: log Σ_v exp(h_n · W_v) and the target logits h_n · W[y_nk], in fp32.

    ``targets`` are valid token ids (replace ignored entries by 0 first; their logit is then that of
    token 0). Slabs of at most :data:`SLAB_BYTES` fp32 logits (or ``chunk_rows`` × ``vocab_chunk``).
    """
    Hs, Ws = operands(H, W)
    N, V = Hs.shape[0], Ws.shape[0]
    t = targets.reshape(N, -1).contiguous()
    K = t.shape[1]
    lse = torch.empty(N, dtype=torch.float32, device=Hs.device)  # the running max until the last chunk
    s = torch.empty(N, dtype=torch.float32, device=Hs.device)
    zt = torch.empty(N, K, dtype=torch.float32, device=Hs.device)
    if N == 0 or V == 0:
        return lse.fill_(float("-inf")), zt.zero_()
    rows, vc = chunks(N, V, 4, chunk_rows, vocab_chunk)
    for v0 in range(0, V, vc):
        Wt = Ws[v0:v0 + vc].t()
        for r0 in range(0, N, rows):
            Z = mm_f32(Hs[r0:r0 + rows], Wt)
            _lse_rows_kernel[(Z.shape[0],)](Z, Z.stride(0), lse[r0:], s[r0:], t[r0:], zt[r0:], Z.shape[1], v0,
                                            K=K, BLOCK_V=_BLOCK_V, FIRST=v0 == 0, LAST=v0 + vc >= V, num_warps=4)
    return lse, zt


def backward(H: torch.Tensor, W: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, g: torch.Tensor, *,
             want_w: bool = True, want_h: bool = False, chunk_rows: int | None = None,
             vocab_chunk: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dW, dH)`` of Σ_nk g_nk log π(y_nk | h_n): dW in W's dtype, dH in fp32 (None when not wanted).

    ``targets`` are valid token ids and ``g`` the fp32 upstream gradient with zeros at ignored entries.
    One host synchronisation decides between the sparse path (c ≡ 0) and the dense one.
    """
    N, d = H.shape
    V = W.shape[0]
    if not (want_w or want_h):
        return None, None
    t = targets.reshape(N, -1).contiguous()
    g = g.reshape(N, -1).to(torch.float32).contiguous()
    K = t.shape[1]
    c = g.sum(dim=1)
    dense = c != 0
    if not bool(dense.any()):  # the one synchronisation of the sparse path
        dW = _sparse_dw(H, W, t, g) if want_w else None
        dH = None
        if want_h:
            dH = (g[:, :, None] * W[t].to(torch.float32)).sum(dim=1)
        return dW, dH
    active = dense | (g != 0).any(dim=1)
    rows = None if bool(active.all()) else torch.nonzero(active).flatten()
    Hs, Ws = operands(H, W)
    Hr = Hs if rows is None else Hs[rows]
    lr, cr, tr, gr = (lse, c, t, g) if rows is None else (lse[rows], c[rows], t[rows], g[rows])
    lr, cr = lr.to(torch.float32).contiguous(), cr.contiguous()
    n = Hr.shape[0]
    gsize = Hs.element_size()
    bsz, vc = chunks(n, V, 4 + gsize, chunk_rows, vocab_chunk)
    dW = torch.empty(W.shape, dtype=W.dtype, device=W.device) if want_w else None
    dHr = torch.zeros(n, d, dtype=torch.float32, device=H.device) if want_h else None
    direct = want_w and bsz >= n and Hs.dtype == torch.float32 and W.dtype == torch.float32
    for v0 in range(0, V, vc):
        Wc = Ws[v0:v0 + vc]
        w = Wc.shape[0]
        acc = None
        for r0 in range(0, n, bsz):
            Hc = Hr[r0:r0 + bsz]
            Z = mm_f32(Hc, Wc.t())
            G = torch.empty(Z.shape, dtype=Hs.dtype, device=Hs.device)
            _grad_rows_kernel[(Z.shape[0],)](Z, Z.stride(0), G, G.stride(0), lr[r0:], cr[r0:], tr[r0:], gr[r0:], w, v0,
                                             K=K, BLOCK_V=_BLOCK_V, num_warps=4)
            del Z
            if want_w:
                if direct:  # fp32 throughout, all rows in one GEMM: write the gradient's rows directly
                    torch.mm(G.t(), Hc, out=dW[v0:v0 + w])
                elif acc is None:
                    acc = mm_f32(G.t(), Hc)
                elif acc.dtype == Hc.dtype:
                    acc.addmm_(G.t(), Hc)
                else:
                    acc.add_(mm_f32(G.t(), Hc))
            if want_h:
                if Hs.dtype == torch.float32:
                    dHr[r0:r0 + bsz].addmm_(G, Wc)
                else:
                    dHr[r0:r0 + bsz].add_(mm_f32(G, Wc))
        if acc is not None:
            dW[v0:v0 + w].copy_(acc)  # the one rounding to W's dtype
    dH = None
    if want_h:
        if rows is None:
            dH = dHr
        else:
            dH = torch.zeros(N, d, dtype=torch.float32, device=H.device)
            dH.index_copy_(0, rows, dHr)
    return dW, dH


def _sparse_dw(H: torch.Tensor, W: torch.Tensor, t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """dW[y] = Σ g·h over every entry, as per-token runs of the token-sorted entries (W's dtype)."""
    N, K = t.shape
    dW = torch.zeros(W.shape, dtype=W.dtype, device=W.device)
    E = N * K
    if E == 0:
        return dW
    Hc = H.contiguous()
    y = t.reshape(-1)
    ys, order = torch.sort(y, stable=True)
    end = torch.searchsorted(ys, ys, right=True)
    grid = (E, triton.cdiv(Hc.shape[1], _BLOCK_D))
    _token_rows_kernel[grid](Hc, Hc.stride(0), order, g.reshape(-1), ys, end, dW, dW.stride(0), Hc.shape[1],
                             K=K, BLOCK_E=_BLOCK_E, BLOCK_D=_BLOCK_D, num_warps=4)
    return dW
