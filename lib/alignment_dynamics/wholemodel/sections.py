"""The sections of `book/misalignment.md`, one call each: every function takes the loaded model, the
chapter's resolved configuration ``cfg`` (``ad.config.resolve("misalignment", ...)``) and earlier
results, runs what the section runs and returns a frozen result object whose scalar fields the
chapter glues (field names are the glue keys after ``misalignment_``) and whose arrays its figures
plot. Sentences that state a result are generated here from the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import verdicts
from .checks import MisalignError

__all__ = ["seed_list", "TRL_TOL", "TrlCheck", "trl_check", "TopBlockCheck", "top_block_check",
           "OFFICIAL_MOVED", "official_reading", "align_sentence", "HeadOnlyCheck", "head_only_check",
           "HeldOutGeometry", "held_out_geometry", "HHProtocol", "hh_batch", "hh_protocol", "HHHeadOnly", "hh_head_only",
           "record_claims"]

LN2 = math.log(2)

#: Largest |loss difference| of TRL's trainer and our loop over the comparison's steps that counts as
#: float32 rounding (the tolerance of the test that pins the comparison).
TRL_TOL = 1e-5

#: How far from ln 2 (in loss) a run at the official learning rate must end to count as having moved.
OFFICIAL_MOVED = 0.01


def seed_list(seed: int, n_seeds: int) -> list[int]:
    """The protocol's seeds: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise MisalignError(f"n_seeds must be a positive int, got {n_seeds!r}")
    return [seed + k for k in range(n_seeds)]


# ------------------------------------------------------------------------------------------------
# TRL's trainer against the lean loop
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrlCheck:
    """TRL's ``DPOTrainer`` and our loop on one batch: the largest loss difference, the times per step,
    the trajectories and the generated reading."""

    trl_pairs: int
    trl_steps: int
    trl_gap: float
    trl_s: float
    ours_s: float
    trl_sentence: str
    trl_summary: str  # the summary's clause: whether the loop computes what TRL computes
    table: Any  # DataFrame: step, both losses, both logps/chosen

    @property
    def verdict(self) -> verdicts.Verdict:
        return verdicts.within(self.trl_gap, tol=TRL_TOL, n=self.trl_steps, unit="steps",
                               what="max |loss difference|")


def _trl_agrees(gap: float, steps: int) -> bool:
    return verdicts.within(gap, tol=TRL_TOL, n=steps, unit="steps").verdict == verdicts.AGREES


def _trl_sentence(gap: float, steps: int) -> str:
    if _trl_agrees(gap, steps):
        return f"The two loss trajectories agree to {gap:.1e} (float32 rounding), so the loop computes what TRL computes."
    return (f"The two loss trajectories differ by up to {gap:.1e}, more than float32 rounding ({TRL_TOL:g}): the "
            "loop does not compute what TRL computes here.")


def _trl_summary(gap: float, steps: int) -> str:
    if _trl_agrees(gap, steps):
        return f"computes what TRL's DPOTrainer computes (the same losses to {gap:.0e})"
    return f"does not reproduce TRL's DPOTrainer in this build (the losses differ by up to {gap:.0e})"


def trl_check(lm, cfg, sets) -> TrlCheck:
    """Train the first ``cfg.trl_pairs`` training pairs of ``sets`` as one batch for ``cfg.trl_steps``
    LoRA steps with TRL and with our loop (:func:`~alignment_dynamics.wholemodel.trl_comparison`)."""
    import pandas as pd

    from .. import data
    from .trl import trl_comparison

    n = cfg.trl_pairs
    pp = data.persona_pairs(cfg.behavior, sets.index_train[:n])
    cmp = trl_comparison(lm.model, lm.tokenizer, [p.prompt for p in pp], [p.chosen for p in pp],
                         [p.rejected for p in pp], steps=cfg.trl_steps, lr=cfg.lr, beta=cfg.beta)
    gap = float(np.abs(cmp["trl_loss"] - cmp["ours_loss"]).max())
    table = pd.DataFrame({"step": np.arange(cfg.trl_steps), "TRL loss": cmp["trl_loss"], "our loss": cmp["ours_loss"],
                          "TRL logps/chosen": cmp["trl_logps_chosen"], "our logps/chosen": cmp["ours_logps_chosen"]})
    return TrlCheck(trl_pairs=n, trl_steps=cfg.trl_steps, trl_gap=gap, trl_s=cmp["trl_s_per_step"],
                    ours_s=cmp["ours_s_per_step"], trl_sentence=_trl_sentence(gap, cfg.trl_steps),
                    trl_summary=_trl_summary(gap, cfg.trl_steps), table=table)


