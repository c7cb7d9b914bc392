"""Progress lines with an ETA in the build log: few, correct, and never on the page."""

from __future__ import annotations

import io

import pytest

from alignment_dynamics import progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_long_step_reports_about_every_tenth_with_an_eta():
    clock, out = Clock(), io.StringIO()
    step = progress.Step("embedding (m)", 100, "behaviour", min_interval=5.0, stream=out, clock=clock)
    for _ in range(100):
        clock.t += 1.0  # 1 s per item: 100 s in all
        step.update()
    step.close()
    lines = out.getvalue().splitlines()
    assert 8 <= len(lines) <= 11, lines  # ~one per 10 %, plus the last one
    assert lines[0].endswith("embedding (m): 10/100 behaviours, 10 s, ETA 90 s")
    assert "20/100 behaviours, 20 s, ETA 80 s" in lines[1]
    assert lines[-1].endswith("embedding (m): done, 100 behaviours in 100 s")


def test_a_short_step_writes_nothing_and_the_rate_limit_holds():
    clock, out = Clock(), io.StringIO()
    step = progress.Step("quick", 10, min_interval=5.0, stream=out, clock=clock)
    for _ in range(10):
        clock.t += 0.1
        step.update()
    step.close()
    assert out.getvalue() == ""
    clock, out = Clock(), io.StringIO()
    step = progress.Step("bursty", 1000, min_interval=30.0, stream=out, clock=clock)
    for _ in range(1000):
        clock.t += 0.05  # 50 s in all: at most one line per 30 s, plus the final one
        step.update()
    step.close()
    assert len(out.getvalue().splitlines()) == 2


def test_steps_iterates_everything_in_a_build_and_outside(monkeypatch, capsys):
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_BUILD_DIR", "/nonexistent")
    assert list(progress.steps(range(5), "x")) == [0, 1, 2, 3, 4]
    monkeypatch.delenv("ALIGNMENT_DYNAMICS_BUILD_DIR")
    assert list(progress.steps(iter(range(3)), "y", total=3)) == [0, 1, 2]
    assert capsys.readouterr().out == ""  # never on standard output (the page)


def test_bad_totals():
    with pytest.raises(ValueError, match="total must be a non-negative int"):
        progress.Step("x", -1, stream=io.StringIO())
