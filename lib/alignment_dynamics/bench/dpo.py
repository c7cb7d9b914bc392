"""Benchmark of the DPO kernels against the field: ``python -m alignment_dynamics.bench dpo``.

* **P2** (CPU): the exact two-row trainer (:func:`alignment_dynamics.dpo.train_two_row`) against the
  full-vocabulary reference trainer (:func:`alignment_dynamics.dpo.train_reference`, the official
  code's approach) on the same synthetic persona-shaped data: identical trajectories (checked in
  float64), the time per run-step of each, and a sweep of 135 behaviours x 100 steps (batch 128, with
  per-step test metrics) in one call.
* **P3** (CPU): fused linear DPO (:func:`alignment_dynamics.dpo.fused.fused_dpo_loss`) against naive
  eager PyTorch and ``torch.compile`` on HH-RLHF-shaped inputs (multi-token responses, V = 49,152,
  d = 576): peak memory above the resident tensors and the time of one step (loss and backward).
* **GPU** (``--gpu``): d = 4096, V = 32,000, B in {64 ... 4096}, fp32 (TF32 off) and bf16, shared and
  distinct contexts: our default (``impl="auto"``: the GEMM path, and the one-pass strategy for fp32
  distinct contexts), our paths by name (GEMM recompute, fused Triton, torch), naive eager,
  ``torch.compile`` and Liger-Kernel's ``LigerFusedLinearDPOLoss`` when importable; errors against
  float64 first, then times (median, 20 %, 80 %) and peak memory, with predicted floors, and a
  breakdown of our default step into phases (forward LSE, dW, the rest) at a few sizes. Writes one JSON
  with the device, versions and date.

``--json PATH`` writes the JSON object (``-``: as the last line of standard output). Every timing is
machine-dependent; the CPU numbers are never GPU numbers.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import dpo
from ..dpo import fused

SMOLLM2 = dict(d=576, V=49152)
PAPER_HEAD = dict(d=4096, V=32000)
GPU_BATCHES = (64, 256, 1024, 4096)
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
# Nominal H100 numbers of dpo-kernels.md §5 (assumptions, for the predicted floors only)
H100_BF16_FLOPS, H100_FP32_FLOPS, H100_BYTES_PER_S = 800e12, 60e12, 3e12


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------------

def _status_bytes(key: str) -> int:
    m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else -1


def cpu_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak resident memory that ``fn()`` adds above what is resident before it (Linux), or None.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``), so only ``fn``'s peak counts.
    Large tensors are mmapped by the allocator and returned on free, so earlier runs do not hide it.
    """
    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_bytes("VmRSS")
        fn()
        return max(0, _status_bytes("VmHWM") - before)
    except OSError:
        return None


