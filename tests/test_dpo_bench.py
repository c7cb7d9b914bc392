"""Tests of the DPO benchmark's machinery (the measurements themselves run in the book and on a GPU)."""

import json
import subprocess
import sys

import pytest
import torch

from alignment_dynamics.bench import dpo as bench
from alignment_dynamics.dpo import fused


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cpu_peak_bytes_sees_a_temporary_allocation():
    peak = bench.cpu_peak_bytes(lambda: torch.empty(10_000_000).fill_(1.0))  # 40 MB, freed at once
    if peak is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert 0.8 * 40e6 <= peak <= 1.5 * 40e6


def test_naive_baseline_equals_fused_in_float64():
    x = bench.hh_like(3, 7, 16, 200, seed=2, dtype=torch.float64)
    rc, rr = -torch.rand(3, dtype=torch.float64) * 30, -torch.rand(3, dtype=torch.float64) * 30
    Wa = (x["W0"] + 0.01).requires_grad_(True)
    Wb = (x["W0"] + 0.01).requires_grad_(True)
    la = bench.naive_dpo_loss(x["Hw"], x["Hl"], Wa, x["tw"], x["tl"], x["mw"], x["ml"], rc, rr)
    lb = fused.fused_dpo_loss(x["Hw"], Wb, x["tw"], x["tl"], rc, rr, beta=0.1, H_rejected=x["Hl"],
                              chosen_mask=x["mw"], rejected_mask=x["ml"]).loss
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) <= 1e-13
    torch.testing.assert_close(Wa.grad, Wb.grad, rtol=0, atol=1e-14)


def test_gpu_benchmark_flow_runs_on_the_cpu(tmp_path):
    path = tmp_path / "bench.json"
    out = bench.run_gpu(120, str(path), device="cpu", head={"d": 16, "V": 100}, batches=(4, 8), liger=False,
                        compile_provider=False)
    saved = json.loads(path.read_text())
    assert saved["meta"]["device"].startswith("cpu") and saved["records"] == json.loads(json.dumps(out["records"], default=str))
    ok = [r for r in out["records"] if r["provider"] in ("naive", "ours_torch")]
    assert ok and all("median_ms" in r for r in ok)
    errs = {(e["scenario"], e["dtype"], e["provider"]): e for e in out["errors"]}
    assert errs[("S2", "fp32", "ours_torch")]["grad_rel"] <= 1e-5
    assert errs[("S2", "bf16", "ours_torch")]["grad_rel"] <= 2e-2


def test_bench_command_line_help():
    proc = subprocess.run([sys.executable, "-m", "alignment_dynamics.bench", "dpo", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--gpu" in proc.stdout
