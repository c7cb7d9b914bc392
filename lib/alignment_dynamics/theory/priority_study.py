"""The sections of the chapter `priority`, one function each: the two illustrated pairs, the
unequal-sizes counterexample, the sweep over random instances, and the claims. Each returns a frozen
result whose scalar fields are glued under the chapter's prefix (``priority_<field>``), with the
statements it checks decided here (never in a cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import require_config
from .headline import always_lower, bound_sentence, bound_summary_rows, bound_verdict
from .priority import priority_pair, sweep_priority, unequal_sizes_example

#: The largest absolute difference between the first-step margin change and its exact formula that still
#: counts as float64 agreement in the illustrated pairs.
PAIR_TOL = 1e-12
#: The largest relative error of the sweep's exact identities (first-step margin formula, sign identity)
#: that still counts as floating-point agreement.
IDENTITY_RTOL = 1e-10

#: The sweep's violation columns: one per statement of the margin theorem and the gap proposition.
VIOLATIONS = ("viol_margin_band", "viol_loss_lower", "viol_loss_upper", "viol_loss_order", "viol_loss_rise",
              "viol_gap_slowdown", "viol_first_step_order")


@dataclass(frozen=True, eq=False)
class PairsResult:
    """The two illustrated pairs (:func:`priority_pair`): pair (a) with aligned mean differences, pair (b)
    with the weaker behaviour opposed. Fields: the run's settings, the less (``lo``) and more (``hi``)
    distinguishable behaviour's ``||b||`` and priority level, pair (a)'s gap, pair (b)'s negative level and
    in how many of its training sets the weaker loss rose at step 1, pair (a)'s step thresholds, the
    largest first-step margin error of both pairs; ``as_predicted``: both first steps exact, the stronger
    behaviour the higher level in both, pair (b)'s weaker level negative and its loss rising in every
    set; ``faster``: in both pairs the more distinguishable behaviour has the lower loss at every step
    after the first. ``pairs`` holds the two runs for the figure."""

    d: int
    n_per: int
    beta_prime: float
    lr: float
    a_dist_lo: float
    a_dist_hi: float
    a_p_lo: float
    a_p_hi: float
    a_gap: float
    b_p_lo: float
    b_rise: int
    b_repeats: int
    a_lr_threshold: float
    a_lr_limit: float
    pair_first_err: float
    as_predicted: bool
    faster: bool
    pairs: dict


def pairs(cfg) -> PairsResult:
    """Train the two illustrated pairs of ``cfg`` (:class:`PairsResult`)."""
    require_config(cfg, "priority")
    common = dict(d=cfg.d, n_per=cfg.n_per, beta_prime=cfg.beta_prime, lr=cfg.lr, steps=cfg.steps,
                  repeats=cfg.pair_repeats)
    a = priority_pair(cfg.seed, **cfg.pair_a, **common)
    b = priority_pair(cfg.seed + 1, **cfg.pair_b, **common)
    ok = (all(p["first_step_err"] < PAIR_TOL and p["priority"][1] > p["priority"][0] for p in (a, b))
          and b["priority"][0] < 0 and b["rise_count"][0] == b["repeats"])
    faster = (always_lower(a["loss"][1:, 1], a["loss"][1:, 0]) and always_lower(b["loss"][1:, 1], b["loss"][1:, 0]))
    return PairsResult(cfg.d, cfg.n_per, cfg.beta_prime, cfg.lr, a["dist"][0], a["dist"][1], a["priority"][0],
                       a["priority"][1], a["gap"], b["priority"][0], b["rise_count"][0], b["repeats"],
                       a["lr_threshold"], a["lr_limit"], max(a["first_step_err"], b["first_step_err"]),
                       bool(ok), bool(faster), {"pair (a), aligned": a, "pair (b), opposed": b})


@dataclass(frozen=True, eq=False)
class UnequalResult:
    """The unequal-sizes counterexample (:func:`unequal_sizes_example`): the sizes, norms and cosine of
    the two behaviours, the equal-weight and the weighted first-step conditions, and ``L_i - L_j`` after
    1, 5 and 20 steps; ``j_leads``: the weighted condition is negative and behaviour j's loss is the lower
    one at every step after the first (the less distinguishable, larger behaviour leads)."""

    uneq_n_i: int
    uneq_n_j: int
    uneq_norm_i: float
    uneq_norm_j: float
    uneq_cos: float
    uneq_equal_cond: float
    uneq_weighted_cond: float
    uneq_diff_1: float
    uneq_diff_5: float
    uneq_diff_20: float
    j_leads: bool


def unequal(cfg) -> UnequalResult:
    """Run the unequal-sizes counterexample of ``cfg.unequal`` (:class:`UnequalResult`)."""
    require_config(cfg, "priority")
    spec = dict(cfg.unequal)
    ex = unequal_sizes_example(**spec)
    diff = ex["loss_i"] - ex["loss_j"]
    leads = bool(ex["weighted_condition"] < 0 and always_lower(ex["loss_j"][1:], ex["loss_i"][1:]))
    return UnequalResult(spec["n_i"], spec["n_j"], spec["norm_i"], spec["norm_j"], spec["cos"],
                         ex["equal_weight_condition"], ex["weighted_condition"], diff[1], diff[5], diff[20], leads)


@dataclass(frozen=True, eq=False)
class SweepResult:
    """The sweep over random instances (:func:`sweep_priority`). Counts: instances, the share with unequal
    sizes, instances where any statement fails (``n_viol``), first-step orderings claimed and held,
    (behaviour, training set) cases with a negative level (``n_rise``); the largest relative errors of the
    two identities; medians of the later-step prediction error, band use and certified loss-order
    fraction; ``holds`` (no violation and both identities within :data:`IDENTITY_RTOL`) and the generated
    ``holds_sentence``; ``rise_ok`` and ``rise_sentence``: whether every behaviour with a negative level had its loss rise
    at the first step; ``sentence_1``, ``sentence_2``: one per headline bound (:func:`bound_sentence`);
    ``bounds``: the bound rows; ``table``: min / median / max of the instance columns; ``first``, ``gaps``:
    the arrays of the two scatter figures."""

    n_instances: int
    unequal_share: float
    repeats: int
    sweep_steps: int
    n_viol: int
    first_err: float
    sign_err: float
    order_claims: int
    order_held: int
    n_rise: int
    pred_err_median: float
    pred_err_worst: float
    band_median: float
    order_median: float
    holds: bool
    holds_sentence: str
    rise_ok: bool
    rise_sentence: str
    sentence_1: str
    sentence_2: str
    bounds: list
    table: Any
    first: np.ndarray
    gaps: np.ndarray


def sweep(cfg) -> SweepResult:
    """Run the chapter's sweep over random instances (:class:`SweepResult`)."""
    require_config(cfg, "priority")
    sw, first, gaps = sweep_priority(cfg.seed, cfg.n_instances, steps=cfg.sweep_steps, repeats=cfg.repeats)
    n_viol = int((sw[list(VIOLATIONS)].max(axis=1) > 0).sum())
    first_err, sign_err = float(sw["first_step_rel_err"].max()), float(sw["sign_identity_rel_err"].max())
    claims, held = int(sw["first_order_claims"].sum()), int(sw["first_order_held"].sum())
    holds = n_viol == 0 and first_err < IDENTITY_RTOL and sign_err < IDENTITY_RTOL and claims == held
    if holds:
        text = "Every statement holds on every run, behaviour and step"
    else:
        text = (f"Not every statement holds: {n_viol} instances violate one, the identities are off by up to "
                f"{max(first_err, sign_err):.1e} (relative), and {claims - held} certified first-step orderings failed")
    n_rise, rise_bad = int(sw["n_rise"].sum()), int((sw["viol_loss_rise"] > 0).sum())
    if rise_bad == 0 and n_rise == 0:
        rise = "no behaviour of the sweep had a negative priority level, so the rise was not tested"
    elif rise_bad == 0:
        cases = "in the one case" if n_rise == 1 else f"in all {n_rise} cases"
        rise = f"{cases} of a behaviour with a negative priority level its loss rose at the first step"
    else:
        rise = (f"on {rise_bad} instance{'' if rise_bad == 1 else 's'} a behaviour with a negative priority level did not have its loss rise at "
                f"the first step ({n_rise} such cases in all)")
    bounds = bound_summary_rows("priority", sw)
    if len(bounds) != 2:
        raise ValueError(f"the priority chapter shows two headline bounds, the registry has {len(bounds)}")
    table = sw[["d", "K", "n_per", "w_min", "family", "beta_prime", "lr", "rel_pred_err_T", "band_use_T",
                "tight_gap_slowdown", "tight_first_step_order"]].describe().loc[["min", "50%", "max"]]
    return SweepResult(len(sw), float((~sw["equal_sizes"]).mean()), cfg.repeats, cfg.sweep_steps, n_viol, first_err,
                       sign_err, claims, held, n_rise, float(sw["rel_pred_err_T"].median()),
                       float(sw["rel_pred_err_T"].max()), float(sw["band_use_T"].median()),
                       float(sw["ratio_loss_order"].dropna().median()), bool(holds), text, rise_bad == 0, rise,
                       bound_sentence(bounds[0]), bound_sentence(bounds[1]), bounds, table, first, gaps)


