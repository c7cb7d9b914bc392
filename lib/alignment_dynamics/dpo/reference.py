"""The semantics of last-layer DPO: log-probs, losses, metrics and the full-vocabulary reference trainer.

Everything here materialises the N x V logits. That is what the official code does, and it is the
ground truth (in float64) that the fast paths (:mod:`.two_row`, :mod:`.fused`) must reproduce.

* :func:`logprobs_naive` -- logits -> log-softmax -> gather.
* :func:`dpo_loss` -- the DPO losses ``sigmoid`` (with cDPO label smoothing), ``robust``, ``hinge`` and
  ``ipo`` as pure functions of log-probs, with the semantics of TRL's ``DPOTrainer`` and of the original
  DPO code.
* :func:`precompute_reference` -- the reference model's quantities, through the same function as the
  policy, plus the cached log-sum-exp of the non-answer tokens that makes every metric of the exact
  trainer cost O(d) per example.
* :func:`dpo_metrics` -- TRL's metric names plus the official code's ``outputs/accuracies``.
* :func:`train_reference` -- plain (or momentum / Adam) gradient descent on the full head with autograd:
  the float64 oracle of :func:`alignment_dynamics.dpo.train_two_row`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..validate import finite_tensor, positive
from .sampling import sample_batches

LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")
OPTIMIZERS = ("sgd", "adam")
IGNORE_INDEX = -100
REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------------
# Validation helpers (shared by the modules of this package)
# ---------------------------------------------------------------------------------------------------

def check_matrix(name: str, x: Any, *, ndim: int = 2) -> torch.Tensor:
    """``x`` if it is a finite, non-empty, floating-point ``ndim``-D tensor; otherwise a clear error naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return finite_tensor(name, x)  # no NaN / inf, not empty


def check_tokens(name: str, t: Any, n: int, vocab: int, *, allow_ignore: bool = False) -> torch.Tensor:
    """``t`` as int64 token ids: ``n`` rows, each in ``[0, vocab)`` (or ``IGNORE_INDEX`` with ``allow_ignore``);
    otherwise a clear error naming ``name``."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{name} must hold integer token ids, got {t.dtype}")
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but the features have {n}")
    t = t.long()
    bad = (t < 0) | (t >= vocab)
    if allow_ignore:
        bad &= t != IGNORE_INDEX
    if bool(bad.any()):
        raise ValueError(f"{name}: token ids must lie in [0, {vocab}){' or equal ' + str(IGNORE_INDEX) if allow_ignore else ''}; "
                         f"got {t[bad][:5].tolist()}")
    return t


def check_beta(beta: Any) -> float:
    """``beta`` as a float, or a clear error when it is not a positive finite number."""
    return positive("beta", beta)


def check_loss_type(loss_type: Any, label_smoothing: Any) -> tuple[str, float]:
    """``(loss_type, label_smoothing)`` validated: a known loss, and smoothing in [0, 0.5) where it applies."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid loss types: {list(LOSS_TYPES)}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    if label_smoothing and loss_type not in ("sigmoid", "robust"):
        raise ValueError(f"label_smoothing applies to the 'sigmoid' and 'robust' losses only, not {loss_type!r}")
    return loss_type, float(label_smoothing)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 inputs accumulate in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# ---------------------------------------------------------------------------------------------------
# Log-probs and losses
# ---------------------------------------------------------------------------------------------------

