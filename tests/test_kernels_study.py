"""The kernels chapter's result objects: the two-row demonstration and its claims, the counted
correctness checks, the CPU benchmark report and the stored GPU results."""

import json
import math

import pytest
import torch

from alignment_dynamics import book, dpo
from alignment_dynamics.bench import dpo_checks, dpo_demo, dpo_report
from alignment_dynamics.plotting import kernels as kplot
from alignment_dynamics.validate import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo():
    return dpo_demo.two_row_demo(1234, 60, 20.0, n_train=200, n_test=50, steps=20, batch_size=64)


def test_demo_moves_two_rows_and_matches_the_reference(demo):
    assert demo.moved_rows == 2 and demo.vocab == 60 and demo.steps == 20
    assert demo.max_dloss <= dpo_demo.DLOSS_TOL and demo.max_dmetric < 1e-9
    assert demo.loss0 == math.log(2) and demo.loss0_minus_ln2 == 0.0
    assert demo.loss0_reading.startswith("which is ln 2 to the last digit")
    assert demo.summary.startswith("With single-token answers from one context, DPO on the head moves two rows:")
    assert [v.verdict for v in (demo.rows_verdict, demo.trajectory_verdict, demo.ln2_verdict)] == ["agrees"] * 3
    assert list(demo.metrics["metric"]) == list(demo.exact.eval["test"])
    assert (demo.metrics["reference, final"] - demo.metrics["exact, final"]).abs().max() < 1e-9


def test_demo_is_deterministic_and_follows_the_seed(demo):
    again = dpo_demo.two_row_demo(1234, 60, 20.0, n_train=200, n_test=50, steps=20, batch_size=64)
    other = dpo_demo.two_row_demo(7, 60, 20.0, n_train=200, n_test=50, steps=20, batch_size=64)
    assert again.max_dloss == demo.max_dloss and torch.equal(again.exact.train["loss"], demo.exact.train["loss"])
    assert not torch.equal(other.exact.train["loss"], demo.exact.train["loss"])


def test_demo_summary_follows_the_rows(monkeypatch):
    monkeypatch.setattr(dpo_demo, "moved_rows", lambda W, W0: 3)
    off = dpo_demo.two_row_demo(1234, 60, 20.0, n_train=200, n_test=50, steps=5, batch_size=64)
    assert "(3 moved here)" in off.summary and off.rows_verdict.verdict == "differs"


def test_weight_decay_moves_every_row(demo):
    run = dpo.train_reference(demo.H_train, demo.W0, demo.chosen_train, demo.rejected_train,
                              weight_decay=1e-3, **demo.protocol)
    assert dpo_demo.moved_rows(run.W, demo.W0) == demo.vocab
    with pytest.raises(ConfigError, match="one shape"):
        dpo_demo.moved_rows(run.W[:3], demo.W0)


def test_demo_verdicts_follow_the_numbers(demo):
    import dataclasses

    off = dataclasses.replace(demo, moved_rows=3, max_dloss=1e-6, loss0_minus_ln2=1e-16)
    assert [v.verdict for v in (off.rows_verdict, off.trajectory_verdict, off.ln2_verdict)] == ["differs"] * 3


@pytest.mark.parametrize("kw, match", [({"vocab": 5}, "vocab"), ({"lr": -1.0}, "lr"), ({"seed": 1.5}, "seed"),
                                       ({"steps": 0}, "steps")])
def test_demo_rejects_bad_input(kw, match):
    args = {"seed": 0, "vocab": 60, "lr": 1.0, **kw}
    with pytest.raises(ConfigError, match=match):
        dpo_demo.two_row_demo(args.pop("seed"), args.pop("vocab"), args.pop("lr"), **args)


def test_record_claims_carries_the_verdicts(demo):
    book.begin("kernels")
    rows = dpo_demo.record_claims(demo)
    assert [r["verdict"] for r in rows] == ["agrees"] * 3
    assert rows[0]["measured"] == "2 of 60 rows moved after 20 SGD steps" and rows[0]["n"] == 60
    assert rows[2]["measured"] == "first-step loss minus ln 2 = 0.0e+00"