def _times(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    q = lambda p: ts[min(len(ts) - 1, int(p * len(ts)))]  # noqa: E731
    return {"median_s": statistics.median(ts), "p20_s": q(0.2), "p80_s": q(0.8), "min_s": ts[0], "repeats": repeats}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for key, dist in (("triton", "triton"), ("numba", "numba"), ("liger_kernel", "liger-kernel"), ("numpy", "numpy")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "absent"
    return out


def _check_size(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"unknown benchmark size {size!r}; valid sizes: {list(SIZES)}")
    return SIZES[size]


def _meta(size: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "size": size,
            "cpu": cpu, "torch_threads": torch.get_num_threads(), "versions": _versions()}


# ---------------------------------------------------------------------------------------------------
# Synthetic data shaped like the persona data and like HH-RLHF
# ---------------------------------------------------------------------------------------------------

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
    """Multi-token preference pairs: chosen/rejected features ``[P, L, d]``, tokens ``[P, L]`` with padding."""
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


# ---------------------------------------------------------------------------------------------------
# P2: exact trainer vs reference trainer
# ---------------------------------------------------------------------------------------------------

def run_p2(size: str = "full", *, seed: int = 0) -> dict[str, Any]:
    """P2 of the issue: the two-row sweep and its ratio to the full-vocabulary reference trainer.

    ``size`` is ``"full"``, ``"quick"`` or ``"tiny"`` (:data:`SIZES`).
    """
    cfg = _check_size(size)
    R, n_train, n_test, steps, B = cfg["behaviours"], 900, 100, 100, 128
    d, V = SMOLLM2["d"], cfg["vocab"]
    a, b = (9230, 2838) if V > 9230 else (17, 3)  # SmolLM2's " Yes" and " No"
    data = persona_like(R, n_train + n_test, d, seed=seed)
    H, yes = data["H"], data["yes"]
    chosen, rejected = torch.where(yes, a, b), torch.where(yes, b, a)
    s = dpo.signs(chosen, rejected, a, b)
    g = torch.Generator().manual_seed(seed + 1)
    W0 = 0.02 * torch.randn(V, d, generator=g)
    hp = dict(beta=0.01, lr=0.1, steps=steps, batch_size=B)
    per = n_train + n_test

    # Reference quantities: one N x d x V pass, made once; the exact trainer's cost does not depend on V,
    # so the sweep uses a 1,024-token head for them (behaviour 0 below uses the full head).
    Wm = W0[:1024].clone()
    am, bm = 17, 3
    cm, rm = torch.where(yes, am, bm), torch.where(yes, bm, am)
    sm = dpo.signs(cm, rm, am, bm)
    ref_m = dpo.precompute_reference(H, Wm, cm, rm)
    Hs, ss, refs, evs = [], [], [], []
    for r in range(R):
        tr, te = slice(r * per, r * per + n_train), slice(r * per + n_train, (r + 1) * per)
        Hs.append(H[tr])
        ss.append(sm[tr])
        refs.append(ref_m[tr])
        evs.append((H[te], sm[te], ref_m[te]))

    def sweep():
        return dpo.train_two_row(Hs, ss, reference=refs, generator=[1234] * R, eval_sets={"test": evs},
                                 keep_v=False, **hp)

    sweep()  # compile / load the numba kernel
    sw = _times(sweep, cfg["sweep_repeats"])
    out = {"p2_sweep_s": sw["median_s"], "p2_sweep_times": sw,
           "p2_sweep_shape": {"behaviours": R, "steps": steps, "batch": B, "n_train": n_train, "n_test": n_test, "d": d}}

    # the reference trainer (fp32, full vocabulary: the official code's approach) on behaviour 0
    ref_steps = cfg["ref_steps"]
    tr, te = slice(0, n_train), slice(n_train, per)
    kw = dict(hp, steps=ref_steps, generator=1234)
    t0 = time.perf_counter()
    ref_all = dpo.precompute_reference(H[:per], W0, chosen[:per], rejected[:per])
    t_pre = time.perf_counter() - t0  # what the reference trainer also spends once, on its reference log-probs
    t0 = time.perf_counter()
    ref_run = dpo.train_reference(H[tr], W0, chosen[tr], rejected[tr], eval_sets={"test": (H[te], chosen[te], rejected[te])},
                                  dtype=torch.float32, **kw)
    t_ref = time.perf_counter() - t0
    ev0 = {"test": (H[te], s[te], ref_all[te])}
    dpo.train_two_row(H[tr], s[tr], reference=ref_all[tr], eval_sets=ev0, **kw)
    t0 = time.perf_counter()
    exact = dpo.train_two_row(H[tr], s[tr], reference=ref_all[tr], eval_sets=ev0, **kw)
    t_same = time.perf_counter() - t0
    ref_per_step = max(t_ref - t_pre, 0.0) / ref_steps
    out.update({
        "p2_ref_steps": ref_steps, "p2_ref_vocab": V, "p2_ref_s": t_ref, "p2_ref_precompute_s": t_pre,
        "p2_ref_s_per_run_step": ref_per_step,
        "p2_two_row_s_per_run_step": sw["median_s"] / (R * steps),
        "p2_same_workload_ratio": t_ref / t_same,
        "p2_max_abs_dloss_f32ref": (ref_run.train["loss"].double() - exact.train["loss"]).abs().max().item(),
    })
    out["p2_ratio"] = out["p2_ref_s_per_run_step"] / out["p2_two_row_s_per_run_step"]

    # identical trajectories: float64 reference vs two-row at a smaller vocabulary
    Vc = cfg["f64_vocab"]
    W0c = W0[:Vc].double().clone()
    ac, bc = 17, 3
    cc, rc = torch.where(yes[tr], ac, bc), torch.where(yes[tr], bc, ac)
    ct, rt = torch.where(yes[te], ac, bc), torch.where(yes[te], bc, ac)
    f64_steps = cfg["f64_steps"]
    kw64 = dict(beta=0.01, lr=50.0, steps=f64_steps, batch_size=B, generator=1234)
    r64 = dpo.train_reference(H[tr].double(), W0c, cc, rc, eval_sets={"test": (H[te].double(), ct, rt)}, **kw64)
    refc = dpo.precompute_reference(H[: per].double(), W0c, torch.cat([cc, ct]), torch.cat([rc, rt]))
    e64 = dpo.train_two_row(H[tr].double(), dpo.signs(cc, rc, ac, bc), reference=refc[tr],
                            eval_sets={"test": (H[te].double(), dpo.signs(ct, rt, ac, bc), refc[te])}, **kw64)
    out.update({
        "p2_f64_steps": f64_steps, "p2_f64_vocab": Vc,
        "p2_max_abs_dloss_f64": (r64.train["loss"] - e64.train["loss"]).abs().max().item(),
        "p2_max_abs_dmetric_f64": max((r64.eval["test"][k] - e64.eval["test"][k]).abs().max().item() for k in r64.eval["test"]),
        "p2_loss_drop_f64": (r64.train["loss"][0, 0] - r64.train["loss"][0, -1]).item(),
    })
    return out


# ---------------------------------------------------------------------------------------------------
# P3: fused linear DPO vs naive eager vs torch.compile (CPU)
# ---------------------------------------------------------------------------------------------------

def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to fp32 (as TRL does); fp32 and float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def naive_dpo_loss(Hw, Hl, W, tw, tl, mw, ml, ref_c, ref_r, beta: float = 0.1) -> torch.Tensor:
    """The eager baseline: logits of all response tokens ([chosen; rejected]) -> log-softmax -> gather -> DPO."""
    P, L, d = Hw.shape
    Hc = torch.cat([Hw, Hl]).reshape(2 * P * L, d)
    t = torch.cat([tw, tl]).reshape(-1)
    m = torch.cat([mw, ml]).reshape(-1)
    logits = _upcast(Hc @ W.T)
    logp = torch.log_softmax(logits, dim=-1).gather(1, t[:, None]).squeeze(1)
    seq = torch.where(m, logp, 0.0).view(2 * P, L).sum(1)
    loss, *_ = dpo.dpo_loss(seq[:P], seq[P:], ref_c, ref_r, beta)
    return loss


def _p3_providers(compile_ok: bool):
    provs = {
        "naive": lambda x, W: naive_dpo_loss(x["Hw"], x["Hl"], W, x["tw"], x["tl"], x["mw"], x["ml"], x["rc"], x["rr"]),
        "fused_one_pass": lambda x, W: fused.fused_dpo_loss(
            x["Hw"], W, x["tw"], x["tl"], x["rc"], x["rr"], beta=0.1, H_rejected=x["Hl"], chosen_mask=x["mw"],
            rejected_mask=x["ml"], impl="torch", strategy="one_pass").loss,
        "fused_recompute": lambda x, W: fused.fused_dpo_loss(
            x["Hw"], W, x["tw"], x["tl"], x["rc"], x["rr"], beta=0.1, H_rejected=x["Hl"], chosen_mask=x["mw"],
            rejected_mask=x["ml"], impl="torch", strategy="recompute").loss,
    }
    if compile_ok:
        compiled = torch.compile(naive_dpo_loss, dynamic=False)
        provs["torch_compile"] = lambda x, W: compiled(x["Hw"], x["Hl"], W, x["tw"], x["tl"], x["mw"], x["ml"], x["rc"], x["rr"])
    return provs


def _p3_inputs(pairs, length, d, V, dtype=torch.float32, seed=0):
    x = hh_like(pairs, length, d, V, seed=seed, dtype=dtype)
    with torch.no_grad():
        x["rc"] = fused.sequence_logps(x["Hw"], x["W0"], x["tw"], x["mw"]).float()
        x["rr"] = fused.sequence_logps(x["Hl"], x["W0"], x["tl"], x["ml"]).float()
    return x


def run_p3(size: str = "full", *, compile_provider: bool | None = None) -> dict[str, Any]:
    """P3 of the issue on the CPU: errors against float64, then peak memory and step time per provider.

    ``size`` is ``"full"``, ``"quick"`` or ``"tiny"``; ``torch.compile`` runs in ``"full"`` only unless
    ``compile_provider`` says otherwise (its first call compiles for tens of seconds).
    """
    cfg = _check_size(size)
    d, V = SMOLLM2["d"], cfg["vocab"]
    pairs, length = cfg["p3_pairs"], cfg["p3_length"]
    compile_ok = cfg["compile"] if compile_provider is None else compile_provider
    provs = _p3_providers(compile_ok)
    out: dict[str, Any] = {"p3_shape": {"pairs": pairs, "tokens_per_response": length, "rows": 2 * pairs * length,
                                        "d": d, "V": V}, "p3": {}}

    # errors against float64 on small inputs (the same code paths)
    xs = _p3_inputs(4, 16, 64, 2000, seed=1)
    x64 = {k: (v.double() if v.is_floating_point() else v) for k, v in xs.items()}
    W64 = (x64["W0"] + 0.01).requires_grad_(True)
    naive_dpo_loss(x64["Hw"], x64["Hl"], W64, x64["tw"], x64["tl"], x64["mw"], x64["ml"], x64["rc"], x64["rr"]).backward()
    for name, fn in provs.items():
        if name == "torch_compile":
            continue  # compiled on the benchmark's shapes only (a second compile would double the cost)
        W = (xs["W0"] + 0.01).requires_grad_(True)
        loss = fn(xs, W)
        loss.backward()
        out["p3"].setdefault(name, {})["error_vs_f64"] = {
            "loss_rel": abs(loss.item() - naive_dpo_loss(x64["Hw"], x64["Hl"], W64.detach(), x64["tw"], x64["tl"],
                                                          x64["mw"], x64["ml"], x64["rc"], x64["rr"]).item()) /
            abs(loss.item()),
            "grad_rel": ((W.grad.double() - W64.grad).norm() / W64.grad.norm()).item()}

    x = _p3_inputs(pairs, length, d, V)
    grad_mb = V * d * 4 / 2**20  # the gradient every provider must return
    repeats = cfg["p3_repeats"]
    for name, fn in provs.items():
        W = x["W0"].clone().requires_grad_(True)

        def step():
            fn(x, W).backward()
            W.grad = None  # freed after the step: the next step starts from the same state

        t0 = time.perf_counter()
        step()  # first call (compiles for torch.compile)
        first = time.perf_counter() - t0
        peak = cpu_peak_bytes(step)
        rec = out["p3"].setdefault(name, {})
        rec.update({"first_call_s": first, "peak_mb": None if peak is None else peak / 2**20,
                    "workspace_mb": None if peak is None else peak / 2**20 - grad_mb, **_times(step, repeats)})
        _log(f"P3 {name}: {rec['median_s']:.3f} s, peak {rec['peak_mb']} MB")
        gc.collect()
    out["p3_grad_mb"] = grad_mb
    nv, fp = out["p3"]["naive"], out["p3"]["fused_one_pass"]
    out["p3_time_ratio"] = fp["median_s"] / nv["median_s"]
    out["p3_memory_ratio"] = (fp["peak_mb"] / nv["peak_mb"]) if (fp["peak_mb"] and nv["peak_mb"]) else None
    out["p3_workspace_ratio"] = (fp["workspace_mb"] / nv["workspace_mb"]) if (fp["peak_mb"] and nv["peak_mb"]) else None
    out["p3_recompute_time_ratio"] = out["p3"]["fused_recompute"]["median_s"] / nv["median_s"]
    if compile_ok:
        out["p3_compile_time_ratio"] = out["p3"]["torch_compile"]["median_s"] / nv["median_s"]
    return out


def run_cpu(size: str = "full") -> dict[str, Any]:
    """P2 and P3 on the CPU (``size``: ``"full"``, ``"quick"`` or ``"tiny"``), with the machine's description."""
    _check_size(size)
    out = {"meta": _meta(size)}
    _log(f"P2 ({size}): exact two-row trainer vs the full-vocabulary reference trainer ...")
    out.update(run_p2(size))
    _log(f"P3 ({size}): fused linear DPO vs naive eager (and torch.compile) ...")
    out.update(run_p3(size))
    return out


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

def _gpu_inputs(B: int, dtype, scenario: str, seed: int = 0, head=PAPER_HEAD, device="cuda") -> dict[str, torch.Tensor]:
    d, V = head["d"], head["V"]
    g = torch.Generator(device=device).manual_seed(seed)
    W0 = (0.02 * torch.randn(V, d, generator=g, device=device)).to(dtype)
    Hw = torch.randn(B, d, generator=g, device=device).to(dtype)
    Hl = Hw if scenario == "S1" else torch.randn(B, d, generator=g, device=device).to(dtype)
    c = torch.randint(0, V, (B,), generator=g, device=device)
    r = torch.randint(0, V, (B,), generator=g, device=device)
    with torch.no_grad():
        lp, _ = fused.selective_logprobs(Hw, W0, c[:, None])
        lq, _ = fused.selective_logprobs(Hl, W0, r[:, None])
    return {"W0": W0, "Hw": Hw, "Hl": Hl, "c": c, "r": r, "rc": lp[:, 0].float(), "rr": lq[:, 0].float()}


def _gpu_naive_s1(x, W):
    logp = torch.log_softmax(_upcast(x["Hw"] @ W.T), dim=-1)
    pc, pr = logp.gather(1, x["c"][:, None])[:, 0], logp.gather(1, x["r"][:, None])[:, 0]
    return dpo.dpo_loss(pc, pr, x["rc"], x["rr"], 0.1)[0]


def _gpu_naive_s2(x, W):
    B = x["c"].numel()
    logp = torch.log_softmax(_upcast(torch.cat([x["Hw"], x["Hl"]]) @ W.T), dim=-1)
    pc, pr = logp[:B].gather(1, x["c"][:, None])[:, 0], logp[B:].gather(1, x["r"][:, None])[:, 0]
    return dpo.dpo_loss(pc, pr, x["rc"], x["rr"], 0.1)[0]


_COMPILED: dict[str, Callable] = {}


# our providers: (impl, strategy) of fused_dpo_loss. "ours" is what a user gets by default.
OURS = {"ours": ("auto", "auto"), "ours_gemm": ("gemm", "recompute"), "ours_triton": ("triton", "recompute"),
        "ours_torch": ("torch", "auto")}


def _gpu_providers(scenario: str, liger_cls, with_compile: bool, liger_compiled: bool = True):
    naive = _gpu_naive_s1 if scenario == "S1" else _gpu_naive_s2

    def ours(impl, strategy):
        def fn(x, W):
            Hr = None if scenario == "S1" else x["Hl"]
            return fused.fused_dpo_loss(x["Hw"], W, x["c"], x["r"], x["rc"], x["rr"], beta=0.1, H_rejected=Hr,
                                        impl=impl, strategy=strategy).loss
        return fn

    provs = {name: ours(*how) for name, how in OURS.items()}
    provs["naive"] = naive
    if with_compile:
        if scenario not in _COMPILED:
            _COMPILED[scenario] = torch.compile(naive, dynamic=False)
        provs["torch_compile"] = _COMPILED[scenario]
    if liger_cls is not None:
        for cs in (16, 256, 1):
            mod = liger_cls(beta=0.1, chunk_size=cs, compiled=liger_compiled, use_ref_model=True)

            def lig(x, W, mod=mod):
                inp = torch.cat([x["Hw"], x["Hl"]])[:, None, :]
                tgt = torch.cat([x["c"], x["r"]])[:, None]
                return mod(W, inp, tgt, ref_input=inp, ref_weight=x["W0"])[0]
            provs[f"liger_chunk{cs}"] = lig
    return provs


def _ours_path(provider: str, scenario: str, x: dict[str, torch.Tensor]) -> str:
    """What one of our providers runs on these inputs: ``"<impl>/<algorithm>"`` with the algorithm
    'sparse' (S1: the LSE GEMM, then the c = 0 backward), 'one_pass' or 'recompute'; or 'unavailable'."""
    impl, strategy = OURS[provider]
    try:
        impl = fused.resolve_impl(impl, x["Hw"], x["W0"])
        if scenario == "S1":
            return f"{impl}/sparse"
        return f"{impl}/{fused.choose_strategy(x['Hw'], x['W0'], x['Hl'], strategy=strategy, impl=impl)}"
    except (RuntimeError, ValueError):
        return "unavailable"


def _gemm_work(provider: str, scenario: str, B: int, head=PAPER_HEAD, path: str | None = None) -> tuple[int, float] | None:
    """(number of rows·d·V-sized GEMMs a provider needs per step, FLOPs of one) for the GPU scenarios;
    ``path`` (from :func:`_ours_path`) says which algorithm one of ours runs."""
    rows = 2 * B if scenario == "S2" else B
    if provider in OURS:
        # S1: the forward LSE only (c = 0: sparse backward); one pass: 2; recompute: LSE, again, dW
        algo = (path or "").split("/")[-1]
        if algo not in ("sparse", "one_pass", "recompute"):
            return None
        n = {"sparse": 1, "one_pass": 2, "recompute": 3}[algo]
    elif provider.startswith("liger"):
        n, rows = 4, 2 * B  # policy and reference forward, dH and dW, on [chosen; rejected]
    elif provider in ("naive", "torch_compile"):
        n = 2
    else:
        return None
    return n, 2.0 * rows * head["d"] * head["V"]


def _predicted_ms(provider: str, scenario: str, B: int, dtype, head=PAPER_HEAD, path: str | None = None) -> float | None:
    work = _gemm_work(provider, scenario, B, head, path)
    if work is None:
        return None
    n, flops_one = work
    t = n * flops_one / (H100_BF16_FLOPS if dtype == torch.bfloat16 else H100_FP32_FLOPS)
    rows = 2 * B if scenario == "S2" else B
    item = 2 if dtype == torch.bfloat16 else 4
    if provider == "naive":
        t += 5 * rows * head["V"] * 4 / H100_BYTES_PER_S  # logits, log-softmax and its gradient in fp32
    elif provider in ("ours", "ours_gemm") and path and path.startswith("gemm/"):
        algo = path.split("/")[1]
        # fp32 slabs written and read once per logits pass; in the recompute backward also G (operand dtype)
        # and each dW chunk's fp32 result copied into the gradient; the sparse path writes a zeroed gradient
        slab = (rows * head["V"] * 8 * (1 if algo == "sparse" else 2)
                + (rows * head["V"] * 2 * item + head["V"] * head["d"] * (8 + item) if algo == "recompute" else 0))
        t += (slab + head["V"] * head["d"] * item) / H100_BYTES_PER_S
    return 1e3 * t


class _Cuda:
    """The GPU-specific calls of :func:`run_gpu`; :class:`_Host` stands in on the CPU (flow tests only)."""

    name = "cuda"

    def sync(self):
        torch.cuda.synchronize()

    def reset_peak(self) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated()

    def bench(self, fn) -> list[float]:
        import triton.testing

        return list(triton.testing.do_bench(fn, warmup=10, rep=60, quantiles=[0.5, 0.2, 0.8]))

    def describe(self) -> dict[str, Any]:
        props = torch.cuda.get_device_properties(0)
        return {"device": torch.cuda.get_device_name(0), "device_memory_gb": props.total_memory / 2**30,
                "cuda": torch.version.cuda}

    def empty_cache(self):
        torch.cuda.empty_cache()


class _Host(_Cuda):
    name = "cpu"

    def sync(self):
        pass

    def reset_peak(self) -> int:
        return 0

    def peak(self) -> int:
        return 0

    def bench(self, fn) -> list[float]:
        t = _times(fn, 3)
        return [1e3 * t["median_s"], 1e3 * t["p20_s"], 1e3 * t["p80_s"]]

    def describe(self) -> dict[str, Any]:
        return {"device": "cpu (flow test: these are not GPU numbers)"}

    def empty_cache(self):
        pass


def run_gpu(budget_s: float = 200.0, json_path: str | None = None, *, device: str = "cuda", head=PAPER_HEAD,
            batches=GPU_BATCHES, liger: bool = True, compile_provider: bool = True) -> dict[str, Any]:
    """The GPU benchmark (needs CUDA and Triton; Liger when importable), within ``budget_s`` seconds.

    Configurations run in order of importance; those left when the budget is spent are listed as
    skipped, and a configuration that fails (out of memory, unsupported) is recorded with its error.
    The JSON is rewritten after every record, so a killed run keeps what it measured. ``device="cpu"``
    (with a small ``head``) runs the same flow on the CPU for tests; its numbers are not GPU numbers.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--gpu needs CUDA")
    dev = _Cuda() if device == "cuda" else _Host()
    liger_cls = None
    if liger:
        try:
            from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss as liger_cls
        except Exception as exc:  # noqa: BLE001
            _log(f"Liger-Kernel not importable ({exc!r}); benchmarking without it")
    liger_compiled = device == "cuda"
    start = time.perf_counter()
    out: dict[str, Any] = {"meta": {**_meta("gpu"), **dev.describe(), "head": dict(head), "budget_s": budget_s,
                                    "assumed_peak": {"bf16_tflops": H100_BF16_FLOPS / 1e12,
                                                     "fp32_tflops": H100_FP32_FLOPS / 1e12,
                                                     "hbm_tb_s": H100_BYTES_PER_S / 1e12}},
                           "errors": [], "records": [], "phases": [], "skipped": []}

    def save():
        out["meta"]["elapsed_s"] = time.perf_counter() - start
        if json_path and json_path != "-":
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(out, indent=1, default=str))

    def over_budget() -> bool:
        return time.perf_counter() - start > budget_s

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    # 1. errors against float64 at the smallest batch
    for scenario in ("S1", "S2"):
        for dname, dt in dtypes.items():
            if over_budget():
                out["skipped"].append({"stage": "errors", "scenario": scenario, "dtype": dname, "why": "budget"})
                continue
            try:
                x = _gpu_inputs(batches[0], dt, scenario, seed=1, head=head, device=device)
                x64 = {k: (v.double() if v.is_floating_point() else v) for k, v in x.items()}
                W64 = (x64["W0"] + 0.001).requires_grad_(True)
                l64 = _gpu_providers(scenario, None, False)["naive"](x64, W64)
                l64.backward()
            except Exception as exc:  # noqa: BLE001 - record and go on
                out["errors"].append({"scenario": scenario, "dtype": dname, "provider": "float64 reference",
                                      "error": repr(exc)[:300]})
                x = x64 = W64 = None
                dev.empty_cache()
                continue
            for name, fn in _gpu_providers(scenario, liger_cls, False, liger_compiled).items():
                if name in ("liger_chunk1", "liger_chunk256"):
                    continue
                try:
                    W = (x["W0"] + 0.001).requires_grad_(True)
                    loss = fn(x, W)
                    loss.backward()
                    rec = {"scenario": scenario, "dtype": dname, "provider": name, "B": batches[0],
                           "loss_rel": abs(loss.item() - l64.item()) / abs(l64.item()),
                           "grad_rel": ((W.grad.double() - W64.grad).norm() / W64.grad.norm()).item()}
                except Exception as exc:  # noqa: BLE001 - record and go on
                    rec = {"scenario": scenario, "dtype": dname, "provider": name, "error": repr(exc)[:300]}
                out["errors"].append(rec)
                _log(f"error check {rec}")
            del x, x64, W64
            dev.empty_cache()
            save()

    # 2. timings and memory, most important first; then where our default's time goes; then the extras
    plan = []
    phase_sizes = {("S2", "bf16", batches[-1]), ("S1", "bf16", batches[-1]), ("S2", "fp32", batches[-2])}
    for dname, scenario in (("bf16", "S2"), ("bf16", "S1"), ("fp32", "S2"), ("fp32", "S1")):
        for B in batches:
            provs = ["ours", "naive", "liger_chunk256", "ours_triton", "liger_chunk16", "ours_torch"]
            if (scenario, dname) == ("S2", "fp32"):
                provs.insert(3, "ours_gemm")  # elsewhere "ours" is this path (S2 bf16) or the same sparse one (S1)
            if (scenario, dname, B) in phase_sizes:
                provs.insert(3, "phases")  # on the same inputs, before the slower providers
            plan.extend((scenario, dname, B, prov) for prov in provs)
    for scenario in ("S2", "S1") if compile_provider else ():
        for dname in ("bf16", "fp32"):
            for B in batches[-2:]:
                plan.append((scenario, dname, B, "torch_compile"))
    for scenario in ("S2", "S1"):
        for B in batches[:2]:
            plan.append((scenario, "bf16", B, "liger_chunk1"))

    inputs_key, x = None, None
    for scenario, dname, B, prov in plan:
        if prov.startswith("liger") and liger_cls is None:
            continue
        if over_budget():
            out["skipped"].append({"scenario": scenario, "dtype": dname, "B": B, "provider": prov, "why": "budget"})
            continue
        dt = dtypes[dname]
        if inputs_key != (scenario, dname, B):
            x, inputs_key = None, None
            dev.empty_cache()
            try:
                x = _gpu_inputs(B, dt, scenario, head=head, device=device)
                inputs_key = (scenario, dname, B)
            except Exception as exc:  # noqa: BLE001 - record (out of memory) and go on
                out["records"].append({"scenario": scenario, "dtype": dname, "B": B, "provider": prov,
                                       "error": f"inputs: {exc!r}"[:300]})
                dev.empty_cache()
                continue
        if prov == "phases":
            try:
                ph = gpu_phases(x, scenario, dev, head)
            except Exception as exc:  # noqa: BLE001 - record and go on
                ph = {"error": repr(exc)[:300]}
            ph.update({"scenario": scenario, "dtype": dname, "B": B})
            out["phases"].append(ph)
            _log(f"phases {scenario} {dname} B={B}: {ph}")
            dev.empty_cache()
            save()
            continue
        fn = _gpu_providers(scenario, liger_cls, prov == "torch_compile", liger_compiled)[prov]
        W = x["W0"].clone().requires_grad_(True)

        def step():
            fn(x, W).backward()
            W.grad = None

        path = _ours_path(prov, scenario, x) if prov in OURS else None
        rec: dict[str, Any] = {"scenario": scenario, "dtype": dname, "B": B, "provider": prov,
                               "predicted_ms": _predicted_ms(prov, scenario, B, dt, head, path)}
        if path is not None:
            rec["path"] = path
        try:
            dev.sync()
            t0 = time.perf_counter()
            step()
            dev.sync()
            rec["first_call_s"] = time.perf_counter() - t0
            resident = dev.reset_peak()
            step()
            dev.sync()
            rec["peak_mb_above_resident"] = (dev.peak() - resident) / 2**20
            ms = dev.bench(step)
            rec.update({"median_ms": ms[0], "p20_ms": ms[1], "p80_ms": ms[2]})
            rec["pairs_per_s"] = B / (ms[0] / 1e3)
            work = _gemm_work(prov, scenario, B, head, path)
            if work is not None:  # achieved TFLOP/s, counting only the GEMMs the provider needs
                rec["gemms"] = work[0]
                rec["achieved_tflops"] = work[0] * work[1] / (ms[0] / 1e3) / 1e12
        except Exception as exc:  # noqa: BLE001 - record (out of memory, unsupported) and go on
            rec["error"] = repr(exc)[:300]
            dev.empty_cache()
        out["records"].append(rec)
        _log(f"{scenario} {dname} B={B} {prov}: {rec.get('median_ms', rec.get('error'))}")
        W = None
        save()
    try:
        from ..dpo import gemm_path

        out["meta"]["gemm_path_fallback"] = gemm_path.fallback_reason()
    except Exception as exc:  # noqa: BLE001 - no Triton here
        out["meta"]["gemm_path_fallback"] = f"not importable: {exc!r}"[:200]
    save()
    return out


def gpu_phases(x: dict[str, torch.Tensor], scenario: str, dev=None, head=PAPER_HEAD) -> dict[str, Any]:
    """Where the time of our default step goes, at one size (milliseconds, medians; errors recorded).

    * ``gemm_ref``: one plain ``torch.mm`` of all rows against the whole head, result in the operands'
      dtype (the card's GEMM on this shape; ``gemm_ref_tflops``), and ``gemm_ref_f32out`` with an fp32
      result (what our slabs use);
    * ``step`` / ``forward``: our default provider (``"ours"``), loss and backward / loss only;
      ``backward`` = step − forward;
    * ``lse_forward``: the GEMM path's forward alone (slab GEMMs and the LSE row kernel);
      ``dw``: its backward alone on a DPO-shaped upstream gradient (S1: c = 0, the segment sum; S2: the
      slab GEMMs, the softmax-times-c row kernel and the dW GEMMs); ``other`` = step − lse_forward − dw
      (the DPO loss, checks, allocations, launches; meaningful where the default path is the GEMM
      path's sparse or recompute algorithm, not for fp32 distinct contexts, whose default is the one
      pass: see ``path``).
    """
    dev = dev or _Cuda()
    rec: dict[str, Any] = {"path": _ours_path("ours", scenario, x)}
    B = x["c"].numel()
    if scenario == "S1":
        rows, targets = x["Hw"], torch.stack([x["c"], x["r"]], dim=1)
        g = torch.full((B, 2), 0.05 / B, device=rows.device)
        g[:, 1] = -g[:, 0]  # c = 0 exactly, as the DPO loss gives
    else:
        rows, targets = torch.cat([x["Hw"], x["Hl"]]), torch.cat([x["c"], x["r"]])[:, None]
        g = torch.cat([torch.full((B, 1), 0.05 / B), torch.full((B, 1), -0.05 / B)]).to(rows.device)
    W0 = x["W0"]
    W = W0.clone().requires_grad_(True)
    fn = _gpu_providers(scenario, None, False)["ours"]

    def step():
        fn(x, W).backward()
        W.grad = None

    def timed(name, f):
        try:
            rec[f"{name}_ms"] = dev.bench(f)[0]
        except Exception as exc:  # noqa: BLE001 - record and go on
            rec[f"{name}_error"] = repr(exc)[:200]

    timed("gemm_ref", lambda: torch.mm(rows, W0.t()))
    if "gemm_ref_ms" in rec:
        rec["gemm_ref_tflops"] = 2.0 * rows.shape[0] * head["d"] * head["V"] / (rec["gemm_ref_ms"] / 1e3) / 1e12
    try:
        from ..dpo import gemm_path as gp

        timed("gemm_ref_f32out", lambda: gp.mm_f32(rows, W0.t()))
        timed("lse_forward", lambda: gp.forward(rows, W0, targets))
        lse, _ = gp.forward(rows, W0, targets)
        timed("dw", lambda: gp.backward(rows, W0, targets, lse, g))
    except Exception as exc:  # noqa: BLE001 - no Triton here
        rec["gemm_path_error"] = repr(exc)[:200]
    timed("forward", lambda: fn(x, W))
    timed("step", step)
    if "step_ms" in rec and "forward_ms" in rec:
        rec["backward_ms"] = rec["step_ms"] - rec["forward_ms"]
    if all(f"{k}_ms" in rec for k in ("step", "lse_forward", "dw")):
        rec["other_ms"] = rec["step_ms"] - rec["lse_forward_ms"] - rec["dw_ms"]
    return rec


# ---------------------------------------------------------------------------------------------------
# For the book: correctness evidence, tables and the stored GPU results
# ---------------------------------------------------------------------------------------------------

GPU_ARTIFACT = ("artifacts", "kernels", "bench_gpu.json")


def correctness_checks(seed: int = 0) -> list[dict[str, Any]]:
    """The correctness evidence of the kernels, recomputed: one row per check (measured vs tolerance).

    Golden values come from outside our code (ln 2; −log σ([0, 1, 2])); every other check compares a
    fast path with the float64 reference on fresh random inputs.
    """
    rows: list[dict[str, Any]] = []

    def add(check, measured, tol, kind="<="):
        ok = (measured == tol) if kind == "==" else (measured <= tol)
        rows.append({"check": check, "measured": float(measured), "tolerance": f"{kind} {tol:g}", "passed": bool(ok)})

    g = torch.Generator().manual_seed(seed)
    # golden values
    for dt, golden in ((torch.float64, 0.6931471805599453), (torch.float32, 0.6931471824645996)):
        H, W0 = torch.randn(16, 24, generator=g).to(dt), torch.randn(300, 24, generator=g).to(dt)
        c, r = torch.randint(0, 300, (16,), generator=g), torch.randint(0, 300, (16,), generator=g)
        with torch.no_grad():
            ref = fused.fused_dpo_loss(H, W0, c, r, torch.zeros(16), torch.zeros(16), beta=0.1)
            out = fused.fused_dpo_loss(H, W0, c, r, ref.chosen_logps, ref.rejected_logps, beta=0.1)
        add(f"fused loss at W = W0 minus ln 2 ({str(dt)[6:]})", abs(out.loss.item() - golden), 0.0, "==")
    z = torch.zeros(3, dtype=torch.float64)
    _, per, _, _ = dpo.dpo_loss(torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64), z, z, z, beta=0.1, reduction="none")
    golden = torch.tensor([math.log(2), math.log1p(math.exp(-1)), math.log1p(math.exp(-2))], dtype=torch.float64)
    add("dpo_loss(Delta = [0, 10, 20], beta 0.1) vs -log sigma([0, 1, 2])", (per - golden).abs().max().item(), 1e-15)

    # fused vs float64 (multi-token, distinct contexts)
    x = hh_like(12, 6, 48, 517, seed=seed + 1)
    rc, rr = -20 * torch.rand(12, generator=g), -20 * torch.rand(12, generator=g)

    def lg(dtype, **kw):
        W = x["W0"].to(dtype).clone().requires_grad_(True)
        args = [x["Hw"].to(dtype), W, x["tw"], x["tl"], rc.to(dtype), rr.to(dtype)]
        out = fused.fused_dpo_loss(*args, beta=0.1, H_rejected=x["Hl"].to(dtype), chosen_mask=x["mw"],
                                   rejected_mask=x["ml"], **kw)
        out.loss.backward()
        return out.loss.double(), W.grad.double()

    l64, g64 = lg(torch.float64)
    for name, kw in (("recompute", dict(strategy="recompute", chunk_rows=7, vocab_tile=100)),
                     ("one pass", dict(strategy="one_pass", chunk_rows=7))):
        l32, g32 = lg(torch.float32, **kw)
        add(f"fp32 {name}: loss relative error vs float64", abs((l32 - l64) / l64).item(), 1e-6)
        add(f"fp32 {name}: dW relative error vs float64", ((g32 - g64).norm() / g64.norm()).item(), 1e-5)
    xb = {k: (v.to(torch.bfloat16).double() if v.is_floating_point() else v) for k, v in x.items()}
    Wb = xb["W0"].to(torch.bfloat16).clone().requires_grad_(True)
    ob = fused.fused_dpo_loss(xb["Hw"].to(torch.bfloat16), Wb, x["tw"], x["tl"], rc.bfloat16(), rr.bfloat16(), beta=0.1,
                              H_rejected=xb["Hl"].to(torch.bfloat16), chosen_mask=x["mw"], rejected_mask=x["ml"])
    ob.loss.backward()
    W64 = xb["W0"].clone().requires_grad_(True)
    o64 = fused.fused_dpo_loss(xb["Hw"], W64, x["tw"], x["tl"], rc.bfloat16().double(), rr.bfloat16().double(), beta=0.1,
                               H_rejected=xb["Hl"], chosen_mask=x["mw"], rejected_mask=x["ml"])
    o64.loss.backward()
    add("bf16 operands, fp32 accumulation: loss relative error", abs((ob.loss.double() - o64.loss) / o64.loss).item(), 1e-2)
    add("bf16 operands, fp32 accumulation: dW relative error",
        ((Wb.grad.double() - W64.grad).norm() / W64.grad.norm()).item(), 1e-2)

    # the same SGD trajectory for chunk sizes 1, 7 and N (fp32, 20 steps)
    def traj(cr):
        W = x["W0"].clone().requires_grad_(True)
        losses = []
        for _ in range(20):
            out = fused.fused_dpo_loss(x["Hw"], W, x["tw"], x["tl"], rc, rr, beta=0.5, H_rejected=x["Hl"],
                                       chosen_mask=x["mw"], rejected_mask=x["ml"], chunk_rows=cr, strategy="recompute")
            W.grad = None
            out.loss.backward()
            with torch.no_grad():
                W -= 0.5 * W.grad
            losses.append(out.loss.item())
        return torch.tensor(losses, dtype=torch.float64)

    base = traj(10_000)
    add("SGD trajectory, chunk 1 vs N: max |loss difference| (fp32)", (traj(1) - base).abs().max().item(), 1e-6)
    add("SGD trajectory, chunk 7 vs N: max |loss difference| (fp32)", (traj(7) - base).abs().max().item(), 1e-6)

    # shared contexts: only the two answer rows receive gradient; distinct contexts: every row does
    V, d, P, a, b = 400, 16, 64, 5, 11
    H = torch.randn(P, d, generator=g, dtype=torch.float64)
    W0 = torch.randn(V, d, generator=g, dtype=torch.float64)
    yes = torch.rand(P, generator=g) < 0.5
    c, r = torch.where(yes, a, b), torch.where(yes, b, a)
    ref = dpo.precompute_reference(H, W0, c, r)
    W = (W0 + 0.01).requires_grad_(True)
    fused.fused_dpo_loss(H, W, c, r, ref.chosen_logps, ref.rejected_logps, beta=0.1).loss.backward()
    others = [j for j in range(V) if j not in (a, b)]
    add("shared contexts: max |dW| on the V - 2 non-answer rows", W.grad[others].abs().max().item(), 0.0, "==")
    rows.append({"check": "shared contexts: rows of W with non-zero gradient", "measured": float((W.grad.abs().sum(1) > 0).sum()),
                 "tolerance": "== 2", "passed": int((W.grad.abs().sum(1) > 0).sum()) == 2})
    W = (W0 + 0.01).requires_grad_(True)
    fused.fused_dpo_loss(H, W, c, r, ref.chosen_logps, ref.rejected_logps, beta=0.1,
                         H_rejected=torch.randn(P, d, generator=g, dtype=torch.float64)).loss.backward()
    moved = int((W.grad.abs().sum(1) > 0).sum())
    rows.append({"check": "distinct contexts: rows of W with non-zero gradient", "measured": float(moved),
                 "tolerance": f"== {V}", "passed": moved == V})

    # the exact trainer against the reference trainer: official protocol, 100 steps, float64
    n = 400
    Hn = torch.randn(n + 100, d, generator=g, dtype=torch.float64)
    yes = torch.rand(n + 100, generator=g) < 0.5
    Hn = Hn + 0.5 * torch.where(yes, 1.0, -1.0)[:, None].double()
    c, r = torch.where(yes, a, b), torch.where(yes, b, a)
    refn = dpo.precompute_reference(Hn, W0, c, r)
    kw = dict(beta=0.01, lr=20.0, steps=100, batch_size=128, generator=1234)
    ref_run = dpo.train_reference(Hn[:n], W0, c[:n], r[:n], **kw)
    exact = dpo.train_two_row(Hn[:n], dpo.signs(c[:n], r[:n], a, b), reference=refn[:n], **kw)
    add("two-row vs reference trainer: max |loss difference|, 100 steps (float64)",
        (ref_run.train["loss"] - exact.train["loss"]).abs().max().item(), 1e-10)
    add("two-row vs reference trainer: max |head-change difference| (float64)",
        (ref_run.head_change - exact.head_change).abs().max().item(), 1e-10)
    return rows


def load_gpu_results(root: str | Path | None = None) -> dict[str, Any] | None:
    """The committed GPU benchmark (``artifacts/kernels/bench_gpu.json``), or None when it is absent."""
    if root is None:
        from ..book import repo_root

        root = repo_root()
    path = Path(root).joinpath(*GPU_ARTIFACT)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if "meta" not in data or "records" not in data:
        raise ValueError(f"{path} is not a GPU benchmark file (no 'meta'/'records')")
    return data


def gpu_admonition_html(results: dict[str, Any] | None) -> str:
    """An admonition saying where the GPU numbers come from, or that there are none (never a silent fallback)."""
    import html

    if results is None:
        return ('<div class="admonition warning"><p class="admonition-title">GPU results not available</p>'
                "<p>This build found no stored GPU benchmark (<code>artifacts/kernels/bench_gpu.json</code>). The GPU "
                "numbers are missing here, not replaced by CPU numbers: run <code>scripts/gpu_check.sh</code> on a GPU "
                "machine and commit its <code>bench_gpu.json</code> to show them.</p></div>")
    meta = results["meta"]
    skipped = len(results.get("skipped", []))
    return ('<div class="admonition note"><p class="admonition-title">Measured on '
            f"{html.escape(str(meta.get('device')))}, {html.escape(str(meta.get('date', ''))[:10])}</p>"
            "<p>The numbers in this section come from the stored file, measured on that card, not on this build's "
            f"machine. {skipped} configuration(s) were skipped for lack of time and are listed in the file.</p></div>")


def gpu_series(results: dict[str, Any], scenario: str, dtype: str, key: str = "median_ms") -> dict[str, tuple]:
    """``{provider: (batch sizes, values)}`` of one scenario and dtype from the GPU results."""
    series: dict[str, tuple[list, list]] = {}
    for rec in results["records"]:
        if rec.get("scenario") == scenario and rec.get("dtype") == dtype and key in rec:
            xs, ys = series.setdefault(rec["provider"], ([], []))
            xs.append(rec["B"])
            ys.append(rec[key])
    return {k: (list(x), list(y)) for k, (x, y) in sorted(series.items())}


def gpu_table(results: dict[str, Any]):
    """The GPU records as a DataFrame (scenario, dtype, B, provider, the path ours ran, times, memory, prediction)."""
    import pandas as pd

    cols = ["scenario", "dtype", "B", "provider", "path", "median_ms", "p20_ms", "p80_ms", "predicted_ms",
            "achieved_tflops", "peak_mb_above_resident", "first_call_s", "error"]
    df = pd.DataFrame([{c: rec.get(c) for c in cols} for rec in results["records"]])
    return df.dropna(axis=1, how="all")


def cpu_tables(out: dict[str, Any]):
    """Two DataFrames from :func:`run_cpu`'s result: P2 (two-row vs reference) and P3 (per provider)."""
    import pandas as pd

    p2 = pd.DataFrame([
        {"quantity": "two-row sweep: behaviours x steps (batch 128, test metrics every step)",
         "value": f"{out['p2_sweep_shape']['behaviours']} x {out['p2_sweep_shape']['steps']}"},
        {"quantity": "two-row sweep: wall time (s)", "value": f"{out['p2_sweep_s']:.3f}"},
        {"quantity": "two-row: time per run-step (µs)", "value": f"{1e6 * out['p2_two_row_s_per_run_step']:.1f}"},
        {"quantity": f"reference trainer (fp32, V = {out['p2_ref_vocab']}): time per step (s)",
         "value": f"{out['p2_ref_s_per_run_step']:.3f}"},
        {"quantity": "throughput ratio (reference / two-row, per run-step)", "value": f"{out['p2_ratio']:.0f}"},
        {"quantity": "same workload ratio (one behaviour, reference steps)", "value": f"{out['p2_same_workload_ratio']:.0f}"},
        {"quantity": f"max |loss difference|, float64, {out['p2_f64_steps']} steps", "value": f"{out['p2_max_abs_dloss_f64']:.1e}"},
    ])
    rows = []
    for name, rec in out["p3"].items():
        err = rec.get("error_vs_f64", {})
        rows.append({"provider": name, "time per step (s)": rec.get("median_s"), "first call (s)": rec.get("first_call_s"),
                     "peak above resident (MB)": rec.get("peak_mb"), "of which workspace (MB)": rec.get("workspace_mb"),
                     "loss rel. error": err.get("loss_rel"), "dW rel. error": err.get("grad_rel")})
    return p2, pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m alignment_dynamics.bench dpo [--quick] [--gpu] [--json PATH|-]``."""
    ap = argparse.ArgumentParser(prog="python -m alignment_dynamics.bench dpo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (under ~45 s on 2 cores)")
    ap.add_argument("--gpu", action="store_true", help="the GPU benchmark (needs CUDA) instead of P2/P3")
    ap.add_argument("--budget-s", type=float, default=200.0, help="time budget of --gpu, seconds (default 200)")
    ap.add_argument("--json", metavar="PATH", help="write the JSON object to PATH ('-': last line of stdout)")
    args = ap.parse_args(argv)
    if args.gpu:
        out = run_gpu(args.budget_s, args.json)
    else:
        out = run_cpu("quick" if args.quick else "full")
        print(f"P2: two-row sweep {out['p2_sweep_s']:.3f} s for 135 behaviours x 100 steps; "
              f"ratio to the reference trainer {out['p2_ratio']:.0f}x; "
              f"max |dloss| float64 {out['p2_max_abs_dloss_f64']:.1e}")
        print(f"P3: fused/naive time {out['p3_time_ratio']:.2f}, memory {out['p3_memory_ratio']}")
        if args.json and args.json != "-":
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if args.json == "-":
        print(json.dumps(out, default=str))
    return 0
