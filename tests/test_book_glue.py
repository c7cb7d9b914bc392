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