def test_demo_figure_draws_both_trainers(demo):
    fig = kplot.demo_trajectories(demo)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and len(lines[0].get_xdata()) == demo.steps
    assert len(fig.axes[1].get_lines()[1].get_xdata()) == demo.steps + 1


def test_correctness_report_counts(monkeypatch):
    rows = [{"check": "a", "measured": 0.0, "tolerance": "== 0", "passed": True},
            {"check": "b", "measured": 1.0, "tolerance": "<= 0.5", "passed": False}]
    monkeypatch.setattr(dpo_checks, "correctness_checks", lambda seed: rows)
    rep = dpo_checks.correctness_report(0)
    assert (rep.total, rep.passed) == (2, 1) and list(rep.table.data["check"]) == ["a", "b"]


def _cpu_result(memory=0.5):
    return {"meta": {"cpu": "Test CPU"}, "p2_sweep_s": 0.1, "p2_ratio": 150.0, "p3_time_ratio": 0.8,
            "p3_memory_ratio": memory, "p3_workspace_ratio": None if memory is None else 0.3,
            "p3_shape": {"rows": 32}, "p2_sweep_shape": {"behaviours": 3, "steps": 10}, "p2_two_row_s_per_run_step": 1e-5,
            "p2_ref_vocab": 100, "p2_ref_s_per_run_step": 1e-3, "p2_same_workload_ratio": 90.0, "p2_f64_steps": 10,
            "p2_max_abs_dloss_f64": 1e-16,
            "p3": {"naive": {"median_s": 1.0, "peak_mb": 10.0, "workspace_mb": 5.0, "error_vs_f64": {"loss_rel": 1e-7}},
                   "fused": {"median_s": 0.8, "peak_mb": 5.0, "workspace_mb": 1.5}}}


def test_cpu_report_fields_tables_and_missing_peaks():
    rep = dpo_report.cpu_report(_cpu_result())
    assert (rep.cpu, rep.p2_ratio, rep.p3_memory_ratio, rep.p3_workspace_ratio, rep.p3_rows) == ("Test CPU", 150.0, 0.5, 0.3, 32)
    assert list(rep.p3_table["provider"]) == ["naive", "fused"]
    rep.p2_view.to_html(), rep.p3_view.to_html()
    none = dpo_report.cpu_report(_cpu_result(memory=None))
    assert math.isnan(none.p3_memory_ratio) and math.isnan(none.p3_workspace_ratio)
    fig = kplot.cpu_bench_bars(rep)
    assert [p.get_height() for p in fig.axes[0].patches] == [1.0, 0.8]
    with pytest.raises(ValueError, match="not a run_cpu result"):
        dpo_report.cpu_report({"meta": {}})


def test_gpu_report_present_and_missing(tmp_path):
    missing = dpo_report.gpu_report(tmp_path)
    assert (missing.results, missing.status) == (None, "missing") and "No stored GPU results" in missing.description
    assert list(missing.table.columns) == ["GPU results"] and "not available" in missing.admonition_html
    assert kplot.gpu_scaling(None).axes[0].texts[0].get_text() == "no stored GPU results"
    path = tmp_path.joinpath(*dpo_report.GPU_ARTIFACT)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"meta": {"device": "H100", "date": "2026-11-26",
                                         "versions": {"torch": "2.9", "triton": "3.5", "liger_kernel": "0.6"}},
                                "records": [{"scenario": "S2", "dtype": "bf16", "B": 64, "provider": "ours", "median_ms": 1.0},
                                            {"scenario": "S2", "dtype": "fp32", "B": 64, "provider": "ours", "median_ms": 2.0}]}))
    present = dpo_report.gpu_report(tmp_path)
    assert present.status == "present"
    assert present.description == "Device: H100; measured 2026-11-26; torch 2.9, triton 3.5, liger-kernel 0.6"
    assert list(present.table["provider"]) == ["ours", "ours"]
    fig = kplot.gpu_scaling(present.results)
    assert [ln.get_ydata()[0] for ax in fig.axes for ln in ax.get_lines()] == [1.0, 2.0]
