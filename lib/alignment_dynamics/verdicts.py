"""Every verdict rule of the book, in one place: from an interval (or a permutation distribution, or an
exact check) to one of :data:`VERDICTS`.

A verdict is never read off a bare threshold on a point estimate. Each rule takes the estimate *and*
its interval (a bootstrap by behaviour, by statement, a Wilson or t interval) and answers

* "agrees": the interval lies on the side the paper's claim predicts;
* "partly agrees": it does, but the effect is shown to be weaker than the claim implies (the whole
  interval lies below the rule's ``strong`` level), or only some of several parts agree;
* "differs": the interval lies on the other side;
* "not resolvable at this sample size": the interval straddles the rule's threshold, so the data at
  hand cannot decide (a larger sample or more seeds could);
* "not testable here": the quantity is undefined (NaN) or the test cannot be run in this build.

Exact identities and deterministic bounds (floating-point checks of our own propositions) are not
statistical: :func:`exact` and :func:`bound` decide them from the largest error or ratio, and say so.

Each rule returns a :class:`Verdict` carrying the verdict, the estimate, the interval, the sample size
``n`` and the rule in words; :func:`alignment_dynamics.book.claim` stores all of them in the claims
table and ``claims.json``, and :meth:`Verdict.phrase` gives the generated words a chapter glues into
its prose (no result is typed in a chapter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import stats
from .validate import InputError

__all__ = ["VERDICTS", "Verdict", "VerdictError", "positive", "share", "share_counts", "difference",
           "paired_difference", "absent", "exact", "bound", "rank_order", "combine", "not_testable"]

AGREES, PARTLY, DIFFERS, UNRESOLVED, UNTESTABLE = (
    "agrees", "partly agrees", "differs", "not resolvable at this sample size", "not testable here")
VERDICTS = (AGREES, PARTLY, DIFFERS, UNRESOLVED, UNTESTABLE)

_PHRASES = {
    AGREES: "agrees with the paper's claim",
    PARTLY: "agrees with the paper's claim only in part",
    DIFFERS: "differs from the paper's claim",
    UNRESOLVED: "cannot be resolved at this sample size",
    UNTESTABLE: "cannot be tested here",
}


class VerdictError(InputError):
    """A verdict rule called with an estimate outside its interval, or with an unknown option."""


@dataclass(frozen=True)
class Verdict:
    """A verdict with the numbers that decided it.

    ``estimate`` is the point estimate, ``lo``/``hi`` its interval (None where the rule uses none),
    ``n`` the sample size the interval rests on (behaviours, pairs, seeds, statements), ``rule`` one
    sentence saying how the verdict was decided, ``unit`` what ``n`` counts.
    """

    verdict: str
    estimate: float | None
    lo: float | None
    hi: float | None
    n: int | None
    rule: str
    unit: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise VerdictError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def interval(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [float(self.lo), float(self.hi)]

    def phrase(self) -> str:
        """The verdict as words for the prose: "agrees with the paper's claim", ... ."""
        return _PHRASES[self.verdict]

    def numbers(self, fmt: str = ".2f") -> str:
        """``estimate [lo, hi], n = N unit`` as text (the parts that exist)."""
        parts = []
        if self.estimate is not None and math.isfinite(self.estimate):
            parts.append(format(self.estimate, fmt))
        if self.interval is not None and all(math.isfinite(v) for v in self.interval):
            parts.append(f"[{format(self.lo, fmt)}, {format(self.hi, fmt)}]")
        elif self.interval is not None:
            parts.append("(unbounded interval)")
        head = " ".join(parts)
        if self.n is None:
            return head
        unit = self.unit[:-1] if self.n == 1 and self.unit.endswith("s") else self.unit  # "1 seed", not "1 seeds"
        size = f"n = {self.n}{' ' + unit if unit else ''}"
        return f"{head}, {size}" if head else size

    def sentence(self, subject: str, fmt: str = ".2f") -> str:
        """``"<subject>: <numbers>, which <phrase>."`` A generated result sentence."""
        nums = self.numbers(fmt)
        return f"{subject}{': ' + nums if nums else ''}, which {self.phrase()}."

    def row(self) -> dict[str, Any]:
        """The fields :func:`alignment_dynamics.book.claim` stores."""
        def num(v):
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
        return {"verdict": self.verdict, "estimate": num(self.estimate),
                "interval": None if self.interval is None else [num(self.lo), num(self.hi)],
                "n": self.n, "rule": self.rule}


def _nan(*vals) -> bool:
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals)


def _check(estimate: float, lo: float, hi: float) -> None:
    if lo > hi:
        raise VerdictError(f"the interval must have lo <= hi, got [{lo!r}, {hi!r}]")
    if not lo - 1e-12 <= estimate <= hi + 1e-12:
        raise VerdictError(f"the estimate {estimate!r} must lie in its interval [{lo!r}, {hi!r}]")


def _n(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        try:
            import numpy as np
            if isinstance(n, np.integer) and n >= 0:
                return int(n)
        except ImportError:  # pragma: no cover
            pass
        raise VerdictError(f"n must be a non-negative int, got {n!r}")
    return n


def not_testable(rule: str, *, n: int | None = None, unit: str = "", estimate: float | None = None) -> Verdict:
    """The verdict of a claim this build cannot test (``rule`` says why)."""
    return Verdict(UNTESTABLE, estimate, None, None, _n(n), rule, unit)


def _sided(estimate, lo, hi, n, *, threshold: float, strong: float | None, rule: str, unit: str) -> Verdict:
    """The shared logic: the claim predicts values above ``threshold``; ``strong`` (> threshold) is the
    level below which an established effect counts only as partial."""
    n = _n(n)
    if _nan(estimate, lo, hi):
        return Verdict(UNTESTABLE, None if _nan(estimate) else float(estimate), None, None, n,
                       rule + " (undefined here)", unit)
    estimate, lo, hi = float(estimate), float(lo), float(hi)
    _check(estimate, lo, hi)
    if lo > threshold:
        v = PARTLY if strong is not None and hi < strong else AGREES
    elif hi < threshold:
        v = DIFFERS
    else:
        v = UNRESOLVED
    return Verdict(v, estimate, lo, hi, n, rule, unit)


def positive(estimate: float, lo: float, hi: float, n: int | None, *, strong: float = 0.5,
             unit: str = "behaviours") -> Verdict:
    """A claimed positive association (a rank correlation and its interval).

    "agrees" when the interval lies above 0; "partly agrees" when it lies above 0 but wholly below
    ``strong`` (the association exists and is shown to be weak); "differs" when it lies below 0; "not
    resolvable at this sample size" when it contains 0; "not testable here" when undefined.
    """
    return _sided(estimate, lo, hi, n, threshold=0.0, strong=strong, unit=unit,
                  rule=f"interval above 0 (wholly below {strong:g}: partly); below 0: differs; containing 0: "
                       "not resolvable")


def share(p: float, lo: float, hi: float, n: int | None, *, chance: float = 0.5, strong: float = 0.8,
          unit: str = "pairs") -> Verdict:
    """A claimed prediction that is right more often than ``chance``, from a share and its interval.

    "agrees": the interval lies above chance; "partly agrees": above chance but wholly below
    ``strong``; "differs": below chance; "not resolvable at this sample size": it contains chance.
    """
    if not _nan(p, lo, hi) and not 0 <= float(p) <= 1:
        raise VerdictError(f"a share must lie in [0, 1], got {p!r}")
    return _sided(p, lo, hi, n, threshold=chance, strong=strong, unit=unit,
                  rule=f"interval above chance {chance:.2g} (wholly below {strong:g}: partly); below chance: "
                       "differs; containing chance: not resolvable")


def share_counts(successes: int, n: int, *, chance: float = 0.5, strong: float = 0.8, unit: str = "pairs",
                 level: float = 0.95) -> Verdict:
    """:func:`share` with the Wilson interval of ``successes`` out of ``n`` independent trials."""
    p, lo, hi = stats.wilson(successes, n, level=level)
    v = share(p, lo, hi, n, chance=chance, strong=strong, unit=unit)
    return Verdict(v.verdict, v.estimate, v.lo, v.hi, v.n, v.rule + " (Wilson interval)", unit)


def difference(estimate: float, lo: float, hi: float, n: int | None, *, expected: int = +1,
               unit: str = "") -> Verdict:
    """A claimed difference of a given sign (``expected`` +1: positive, −1: negative) from its interval.

    "agrees": the interval lies on the expected side of 0; "differs": on the other side; "not
    resolvable at this sample size": it contains 0.
    """
    if expected not in (1, -1):
        raise VerdictError(f"expected must be +1 or -1, got {expected!r}")
    if _nan(estimate, lo, hi):
        return _sided(estimate, lo, hi, n, threshold=0.0, strong=None, unit=unit, rule="")
    e, a, b = (float(estimate), float(lo), float(hi)) if expected > 0 else (-float(estimate), -float(hi), -float(lo))
    v = _sided(e, a, b, n, threshold=0.0, strong=None, unit=unit, rule="")
    side = "above" if expected > 0 else "below"
    return Verdict(v.verdict, float(estimate), float(lo), float(hi), v.n,
                   f"interval {side} 0: agrees; on the other side: differs; containing 0: not resolvable", unit)


def paired_difference(diffs: Any, *, expected: int = +1, unit: str = "seeds", level: float = 0.95) -> Verdict:
    """:func:`difference` on the mean of paired differences (one per seed, behaviour ...) with its t
    interval; a single difference gives an unbounded interval, so "not resolvable at this sample size"."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0 or not np.all(np.isfinite(d)):
        return not_testable("no finite paired differences", n=int(d.size), unit=unit)
    m, lo, hi = stats.t_interval(d, level=level)
    v = difference(m, lo, hi, int(d.size), expected=expected, unit=unit)
    return Verdict(v.verdict, m, lo, hi, v.n, v.rule + " (t interval of the mean paired difference)", unit)