def record_claims(pr: PairsResult, ex: UnequalResult, sw: SweepResult) -> list[dict]:
    """The chapter's four rows of "What the paper claims vs what we see", decided by
    :func:`bound_verdict` from the statements each rests on and its headline bounds."""
    from .. import book

    by_name = {r["bound"]: r for r in sw.bounds}
    no_viol = sw.n_viol == 0
    return [
        book.claim(
            "Optimisation prioritises behaviours with higher preference distinguishability: they are learned faster "
            "(ours: 'behaviours that share the answer tokens compete through one vector', item 3, for two behaviours of "
            "equal size; with unequal sizes the weighted condition decides)",
            f"equal-size pairs: the more distinguishable has the higher priority level and the lower loss at every step "
            f"({pr.faster}); first-step ordering certified in {sw.order_claims} cases, held in "
            f"{sw.order_held}; " + bound_sentence(by_name["first_step_order"]),
            bound_verdict(pr.faster and no_viol, [by_name["first_step_order"]])),
        book.claim(
            "With unequal sizes, the more distinguishable behaviour need not be learned first (our counterexample to "
            "the equal-weight reading)",
            f"n = {ex.uneq_n_i} vs {ex.uneq_n_j}, ||b_i|| = {ex.uneq_norm_i:.2f} > ||b_j|| = {ex.uneq_norm_j:.2f}: "
            f"weighted condition {ex.uneq_weighted_cond:.2f} < 0; "
            f"L_i - L_j after 1, 5, 20 steps: {ex.uneq_diff_1:.4f}, {ex.uneq_diff_5:.4f}, {ex.uneq_diff_20:.4f}",
            bound_verdict(ex.j_leads, []), source="derived"),
        book.claim(
            "The priority gap (p_i - p_j) / max ||b|| of the official code has the sign of ||b_i|| - ||b_j|| and, for equal "
            "sizes, bounds the weaker behaviour's first-step relative slowdown from below (ours: 'the priority gap bounds "
            "the first-step slowdown')",
            f"sign identity to {sw.sign_err:.1e}; " + bound_sentence(by_name["gap_slowdown"]),
            bound_verdict(sw.sign_err < IDENTITY_RTOL and no_viol, [by_name["gap_slowdown"]]),
            source="official code"),
        book.claim(
            "Behaviours trained jointly interact: a behaviour opposed to the average is unlearned at first",
            f"pair (b): priority level {pr.b_p_lo:.2f} < 0 and its loss rose above ln 2 at step 1 in "
            f"{pr.b_rise} of {pr.b_repeats} training sets; {sw.n_rise} such cases "
            "(behaviour, training set) in the sweep, " + ("none violating the bound" if sw.rise_ok else "some violating the bound"),
            bound_verdict(pr.b_rise == pr.b_repeats and no_viol, []), source="derived"),
    ]
