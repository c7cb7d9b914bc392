"""What the kernels chapter shows of the DPO benchmark: the CPU tables of a
:func:`~alignment_dynamics.bench.dpo_cpu.run_cpu` result, and the committed GPU results
(``artifacts/kernels/bench_gpu.json``): loading them, the admonition saying where they come from, the
series of a plot and the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


GPU_ARTIFACT = ("artifacts", "kernels", "bench_gpu.json")


def load_gpu_results(root: str | Path | None = None) -> dict[str, Any] | None:
    """The committed GPU benchmark (``artifacts/kernels/bench_gpu.json``), or None when it is absent.
    """
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
    """An admonition saying where the GPU numbers come from, or that there are none (never a silent fallback).
    """
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
    """``{provider: (batch sizes, values)}`` of one scenario and dtype from the GPU results.
    """
    series: dict[str, tuple[list, list]] = {}
    for rec in results["records"]:
        if rec.get("scenario") == scenario and rec.get("dtype") == dtype and key in rec:
            xs, ys = series.setdefault(rec["provider"], ([], []))
            xs.append(rec["B"])
            ys.append(rec[key])
    return {k: (list(x), list(y)) for k, (x, y) in sorted(series.items())}


def gpu_table(results: dict[str, Any]):
    """The GPU records as a DataFrame (scenario, dtype, B, provider, the path ours ran, times, memory, prediction).
    """
    import pandas as pd

    cols = ["scenario", "dtype", "B", "provider", "path", "median_ms", "p20_ms", "p80_ms", "predicted_ms",
            "achieved_tflops", "peak_mb_above_resident", "first_call_s", "error"]
    df = pd.DataFrame([{c: rec.get(c) for c in cols} for rec in results["records"]])
    return df.dropna(axis=1, how="all")


def cpu_tables(out: dict[str, Any]):
    """Two DataFrames from :func:`run_cpu`'s result: P2 (two-row vs reference) and P3 (per provider).
    """
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


def _ratio(v: Any) -> float:
    """A ratio of the CPU result, NaN where it could not be measured (None)."""
    return float("nan") if v is None else float(v)


@dataclass(frozen=True)
class CpuBench:
    """The CPU benchmark measured in this build (:func:`~alignment_dynamics.bench.dpo_cpu.run_cpu`) and
    its tables. ``p3_memory_ratio`` and ``p3_workspace_ratio`` are NaN where the peaks were not
    measured. Every number here depends on the machine."""

    result: dict
    cpu: str
    p2_sweep_s: float
    p2_ratio: float
    p3_time_ratio: float
    p3_memory_ratio: float
    p3_workspace_ratio: float
    p3_rows: int
    p2_table: Any  # DataFrame
    p3_table: Any  # DataFrame

    @property
    def p2_view(self):
        """The P2 table without its index."""
        return self.p2_table.style.hide(axis="index")

    @property
    def p3_view(self):
        """The P3 table without its index, errors in scientific notation, missing values as a dash."""
        return self.p3_table.style.hide(axis="index").format(precision=3, na_rep="—").format(
            "{:.1e}", subset=["loss rel. error", "dW rel. error"], na_rep="—")


def cpu_report(out: dict[str, Any]) -> CpuBench:
    """:class:`CpuBench` from a :func:`~alignment_dynamics.bench.dpo_cpu.run_cpu` result."""
    missing = [k for k in ("meta", "p2_sweep_s", "p2_ratio", "p3_time_ratio", "p3_shape", "p3") if k not in out]
    if missing:
        raise ValueError(f"not a run_cpu result: no {missing}")
    p2, p3 = cpu_tables(out)
    return CpuBench(result=out, cpu=out["meta"]["cpu"], p2_sweep_s=out["p2_sweep_s"], p2_ratio=out["p2_ratio"],
                    p3_time_ratio=out["p3_time_ratio"], p3_memory_ratio=_ratio(out.get("p3_memory_ratio")),
                    p3_workspace_ratio=_ratio(out.get("p3_workspace_ratio")), p3_rows=out["p3_shape"]["rows"],
                    p2_table=p2, p3_table=p3)


def run_cpu_report(size: str) -> CpuBench:
    """Measure the CPU benchmark of ``size`` ("tiny", "quick", "full") and report it (:func:`cpu_report`)."""
    from .dpo_cpu import run_cpu

    return cpu_report(run_cpu(size))


@dataclass(frozen=True)
class GpuBench:
    """The committed GPU benchmark, or its absence: ``results`` (None when absent), ``status``
    ("present" or "missing") and ``description`` (the device, the date and the versions, or a line
    saying that there are none)."""

    results: dict | None
    status: str
    description: str

    @property
    def admonition_html(self) -> str:
        """:func:`gpu_admonition_html` of the results."""
        return gpu_admonition_html(self.results)

    @property
    def table(self):
        """:func:`gpu_table` of the results, or a one-cell table saying that none are stored."""
        import pandas as pd

        if self.results is None:
            return pd.DataFrame({"GPU results": ["none stored"]})
        return gpu_table(self.results)


def gpu_report(root: str | Path | None = None) -> GpuBench:
    """The committed GPU benchmark (:func:`load_gpu_results`) as a :class:`GpuBench`."""
    gpu = load_gpu_results(root)
    if gpu is None:
        return GpuBench(None, "missing", "No stored GPU results (artifacts/kernels/bench_gpu.json).")
    meta = gpu["meta"]
    v = meta.get("versions", {})
    text = (f"Device: {meta['device']}; measured {meta['date']}; "
            f"torch {v.get('torch')}, triton {v.get('triton')}, liger-kernel {v.get('liger_kernel')}")
    return GpuBench(gpu, "present", text)
