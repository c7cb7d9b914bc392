"""What the kernels chapter shows of the DPO benchmark: the CPU tables of a
:func:`~alignment_dynamics.bench.dpo_cpu.run_cpu` result, and the committed GPU results
(``artifacts/kernels/bench_gpu.json``): loading them, the admonition saying where they come from, the
series of a plot and the table.
"""

from __future__ import annotations

import json
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
