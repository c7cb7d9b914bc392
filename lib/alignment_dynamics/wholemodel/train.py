"""Training: whole-model DPO against a frozen reference with TRL's ``sigmoid`` loss and metric names
(:func:`train_dpo`, :class:`TrainSettings`, :class:`DPORun`), and its run cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import cache as _cache
from .batches import Layout, Pairs
from .checks import FinetuneError, maybe_progress, transformers_version
from .logps import all_logps, chosen_rejected, completion_logps
from .policy import module_digest, Policy, seeded
from .trunk import trunk_activations, TrunkActivations

TRL_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected")
METRICS = TRL_METRICS + ("outputs/accuracies",)


# ---------------------------------------------------------------------------------------------------
# Loss and metrics (TRL names)
# ---------------------------------------------------------------------------------------------------

def pair_metrics(chosen, rejected, ref_chosen, ref_rejected, beta: float) -> dict[str, float]:
    """TRL's DPO metrics and the paper's accuracy as batch means (Python floats), from summed log-probs.

    A thin wrapper of ``alignment_dynamics.dpo.reference.dpo_metrics``: ``rewards/accuracies`` is TRL's
    (0 at step 0: ties); ``outputs/accuracies`` is the official code's (the policy gives the chosen
    completion a higher log-probability).
    """
    from ..dpo import reference

    m = reference.dpo_metrics(chosen, rejected, ref_chosen, ref_rejected, beta=beta)
    return {k: float(m[k]) for k in METRICS}


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSettings:
    """DPO training settings; the defaults are the official whole-model ones (TRL 0.7.3, `paper.md` §6).

    AdamW (``adamw_torch``: betas 0.9/0.999, eps 1e-8, no weight decay), constant learning rate 1e-5
    with no warm-up, β 0.01, batch 128, one epoch, and the Hugging Face trainer's default gradient
    clipping at norm 1 (``max_grad_norm``; None turns it off). ``steps`` (if set) replaces ``epochs``: the data
    are reshuffled at each epoch boundary. The last, partial batch of an epoch is kept (as the HF
    trainer does by default).
    """

    beta: float = 0.01
    lr: float = 1e-5
    batch_size: int = 128
    epochs: int = 1
    steps: int | None = None
    micro_batch: int = 16
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    max_grad_norm: float | None = 1.0

    def __post_init__(self):
        if not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise FinetuneError(f"beta must be > 0, got {self.beta!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise FinetuneError(f"lr must be > 0, got {self.lr!r}")
        for name in ("batch_size", "epochs", "micro_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FinetuneError(f"{name} must be a positive int, got {v!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise FinetuneError(f"steps must be None or a positive int, got {self.steps!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise FinetuneError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise FinetuneError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise FinetuneError(f"max_grad_norm must be None or > 0, got {self.max_grad_norm!r}")


def batch_schedule(n: int, settings: TrainSettings, seed: int) -> list[list[int]]:
    """The pair indices of every training step: a fresh permutation per epoch, batches in order.
    """
    import torch

    if n < 1:
        raise FinetuneError("no training pairs")
    g = torch.Generator().manual_seed(int(seed))
    steps: list[list[int]] = []
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=g).tolist()
        for s in range(0, n, settings.batch_size):
            steps.append(perm[s:s + settings.batch_size])
            if settings.steps is not None and len(steps) == settings.steps:
                return steps
        epoch += 1
        if settings.steps is None and epoch == settings.epochs:
            return steps


@dataclass
class DPORun:
    """The result of :func:`train_dpo`.

    ``train[name]`` holds the batch metrics at each step (computed before the update, in training
    mode, as TRL logs them; length T), and ``train["grad_norm"]`` the total norm of the batch gradient
    before clipping. ``evals[set][name]`` holds the metrics of each evaluation set
    at every step t = 0..T (before the update at t; length T + 1). ``reference[set]`` holds the
    reference log-probs [n, 2] of completions a and b.
    """

    policy: Policy
    settings: TrainSettings
    train: dict[str, np.ndarray]
    evals: dict[str, dict[str, np.ndarray]]
    reference: dict[str, Any]
    schedule: list[list[int]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.schedule)


def train_dpo(policy: Policy, train: Pairs, settings: TrainSettings = TrainSettings(), *,
              eval_sets: Mapping[str, Pairs] | None = None, seed: int | None = None,
              trunks: Mapping[str, TrunkActivations] | None = None, layout: Layout | None = None,
              progress: bool = True, cache: bool = False) -> DPORun:
    """Train ``policy`` with DPO on ``train``; the reference is the policy as it starts.

    The reference log-probs of every pair (training and evaluation sets) are computed once, before the
    first step, by :func:`completion_logps` on the same module and with the same shapes as the
    policy's. The loss is TRL's ``sigmoid`` DPO loss (``alignment_dynamics.dpo.reference.dpo_loss``),
    averaged over the batch (gradient accumulation over micro-batches). Evaluation sets are scored at
    every step, before the update, and after the last one. ``seed`` (default: the policy's) fixes the
    batch order and the LoRA dropout masks.

    With ``cache=True`` the run is stored in the user cache (histories as JSON, the trained weights as
    safetensors), addressed by the SHA-256 of the starting weights, the pairs, the settings, the seed,
    the library versions and this module's source; a hit loads the trained weights into ``policy``.
    """
    import torch

    eval_sets = dict(eval_sets or {})
    if "train" in eval_sets:
        raise FinetuneError("'train' is reserved for the training batches; name the evaluation set otherwise")
    if len(train) == 0:
        raise FinetuneError("no training pairs")
    seed = policy.seed if seed is None else int(seed)
    layout = layout or Layout.for_pairs(train, *eval_sets.values(), micro_batch=settings.micro_batch)
    sets = {"train": train, **eval_sets}
    key = _run_key(policy, sets, settings, seed, layout) if cache else None
    if key is not None:
        hit = _load_run(key, policy, settings)
        if hit is not None:
            return hit
    trunks = dict(trunks or {})
    if policy.cached:
        for name, pairs in sets.items():
            t = trunks.get(name)
            if t is None or not t.matches(policy, pairs, layout):
                trunks[name] = trunk_activations(policy, pairs, layout, progress=progress)
    ref = {name: all_logps(policy, pairs, layout, trunks.get(name)) for name, pairs in sets.items()}
    params = policy.trainable_parameters()
    if not params:
        raise FinetuneError("the policy has no trainable parameters")
    if settings.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = batch_schedule(len(train), settings, seed)
    from ..dpo.reference import dpo_loss

    hist_train: dict[str, list[float]] = {k: [] for k in METRICS + ("grad_norm",)}
    hist_eval: dict[str, dict[str, list[float]]] = {s: {k: [] for k in METRICS} for s in eval_sets}

    def evaluate():
        for name, pairs in eval_sets.items():
            lp = all_logps(policy, pairs, layout, trunks.get(name))
            c, r = chosen_rejected(lp, pairs, range(len(pairs)))
            rc, rr = chosen_rejected(ref[name], pairs, range(len(pairs)))
            for k, v in pair_metrics(c, r, rc, rr, settings.beta).items():
                hist_eval[name][k].append(v)

    module = policy.module
    module.train()
    with seeded(seed, module):
        for step, batch in enumerate(maybe_progress(schedule, progress, "DPO steps")):
            evaluate()
            opt.zero_grad(set_to_none=True)
            B = len(batch)
            cs, rs = [], []
            for s in range(0, B, layout.micro_batch):
                idx = batch[s:s + layout.micro_batch]
                lp = completion_logps(policy, train, idx, layout, trunks.get("train"))
                c, r = chosen_rejected(lp, train, idx)
                rc, rr = chosen_rejected(ref["train"][idx].to(lp.device, lp.dtype), train, idx)
                _, per_pair, _, _ = dpo_loss(c, r, rc, rr, settings.beta)
                (per_pair.sum() / B).backward()
                cs.append(c.detach().double().cpu())
                rs.append(r.detach().double().cpu())
            c, r = torch.cat(cs), torch.cat(rs)
            rc, rr = chosen_rejected(ref["train"][batch], train, batch)
            for k, v in pair_metrics(c, r, rc, rr, settings.beta).items():
                hist_train[k].append(v)
            # the total gradient norm before clipping (an infinite max_norm only measures it)
            clip = settings.max_grad_norm if settings.max_grad_norm is not None else float("inf")
            hist_train["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
            opt.step()
        evaluate()
    module.train()
    run = DPORun(policy=policy, settings=settings,
                 train={k: np.asarray(v) for k, v in hist_train.items()},
                 evals={s: {k: np.asarray(v) for k, v in d.items()} for s, d in hist_eval.items()},
                 reference={k: v.numpy() for k, v in ref.items()}, schedule=schedule,
                 info={"layout": dict(layout.__dict__), "seed": seed, "method": policy.method, "split": policy.split,
                       "cached": policy.cached, "n_trainable": policy.n_trainable()})
    if key is not None:
        _store_run(key, run)
    return run


# ---------------------------------------------------------------------------------------------------
# The run cache
# ---------------------------------------------------------------------------------------------------

#: The modules of this package whose code a training run executes (``finetune.py`` before the split):
#: ``train`` and every module it imports from the package, directly or not (tests/test_wholemodel.py checks).
RUN_SOURCES = ("batches", "checks", "logps", "policy", "train", "trunk")

# The source this process runs, read once at import: a run cached by other code is never returned.
_SOURCE_DIGEST = _cache.digest("wholemodel-run-sources",
                               [[m, _cache.file_sha256(Path(__file__).with_name(f"{m}.py"))] for m in RUN_SOURCES])


def _source_digest() -> str:
    return _SOURCE_DIGEST


def _run_key(policy: Policy, sets: Mapping[str, Pairs], settings: TrainSettings, seed: int, layout: Layout) -> str:
    import torch

    from .. import cache as adcache

    return adcache.digest("dpo-run-v1", module_digest(policy.module), policy.method, policy.split, policy.lora,
                          {k: [v.rows(), v.chosen_first] for k, v in sorted(sets.items())},
                          settings.__dict__, int(seed), layout.__dict__, torch.__version__, transformers_version(),
                          _source_digest())


def _run_dir(key: str):
    from .. import cache as adcache

    return adcache.user_cache_dir("finetune", "runs") / key


def _store_run(key: str, run: DPORun) -> None:
    import json

    from safetensors.torch import save_file

    from .. import cache as adcache

    trained = {n: p.detach().cpu().contiguous() for n, p in run.policy.module.named_parameters() if p.requires_grad}
    meta = {"train": {k: v.tolist() for k, v in run.train.items()},
            "evals": {s: {k: v.tolist() for k, v in d.items()} for s, d in run.evals.items()},
            "reference": {k: np.asarray(v).tolist() for k, v in run.reference.items()},
            "schedule": run.schedule, "info": run.info}
    with adcache.atomic_path(_run_dir(key)) as tmp:
        tmp.mkdir()
        (tmp / "run.json").write_text(json.dumps(meta))
        save_file(trained, str(tmp / "trained.safetensors"))


def _load_run(key: str, policy: Policy, settings: TrainSettings) -> DPORun | None:
    import json

    import torch
    from safetensors.torch import load_file

    folder = _run_dir(key)
    if not (folder / "run.json").exists() or not (folder / "trained.safetensors").exists():
        return None
    meta = json.loads((folder / "run.json").read_text())
    trained = load_file(str(folder / "trained.safetensors"))
    params = dict(policy.module.named_parameters())
    if set(trained) != {n for n, p in params.items() if p.requires_grad}:
        return None
    with torch.no_grad():
        for n, t in trained.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    return DPORun(policy=policy, settings=settings,
                  train={k: np.asarray(v) for k, v in meta["train"].items()},
                  evals={s: {k: np.asarray(v) for k, v in d.items()} for s, d in meta["evals"].items()},
                  reference={k: np.asarray(v) for k, v in meta["reference"].items()},
                  schedule=meta["schedule"], info={**meta["info"], "from_cache": True})
