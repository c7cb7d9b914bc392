"""The machine-readable summary of Part I's headline bounds: ``<build>/theory_bounds.json``."""

from __future__ import annotations

import json

import pytest

from alignment_dynamics import book
from alignment_dynamics import theory as th

FIELDS = {"chapter", "bound", "kind", "instances", "nonvacuous_share", "median_tightness"}


def test_smoke_build_of_a_theory_chapter_writes_theory_bounds(run_build, tmp_path):
    run_build("--profile", "smoke", "--only", "priority", "--no-render", "--no-cache", build_dir=tmp_path,
              check=True)
    rows = json.loads((tmp_path / "theory_bounds.json").read_text())
    assert isinstance(rows, list) and rows
    for r in rows:
        assert set(r) == FIELDS
        assert r["chapter"] == "priority" and r["kind"] in ("upper", "lower")
        assert isinstance(r["instances"], int) and r["instances"] > 0
        assert 0 <= r["nonvacuous_share"] <= 1 and r["median_tightness"] >= 0
    assert [r["bound"] for r in rows] == [name for name, _ in th.HEADLINE_BOUNDS["priority"]]


def test_bound_summary_refuses_bad_rows():
    book.begin("priority")
    good = {"chapter": "priority", "bound": "x", "kind": "lower", "instances": 3, "nonvacuous_share": 1.0,
            "median_tightness": 0.5}
    with pytest.raises(book.GlueError, match="exactly the fields"):
        book.bound_summary([{k: v for k, v in good.items() if k != "kind"}])
    with pytest.raises(book.GlueError, match="recorded in"):
        book.bound_summary([{**good, "chapter": "accuracy"}])
    with pytest.raises(book.GlueError, match="kind must be"):
        book.bound_summary([{**good, "kind": "both"}])
    with pytest.raises(ValueError, match="no headline bounds"):
        th.bound_summary_rows("intro", None)
    empty = {"tight_gap_slowdown": [float("nan")], "nonvac_gap_slowdown": [float("nan")],
             "tight_first_step_order": [0.5], "nonvac_first_step_order": [1.0]}
    rows = th.bound_summary_rows("priority", empty)
    assert rows[0]["instances"] == 0 and rows[0]["nonvacuous_share"] == 0.0
    assert rows[1] == {"chapter": "priority", "bound": "first_step_order", "kind": "lower", "instances": 1,
                       "nonvacuous_share": 1.0, "median_tightness": 0.5}
