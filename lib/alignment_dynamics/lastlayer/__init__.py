"""Learning dynamics of last-layer DPO on real embeddings: the experiments of Part II.

The paper's last-layer protocol [official code]: only the unembedding W_U is trained, by plain SGD
with β = 0.01 and a fresh random batch of 128 training pairs per step, for 100 steps, with the initial
model as the reference and the official 90/10 split. By the reduction of ``book/dpo_last_layer.md``
this is logistic regression on the frozen features h(x), which
:func:`alignment_dynamics.dpo.train_two_row` runs exactly and in batches. (Whole-model training, for the
misalignment chapter, is :mod:`alignment_dynamics.wholemodel`.) The package mirrors what the chapters
``training_dynamics`` and ``prioritization`` do on top of it:

- :mod:`.features`: the data -- a behaviour's frozen features split into the official training and test
  sets on a nested stratified sample, several behaviours split from one random stream as in the official
  two-behaviour script, and what the reference model's head says about the answers (cached);
- :mod:`.rates`: the learning rate -- β and η enter the loss dynamics only through the effective step
  κ = η β² E‖h‖², so η is chosen to give our models the effective step of the official run on
  Llama-2-7B, or β is rescaled as β′/√d;
- :mod:`.runs`: training runs -- behaviours (or groups trained jointly) × learning rates × seeds in one
  call, with every per-behaviour curve the chapters plot;
- :mod:`.speed`: learning-speed measures and the update-rate theory over single-behaviour runs;
  :mod:`.correlations`: the rank and partial rank correlations with bootstrap intervals that test the
  paper's claims about them;
- :mod:`.prioritization`: who is learned first, priority predictions, the priority theorem over the
  margins; :mod:`.reweighting`: oversampling the less distinguishable behaviour;
- :mod:`.dynamics_study` and :mod:`.sweep_study`: the training-dynamics chapter's sections as result
  objects (the learning rate, the figure runs; the speed sweep, cross-fitting, the reference, claims);
  :mod:`.prioritization_study` and :mod:`.pair_sweep_study`: the prioritisation chapter's (the Figure 5
  pairs, the margins; random pairs, cross-fitting, reweighting, claims);
- :mod:`.checks`: the error, an argument check and ``LN2``.

``ad.lastlayer.<name>`` gives the names below, which chapters, tests and other modules use.
"""

from __future__ import annotations

from .checks import DynamicsError, LN2
from .features import (
    behavior_set, BehaviorSet, head_facts, HEAD_FACTS_VERSION, HeadFacts, joint_splits, mean_sq_norm,
)
from .rates import (
    beta_for, BETA_MODES, BETA_PRIME, effective_step, feature_scale, LLAMA2_7B_D, lr_choice, lr_scenarios,
    matched_lr, OFFICIAL_BATCH, OFFICIAL_BETA, official_effective_step, OFFICIAL_LR, OFFICIAL_STEPS,
)
from .runs import Runs, train_runs
from .speed import (
    change_slope, first_step_check, first_step_terms, FirstStepCheck, speed_table, update_rate_overlay,
)
from .correlations import finite_spearman, partial_spearman, partial_spearman_ci, rank_outliers, speed_correlations
from .prioritization import (
    agreement_by_bins, final_gains, gap_size_comparison, group_priorities, LEARNED_FIRST_METRICS,
    margin_overlay, order_agreement, priority_outcomes, random_groups,
)
from .reweighting import balancing_replication, less_distinguishable, reweighting_effect, reweighting_plan
from . import dynamics_study, pair_sweep_study, prioritization_study, study_keys, sweep_study

__all__ = [
    "BETA_MODES", "BETA_PRIME", "BehaviorSet", "DynamicsError", "FirstStepCheck", "HEAD_FACTS_VERSION",
    "HeadFacts", "LEARNED_FIRST_METRICS", "LLAMA2_7B_D", "LN2", "OFFICIAL_BATCH", "OFFICIAL_BETA",
    "OFFICIAL_LR", "OFFICIAL_STEPS", "Runs", "agreement_by_bins", "balancing_replication", "behavior_set",
    "beta_for", "change_slope", "effective_step", "feature_scale", "final_gains", "finite_spearman",
    "first_step_check", "first_step_terms", "gap_size_comparison", "group_priorities", "head_facts",
    "joint_splits", "less_distinguishable", "lr_choice", "lr_scenarios", "margin_overlay", "matched_lr",
    "mean_sq_norm", "official_effective_step", "dynamics_study", "order_agreement", "pair_sweep_study", "partial_spearman", "partial_spearman_ci",
    "priority_outcomes", "prioritization_study", "random_groups", "rank_outliers", "reweighting_effect", "reweighting_plan",
    "speed_correlations", "speed_table", "study_keys", "sweep_study", "train_runs", "update_rate_overlay",
]
