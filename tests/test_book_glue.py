"""ad.book.glue_result: one call glues a result object's scalar fields under a prefix."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from alignment_dynamics import book


@pytest.fixture(autouse=True)
def _fresh_chapter():
    book.begin("intro")
    yield
    book._state["slug"] = None


@dataclasses.dataclass
class _Result:
    rho: float
    n: int
    label: str
    table: list


def test_glue_result_glues_scalars_under_the_prefix_and_skips_the_rest():
    out = book.glue_result("intro_speed", _Result(rho=np.float64(0.5), n=np.int64(7), label="agrees", table=[1, 2]))
    assert out == {"intro_speed_rho": 0.5, "intro_speed_n": 7, "intro_speed_label": "agrees"}
    assert type(out["intro_speed_rho"]) is float and type(out["intro_speed_n"]) is int
    assert book.glued()["intro_speed_rho"] == 0.5


def test_glue_result_picks_fields_and_marks_volatile_ones():
    out = book.glue_result("intro_t", {"seconds": 1.5, "n": 3}, fields=["seconds"], volatile=("seconds",))
    assert out == {"intro_t_seconds": 1.5}
    assert "intro_t_seconds" in book._state["volatile"]


@pytest.mark.parametrize("kwargs, message", [
    ({"fields": ["missing"]}, "no field"),
    ({"fields": ["table"]}, "not numbers or strings"),
    ({"volatile": ("label2",)}, "volatile"),
])
def test_glue_result_rejects_bad_field_choices(kwargs, message):
    with pytest.raises(book.GlueError, match=message):
        book.glue_result("intro_bad", _Result(1.0, 2, "x", []), **kwargs)


def test_glue_result_rejects_nan_wrong_prefix_and_non_results():
    with pytest.raises(book.GlueError, match="NaN|nan"):
        book.glue_result("intro_nan", {"x": math.nan})
    with pytest.raises(book.GlueError, match="slug"):
        book.glue_result("other_x", {"x": 1.0})
    with pytest.raises(book.GlueError, match="dataclass"):
        book.glue_result("intro_list", [1, 2])


def test_glue_result_allow_nan_glues_undefined_numbers_and_checks_the_rest():
    out = book.glue_result_allow_nan("intro_c", {"rho": np.float64("nan"), "n": 4, "text": "x", "t": 2.5},
                                     volatile=("t", "rho"))
    assert math.isnan(out["intro_c_rho"]) and out["intro_c_n"] == 4 and out["intro_c_text"] == "x"
    assert {"intro_c_t", "intro_c_rho"} <= book._state["volatile"] and "intro_c_n" not in book._state["volatile"]
    with pytest.raises(book.GlueError, match="expected a dict"):
        book.glue_result_allow_nan("intro_c", [1.0])
    with pytest.raises(book.GlueError):
        book.glue_result_allow_nan("intro_d", {"x": float("inf")})  # only NaN is let through


def test_record_claims_records_rows_in_order_and_rejects_incomplete_ones():
    from alignment_dynamics import verdicts

    rows = [{"claim": "c1", "measured": "m1", "verdict": verdicts.exact(0.0), "source": "derived"},
            {"claim": "c2", "measured": "m2", "verdict": verdicts.exact(1.0), "source": "project"}]
    table = book.record_claims(rows)
    assert [r["claim"] for r in book._state["claims"]] == ["c1", "c2"]
    assert [r["verdict"] for r in book._state["claims"]] == ["agrees", "differs"] and len(table.data) == 2
    with pytest.raises(book.GlueError, match="lacks"):
        book.record_claims([{"claim": "c"}])
