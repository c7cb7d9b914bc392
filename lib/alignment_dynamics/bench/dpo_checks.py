"""The correctness evidence of the DPO kernels, recomputed in the book: golden values and each fast path
against the float64 reference (no timing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .. import dpo
from ..dpo import fused
from .dpo_common import hh_like


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


@dataclass(frozen=True)
class Correctness:
    """The rows of :func:`correctness_checks`, how many there are and how many passed."""

    rows: tuple[dict[str, Any], ...]
    total: int
    passed: int

    @property
    def table(self):
        """The checks as the kernels chapter shows them (check, measured, tolerance, passed)."""
        import pandas as pd

        return pd.DataFrame(list(self.rows)).style.hide(axis="index").format({"measured": "{:.3g}"})


def correctness_report(seed: int = 0) -> Correctness:
    """:func:`correctness_checks` for ``seed``, counted."""
    rows = correctness_checks(seed)
    return Correctness(rows=tuple(rows), total=len(rows), passed=sum(bool(r["passed"]) for r in rows))