# ------------------------------------------------------------------------------------------------
# Top blocks on cached activations
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopBlockCheck:
    """The same small problem trained three ways (top blocks from cached activations, the whole model
    with the same blocks trainable, full fine-tuning): the largest difference of the first two over
    every metric, and the runs by mode."""

    top_blocks: int
    small_n: int
    small_steps: int
    identity_gap: float
    identity_reading: str
    runs: dict  # mode label -> DPORun
    modes: tuple[str, ...]


def top_block_check(lm, cfg, *, require_identity: bool = True) -> TopBlockCheck:
    """Train ``cfg.small_n`` pairs for ``cfg.small_steps`` steps three ways (``cfg.top_blocks`` blocks,
    2 when the profile trains the whole model). The cached and whole-model runs are the same
    computation (the chapter's proposition), so with ``require_identity`` a difference raises
    :class:`MisalignError` (a bug, not a finding)."""
    from .misalignment import compare_modes
    from .pairsets import persona_sets
    from .train import METRICS, TrainSettings

    small = persona_sets(lm.tokenizer, cfg.behavior, n_train=cfg.small_n, n_test=cfg.small_n // 2)
    small_settings = TrainSettings(beta=cfg.beta, lr=cfg.lr, batch_size=max(2, cfg.small_n // 2),
                                   steps=cfg.small_steps, micro_batch=cfg.micro_batch)
    k = cfg.top_blocks or 2
    modes = {f"top {k} blocks, cached": {"method": cfg.method, "top_blocks": k},
             f"top {k} blocks, whole model": {"method": cfg.method, "top_blocks": k, "cached": False},
             "full fine-tuning": {"method": "full"}}
    runs = compare_modes(lm.model, small, small_settings, modes, seed=cfg.seed)
    a, b = (runs[m] for m in list(modes)[:2])
    gap = max(float(np.abs(a.train[m] - b.train[m]).max()) for m in METRICS)
    if require_identity and gap != 0.0:
        raise MisalignError(f"top blocks on cached activations differ from the whole model with a frozen bottom "
                            f"by {gap!r}; they must be one computation")
    reading = "the identity holds bit for bit" if gap == 0.0 else f"the identity fails (largest difference {gap:.1e})"
    return TopBlockCheck(top_blocks=k, small_n=len(small.train), small_steps=cfg.small_steps, identity_gap=gap,
                         identity_reading=reading, runs=runs, modes=tuple(modes))


# ------------------------------------------------------------------------------------------------
# The protocol, live: generated readings
# ------------------------------------------------------------------------------------------------

def align_sentence(reading) -> str:
    """The sentence on whether alignment raised the test accuracy (mean over seeds), from a
    :class:`~alignment_dynamics.wholemodel.ProtocolReading`."""
    a0, a1 = reading.align_acc_start, reading.align_acc_end
    body = (f"the test accuracy goes from {a0:.2f} (the model's own agreement with the behaviour) to {a1:.2f} "
            f"after {reading.steps} steps (mean over {reading.n_seeds} seeds)")
    if a1 > a0:
        return f"Alignment works: {body}."
    return f"Alignment does not raise the test accuracy here: {body}."


def official_reading(loss: float) -> str:
    """Whether the run at the official learning rate moved: its final test loss against ln 2 and
    :data:`OFFICIAL_MOVED`."""
    if abs(loss - LN2) < OFFICIAL_MOVED:
        return "a model this small trained for this few steps at the official step barely moves"
    return "even at the official step the model moves"


# ------------------------------------------------------------------------------------------------
# The head-only identity
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadOnlyCheck:
    """Head-only misalignment on the model's real unembedding (full softmax, float64): the flipped runs
    from the base head and from an aligned head, their largest loss gap and their first accuracies."""

    vocab: int
    head_steps: int
    head_gap: float
    head_acc0_base: float
    head_acc0_aligned: float
    n_train: int
    curves: dict  # base_test_loss, aligned_test_loss, base_test_acc, aligned_test_acc, ...

    @property
    def verdict(self) -> verdicts.Verdict:
        """The identity, an exact check: largest relative loss gap at most 1e-10."""
        return verdicts.exact(self.head_gap, tol=1e-10, n=len(self.curves["base_test_loss"]), unit="evaluated steps")


def head_only_check(lm, cfg, sets, res) -> HeadOnlyCheck:
    """Align the head for ``cfg.head_steps`` SGD steps on the embeddings of ``sets`` (from the first
    seed's layout in ``res``), then run the flipped protocol from Base and Aligned. The loss curves
    are equal by the head-only identity; a difference above 1e-12 raises :class:`MisalignError`."""
    from .head_only import answer_pairs, head_only_identity
    from .misalignment import embeddings

    h0, labels = embeddings(lm.model, sets, layout=res.first["layout"], trunks=res.first["trunks"],
                            top_blocks=cfg.top_blocks)
    n_tr = len(sets.train)
    yes, no = lm.answer_token_ids()
    c_tr, r_tr = answer_pairs(labels[:n_tr], yes, no)
    c_te, r_te = answer_pairs(labels[n_tr:], yes, no)
    head = head_only_identity(h0[:n_tr], c_tr, r_tr, lm.W_U, beta=cfg.beta, lr=cfg.head_lr,
                              align_steps=cfg.head_steps, steps=cfg.head_steps, batch_size=cfg.batch_size,
                              seed=cfg.seed, H_test=h0[n_tr:], chosen_test=c_te, rejected_test=r_te)
    diff = np.abs(np.asarray(head["base_test_loss"]) - np.asarray(head["aligned_test_loss"])).max()
    if diff > 1e-12:
        raise MisalignError(f"the head-only identity fails: the test losses differ by {diff!r}")
    return HeadOnlyCheck(vocab=lm.vocab_size, head_steps=cfg.head_steps, head_gap=head["max_loss_gap"],
                         head_acc0_base=float(head["base_test_acc"][0]),
                         head_acc0_aligned=float(head["aligned_test_acc"][0]), n_train=n_tr, curves=head)


# ------------------------------------------------------------------------------------------------
# Held-out geometry before and after alignment
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldOutGeometry:
    """The held-out statements' properties before and after alignment (first seed), their 2-D maps
    and the labels."""

    before: dict
    after: dict
    maps: tuple
    positive: Any  # bool array: the held-out statements' labels > 0
    method: str

    @property
    def table(self):
        """The main properties before and after, rounded to 3 digits."""
        import pandas as pd

        return pd.DataFrame({"before alignment": self.before, "after alignment": self.after}).loc[
            ["distinguishability", "relative_distinguishability", "concentration", "trace", "mean_norm"]].round(3)


def held_out_geometry(lm, cfg, sets, res) -> HeldOutGeometry:
    """Embed the held-out statements with the base model and with the first seed's aligned model,
    compute their properties (:func:`alignment_dynamics.geometry.properties`) and a 2-D map of each
    (``cfg.map_method``, fixed ``random_state`` 1234)."""
    from .. import geometry
    from .misalignment import held_out_embeddings

    kw = dict(layout=res.first["layout"], trunks=res.first["trunks"], top_blocks=cfg.top_blocks)
    ht0 = held_out_embeddings(lm.model, sets, **kw)
    ht1 = held_out_embeddings(res.first["aligned_model"], sets, **kw)
    p0, p1 = geometry.properties(ht0, sets.labels_test), geometry.properties(ht1, sets.labels_test)
    maps = tuple(geometry.map_2d(h, method=cfg.map_method, random_state=1234) for h in (ht0, ht1))
    return HeldOutGeometry(before=p0, after=p1, maps=maps, positive=np.asarray(sets.labels_test) > 0,
                           method=cfg.map_method)


# ------------------------------------------------------------------------------------------------
# HH-RLHF
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HHProtocol:
    """The protocol on the HH-RLHF short-dialogue subset: the sets, the settings, the runs and their
    reading (:class:`~alignment_dynamics.wholemodel.ProtocolReading`)."""

    hh_n_train: int
    hh_n_test: int
    hh_max_tokens: int
    sets: Any
    settings: Any
    res: Any
    reading: Any


def hh_batch(cfg, n_train: int) -> int:
    """The HH-RLHF runs' batch: ``cfg.batch_size``, at most a quarter of the training dialogues."""
    return min(cfg.batch_size, n_train // 4)


def hh_protocol(lm, cfg, seeds) -> HHProtocol:
    """Align, then flip, on ``cfg.hh_n_train`` / ``cfg.hh_n_test`` HH-RLHF dialogues of at most
    ``cfg.hh_max_tokens`` tokens, over the first ``cfg.hh_seeds`` of ``seeds``; read after
    ``cfg.k`` steps (fewer when the run is shorter)."""
    from .misalignment import protocol_reading, run_misalignment
    from .pairsets import hh_sets
    from .train import TrainSettings

    hh = hh_sets(lm.tokenizer, n_train=cfg.hh_n_train, n_test=cfg.hh_n_test, max_tokens=cfg.hh_max_tokens)
    settings = TrainSettings(beta=cfg.beta, lr=cfg.lr, batch_size=hh_batch(cfg, len(hh.train)), epochs=cfg.epochs,
                             micro_batch=cfg.micro_batch)
    res = run_misalignment(lm.model, hh, seeds=seeds[:cfg.hh_seeds], method=cfg.method, top_blocks=cfg.top_blocks,
                           align=settings, flip=settings, micro_batch=cfg.micro_batch)
    reading = protocol_reading(res, k=min(cfg.k, len(res.base[0].schedule)))
    return HHProtocol(hh_n_train=len(hh.train), hh_n_test=len(hh.test), hh_max_tokens=cfg.hh_max_tokens, sets=hh,
                      settings=settings, res=res, reading=reading)


@dataclass(frozen=True)
class HHHeadOnly:
    """Head-only misalignment on HH-RLHF through the fused op: the runs and their largest training-loss gap."""

    hh_head_gap: float
    runs: dict  # {"align", "base", "aligned"} as head_misalignment returns them


def hh_head_only(lm, cfg, hh: HHProtocol) -> HHHeadOnly:
    """Train only the head on the HH-RLHF features (Adam, ``cfg.hh_head_lr``, ``cfg.hh_head_steps`` steps),
    from Base and from Aligned (:func:`~alignment_dynamics.wholemodel.head_misalignment`)."""
    from .head_only import head_misalignment, set_features

    tr, te = set_features(lm.model, hh.sets, layout=hh.res.first["layout"], trunks=hh.res.first["trunks"],
                          top_blocks=cfg.top_blocks)
    runs = head_misalignment(tr, te, lm.W_U, beta=cfg.beta, lr=cfg.hh_head_lr, steps=cfg.hh_head_steps,
                             batch_size=hh_batch(cfg, len(hh.sets.train)), seed=cfg.seed,
                             eval_every=cfg.hh_head_eval_every)
    gap = float(np.abs(runs["base"]["train"]["loss"] - runs["aligned"]["train"]["loss"]).max())
    return HHHeadOnly(hh_head_gap=gap, runs=runs)


# ------------------------------------------------------------------------------------------------
# Claims
# ------------------------------------------------------------------------------------------------

def record_claims(study, head: HeadOnlyCheck, hh: HHProtocol, labels: dict[str, str]) -> list[dict]:
    """Record the chapter's four claims (:func:`alignment_dynamics.book.claim`): the study's speed and
    distinguishability comparisons, the head-only identity and the HH-RLHF speed. Returns the rows."""
    from .. import book

    r = hh.reading
    return [
        book.claim("Alignment makes misalignment faster: flipped DPO from the aligned model moves faster than the same "
                   "training from the base model (controlled study: held-out margin per step, aligned minus base)",
                   study.claim_text("aligned", "base", "speed_k", labels), study.verdict()),
        book.claim("Alignment raises preference distinguishability (the embeddings move), on held-out statements",
                   study.claim_text("aligned", "base", "dist_start", labels), study.verdict(measure="dist_start"),
                   source="paper summary; official code (UMAP before/after DPO)"),
        book.claim("Training only the head leaves the flipped loss curve unchanged (single-token answers)",
                   f"largest loss difference Base vs Aligned: {head.head_gap:.1e}", head.verdict, source="derived"),
        book.claim("On HH-RLHF too, misalignment from the aligned model is faster",
                   f"held-out margin per step after {r.k} steps: aligned {r.speed_k_aligned:.2g} vs base "
                   f"{r.speed_k_base:.2g}, {r.n_seeds} seeds (batch order only), {hh.hh_n_train} short "
                   "dialogues", r.speed, source="official code (HH-RLHF misalignment plots)"),
    ]
