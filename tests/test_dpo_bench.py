"""Tests of the DPO benchmark's machinery (the measurements themselves run in the book and on a GPU)."""

import json
import subprocess
import sys

import pytest
import torch

from alignment_dynamics.bench import dpo_common, dpo_cpu, dpo_gpu, dpo_report, measure
from alignment_dynamics.dpo import fused

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread


def test_cpu_peak_bytes_sees_a_temporary_allocation():
    peak = measure.cpu_peak_bytes(lambda: torch.empty(10_000_000).fill_(1.0))  # 40 MB, freed at once
    if peak is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert 0.8 * 40e6 <= peak <= 1.5 * 40e6


def test_naive_baseline_equals_fused_in_float64():
    x = dpo_common.hh_like(3, 7, 16, 200, seed=2, dtype=torch.float64)
    rc, rr = -torch.rand(3, dtype=torch.float64) * 30, -torch.rand(3, dtype=torch.float64) * 30
    Wa = (x["W0"] + 0.01).requires_grad_(True)
    Wb = (x["W0"] + 0.01).requires_grad_(True)
    la = dpo_common.naive_dpo_loss(x["Hw"], x["Hl"], Wa, x["tw"], x["tl"], x["mw"], x["ml"], rc, rr)
    lb = fused.fused_dpo_loss(x["Hw"], Wb, x["tw"], x["tl"], rc, rr, beta=0.1, H_rejected=x["Hl"],
                              chosen_mask=x["mw"], rejected_mask=x["ml"]).loss
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) <= 1e-13
    torch.testing.assert_close(Wa.grad, Wb.grad, rtol=0, atol=1e-14)


def test_gpu_benchmark_flow_runs_on_the_cpu(tmp_path):
    path = tmp_path / "bench.json"
    out = dpo_gpu.run_gpu(120, str(path), device="cpu", head={"d": 16, "V": 100}, batches=(4, 8), liger=False,
                        compile_provider=False)
    saved = json.loads(path.read_text())
    assert saved["meta"]["device"].startswith("cpu") and saved["records"] == json.loads(json.dumps(out["records"], default=str))
    ok = [r for r in out["records"] if r["provider"] in ("naive", "ours_torch")]
    assert ok and all("median_ms" in r for r in ok)
    errs = {(e["scenario"], e["dtype"], e["provider"]): e for e in out["errors"]}
    assert errs[("S2", "fp32", "ours_torch")]["grad_rel"] <= 1e-5
    assert errs[("S2", "bf16", "ours_torch")]["grad_rel"] <= 2e-2
    assert errs[("S2", "fp32", "ours")]["grad_rel"] <= 1e-5  # the default: the torch path on the CPU
    paths = {(r["scenario"], r["dtype"], r["provider"]): r.get("path") for r in out["records"]}
    assert paths[("S1", "bf16", "ours")] == "torch/sparse" and paths[("S2", "fp32", "ours_torch")] == "torch/one_pass"
    # where our default's time goes, at three sizes; the GEMM path's pieces need Triton on a GPU (errors here)
    assert [(p["scenario"], p["dtype"]) for p in out["phases"]] == [("S2", "bf16"), ("S1", "bf16"), ("S2", "fp32")]
    assert all("step_ms" in p and "forward_ms" in p and "gemm_ref_ms" in p for p in out["phases"])


def test_bench_command_line_help():
    proc = subprocess.run([sys.executable, "-m", "alignment_dynamics.bench", "dpo", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--gpu" in proc.stdout


def test_sizes_stored_results_and_admonition(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark size 'huge'"):
        dpo_cpu.run_cpu("huge")
    assert dpo_report.load_gpu_results(tmp_path) is None
    assert "GPU results not available" in dpo_report.gpu_admonition_html(None)
    path = tmp_path.joinpath(*dpo_report.GPU_ARTIFACT)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="is not a GPU benchmark file"):
        dpo_report.load_gpu_results(tmp_path)
    path.write_text(json.dumps({"meta": {"device": "NVIDIA H100", "date": "2026-11-26T00:00:00+00:00"}, "records": [
        {"scenario": "S2", "dtype": "bf16", "B": 64, "provider": "ours_triton", "median_ms": 1.0},
        {"scenario": "S2", "dtype": "bf16", "B": 256, "provider": "ours_triton", "median_ms": 2.0},
        {"scenario": "S2", "dtype": "bf16", "B": 64, "provider": "naive", "error": "OOM"}]}))
    res = dpo_report.load_gpu_results(tmp_path)
    assert dpo_report.gpu_series(res, "S2", "bf16") == {"ours_triton": ([64, 256], [1.0, 2.0])}
    assert "NVIDIA H100" in dpo_report.gpu_admonition_html(res) and "2026-11-26" in dpo_report.gpu_admonition_html(res)
    assert list(dpo_report.gpu_table(res)["provider"]) == ["ours_triton", "ours_triton", "naive"]
