"""Whole-model DPO: full fine-tuning, LoRA or top blocks of a causal language model on preference pairs,
and the misalignment protocol on top of it. (Last-layer DPO on frozen features is
:mod:`alignment_dynamics.lastlayer`.)

This is the lean DPO loop behind the ``misalignment`` chapter. It trains a small causal LM (all its
weights, or LoRA adapters r 8, α 32, dropout 0.05 on ``q_proj``/``v_proj`` as in the official code)
against a frozen reference with TRL's ``sigmoid`` loss, and logs TRL's metric names
(``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``,
``logps/chosen``, ``logps/rejected``) plus the paper's accuracy (``outputs/accuracies``: the policy
gives the chosen answer a higher log-probability than the rejected one).

Design, and how it differs from TRL's ``DPOTrainer`` while computing the same quantities:

* **Tokenisation as the official runs.** Prompt and answers are tokenised separately and EOS is
  appended to each answer (TRL 0.7.x, :func:`tokenize_pairs`). A completion's log-probability is the
  sum over its tokens, EOS included.
* **One packed row per pair.** Chosen and rejected share the prompt. Instead of TRL's two padded
  sequences per pair, a row holds ``[prompt, a, b]`` with a block attention mask (``b`` does not see
  ``a``) and restarted position ids, so the prompt is computed once. This is exactly the two separate
  sequences' computation (a test checks it against the model's own forward).
* **Fixed shapes.** Every forward pass uses micro-batches of ``micro_batch`` rows padded to one
  length, so a pair's log-probs do not depend on which other pairs share its batch. The reference
  log-probs are computed once, before training, by the *same function on the same module*; at step 0
  the policy therefore reproduces them bit for bit: the loss is exactly ln 2 and every margin is 0.
* **Top blocks on cached activations.** ``top_blocks=k`` freezes everything below the last ``k``
  decoder blocks (the embedding, hence the tied head, included). Since the frozen bottom's output
  never changes, it is computed once and cached (content-addressed, atomic), and training runs only
  the top ``k`` blocks on it. This is *identical* to training the whole model with its bottom frozen
  (:func:`train_dpo` with ``cached=False``; a test checks equality of the trajectories). It is not
  the same as full fine-tuning; the chapter measures how close the two are on a small case.

Modules, in the order a run uses them:

- :mod:`.batches`: preference pairs, tokenised, and their packing into fixed shapes;
- :mod:`.policy`: the trainable copy of a model and the views of its decoder; :mod:`.trunk`: the
  frozen bottom's cached output; :mod:`.logps`: log-probabilities and hidden states;
- :mod:`.train`: the DPO loop, its settings and its run cache; :mod:`.trl`: the same run with TRL;
- :mod:`.pairsets`: the persona and HH-RLHF pair sets; :mod:`.misalignment`: the protocol (align, then
  flip from Base and from Aligned) and how the chapter reads it; :mod:`.study`: the controlled study
  (behaviours x seeds, two controls; stored as an artefact); :mod:`.pair_study`: Figure 5 on the whole
  model (does the head-only priority gap predict which behaviour the top blocks learn first; stored as an
  artefact); :mod:`.head_only`: the protocol with only
  the head trained (the head-only identity, multi-token responses);
- :mod:`.checks`: the errors and shared helpers.

``ad.wholemodel.<name>`` gives the names below, which chapters, tests and other modules use.
"""

from __future__ import annotations

from .checks import FinetuneError, MisalignError
from .batches import Layout, Pairs, tokenize_pairs
from .policy import LORA_DEFAULTS, make_policy, merged_model, METHODS, module_digest, Policy
from .trunk import trunk_activations, TrunkActivations
from .logps import all_logps, completion_features, completion_logps, prompt_embeddings
from .train import batch_schedule, DPORun, METRICS, pair_metrics, train_dpo, TrainSettings, TRL_METRICS
from .trl import trl_comparison
from .pairsets import hh_sets, PairSets, persona_sets
from .misalignment import (
    Alignment, compare_modes, embeddings, held_out_embeddings, Misalignment, protocol_reading, ProtocolReading,
    run_alignment, run_misalignment,
)
from .pairsets import resampled_sets
from . import pair_study, sections, study
from .head_only import (
    answer_pairs, head_misalignment, head_only_identity, sequence_features, SequenceFeatures, set_features,
    train_head_sequences,
)

__all__ = [
    "Alignment", "DPORun", "FinetuneError", "LORA_DEFAULTS", "Layout", "METHODS", "METRICS", "MisalignError",
    "Misalignment", "PairSets", "Pairs", "Policy", "SequenceFeatures", "TRL_METRICS", "TrainSettings",
    "TrunkActivations", "all_logps", "answer_pairs", "batch_schedule", "compare_modes", "completion_features",
    "completion_logps", "embeddings", "held_out_embeddings", "head_misalignment", "head_only_identity", "hh_sets",
    "make_policy", "merged_model", "module_digest", "pair_metrics", "pair_study", "persona_sets", "prompt_embeddings",
    "protocol_reading", "ProtocolReading", "resampled_sets", "run_alignment", "run_misalignment", "sequence_features", "set_features",
    "sections", "study", "tokenize_pairs", "train_dpo", "train_head_sequences", "trl_comparison",
    "trunk_activations",
]