def absent(intervals: Sequence[tuple[float, float]], *, margin: float, n: int | None = None,
           unit: str = "behaviours", estimates: Sequence[float] | None = None) -> Verdict:
    """A claimed *absence* of several effects (e.g. partial correlations), from their intervals.

    An effect is shown absent when its interval lies inside (−``margin``, ``margin``) (equivalence),
    shown present when its interval excludes 0, and unresolved otherwise. "agrees": all shown absent;
    "differs": all shown present; "partly agrees": some present and some absent; "not resolvable at
    this sample size": none present and some unresolved. The estimate reported is the largest |effect|.
    """
    if not intervals:
        raise VerdictError("absent needs at least one interval")
    if not margin > 0:
        raise VerdictError(f"margin must be > 0, got {margin!r}")
    rule = (f"each interval inside ±{margin:g}: absent; excluding 0: present; all absent agrees, all present "
            "differs, a mix partly agrees, otherwise not resolvable")
    if any(_nan(lo, hi) for lo, hi in intervals):
        return Verdict(UNTESTABLE, None, None, None, _n(n), rule + " (undefined here)", unit)
    if any(lo > hi for lo, hi in intervals):
        raise VerdictError(f"each interval must have lo <= hi, got {list(intervals)}")
    present = sum(1 for lo, hi in intervals if lo > 0 or hi < 0)
    shown_absent = sum(1 for lo, hi in intervals if -margin < lo and hi < margin and not (lo > 0 or hi < 0))
    k = len(intervals)
    if shown_absent == k:
        v = AGREES
    elif present == k:
        v = DIFFERS
    elif present:
        v = PARTLY
    else:
        v = UNRESOLVED
    lo = min(a for a, _ in intervals)
    hi = max(b for _, b in intervals)
    est = None if estimates is None else max(estimates, key=abs)
    if est is not None and not lo <= est <= hi:
        est = None
    return Verdict(v, est, lo, hi, _n(n), rule, unit)


