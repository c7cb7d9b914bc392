"""The CPU half of the DPO benchmark (``python -m alignment_dynamics.bench dpo [--quick]``).

* **P2**: the exact two-row trainer (:func:`alignment_dynamics.dpo.train_two_row`) against the
  full-vocabulary reference trainer (:func:`alignment_dynamics.dpo.train_reference`, the official
  code's approach) on the same synthetic persona-shaped data: identical trajectories (checked in
  float64), the time per run-step of each, and a sweep of 135 behaviours x 100 steps (batch 128, with
  per-step test metrics) in one call.
* **P3**: fused linear DPO (:func:`alignment_dynamics.dpo.fused.fused_dpo_loss`) against naive
  eager PyTorch and ``torch.compile`` on HH-RLHF-shaped inputs (multi-token responses, V = 49,152,
  d = 576): peak memory above the resident tensors and the time of one step (loss and backward).

Every timing is machine-dependent; the CPU numbers are never GPU numbers.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch

from .. import dpo
from ..dpo import fused
from . import measure
from .dpo_common import SMOLLM2, check_size, hh_like, naive_dpo_loss, persona_like
from .measure import cpu_peak_bytes


def run_p2(size: str = "full", *, seed: int = 0) -> dict[str, Any]:
    """P2 of the issue: the two-row sweep and its ratio to the full-vocabulary reference trainer.

    ``size`` is ``"full"``, ``"quick"`` or ``"tiny"`` (:data:`SIZES`).
    """
    cfg = check_size(size)
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
    sw = measure.times(sweep, cfg["sweep_repeats"])
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
    cfg = check_size(size)
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
                    "workspace_mb": None if peak is None else peak / 2**20 - grad_mb, **measure.times(step, repeats)})
        measure.log(f"P3 {name}: {rec['median_s']:.3f} s, peak {rec['peak_mb']} MB")
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
    """P2 and P3 on the CPU (``size``: ``"full"``, ``"quick"`` or ``"tiny"``), with the machine's description.
    """
    check_size(size)
    out = {"meta": measure.meta(size)}
    measure.log(f"P2 ({size}): exact two-row trainer vs the full-vocabulary reference trainer ...")
    out.update(run_p2(size))
    measure.log(f"P3 ({size}): fused linear DPO vs naive eager (and torch.compile) ...")
    out.update(run_p3(size))
    return out
