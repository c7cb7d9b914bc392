"""Progress of a chapter's long steps, with an ETA, in the build log (not on the page).

Inside a build (``ALIGNMENT_DYNAMICS_BUILD_DIR`` set by ``alignment_dynamics.build``) a step writes a
few plain lines to standard error, which papermill copies into the build's log (once): one about every 10 %
(at most one per ``min_interval`` seconds) and one when it ends, e.g.

    [distinguishability] embedding (smollm2-135m-instruct): 54/135 behaviours, 31 s, ETA 46 s

A step shorter than ``min_interval`` writes nothing. In the executed notebook the lines are a stderr
stream, which the rendered pages drop (``execute.stderr_output: remove``) and nbval does not check.
Outside a build (a reader's notebook or terminal) the step shows a ``tqdm`` bar instead.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO


def _fmt_s(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def in_build() -> bool:
    """Whether this process runs inside the book's build (a papermill kernel started by it)."""
    return bool(os.environ.get("ALIGNMENT_DYNAMICS_BUILD_DIR"))


def _stream() -> TextIO:
    # sys.stderr, not sys.__stderr__: the kernel captures its file descriptor 2 as well and echoes it,
    # so writing there would print every line twice in the build log.
    return sys.stderr


def _chapter() -> str:
    from . import book

    return os.environ.get("ALIGNMENT_DYNAMICS_CHAPTER") or book.current_slug() or "book"


class Step:
    """Counts the items of one long step and reports them with an ETA (see the module docstring)."""

    def __init__(self, desc: str, total: int | None, unit: str = "item", *, min_interval: float = 5.0,
                 stream: TextIO | None = None, clock=time.perf_counter):
        if total is not None and (not isinstance(total, int) or total < 0):
            raise ValueError(f"total must be a non-negative int or None, got {total!r}")
        self.desc, self.total, self.unit = str(desc), total, str(unit)
        self.min_interval = float(min_interval)
        self.stream = stream or _stream()
        self.clock = clock
        self.done = 0
        self.t0 = clock()
        self._last_t = self.t0
        self._last_tenth = 0
        self.lines: list[str] = []

    def _say(self, text: str) -> None:
        line = f"[{_chapter()}] {text}"
        self.lines.append(line)
        print(line, file=self.stream, flush=True)

    def line(self) -> str:
        """The current progress line (count, elapsed, ETA)."""
        el = self.clock() - self.t0
        if self.total:
            eta = el / self.done * (self.total - self.done) if self.done else float("nan")
            eta_s = _fmt_s(eta) if self.done else "?"
            return f"{self.desc}: {self.done}/{self.total} {self.unit}s, {_fmt_s(el)}, ETA {eta_s}"
        return f"{self.desc}: {self.done} {self.unit}s, {_fmt_s(el)}"

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        now = self.clock()
        tenth = int(10 * self.done / self.total) if self.total else self.done // 10
        if tenth > self._last_tenth and now - self._last_t >= self.min_interval and self.done != self.total:
            self._last_tenth, self._last_t = tenth, now
            self._say(self.line())

    def close(self) -> None:
        el = self.clock() - self.t0
        if el >= self.min_interval:
            self._say(f"{self.desc}: done, {self.done} {self.unit}s in {_fmt_s(el)}")


def steps(iterable: Iterable[Any], desc: str, *, total: int | None = None, unit: str = "item",
          min_interval: float = 5.0) -> Iterator[Any]:
    """Iterate ``iterable`` and report progress with an ETA: log lines in a build, a tqdm bar elsewhere."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not in_build():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc, total=total, unit=unit)
        return
    step = Step(desc, total, unit, min_interval=min_interval)
    for item in iterable:
        yield item
        step.update()
    step.close()