def logprobs_naive(H: torch.Tensor, W: torch.Tensor, targets: torch.Tensor, *,
                   ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected-token log-probs by materialising the logits: ``(logp[N, K], lse[N])``.

    ``H`` is ``[N, d]`` (features), ``W`` is ``[V, d]`` (the head), ``targets`` is ``[N, K]`` (or
    ``[N]``) token ids; ``ignore_index`` entries give log-prob 0 and no gradient. The logits
    ``H @ W.T`` are computed in float64 when an input is float64 and in float32 otherwise (bf16 inputs
    are upcast), then ``logp = logits[target] - logsumexp(logits)``. This is the ground truth of every
    test: run it in float64.
    """
    check_matrix("H", H)
    check_matrix("W", W)
    if H.shape[1] != W.shape[1]:
        raise ValueError(f"H has d={H.shape[1]} but W has d={W.shape[1]} (W is [V, d])")
    squeeze = targets.dim() == 1
    t2 = targets.view(-1, 1) if squeeze else targets
    if t2.dim() != 2:
        raise ValueError(f"targets must be [N] or [N, K], got shape {tuple(targets.shape)}")
    t2 = check_tokens("targets", t2, H.shape[0], W.shape[0], allow_ignore=True)
    dt = compute_dtype(H, W)
    logits = H.to(dt) @ W.to(dt).T
    lse = torch.logsumexp(logits, dim=-1)
    ignore = t2 == ignore_index
    logp = logits.gather(1, t2.masked_fill(ignore, 0)) - lse[:, None]
    logp = logp.masked_fill(ignore, 0.0)
    return (logp.view(-1) if squeeze else logp), lse


def loss_from_delta(delta: torch.Tensor, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair DPO loss as a function of the log-ratio difference Δ (element-wise).

    Δ = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)], and with ε = ``label_smoothing``:

    * ``sigmoid``: −(1−ε) log σ(βΔ) − ε log σ(−βΔ) (DPO; ε > 0 is conservative DPO);
    * ``robust``: [−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1 − 2ε) (TRL's robust DPO);
    * ``hinge``: max(0, 1 − βΔ) (SLiC);
    * ``ipo``: (Δ − 1/(2β))². TRL divides each sequence's log-ratio by its length first; for the
      single-token answers of the persona data the two agree. For multi-token IPO in TRL's convention,
      pass length-averaged log-probs.
    """
    eps = label_smoothing
    z = beta * delta
    if loss_type == "sigmoid":
        out = -F.logsigmoid(z)
        return out if eps == 0 else (1 - eps) * out - eps * F.logsigmoid(-z)
    if loss_type == "robust":
        return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    if loss_type == "hinge":
        return torch.relu(1 - z)
    if loss_type == "ipo":
        return (delta - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown loss_type {loss_type!r}; valid loss types: {list(LOSS_TYPES)}")


def loss_derivative(delta: torch.Tensor, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """dℓ/dΔ of :func:`loss_from_delta`, in closed form (what the exact trainer steps with)."""
    eps = label_smoothing
    z = beta * delta
    if loss_type == "sigmoid":
        return -beta * ((1 - eps) * torch.sigmoid(-z) - eps * torch.sigmoid(z))
    if loss_type == "robust":
        return -beta * ((1 - eps) * torch.sigmoid(-z) + eps * torch.sigmoid(z)) / (1 - 2 * eps)
    if loss_type == "hinge":
        return torch.where(1 - z > 0, -beta * torch.ones_like(delta), torch.zeros_like(delta))
    if loss_type == "ipo":
        return 2 * (delta - 1 / (2 * beta))
    raise ValueError(f"unknown loss_type {loss_type!r}; valid loss types: {list(LOSS_TYPES)}")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss from sequence log-probs: ``(loss, per_pair, chosen_rewards, rejected_rewards)``.

    A pure function with the semantics of TRL's ``DPOTrainer`` (and of the original DPO code):
    Δ = (π_w − ref_w) − (π_l − ref_l), the per-pair loss is :func:`loss_from_delta`, and the rewards are
    β·(log π − log π_ref), detached. ``reduction`` is ``"mean"`` (TRL), ``"sum"`` or ``"none"``.
    """
    beta = check_beta(beta)
    loss_type, label_smoothing = check_loss_type(loss_type, label_smoothing)
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps,
                                       reference_chosen_logps, reference_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-prob tensors must have one shape, got {sorted(shapes)}")
    for name, t in (("policy_chosen_logps", policy_chosen_logps), ("policy_rejected_logps", policy_rejected_logps),
                    ("reference_chosen_logps", reference_chosen_logps),
                    ("reference_rejected_logps", reference_rejected_logps)):
        finite_tensor(name, t)
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    per_pair = loss_from_delta(chosen_logratios - rejected_logratios, beta, loss_type, label_smoothing)
    loss = per_pair.mean() if reduction == "mean" else per_pair.sum() if reduction == "sum" else per_pair
    return loss, per_pair, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


# ---------------------------------------------------------------------------------------------------
# Reference quantities
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """What the reference model (the initial head W_0) gives each single-token pair; all ``[n]``.

    ``chosen_logps``/``rejected_logps`` are log π_0 of the two answers, ``lse`` the log-sum-exp of all
    logits, ``chosen_logits``/``rejected_logits`` the two answer logits, ``rest_lse`` the log-sum-exp of
    every *other* token (R_i of ``dpo-kernels.md`` §1) and ``mean_logit`` the mean logit over the
    vocabulary (TRL's ``logits/*``). Index it like a tensor (``ref[idx]``); :meth:`swapped` exchanges
    chosen and rejected (for flipped labels).
    """

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    lse: torch.Tensor
    chosen_logits: torch.Tensor
    rejected_logits: torch.Tensor
    rest_lse: torch.Tensor
    mean_logit: torch.Tensor

    def __len__(self) -> int:
        return self.lse.shape[0]

    def __getitem__(self, idx) -> "Reference":
        return Reference(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def swapped(self) -> "Reference":
        return replace(self, chosen_logps=self.rejected_logps, rejected_logps=self.chosen_logps,
                       chosen_logits=self.rejected_logits, rejected_logits=self.chosen_logits)

    def to(self, dtype: torch.dtype) -> "Reference":
        return Reference(**{f.name: getattr(self, f.name).to(dtype) for f in fields(self)})


def _chunk_rows(n_cols: int, itemsize: int, budget_bytes: int = 64 << 20) -> int:
    return max(1, budget_bytes // max(1, n_cols * itemsize))


def precompute_reference(H: torch.Tensor, W0: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, *,
                         logprobs=None, chunk_rows: int | None = None) -> Reference:
    """The reference model's log-probs and cached log-sum-exps for single-token pairs on contexts ``H``.

    ``H`` is ``[n, d]``, ``W0`` the initial head ``[V, d]``, ``chosen``/``rejected`` the answer token ids
    ``[n]``. The log-probs come from ``logprobs(H_chunk, W0, targets[n, 2])`` (default
    :func:`logprobs_naive`): pass the policy path's own function so that policy and reference agree
    bit for bit at t = 0. Rows are processed in chunks (``chunk_rows``; default: 64 MB of logits).
    """
    check_matrix("H", H)
    check_matrix("W0", W0)
    n, V = H.shape[0], W0.shape[0]
    if H.shape[1] != W0.shape[1]:
        raise ValueError(f"H has d={H.shape[1]} but W0 has d={W0.shape[1]}")
    chosen = check_tokens("chosen", chosen, n, V)
    rejected = check_tokens("rejected", rejected, n, V)
    logprobs = logprobs_naive if logprobs is None else logprobs
    dt = compute_dtype(H, W0)
    step = chunk_rows or _chunk_rows(V, torch.finfo(dt).bits // 8)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("cl", "rl", "lse", "cz", "rz", "rest", "mean")}
    W0d = W0.to(dt)
    with torch.no_grad():
        for a in range(0, n, step):
            b = min(n, a + step)
            t = torch.stack([chosen[a:b], rejected[a:b]], dim=1)
            logp, lse = logprobs(H[a:b], W0, t)
            logits = H[a:b].to(dt) @ W0d.T
            parts["cl"].append(logp[:, 0].to(dt))
            parts["rl"].append(logp[:, 1].to(dt))
            parts["lse"].append(lse.to(dt))
            parts["cz"].append(logits.gather(1, t[:, :1]).squeeze(1))
            parts["rz"].append(logits.gather(1, t[:, 1:]).squeeze(1))
            parts["mean"].append(logits.mean(dim=1))
            logits.scatter_(1, t, float("-inf"))
            parts["rest"].append(torch.logsumexp(logits, dim=1))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return Reference(chosen_logps=cat["cl"], rejected_logps=cat["rl"], lse=cat["lse"], chosen_logits=cat["cz"],
                     rejected_logits=cat["rz"], rest_lse=cat["rest"], mean_logit=cat["mean"])


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------

METRIC_NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "outputs/accuracies")


def group_mean(x: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Means of ``x[..., P]`` over the pairs of each group: ``[..., n_groups]`` (NaN for an empty group).

    ``group`` holds a group id per pair: ``[P]``, or the shape of ``x`` (ids that differ per row, e.g.
    per training batch).
    """
    group = torch.as_tensor(group).long()
    if group.shape != x.shape[-1:] and group.shape != x.shape:
        raise ValueError(f"behavior_id must be [P] with P = {x.shape[-1]} (or x's shape {tuple(x.shape)}), "
                         f"got shape {tuple(group.shape)}")
    if n_groups < 1 or bool((group < 0).any()) or bool((group >= n_groups).any()):
        raise ValueError(f"behavior ids must lie in [0, {n_groups}), got range "
                         f"[{int(group.min())}, {int(group.max())}]")
    onehot = F.one_hot(group, n_groups).to(x.dtype)  # [..., P, n_groups]
    counts = onehot.sum(-2)
    out = (x.unsqueeze(-1) * onehot).sum(-2) / counts
    return out.masked_fill(counts == 0, float("nan"))


def metrics_from_parts(delta: torch.Tensor, *, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                       chosen_logratios: torch.Tensor | None = None, rejected_logratios: torch.Tensor | None = None,
                       chosen_logps: torch.Tensor | None = None, rejected_logps: torch.Tensor | None = None,
                       outputs_correct: torch.Tensor | None = None,
                       mean_logits_chosen: torch.Tensor | None = None, mean_logits_rejected: torch.Tensor | None = None,
                       behavior_id: torch.Tensor | None = None, n_behaviors: int | None = None) -> dict[str, torch.Tensor]:
    """The metric dictionary from per-pair parts (pairs on the last dimension); parts left ``None`` are omitted.

    ``delta`` is Δ per pair; ``outputs_correct`` is 1{log π(y_w) > log π(y_l)} per pair (else it is
    derived from the log-probs when given). Means over the last dimension, or per-behaviour means
    ``[..., n_behaviors]`` when ``behavior_id`` is given.
    """
    per: dict[str, torch.Tensor] = {
        "loss": loss_from_delta(delta, beta, loss_type, label_smoothing),
        "rewards/margins": beta * delta,
        "rewards/accuracies": (delta > 0).to(delta.dtype),
    }
    if chosen_logratios is not None:
        per["rewards/chosen"] = beta * chosen_logratios
    if rejected_logratios is not None:
        per["rewards/rejected"] = beta * rejected_logratios
    if chosen_logps is not None:
        per["logps/chosen"] = chosen_logps
    if rejected_logps is not None:
        per["logps/rejected"] = rejected_logps
    if mean_logits_chosen is not None:
        per["logits/chosen"] = mean_logits_chosen.to(delta.dtype).expand_as(delta)
    if mean_logits_rejected is not None:
        per["logits/rejected"] = mean_logits_rejected.to(delta.dtype).expand_as(delta)
    if outputs_correct is None and chosen_logps is not None and rejected_logps is not None:
        outputs_correct = chosen_logps > rejected_logps
    if outputs_correct is not None:
        per["outputs/accuracies"] = outputs_correct.to(delta.dtype)
    if behavior_id is None:
        return {k: v.mean(dim=-1) for k, v in per.items()}
    if n_behaviors is None:
        n_behaviors = int(behavior_id.max()) + 1
    return {k: group_mean(v, behavior_id, n_behaviors) for k, v in per.items()}


def dpo_metrics(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor, *,
                beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                mean_logits_chosen: torch.Tensor | None = None, mean_logits_rejected: torch.Tensor | None = None,
                behavior_id: torch.Tensor | None = None, n_behaviors: int | None = None) -> dict[str, torch.Tensor]:
    """TRL's DPO metrics (``loss``, ``rewards/*``, ``logps/*``, ``logits/*``) and ``outputs/accuracies``.

    All inputs are per pair (pairs on the last dimension). ``rewards/accuracies`` is TRL's
    1{β·logratio_w > β·logratio_l} (0 at initialisation, where every margin ties);
    ``outputs/accuracies`` is the official code's 1{log π(y_w) > log π(y_l)} (the reference model's
    agreement rate at initialisation). ``logits/*`` appear when the mean logits over the vocabulary are
    given. With ``behavior_id`` every metric is a per-behaviour mean (``[..., n_behaviors]``).
    ``head/change`` (‖W − W_0‖_F) is logged by the trainers.
    """
    beta = check_beta(beta)
    loss_type, label_smoothing = check_loss_type(loss_type, label_smoothing)
    cl = policy_chosen_logps - reference_chosen_logps
    rl = policy_rejected_logps - reference_rejected_logps
    return metrics_from_parts(cl - rl, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                              chosen_logratios=cl, rejected_logratios=rl, chosen_logps=policy_chosen_logps,
                              rejected_logps=policy_rejected_logps, mean_logits_chosen=mean_logits_chosen,
                              mean_logits_rejected=mean_logits_rejected, behavior_id=behavior_id,
                              n_behaviors=n_behaviors)


# ---------------------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------------------

@dataclass
class Trajectory:
    """The logged metrics of one or more training runs (run index first).

    Logging convention (``paper.md`` §6, ours): step t's training metrics are those of the batch drawn
    at step t, evaluated at W_t *before* the update (``train[name]``: ``[runs, steps]``); evaluation sets
    and the head change are evaluated at W_t for t = 0, …, steps (``eval[set][name]`` and
    ``head_change``: ``[runs, steps + 1]``), so the head change is 0 at t = 0 and the last entry is the
    final head. ``*_by_behavior`` hold per-behaviour means (a trailing dimension). ``batches`` are the
    indices of each step's batch into the run's training set.
    """

    train: dict[str, torch.Tensor]
    eval: dict[str, dict[str, torch.Tensor]]
    head_change: torch.Tensor
    batches: torch.Tensor
    config: dict[str, Any]
    train_by_behavior: dict[str, torch.Tensor] = field(default_factory=dict)
    eval_by_behavior: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    v: torch.Tensor | None = None
    W: torch.Tensor | None = None

    @property
    def runs(self) -> int:
        return self.head_change.shape[0]

    @property
    def steps(self) -> int:
        return self.head_change.shape[1] - 1


def check_hparams(*, beta, lr, steps, loss_type, label_smoothing, optimizer, momentum, weight_decay,
                  adam_betas, adam_eps) -> None:
    """Check the training hyper-parameters of a DPO run; a clear ``ValueError`` for the first bad one."""
    check_beta(beta)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    check_loss_type(loss_type, label_smoothing)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid optimizers: {list(OPTIMIZERS)} "
                         "(use momentum=... with 'sgd')")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if momentum and optimizer != "sgd":
        raise ValueError("momentum applies to optimizer='sgd' only; Adam has adam_betas")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    b1, b2 = adam_betas
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0) or adam_eps <= 0:
        raise ValueError(f"adam_betas must lie in [0, 1) and adam_eps > 0, got {adam_betas!r}, {adam_eps!r}")


def _eval_tuple_ref(name: str, spec, d: int, vocab: int):
    if not isinstance(spec, (tuple, list)) or len(spec) not in (3, 4):
        raise ValueError(f"eval set {name!r} must be a tuple (H, chosen, rejected[, behavior_id]), got {type(spec).__name__}")
    H = check_matrix(f"eval set {name!r} H", spec[0])
    if H.shape[1] != d:
        raise ValueError(f"eval set {name!r}: H has d={H.shape[1]}, expected {d}")
    c = check_tokens(f"eval set {name!r} chosen", spec[1], H.shape[0], vocab)
    r = check_tokens(f"eval set {name!r} rejected", spec[2], H.shape[0], vocab)
    bid = torch.as_tensor(spec[3]).long() if len(spec) == 4 and spec[3] is not None else None
    return H, c, r, bid


def train_reference(H: torch.Tensor, W0: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, *,
                    beta: float, lr: float, steps: int, batch_size: int | None, generator,
                    loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                    optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                    adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                    behavior_id: torch.Tensor | None = None, n_behaviors: int | None = None,
                    eval_sets: Mapping[str, tuple] | None = None, flip: bool = False,
                    start_W: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> Trajectory:
    """Train the whole head W (``[V, d]``) with DPO by autograd over the full vocabulary: the oracle.

    The official last-layer protocol [official code]: the policy is softmax(W h), the reference is the
    starting head (``start_W``, default ``W0``), each step draws a batch of ``batch_size`` distinct
    training pairs with :func:`alignment_dynamics.dpo.sample_batches` (``generator``: a seed or a
    ``torch.Generator``), computes the DPO loss with :func:`logprobs_naive` and :func:`dpo_loss`, and
    takes one optimiser step (``"sgd"``, with optional ``momentum``, or ``"adam"``; PyTorch's own
    optimisers, with optional ``weight_decay``). ``flip`` swaps chosen and rejected (misalignment).
    ``eval_sets`` maps a name to ``(H, chosen, rejected[, behavior_id])``. Everything runs in ``dtype``
    (float64 by default). Returns a :class:`Trajectory` with one run and the final head in ``W``.

    Cost: O(B·V·d) per step. Use :func:`alignment_dynamics.dpo.train_two_row` for real runs; this
    function exists to check it.
    """
    check_hparams(beta=beta, lr=lr, steps=steps, loss_type=loss_type, label_smoothing=label_smoothing,
                  optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, adam_betas=adam_betas,
                  adam_eps=adam_eps)
    check_matrix("H", H)
    check_matrix("W0", W0)
    n, d = H.shape
    V = W0.shape[0]
    if W0.shape[1] != d:
        raise ValueError(f"H has d={d} but W0 has d={W0.shape[1]} (W0 is [V, d])")
    chosen = check_tokens("chosen", chosen, n, V)
    rejected = check_tokens("rejected", rejected, n, V)
    if flip:
        chosen, rejected = rejected, chosen
    W_start = (W0 if start_W is None else check_matrix("start_W", start_W)).to(dtype)
    if W_start.shape != W0.shape:
        raise ValueError(f"start_W must have W0's shape {tuple(W0.shape)}, got {tuple(W_start.shape)}")
    Hd = H.to(dtype)
    sets = {name: _eval_tuple_ref(name, spec, d, V) for name, spec in (eval_sets or {}).items()}
    if flip:
        sets = {k: (h, r, c, b) for k, (h, c, r, b) in sets.items()}
    batches = sample_batches(n, batch_size, steps, generator)[0]

    W = torch.nn.Parameter(W_start.clone())
    if optimizer == "sgd":
        opt = torch.optim.SGD([W], lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam([W], lr=lr, betas=adam_betas, eps=adam_eps, weight_decay=weight_decay)
    kw = dict(beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)

    def reference_logps(h, c, r):
        with torch.no_grad():
            logp, _ = logprobs_naive(h, W_start, torch.stack([c, r], 1))
        return logp[:, 0], logp[:, 1]

    ref_c, ref_r = reference_logps(Hd, chosen, rejected)
    set_refs = {k: reference_logps(h.to(dtype), c, r) for k, (h, c, r, _) in sets.items()}

    def evaluate(h, c, r, rc, rr, bid):
        logp, _ = logprobs_naive(h, W.detach(), torch.stack([c, r], 1))
        mean_logit = h @ W.detach().mean(0)
        m = dpo_metrics(logp[:, 0], logp[:, 1], rc, rr, mean_logits_chosen=mean_logit,
                        mean_logits_rejected=mean_logit, **kw)
        mb = (dpo_metrics(logp[:, 0], logp[:, 1], rc, rr, mean_logits_chosen=mean_logit,
                          mean_logits_rejected=mean_logit, behavior_id=bid, n_behaviors=n_behaviors, **kw)
              if bid is not None else None)
        return m, mb

    train_log: dict[str, list] = {}
    train_by: dict[str, list] = {}
    eval_log: dict[str, dict[str, list]] = {k: {} for k in sets}
    eval_by: dict[str, dict[str, list]] = {k: {} for k in sets if sets[k][3] is not None}
    change = []
    bid_all = None if behavior_id is None else torch.as_tensor(behavior_id).long()

    def log_state():
        with torch.no_grad():
            change.append(torch.linalg.norm(W.detach() - W_start))
            for k, (h, c, r, b) in sets.items():
                m, mb = evaluate(h.to(dtype), c, r, *set_refs[k], b)
                for name, val in m.items():
                    eval_log[k].setdefault(name, []).append(val)
                if mb is not None:
                    for name, val in mb.items():
                        eval_by[k].setdefault(name, []).append(val)

    for t in range(steps):
        log_state()
        idx = batches[t]
        idx = idx[idx >= 0]
        hb, cb, rb = Hd[idx], chosen[idx], rejected[idx]
        logp, _ = logprobs_naive(hb, W, torch.stack([cb, rb], 1))
        loss, _, _, _ = dpo_loss(logp[:, 0], logp[:, 1], ref_c[idx], ref_r[idx], beta, loss_type, label_smoothing)
        with torch.no_grad():
            mean_logit = hb @ W.detach().mean(0)
            m = dpo_metrics(logp[:, 0].detach(), logp[:, 1].detach(), ref_c[idx], ref_r[idx],
                            mean_logits_chosen=mean_logit, mean_logits_rejected=mean_logit, **kw)
            for name, val in m.items():
                train_log.setdefault(name, []).append(val)
            if bid_all is not None:
                mb = dpo_metrics(logp[:, 0].detach(), logp[:, 1].detach(), ref_c[idx], ref_r[idx],
                                 behavior_id=bid_all[idx], n_behaviors=n_behaviors or int(bid_all.max()) + 1, **kw)
                for name, val in mb.items():
                    train_by.setdefault(name, []).append(val)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    log_state()

    def stack(d_):
        return {k: torch.stack(v).unsqueeze(0) for k, v in d_.items()}

    return Trajectory(
        train=stack(train_log), eval={k: stack(v) for k, v in eval_log.items()},
        head_change=torch.stack(change).unsqueeze(0), batches=batches.unsqueeze(0),
        config=dict(trainer="reference", beta=beta, lr=lr, steps=steps, batch_size=batch_size, loss_type=loss_type,
                    label_smoothing=label_smoothing, optimizer=optimizer, momentum=momentum,
                    weight_decay=weight_decay, flip=flip, dtype=str(dtype)),
        train_by_behavior=stack(train_by), eval_by_behavior={k: stack(v) for k, v in eval_by.items()},
        W=W.detach())