def exact(error: float, *, tol: float = 1e-9, n: int | None = None, unit: str = "runs") -> Verdict:
    """An identity of our own derivation checked in floating point by its largest *relative* error:
    :func:`within` (not a statistical test: the identity is exact)."""
    return within(error, tol=tol, n=n, unit=unit, what="largest relative error")


def bound(ratio: float, *, n: int | None = None, unit: str = "steps") -> Verdict:
    """A deterministic bound checked at every instance: "agrees" when the largest measured/bound ratio
    is at most 1, "differs" otherwise."""
    if _nan(ratio):
        return Verdict(UNTESTABLE, None, None, None, _n(n), "deterministic bound (undefined here)", unit)
    r = float(ratio)
    return Verdict(AGREES if r <= 1 + 1e-12 else DIFFERS, r, None, None, _n(n),
                   "deterministic bound: largest measured/bound ratio at most 1", unit)


def rank_order(x: Any, y: Any, *, alpha: float = 0.05, n_resamples: int = 9999, seed: int = 0,
               unit: str = "behaviours") -> Verdict:
    """A claimed order (y increases with x) tested against the permutation distribution of Spearman's ρ.

    "agrees" when the one-sided permutation p-value for a positive ρ is at most ``alpha``; "differs"
    when that for a negative ρ is; "not resolvable at this sample size" otherwise (with five items the
    smallest possible p-value is 1/120). ``lo``/``hi`` are not reported (a test, not an interval); the
    p-values are in ``extra``.
    """
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise VerdictError(f"x and y must be 1-D of one length, got {a.shape} and {b.shape}")
    rule = f"one-sided permutation test of Spearman's rho at level {alpha:g}"
    if a.size < 3 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return Verdict(UNTESTABLE, None, None, None, int(a.size), rule + " (undefined here)", unit)
    r = stats.permutation_spearman(a, b, n_resamples=n_resamples, seed=seed)
    v = AGREES if r["p_greater"] <= alpha else DIFFERS if r["p_less"] <= alpha else UNRESOLVED
    return Verdict(v, r["rho"], None, None, r["n"], rule, unit,
                   extra={"p_greater": r["p_greater"], "p_less": r["p_less"]})


