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
import json
from pathlib import Path

from .dpo_cpu import run_cpu
from .dpo_gpu import run_gpu


def main(argv: list[str] | None = None) -> int:
    """``python -m alignment_dynamics.bench dpo [--quick] [--gpu] [--json PATH|-]``.
    """
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
