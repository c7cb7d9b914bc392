"""Checks of the reduction against the float64 full-softmax reference (``alignment_dynamics.dpo.reference``):
the normaliser cancels, the gradient is rank one, the trajectory is logistic regression, and where the
reduction breaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import as_rng, LN2, require_prob
from .closed_form import (
    decision_direction, dpo_loss_from_v, first_step_norm_balanced, first_step_v, head_change,
    linear_accuracy, logistic_gd,
)
from .families import make_two_class
from ..threads import one_thread


YES, NO = 3, 7  # the two answer tokens of the synthetic checks


@dataclass(frozen=True, eq=False)
class ReductionProblem:
    """A small synthetic last-layer DPO problem in float64 torch tensors: features ``H`` (n x d), labels
    ``s`` (+1: Yes preferred), the head ``W0`` (V x d), token ids and the chosen / rejected tokens.
    """

    H: Any
    s: Any
    W0: Any
    chosen: Any
    rejected: Any
    yes: int = YES
    no: int = NO

    @property
    def u(self):
        import torch

        u = torch.zeros(self.W0.shape[0], dtype=torch.float64)
        u[self.yes], u[self.no] = 1.0, -1.0
        return u

    @property
    def a(self):
        """The reference offset ``W_0^T u``."""
        return self.W0.T @ self.u


def reduction_problem(rng, *, d: int = 16, V: int = 50, n: int = 400, p_yes: float = 0.5, delta: float = 0.8,
                      family: str = "laplace", w_scale: float = 1.0) -> ReductionProblem:
    """A :class:`ReductionProblem` with embeddings from :func:`make_two_class` (Laplace noise by default)
    and a random head ``W0`` with entries ``N(0, w_scale^2 / d)``.
    """
    import torch

    rng = as_rng(rng)
    if V < 3 or max(YES, NO) >= V:
        raise ValueError(f"V must exceed {max(YES, NO)} (the answer tokens are {YES} and {NO}), got {V}")
    require_prob("p_yes", p_yes)
    model = make_two_class(rng, d, delta=delta, family=family)
    n_plus = int(round(p_yes * n))
    H, s = model.sample(rng, n_plus, n - n_plus)
    perm = rng.permutation(n)
    H, s = H[perm], s[perm]
    W0 = rng.standard_normal((V, d)) * w_scale / math.sqrt(d)
    st = torch.from_numpy(s)
    chosen = torch.where(st > 0, YES, NO).long()
    rejected = torch.where(st > 0, NO, YES).long()
    return ReductionProblem(torch.from_numpy(H), st, torch.from_numpy(W0), chosen, rejected)


def _reference_loss(problem: ReductionProblem, W, beta: float, H_rejected=None):
    """The float64 full-softmax DPO loss at W (reference = W0), through ``dpo.reference``."""
    import torch

    from ..dpo import reference as ref

    if H_rejected is None:
        lp, _ = ref.logprobs_naive(problem.H, W, torch.stack([problem.chosen, problem.rejected], 1))
        lp0, _ = ref.logprobs_naive(problem.H, problem.W0, torch.stack([problem.chosen, problem.rejected], 1))
        pc, pr, rc, rr = lp[:, 0], lp[:, 1], lp0[:, 0], lp0[:, 1]
    else:
        pc, _ = ref.logprobs_naive(problem.H, W, problem.chosen)
        pr, _ = ref.logprobs_naive(H_rejected, W, problem.rejected)
        rc, _ = ref.logprobs_naive(problem.H, problem.W0, problem.chosen)
        rr, _ = ref.logprobs_naive(H_rejected, problem.W0, problem.rejected)
    return ref.dpo_loss(pc, pr, rc, rr, beta)


@one_thread()
def check_normaliser(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1) -> dict[str, float]:
    """At a random *dense* head W (not only two rows moved), the full-softmax DPO margin equals the
    closed form ``beta s u^T (W - W_0) h``, and the answer log-odds equal ``s u^T W h``: the
    log-sum-exp cancels. Returns the largest absolute differences and the size of the log-sum-exp.
    """
    import torch

    from ..dpo import reference as ref

    rng = as_rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    W = pb.W0 + torch.from_numpy(rng.standard_normal((V, d))) / math.sqrt(d)
    _, per_pair, rew_c, rew_r = _reference_loss(pb, W, beta)
    closed = beta * pb.s * (pb.H @ ((W - pb.W0).T @ pb.u))
    lp, lse = ref.logprobs_naive(pb.H, W, torch.stack([pb.chosen, pb.rejected], 1))
    odds = pb.s * (pb.H @ (W.T @ pb.u))
    return {
        "margin_max_abs_diff": float((rew_c - rew_r - closed).abs().max()),
        "log_odds_max_abs_diff": float((lp[:, 0] - lp[:, 1] - odds).abs().max()),
        "lse_mean_abs": float(lse.abs().mean()),
    }


@one_thread()
def check_gradient_structure(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1) -> dict[str, float]:
    """Autograd through the full-softmax reference at a random dense W: the gradient is zero outside the
    Yes and No rows, the two rows are opposite, it has rank one, and it equals the closed form
    ``-beta u (mean_k s_k sigma(-r_k) h_k)^T``. Returns the largest deviations.
    """
    import torch

    rng = as_rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    W = (pb.W0 + torch.from_numpy(rng.standard_normal((V, d))) / math.sqrt(d)).requires_grad_(True)
    loss, per_pair, rc, rr = _reference_loss(pb, W, beta)
    (grad,) = torch.autograd.grad(loss, W)
    others = [k for k in range(V) if k not in (pb.yes, pb.no)]
    r = (rc - rr)  # beta * Delta
    closed = -beta * torch.outer(pb.u, ((pb.s * torch.sigmoid(-r))[:, None] * pb.H).mean(0))
    sv = torch.linalg.svdvals(grad)
    return {
        "other_rows_max_abs": float(grad[others].abs().max()),
        "yes_plus_no_max_abs": float((grad[pb.yes] + grad[pb.no]).abs().max()),
        "second_singular_ratio": float(sv[1] / sv[0]),
        "closed_form_max_abs_diff": float((grad - closed).abs().max()),
        "grad_max_abs": float(grad.abs().max()),
    }


@one_thread()
def check_loss_at_start(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1) -> float:
    """``|L(W_0) - ln 2|`` for the full-softmax reference loss (every margin is exactly 0 at W_0)."""
    pb = reduction_problem(as_rng(rng), d=d, V=V, n=n)
    loss = _reference_loss(pb, pb.W0, beta)[0]
    return float(abs(float(loss) - LN2))


def _train_reference(pb: ReductionProblem, *, beta, lr, steps, **kw):
    from ..dpo import reference as ref

    # full batch: the logged training metrics of step t are those of the whole set at W_t
    return ref.train_reference(pb.H, pb.W0, pb.chosen, pb.rejected, beta=beta, lr=lr, steps=steps,
                               batch_size=None, generator=0, **kw)


@one_thread()
def check_trajectory(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.5, lr: float = 1.0,
                     steps: int = 200, momentum: float = 0.0) -> dict[str, Any]:
    """Full-batch DPO on the full softmax (``dpo.reference.train_reference``, float64, autograd) against
    the logistic-regression recursion :func:`logistic_gd`: the head change at every step and the final
    head, and the loss and both accuracies at steps ``0 .. steps - 1`` (those the reference logs).
    Returns the largest differences and the trajectories.
    """
    import torch

    rng = as_rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    tr = _train_reference(pb, beta=beta, lr=lr, steps=steps, momentum=momentum)
    H, s = pb.H.numpy(), pb.s.numpy()
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps, momentum=momentum)
    ev = tr.train  # steps 0 .. steps - 1
    W_closed = pb.W0 + torch.outer(pb.u, torch.from_numpy(v[-1]))
    loss_closed = dpo_loss_from_v(v, H, s, beta)[:steps]
    acc_closed = linear_accuracy(decision_direction(pb.a.numpy(), v), H, s)[:steps]
    rew_closed = linear_accuracy(v, H, s)[:steps]
    moved = (tr.W - pb.W0).abs().amax(1) > 0
    return {
        "head_change_max_abs_diff": float(np.max(np.abs(tr.head_change[0].numpy() - head_change(v)))),
        "final_head_max_abs_diff": float((tr.W - W_closed).abs().max()),
        "loss_max_abs_diff": float(np.max(np.abs(ev["loss"][0].numpy() - loss_closed))),
        "accuracy_max_abs_diff": float(np.max(np.abs(ev["outputs/accuracies"][0].numpy() - acc_closed))),
        "reward_accuracy_max_abs_diff": float(np.max(np.abs(ev["rewards/accuracies"][0].numpy() - rew_closed))),
        "rows_moved": int(moved.sum()),
        "head_change": head_change(v), "loss": loss_closed, "accuracy": acc_closed, "reward_accuracy": rew_closed,
        "head_change_reference": tr.head_change[0].numpy(), "loss_reference": ev["loss"][0].numpy(),
        "accuracy_reference": ev["outputs/accuracies"][0].numpy(),
    }


@one_thread()
def check_first_step(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.1, lr: float = 0.5,
                     p_yes: float = 0.5) -> dict[str, float]:
    """One full-softmax SGD step from W_0 against the first-step formula:
    ``W_1 - W_0 = u v_1^T`` with ``v_1 = (lr beta / 2)(p mu_+ - (1 - p) mu_-)`` (batch statistics), so
    ``||W_1 - W_0|| = (sqrt(2) lr beta / 4) ||mu_+ - mu_-||`` when ``p = 1/2``. Returns the measured norm,
    both predictions and relative errors.
    """
    import torch

    rng = as_rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n, p_yes=p_yes)
    tr = _train_reference(pb, beta=beta, lr=lr, steps=1)
    H, s = pb.H.numpy(), pb.s.numpy()
    v1 = first_step_v(H, s, beta=beta, lr=lr)
    measured = float(torch.linalg.norm(tr.W - pb.W0))
    general = float(head_change(v1))
    dist = float(np.linalg.norm(H[s > 0].mean(0) - H[s < 0].mean(0)))
    balanced = float(first_step_norm_balanced(lr, beta, dist))
    return {"measured": measured, "predicted": general, "predicted_balanced": balanced,
            "rel_err": abs(measured - general) / general, "rel_err_balanced": abs(measured - balanced) / balanced,
            "p": float(np.mean(s > 0)), "distinguishability": dist,
            "W1_minus_closed_max_abs": float((tr.W - pb.W0 - torch.outer(pb.u, torch.from_numpy(v1))).abs().max())}


@one_thread()
def check_side_facts(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.5, lr: float = 1.0,
                     steps: int = 20) -> dict[str, float]:
    """Side facts of the reduction on a full-softmax trajectory: log-ratios between non-answer tokens do
    not change; the mean logit over the vocabulary does not change; on every example the chosen answer's
    log-prob rises above the reference exactly when that example's DPO margin is positive.
    """
    import torch

    rng = as_rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    tr = _train_reference(pb, beta=beta, lr=lr, steps=steps)
    others = [k for k in range(V) if k not in (pb.yes, pb.no)]
    z0, z1 = pb.H @ pb.W0.T, pb.H @ tr.W.T
    lp0 = torch.log_softmax(z0, -1)[:, others]
    lp1 = torch.log_softmax(z1, -1)[:, others]
    ratio_change = ((lp1 - lp1[:, :1]) - (lp0 - lp0[:, :1])).abs().max()
    _, _, rew_c, rew_r = _reference_loss(pb, tr.W, beta)
    agree = ((rew_c > 0) == (rew_c - rew_r > 0)).double().mean()
    return {"other_log_ratio_max_change": float(ratio_change),
            "mean_logit_max_change": float((z1.mean(1) - z0.mean(1)).abs().max()),
            "chosen_up_iff_margin_positive": float(agree),
            "frac_margin_positive": float((rew_c - rew_r > 0).double().mean())}


@one_thread()
def check_breaks(rng, *, d: int = 16, V: int = 50, n: int = 400, beta: float = 0.5, lr: float = 1.0,
                 steps: int = 20) -> "Any":
    """When the reduction breaks, measured on the full-softmax reference. One row per scenario:
    rows of the head with a non-zero gradient (or that moved), the rank of ``W - W_0`` (or of the
    gradient) and the largest distance from the plain logistic-regression recursion.

    Scenarios: the paper's setting; distinct contexts for chosen and rejected; two-token responses
    (answer then EOS, each EOS scored after its own answer); weight decay; momentum; Adam.
    """
    import pandas as pd
    import torch

    from ..dpo import reference as ref

    rng = as_rng(rng)
    pb = reduction_problem(rng, d=d, V=V, n=n)
    H, s = pb.H.numpy(), pb.s.numpy()
    v_plain = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)
    tol = 1e-12

    def rank(M):
        sv = torch.linalg.svdvals(M)
        return int((sv > tol * max(float(sv[0]), 1e-300)).sum())

    def grad_row(name, grad, note):
        return {"scenario": name, "rows_touched": int((grad.abs().amax(1) > tol).sum()), "rank": rank(grad),
                "max_dev_from_logistic": float("nan"), "what": note}

    rows = []
    W = pb.W0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_reference_loss(pb, W, beta)[0], W)
    rows.append(grad_row("paper setting (shared context, one token)", g, "gradient at W_0"))
    # distinct contexts: the rejected answer is scored from another embedding
    H_rej = pb.H + torch.from_numpy(rng.standard_normal(pb.H.shape)) * 0.5
    W = pb.W0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_reference_loss(pb, W, beta, H_rejected=H_rej)[0], W)
    rows.append(grad_row("distinct contexts for chosen and rejected", g, "gradient at W_0"))
    # two-token responses: answer, then EOS scored from an answer-dependent context
    eos = V - 1
    h_after = {tok: pb.H + torch.from_numpy(rng.standard_normal(pb.H.shape)) * 0.5 for tok in (pb.yes, pb.no)}
    W = pb.W0.clone().requires_grad_(True)

    def seq_logp(Wm, answer):
        lp1, _ = ref.logprobs_naive(pb.H, Wm, answer)
        ctx = torch.where((answer == pb.yes)[:, None], h_after[pb.yes], h_after[pb.no])
        lp2, _ = ref.logprobs_naive(ctx, Wm, torch.full_like(answer, eos))
        return lp1 + lp2

    with torch.no_grad():
        r0c, r0r = seq_logp(pb.W0, pb.chosen), seq_logp(pb.W0, pb.rejected)
    loss = ref.dpo_loss(seq_logp(W, pb.chosen), seq_logp(W, pb.rejected), r0c, r0r, beta)[0]
    (g,) = torch.autograd.grad(loss, W)
    rows.append(grad_row("two-token responses (answer + EOS)", g, "gradient at W_0"))
    # optimiser variants: train, then look at W_T - W_0
    for name, kw, closed in (
        ("weight decay 0.01", {"weight_decay": 0.01}, v_plain),
        ("momentum 0.9", {"momentum": 0.9}, logistic_gd(H, s, beta=beta, lr=lr, steps=steps, momentum=0.9)),
        ("Adam (lr / 100)", {"optimizer": "adam", "lr": lr / 100}, v_plain),
    ):
        kw = dict(kw)
        lr_k = kw.pop("lr", lr)
        tr = _train_reference(pb, beta=beta, lr=lr_k, steps=steps, **kw)
        dW = tr.W - pb.W0
        dev = float((dW - torch.outer(pb.u, torch.from_numpy(closed[-1]))).abs().max())
        rows.append({"scenario": name, "rows_touched": int((dW.abs().amax(1) > tol).sum()), "rank": rank(dW),
                     "max_dev_from_logistic": dev,
                     "what": f"W_T - W_0 after {steps} steps" + (" (vs heavy-ball recursion)" if "momentum" in name else "")})
    return pd.DataFrame(rows)
