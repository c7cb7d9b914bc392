"""The GPU half of the DPO benchmark (``python -m alignment_dynamics.bench dpo --gpu``).

d = 4096, V = 32,000, B in {64 ... 4096}, fp32 (TF32 off) and bf16, shared and distinct contexts: our
default (``impl="auto"``: the GEMM path, and the one-pass strategy for fp32 distinct contexts), our
paths by name (GEMM recompute, fused Triton, torch), naive eager, ``torch.compile`` and Liger-Kernel's
``LigerFusedLinearDPOLoss`` when importable; errors against float64 first, then times (median, 20 %,
80 %) and peak memory, with predicted floors, and a breakdown of our default step into phases
(forward LSE, dW, the rest) at a few sizes. Writes one JSON with the device, versions and date.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import dpo
from ..dpo import fused
from . import measure
from .dpo_common import PAPER_HEAD, upcast


GPU_BATCHES = (64, 256, 1024, 4096)
# Nominal H100 numbers of dpo-kernels.md §5 (assumptions, for the predicted floors only)
H100_BF16_FLOPS, H100_FP32_FLOPS, H100_BYTES_PER_S = 800e12, 60e12, 3e12


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
    logp = torch.log_softmax(upcast(x["Hw"] @ W.T), dim=-1)
    pc, pr = logp.gather(1, x["c"][:, None])[:, 0], logp.gather(1, x["r"][:, None])[:, 0]
    return dpo.dpo_loss(pc, pr, x["rc"], x["rr"], 0.1)[0]


def _gpu_naive_s2(x, W):
    B = x["c"].numel()
    logp = torch.log_softmax(upcast(torch.cat([x["Hw"], x["Hl"]]) @ W.T), dim=-1)
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
        t = measure.times(fn, 3)
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
            measure.log(f"Liger-Kernel not importable ({exc!r}); benchmarking without it")
    liger_compiled = device == "cuda"
    start = time.perf_counter()
    out: dict[str, Any] = {"meta": {**measure.meta("gpu"), **dev.describe(), "head": dict(head), "budget_s": budget_s,
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
                measure.log(f"error check {rec}")
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
            measure.log(f"phases {scenario} {dname} B={B}: {ph}")
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
        measure.log(f"{scenario} {dname} B={B} {prov}: {rec.get('median_ms', rec.get('error'))}")
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
