"""Every deviation of this book from the official protocol, with this build's values read from the
chapter registry (so the table cannot drift from what ran).
"""

from __future__ import annotations

from typing import Any

from . import config
from .book import count_phrase
from .wholemodel import study

__all__ = ["deviations", "deviations_table"]


def _v(slug: str, name: str, profile: str) -> Any:
    spec = config.chapter(slug)
    for p in spec.params:
        if p.name == name:
            return p.values[profile]
    return spec.settings[name][profile]


def _field(name: str) -> Any:
    """A default of the controlled misalignment study's settings."""
    return study.StudySettings.__dataclass_fields__[name].default


def _all(v: Any) -> str:
    return "all" if v is None else str(v)


def deviations(profile: str) -> list[dict[str, str]]:
    """Rows ``{"what", "official", "this book", "where"}`` for ``profile`` ("smoke", "fast", "full")."""
    if profile not in ("smoke", "fast", "full"):
        raise config.ConfigError(f"profile must be 'smoke', 'fast' or 'full', got {profile!r}")
    p = profile
    rows = [
        ("model", "Llama-2-7B (and Mistral-7B), 16-bit weights",
         "SmolLM2-135M-Instruct (Q4_1 GGUF) and Gemma-3-270M base (Q4_K_M GGUF), 4-bit weights dequantised "
         "to floating point at load", "all chapters"),
        ("statements per behaviour (sweeps)", "all (about 900 training, 100 test)",
         f"{_all(_v('distinguishability', 'per_class', p))} per class, a nested stratified sample", "distinguishability, training_dynamics, prioritization"),
        ("statements per behaviour (figures)", "all",
         f"{_all(_v('training_dynamics', 'per_class', p))} per class", "training_dynamics, prioritization"),
        ("last-layer learning rate", "SGD, 0.1",
         "matched to the official run's effective step ηβ²E‖h‖² (see training_dynamics)", "training_dynamics, prioritization"),
        ("last-layer batch (sweeps)", "128",
         f"{_v('training_dynamics', 'sweep_batch', p)} (single behaviours), {_v('prioritization', 'pair_batch', p)} "
         f"(pairs), {_v('prioritization', 'triple_batch', p)} (triples); fewer training pairs than 128", "training_dynamics, prioritization"),
        ("last-layer seeds", "one run per behaviour",
         f"{_v('training_dynamics', 'seeds', p)} (single), {_v('prioritization', 'seeds', p)} (pairs); cross-fitted "
         f"tests with {_v('training_dynamics', 'crossfit_folds', p)} folds", "training_dynamics, prioritization"),
        ("whole-model training", "LoRA (r 8, α 32 on q_proj/v_proj) on every layer",
         f"method {_v('misalignment', 'METHOD', p)!r} on the top {_all(_v('misalignment', 'TOP_BLOCKS', p))} "
         "decoder blocks over cached activations of the frozen rest", "misalignment"),
        ("whole-model optimiser", "AdamW, learning rate 1e-5, batch 128, 1 epoch",
         f"AdamW, learning rate {_v('misalignment', 'LR', p):g}, batch {_v('misalignment', 'BATCH_SIZE', p)}, "
         f"{count_phrase(_v('misalignment', 'EPOCHS', p), 'epoch')}", "misalignment"),
        ("misalignment data", "all pairs of one behaviour; one run",
         f"{_all(_v('misalignment', 'N_TRAIN', p))} training and {_all(_v('misalignment', 'N_TEST', p))} test pairs, "
         f"{count_phrase(_v('misalignment', 'N_SEEDS', p), 'seed')} over one fixed split", "misalignment"),
        ("HH-RLHF", "the harmless-base data, whole model",
         f"{_v('misalignment', 'hh_n_train', p)} training and {_v('misalignment', 'hh_n_test', p)} test dialogues "
         f"(the first that fit in {_v('misalignment', 'hh_max_tokens', p)} tokens), "
         f"{count_phrase(_v('misalignment', 'hh_seeds', p), 'seed')} varying the batch order", "misalignment"),
        ("misalignment verdict", "one behaviour, one run, Base against Aligned",
         f"a controlled study: the official code's Behaviours 1-5 × {count_phrase(len(study.DEFAULT_SEEDS), 'seed')} that resample "
         f"{_field('n_train')} training and {_field('n_test')} held-out statements, on both models, with two control starts (aligned on another behaviour; trained "
         "on shuffled labels), read by start-independent measures (held-out margin per step, loss); computed "
         "once with `python -m alignment_dynamics.wholemodel.study` and committed (artifacts/misalign-study)"
         + (" (the smoke profile runs a tiny one in the build)" if p == "smoke" else ""), "misalignment"),
        ("Figure 5, whole model", "(the official code trains the last layer only)",
         "our extension: the top blocks trained with DPO on two behaviours at once, Figure 5's two pairs and "
         "random pairs of other behaviours; the head-only gap from predictor statements, the outcome on held-out "
         "ones; computed once with `python -m alignment_dynamics.wholemodel.pair_study` and committed "
         "(artifacts/whole-model-pairs)" + (" (the smoke profile runs a tiny one in the build)" if p == "smoke" else ""),
         "prioritization"),
        ("full-data reference", "(the official runs use all statements)",
         "every statement of every behaviour, batch 128, 100 steps, computed once per model with "
         "`python -m alignment_dynamics.fullref` and committed (artifacts/fullref, its manifest names the "
         "machine and dtype); the sweeps compare their samples with it", "distinguishability, training_dynamics"),
        ("features", "hidden_states[-1] with the final RMSNorm applied a second time",
         "the features behind the logits (one normalisation; the double form is an option)", "all Part II chapters"),
    ]
    return [dict(zip(("what", "official", "this book", "where"), r)) for r in rows]


def deviations_table(profile: str):
    """:func:`deviations` as the table the reproducibility page shows (no index column)."""
    import pandas as pd

    return pd.DataFrame(deviations(profile)).style.hide(axis="index")