def combine(parts: Sequence[Verdict], *, rule: str = "") -> Verdict:
    """One verdict from several (e.g. one per model, or the loss and the accuracy reading).

    All the same: that verdict. Some agree and the others do not: "partly agrees". None agrees: the
    most decided of the others ("differs" over "not resolvable" over "not testable"). The numbers of
    the first part are kept, ``n`` is the sum.
    """
    if not parts:
        raise VerdictError("combine needs at least one verdict")
    vs = [p.verdict for p in parts]
    if len(set(vs)) == 1:
        v = vs[0]
    elif any(x in (AGREES, PARTLY) for x in vs):
        v = PARTLY
    else:
        v = next(x for x in (DIFFERS, UNRESOLVED, UNTESTABLE) if x in vs)
    ns = [p.n for p in parts if p.n is not None]
    return Verdict(v, parts[0].estimate, parts[0].lo, parts[0].hi, sum(ns) if ns else None,
                   rule or "combined: all alike keep it; some agreeing: partly; else the most decided",
                   parts[0].unit)


def by_model_phrase(by_model: "Sequence[Verdict]", names: "Sequence[str] | None" = None) -> str:
    """Several models' verdicts of one test as one phrase: "agrees with the paper's claim on both
    models" when they are alike, else each model's phrase ("... on the first model and ... on the
    second", or on each of ``names``)."""
    vs = list(by_model)
    if not vs:
        raise VerdictError("by_model_phrase needs at least one verdict")
    if names is not None and len(names) != len(vs):
        raise VerdictError(f"by_model_phrase: {len(vs)} verdicts but {len(names)} names")
    if len(vs) == 1:
        return vs[0].phrase() + (f" on {names[0]}" if names else "")
    if len({v.verdict for v in vs}) == 1:
        return f"{vs[0].phrase()} on {'both' if len(vs) == 2 else f'all {len(vs)}'} models"
    ordinals = ["first", "second", "third", "fourth"]
    where = [f"on {n}" for n in names] if names else \
        [f"on the {ordinals[i]} model" if i < len(ordinals) else f"on model {i + 1}" for i in range(len(vs))]
    parts = [f"{v.phrase()} {w}" for v, w in zip(vs, where)]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def first_step_text(*, sweep_batch: int, sweep_ratio: float, official_batch: int, official_ratio: float,
                    official: Verdict) -> str:
    """The generated account of what ranks behaviours after a single SGD step.

    ``*_ratio`` is the median over behaviours of the first step's class-imbalance part over its
    distinguishability part (:func:`alignment_dynamics.lastlayer.first_step_terms`) at the sweep's batch
    and at the official batch; ``official`` is the :func:`rank_order` verdict of the first step's
    ‖W₁ − W₀‖ against distinguishability at the official batch. The conclusion follows from both.
    """
    head = (f"With batches of {sweep_batch} the class-imbalance part of the first step is {sweep_ratio:.1f} times "
            f"its distinguishability part in the median behaviour; at the official batch of {official_batch} "
            f"(the figure samples) it is {official_ratio:.1f} times, and the permutation test of the first step "
            f"against distinguishability ({official.numbers()}) {official.phrase()}")
    if official.verdict == AGREES and official_ratio < 1:
        tail = ("so ranking by the luck of the batches is an artefact of the sweep's small batches: at the official "
                "batch a single step already orders behaviours by distinguishability.")
    elif official.verdict == AGREES:
        tail = ("so at the official batch a single step orders behaviours by distinguishability although the "
                "imbalance part is not small: the imbalance is shared across behaviours and does not reorder them.")
    elif official_ratio >= 1:
        tail = ("so even at the official batch a single step is dominated by the class balance of its batch, and only "
                "the accumulated steps reveal distinguishability.")
    else:
        tail = ("so the imbalance part is small at the official batch but the order of one step is not established "
                "over this many behaviours.")
    return f"{head}, {tail}"


