"""The theory of Part I: last-layer DPO as logistic regression, and our bounds in the spirit of
Theorems 4.1-4.3 of Im & Li (ICML 2024).

Everything here is float64 NumPy on synthetic data. The package mirrors the chapters of Part I:

- :mod:`.families`: tail families and samplers (class-conditional distributions that are
  α-subexponential in our sense, with a known minimal α and closed-form projected CDFs).
- :mod:`.closed_form`: the logistic-regression recursion that last-layer DPO reduces to.
- :mod:`.update_rate`, :mod:`.accuracy`, :mod:`.priority`: each chapter's bounds, each a plain function
  of its inputs, and the chapter's sweep over random instances.
- :mod:`.reduction`: checks of the reduction against the float64 full-softmax reference
  (``alignment_dynamics.dpo.reference``), called by ``dpo_last_layer`` and by the tests.
- :mod:`.reduction_study`, :mod:`.update_rate_study`, :mod:`.accuracy_study`, :mod:`.priority_study`: the
  sections of each chapter, one function per section taking the chapter's configuration and returning a
  frozen result object (numbers, tables, verdicts and generated sentences) that the chapter glues.
- :mod:`.headline`: the headline-bound registry and the book's verdict rules; :mod:`.sweeps`: the sweep
  machinery; :mod:`.checks`: shared argument checks and helpers.

The statements and proofs are in the chapters; the symbols follow them. ``ad.theory.<name>`` gives the
names below, which chapters, tests and other modules use.
"""

from __future__ import annotations

from .families import (
    check_tail_constants, ClassConditional, FAMILIES, gaussian_tail_constant, make_two_class,
    random_orthogonal, random_unit, TwoClass,
)
from .closed_form import (
    answer_direction, decision_direction, dpo_loss_from_v, first_step_norm_balanced, first_step_v,
    head_change, linear_accuracy, logistic_gd, logistic_sgd, sample_statistics,
)
from .update_rate import (
    bernstein_looseness, bernstein_radius, check_bernstein, check_margin_concentration,
    convexity_lower_bound, energy_upper_bound, first_order_band, kappa_of, linear_upper_bound, phi,
    population_distinguishability_bound, propagated_window, remainder_bound, sgd_fluctuation_bound,
    sgd_rate_bound, smoothness_step_limit, sweep_update_rate, update_rate_curves,
)
from .accuracy import (
    accuracy_curves, AccuracyProblem, boundary_guarantee, comparator_loss, expected_error_bound,
    kappa_tail_bound, lemma_error_bound, margin_remainder, population_error, random_offset,
    realised_comparator_loss, realised_error_bound, sweep_accuracy, unconditional_error_bound,
)
from .priority import (
    first_step_slowdown, loss_bounds_from_v, make_behaviours, margin_change_prediction, pair_condition,
    priority_gap, priority_levels, priority_pair, priority_run, sign_identity, sweep_priority,
    unequal_sizes_example,
)
from .reduction import (
    check_breaks, check_first_step, check_gradient_structure, check_loss_at_start, check_normaliser,
    check_side_facts, check_trajectory, reduction_problem,
)
from .headline import (
    always_lower, bound_sentence, bound_summary_rows, bound_verdict, goal_met, HEADLINE_BOUNDS, mutate_bound,
    order_verdict, rank_agrees, rank_correlation, strictly_increasing, summarize_ratios,
)
from . import reduction_study as reduction_study  # the sections of the chapter dpo_last_layer
from . import priority_study as priority_study  # the sections of the chapter priority
from . import accuracy_study as accuracy_study  # the sections of the chapter accuracy
from . import update_rate_study as update_rate_study  # the sections of the chapter update_rate

__all__ = [
    "AccuracyProblem", "ClassConditional", "FAMILIES", "HEADLINE_BOUNDS", "TwoClass", "accuracy_curves",
    "always_lower", "answer_direction", "bernstein_looseness", "bernstein_radius", "bound_sentence",
    "bound_summary_rows", "bound_verdict", "boundary_guarantee", "check_bernstein", "check_breaks",
    "check_first_step", "check_gradient_structure", "check_loss_at_start", "check_margin_concentration",
    "check_normaliser", "check_side_facts", "check_tail_constants", "check_trajectory", "comparator_loss",
    "convexity_lower_bound", "decision_direction", "dpo_loss_from_v", "energy_upper_bound",
    "expected_error_bound", "first_order_band", "first_step_norm_balanced", "first_step_slowdown",
    "first_step_v", "gaussian_tail_constant", "goal_met", "head_change", "kappa_of", "kappa_tail_bound",
    "lemma_error_bound", "linear_accuracy", "linear_upper_bound", "logistic_gd", "logistic_sgd",
    "loss_bounds_from_v", "make_behaviours", "make_two_class", "margin_change_prediction", "margin_remainder",
    "mutate_bound", "order_verdict", "pair_condition", "phi", "population_distinguishability_bound",
    "population_error", "priority_gap", "priority_levels", "priority_pair", "priority_run", "propagated_window",
    "random_offset", "random_orthogonal", "random_unit", "rank_agrees", "rank_correlation",
    "realised_comparator_loss", "realised_error_bound", "reduction_problem", "remainder_bound",
    "sample_statistics", "sgd_fluctuation_bound", "sgd_rate_bound", "sign_identity", "smoothness_step_limit",
    "strictly_increasing", "summarize_ratios", "sweep_accuracy", "sweep_priority", "sweep_update_rate",
    "unconditional_error_bound", "unequal_sizes_example", "update_rate_curves",
]
