"""What the build recorded, as result objects for the pages that show it: the claims scorecard of
`book/intro.md` and the environment, machine and execution report of `book/reproducibility.md`.

Each function takes what the build wrote (the collected claims, the execution report; see
:func:`alignment_dynamics.book.load_claims` and :func:`~alignment_dynamics.book.load_report`) and
returns a frozen dataclass whose scalar fields a chapter glues with one
:func:`~alignment_dynamics.book.glue_result` call and whose tables it shows as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .validate import ConfigError

__all__ = ["Scorecard", "scorecard", "Environment", "environment", "Machine", "machine",
           "ExecutionReport", "execution_report"]


@dataclass(frozen=True)
class Scorecard:
    """The claims every executed chapter made, counted by verdict."""

    claims: tuple[dict[str, str], ...]
    n_claims: int
    n_chapters: int
    n_agrees: int
    n_partly: int
    n_differs: int
    n_unresolved: int
    n_untestable: int
    counts_text: str  # the counts as a sentence fragment (:func:`counts_text`)

    @property
    def table(self):
        """The scorecard table (chapter, claim, what we measured, verdict), in reading order."""
        from .book import scorecard as _table

        return _table(list(self.claims))


def counts_text(agrees: int, partly: int, differs: int, unresolved: int, untestable: int) -> str:
    """The verdict counts as a sentence fragment, each verb agreeing with its count: "51 agree with the
    paper, 5 partly agree, ..., and 1 is not testable here"."""
    from .book import count_phrase

    parts = [count_phrase(agrees, "agrees", "agree") + " with the paper",
             count_phrase(partly, "partly agrees", "partly agree"),
             count_phrase(differs, "differs", "differ"),
             count_phrase(unresolved, "cannot", "cannot") + " be resolved at the sample size of this build",
             count_phrase(untestable, "is", "are") + " not testable here"]
    return ", ".join(parts[:-1]) + ", and " + parts[-1]


def scorecard(claims: list[dict[str, str]]) -> Scorecard:
    """Count ``claims`` (rows with at least ``"chapter"`` and ``"verdict"``) by verdict and by chapter.

    A claim whose verdict is not one of :data:`alignment_dynamics.verdicts.VERDICTS`, or that lacks a
    field, is an error naming the row.
    """
    from .book import verdict_counts
    from .verdicts import VERDICTS

    for i, c in enumerate(claims):
        missing = [k for k in ("chapter", "verdict") if k not in c]
        if missing:
            raise ConfigError(f"claim {i} has no {missing}: {c!r}")
        if c["verdict"] not in VERDICTS:
            raise ConfigError(f"claim {i} has verdict {c['verdict']!r}; valid verdicts are {list(VERDICTS)}")
    counts = verdict_counts(claims)
    n = (counts["agrees"], counts["partly agrees"], counts["differs"], counts["not resolvable at this sample size"],
         counts["not testable here"])
    return Scorecard(
        claims=tuple(claims), n_claims=len(claims), n_chapters=len({c["chapter"] for c in claims}),
        n_agrees=n[0], n_partly=n[1], n_differs=n[2], n_unresolved=n[3], n_untestable=n[4], counts_text=counts_text(*n))


@dataclass(frozen=True)
class Environment:
    """The book's exact pins next to the installed versions."""

    pins: Any  # DataFrame: package, extra, pinned, installed
    n_pins: int
    n_mismatch: int


def _release(version: str) -> str:
    """A version without its local suffix (``2.5.1+cpu`` -> ``2.5.1``)."""
    return version.split("+")[0]


def environment(rows: list[dict[str, str]] | None = None) -> Environment:
    """The pins (``rows`` as :func:`alignment_dynamics.build.pinned_versions` returns them; read from
    ``pyproject.toml`` when None) and how many differ from what is installed, local version suffixes
    (``+cpu``) ignored."""
    import pandas as pd

    if rows is None:
        from .build import pinned_versions

        rows = pinned_versions()
    pins = pd.DataFrame(rows, columns=["package", "extra", "pinned", "installed"])
    mismatch = sum(_release(r["installed"]) != r["pinned"] for r in rows)
    return Environment(pins=pins, n_pins=len(rows), n_mismatch=int(mismatch))


@dataclass(frozen=True)
class Machine:
    """The machine a build ran on (the report's record, or this machine outside a build)."""

    summary: dict[str, Any]
    cpu: str
    threads: int
    dtype: str
    bf16_reason: str

    @property
    def table(self):
        """The machine as a two-column table (what, value)."""
        from .hardware import summary_table

        return summary_table(self.summary)


def machine(report: dict | None) -> Machine:
    """The machine recorded in the execution ``report`` (``report["machine"]``), or, when there is no
    report or it records none, :func:`alignment_dynamics.hardware.summary` of this machine."""
    recorded = report.get("machine") if report else None
    if recorded:
        s = recorded
    else:
        from .hardware import summary

        s = summary()
    return Machine(summary=s, cpu=s["cpu"], threads=s["torch_threads"], dtype=s["auto_dtype"],
                   bf16_reason=s["native_bf16_reason"])


@dataclass(frozen=True)
class ExecutionReport:
    """The chapters a build executed before this page: how many, how many from the cache, how long."""

    report: dict | None
    n_chapters: int
    n_cached: int
    total_s: float

    @property
    def table(self):
        """The report as a table (chapter, status, wall time, from cache, cache key)."""
        from .book import report_table

        return report_table(self.report)


def execution_report(report: dict | None) -> ExecutionReport:
    """Summarise the execution ``report`` (None outside a build: no chapters). A chapter row without
    ``"cached"`` or ``"wall_s"`` is an error naming it."""
    chapters = report["chapters"] if report else []
    for c in chapters:
        missing = [k for k in ("cached", "wall_s") if k not in c]
        if missing:
            raise ConfigError(f"report chapter {c.get('name', '?')!r} has no {missing}")
    return ExecutionReport(report=report, n_chapters=len(chapters),
                           n_cached=sum(c["cached"] for c in chapters),
                           total_s=sum(c["wall_s"] for c in chapters))