def gap_order_text(by_model: "dict[str, Verdict]") -> str:
    """The generated reading of "pair (a) has the larger priority gap than pair (b)" (the paper's
    Figure 5 caption) over models, from each model's :func:`difference` verdict on |G(a)| − |G(b)|."""
    if not by_model:
        raise VerdictError("gap_order_text needs at least one model")
    word = {AGREES: "larger", DIFFERS: "smaller", UNRESOLVED: "not resolvably different",
            PARTLY: "larger", UNTESTABLE: "undefined"}
    parts = [f"on {m}, |G(a)| − |G(b)| = {v.numbers('.3f')}: pair (a)'s gap is {word[v.verdict]}"
             for m, v in by_model.items()]
    vs = {v.verdict for v in by_model.values()}
    if vs == {DIFFERS}:
        tail = ("On every model the order is the reverse of the caption's: pair (b)'s members differ more in "
                "distinguishability than pair (a)'s. Distinguishability is a property of a behaviour and a model, "
                "and the caption's order was measured on Llama-2-7B; what the theorem predicts, the more "
                "distinguishable member first within each pair, does not depend on which pair's gap is larger.")
    elif vs == {AGREES}:
        tail = "On every model the order is the caption's."
    elif DIFFERS in vs and AGREES in vs:
        tail = "The models disagree with each other on the order of the two gaps."
    else:
        tail = "This sample does not settle the order of the two gaps on every model."
    return "Comparing the two pairs' gaps: " + "; ".join(parts) + ". " + tail


# ---------------------------------------------------------------------------------------------------
# Exact counts and absolute tolerances (the kernels chapter: facts of the setting that are identities)
# ---------------------------------------------------------------------------------------------------

__all__ += ["count_is", "within"]


def count_is(observed: int, expected: int, *, n: int | None = None, unit: str = "") -> Verdict:
    """A count that a derivation fixes exactly (e.g. how many rows of a head move): "agrees" when
    ``observed == expected``, "differs" otherwise. ``n`` is how many things were counted over (the
    rows of the head); the estimate is ``observed``. Not a statistical test: the count is exact."""
    for name, v in (("observed", observed), ("expected", expected)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise VerdictError(f"{name} must be a non-negative int, got {v!r}")
    return Verdict(AGREES if observed == expected else DIFFERS, float(observed), None, None, _n(n),
                   f"exact count: agrees when exactly {expected}", unit)


def within(error: float, *, tol: float, n: int | None = None, unit: str = "steps",
           what: str = "largest absolute difference") -> Verdict:
    """An identity checked in floating point by an *absolute* error (``error`` ≥ 0, e.g. the largest
    |loss difference| of two trainers over ``n`` steps): "agrees" when ``error <= tol`` (``tol`` = 0
    asks for bit equality), "differs" otherwise, "not testable here" when undefined (NaN). See
    :func:`exact` for a relative error."""
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise VerdictError(f"tol must be a finite number >= 0, got {tol!r}")
    rule = f"exact identity: {what} at most {tol:g}"
    if _nan(error):
        return Verdict(UNTESTABLE, None, None, None, _n(n), rule + " (undefined here)", unit)
    e = float(error)
    if e < 0:
        raise VerdictError(f"error must be a non-negative (absolute) difference, >= 0, got {error!r}")
    return Verdict(AGREES if e <= tol else DIFFERS, e, None, None, _n(n), rule, unit)


__all__ += ["float_identity"]


def float_identity(error: float, *, tol: float = 1e-12, n: int | None = None, unit: str = "pairs") -> Verdict:
    """An identity of our own derivation (Part I) checked in float64 against an independent
    implementation: :func:`within` with ``tol`` > 0 (float64 rounding is about 1e-16, so the default
    1e-12 leaves room for accumulated rounding but not for a wrong formula). ``error`` is the largest
    difference, absolute, or relative where the check compares a norm; ``n`` counts what it was
    maximised over."""
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise VerdictError(f"tol must be a positive finite number, got {tol!r}")
    return within(error, tol=tol, n=n, unit=unit,
                  what="largest float64 difference from the closed form (absolute, or relative for a norm)")

# distinguishability's rules: a stable ranking, an ordered d′, tails no heavier than exponential
# ---------------------------------------------------------------------------------------------------

def stable_ranking(split_rho: "dict[str, float]", n: int, *, strong: float = 0.5, level: float = 0.95) -> Verdict:
    """"Behaviours differ, and the differences are stable": per model, the split-half rank correlation
    of the behaviours' ranking over ``n`` behaviours with its Fisher-z interval
    (:func:`stats.spearman_z_interval`), decided by :func:`positive` (above 0: the ranking reproduces;
    wholly below ``strong``: partly, reproducible but weak), combined over the models (:func:`combine`).
    Fewer than 4 behaviours, or an undefined ρ: not testable."""
    if not split_rho:
        raise VerdictError("stable_ranking needs at least one model's split-half correlation")
    parts = []
    for rho in split_rho.values():
        if _nan(rho) or n < 4:
            parts.append(not_testable("split-half rank correlation over fewer than 4 behaviours or undefined",
                                      n=_n(n), unit="behaviours"))
            continue
        r, lo, hi = stats.spearman_z_interval(float(rho), n, level=level)
        parts.append(positive(r, lo, hi, n, strong=strong, unit="behaviours"))
    v = combine(parts, rule="")
    return Verdict(v.verdict, v.estimate, v.lo, v.hi, _n(n),
                   f"per model, the Fisher-z interval of the split-half rank correlation over the behaviours: above 0 "
                   f"agrees (wholly below {strong:g}: partly), below 0 differs, containing 0 not resolvable; "
                   "models combined", "behaviours")


def ordered_dprime(low: float, high: float, n_low: tuple[int, int], n_high: tuple[int, int], *,
                   level: float = 0.95) -> Verdict:
    """"The most distinguishable behaviour separates more than the least": d′ of the high panel minus
    d′ of the low panel, with the normal interval from both standard errors (:func:`stats.dprime_se`,
    ``n_*`` = (positive, negative) statements of each panel), decided by :func:`difference` (+1)."""
    from scipy.stats import norm

    if _nan(low, high):
        return not_testable("d′ undefined", n=sum(n_low) + sum(n_high), unit="statements")
    se = math.hypot(stats.dprime_se(low, *n_low), stats.dprime_se(high, *n_high))
    q = float(norm.ppf((1 + level) / 2))
    diff = float(high) - float(low)
    v = difference(diff, diff - q * se, diff + q * se, sum(n_low) + sum(n_high), unit="statements")
    return Verdict(v.verdict, v.estimate, v.lo, v.hi, v.n,
                   "d′(most) − d′(least) with a normal interval from the two standard errors: above 0 agrees, "
                   "below 0 differs, containing 0 not resolvable", "statements")


def tails_not_heavier(cases: "dict[Any, tuple[float, float, float]]", n_rep: int, *, level: float = 0.95) -> Verdict:
    """"The embeddings are α-subexponential": for each case (model, direction), ``(k, k_laplace,
    sd_laplace)``: the measured tail exponent, and the mean and standard deviation of the exponent of
    ``n_rep`` Laplace samples grouped the same way. k − k_laplace has the standard error
    sd_laplace·√(1 + 1/n_rep) (the measurement's own spread, as a Laplace sample's, and the reference
    mean's) and a t interval with n_rep − 1 degrees of freedom; above 0 (lighter than exponential)
    agrees, below 0 (heavier) differs, containing 0 is not resolvable. Cases combined (:func:`combine`).
    Fewer than 2 reference samples, or an undefined number: not testable."""
    from scipy.stats import t as student

    if not cases:
        raise VerdictError("tails_not_heavier needs at least one case")
    n_rep = _n(n_rep)
    parts = []
    for k, k_lap, sd in cases.values():
        if n_rep is None or n_rep < 2 or _nan(k, k_lap, sd) or not math.isfinite(float(sd)):
            parts.append(not_testable("tail exponent or its reference undefined", n=n_rep, unit="reference samples"))
            continue
        q = float(student.ppf((1 + level) / 2, n_rep - 1))
        half = q * float(sd) * math.sqrt(1 + 1 / n_rep)
        diff = float(k) - float(k_lap)
        parts.append(difference(diff, diff - half, diff + half, n_rep, unit="reference samples"))
    v = combine(parts)
    return Verdict(v.verdict, v.estimate, v.lo, v.hi, n_rep,
                   "per model and direction, k − k(Laplace) with a t interval from the reference's spread: above 0 "
                   "agrees (no heavier than exponential), below 0 differs, containing 0 not resolvable; cases combined",
                   "reference samples")


def reliability_reading(predicted: "dict[str, float]", *, n_full: int, fine: float = 0.9, coarse: float = 0.6) -> str:
    """The reading of the predicted whole-sample reliabilities (Spearman–Brown) of each model's ranking:
    the order of neighbours is reproducible when every model reaches ``fine``, the coarse order when every
    model reaches ``coarse``, neither otherwise (``n_full``: statements per behaviour in the full data)."""
    if not predicted:
        raise VerdictError("reliability_reading needs at least one model")
    worst = min(predicted.values())
    if worst >= fine:
        return "the order of neighbouring behaviours is reproducible at this sample size"
    if worst >= coarse:
        return ("at this sample size the coarse order (which behaviours are near the top, which near the bottom) "
                "is reproducible, the order of neighbours is not; the full profile's "
                f"{n_full} statements per behaviour are needed for it")
    return "at this sample size not even the coarse order is reproducible; use the full profile"


def ratio_reading(lo: float, hi: float) -> str:
    """The reading of a ratio's interval against 1: "larger" above, "smaller" below, else "not clearly
    different"."""
    if _nan(lo, hi) or lo > hi:
        raise VerdictError(f"ratio_reading needs an interval lo <= hi, got [{lo!r}, {hi!r}]")
    return "larger" if lo > 1 else "smaller" if hi < 1 else "not clearly different"


def confidence_share_reading(share: float, *, small: float = 0.25) -> str:
    """The reading of the largest share ρ² of a ranking that label confidence accounts for: below
    ``small`` it is "at most a small part" (under a quarter with the default), else "a substantial part"."""
    if _nan(share) or not 0 <= share <= 1:
        raise VerdictError(f"a share must lie in [0, 1], got {share!r}")
    if share < small:
        return f"label confidence is at most a small part of why behaviours differ (under {_fraction(small)} on both models)"
    return "label confidence accounts for a substantial part of the ranking"


def _fraction(x: float) -> str:
    return {0.25: "a quarter", 0.5: "a half", 0.1: "a tenth"}.get(x, f"{x:g}")


STEP_LIMIT = 4.0  # our reading of Theorem 4.1's cut-off step-size condition: η β′² c_n² < 4 (a descent-lemma bound)


def step_reading(step: float, *, limit: float = STEP_LIMIT, far: float = 0.1) -> str:
    """The reading of the largest η β′² c_n² against ``limit`` (deterministic, not statistical): "far
    below" under ``far`` × limit, "below" under the limit, else "not below"."""
    if _nan(step) or step < 0:
        raise VerdictError(f"step must be a non-negative number, got {step!r}")
    where = "far below" if step < far * limit else "below" if step < limit else "not below"
    return f"{where} {limit:g}, the threshold of our reading of the cut-off step-size condition (a descent-lemma bound)"

# Scales that should agree (training_dynamics: the norm-weight argument for the feature scale)
# ---------------------------------------------------------------------------------------------------

def same_scale(ratio: float, *, factor: float = 10.0, n: int | None = None, unit: str = "models") -> Verdict:
    """Two positive scales that an argument says are equal, from their ratio: "agrees" when the ratio
    lies within [1/``factor``, ``factor``] (the same order of magnitude by default), "differs" outside
    it, "not testable here" when the ratio is undefined (NaN). Deterministic: no interval."""
    if isinstance(factor, bool) or not float(factor) > 1:
        raise VerdictError(f"factor must be a number above 1, got {factor!r}")
    rule = f"ratio within a factor {factor:g} of 1"
    if _nan(ratio):
        return Verdict(UNTESTABLE, None, None, None, _n(n), rule + " (undefined here)", unit)
    r = float(ratio)
    if not r > 0:
        raise VerdictError(f"a ratio of two positive scales must be positive, got {ratio!r}")
    return Verdict(AGREES if 1 / factor <= r <= factor else DIFFERS, r, None, None, _n(n), rule, unit)
