"""Closed-form dynamics: :func:`logistic_gd`, the logistic-regression recursion that last-layer DPO reduces to
(``W_t - W_0 = u v_t^T``), vectorised over independent repetitions, its SGD version, and the quantities
read off ``v``: the head change, the DPO loss, the first step, the decision direction and accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from .. import validate as _v
from .checks import as_rng, sigmoid


def answer_direction(V: int, yes: int, no: int) -> np.ndarray:
    """``u = e_yes - e_no`` in ``R^V``."""
    if not (0 <= yes < V and 0 <= no < V) or yes == no:
        raise ValueError(f"need two distinct token ids in [0, {V}), got yes={yes}, no={no}")
    u = np.zeros(V)
    u[yes], u[no] = 1.0, -1.0
    return u


def logistic_gradient(v, H, s, beta: float):
    """``g(v) = mean_k[s_k sigma(-2 beta s_k v^T h_k) h_k]``; one GD step is ``v + lr beta g(v)``.

    ``H`` has shape ``(..., n, d)``, ``v`` ``(..., d)``, ``s`` ``(n,)`` or ``(..., n)``.
    """
    z = np.einsum("...nd,...d->...n", H, v)
    w = s * sigmoid(-2.0 * beta * s * z)
    return np.einsum("...n,...nd->...d", w, H) / H.shape[-2]


def logistic_gd(H, s, *, beta: float, lr: float, steps: int, v0=None, momentum: float = 0.0) -> np.ndarray:
    """The closed-form last-layer DPO dynamics: full-batch GD on logistic regression.

    ``v_{t+1} = v_t + lr * beta * g(v_t)``, ``v_0 = 0`` (the reference is the initial model), and
    ``W_t = W_0 + u v_t^T``. With ``momentum`` mu, PyTorch's heavy ball
    (``buf = mu buf + grad``, ``v -= lr buf``, with ``grad = -beta g``). Returns ``v`` of shape
    ``(..., steps + 1, d)``.
    """
    H = _v.finite_array("H", H, min_ndim=2)
    s = _v.finite_array("s", s)
    beta = _v.positive("beta", beta)
    lr = _v.positive("lr", lr)
    steps = _v.count("steps", steps, lo=0)
    if v0 is not None:
        v0 = _v.finite_array("v0", v0)
    if s.shape[-1] != H.shape[-2]:
        raise ValueError(f"s has {s.shape[-1]} labels but H has {H.shape[-2]} examples")
    if not np.all(np.abs(s) == 1):
        raise ValueError("labels s must be +1 or -1")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    v = np.zeros(H.shape[:-2] + (H.shape[-1],)) if v0 is None else np.array(v0, dtype=np.float64)
    out = np.empty(H.shape[:-2] + (int(steps) + 1, H.shape[-1]))
    out[..., 0, :] = v
    buf = None
    for t in range(int(steps)):
        grad = -beta * logistic_gradient(v, H, s, beta)
        buf = grad if (buf is None or momentum == 0) else momentum * buf + grad
        v = v - lr * buf
        out[..., t + 1, :] = v
    return out


def head_change(v) -> np.ndarray:
    """``||W_t - W_0||_F = ||u|| ||v_t|| = sqrt(2) ||v_t||`` (also the operator norm)."""
    return math.sqrt(2.0) * np.linalg.norm(np.asarray(v), axis=-1)


def dpo_loss_from_v(v, H, s, beta: float):
    """The DPO loss ``mean_k -log sigma(2 beta s_k v^T h_k)`` of the reduced model (any leading shape)."""
    from scipy.special import log_expit

    beta = _v.positive("beta", beta)
    H = _v.finite_array("H", H, min_ndim=2)
    v = _v.finite_array("v", v)
    s = _v.labels("s", s, H.shape[-2])
    z = np.einsum("...nd,...d->...n", H, v) if np.ndim(v) == np.ndim(H) - 1 else np.einsum("...nd,...td->...tn", H, v)
    return -np.mean(log_expit(2.0 * beta * s * z), axis=-1)


def first_step_v(H, s, *, beta: float, lr: float) -> np.ndarray:
    """``v_1 = (lr beta / 2) mean_k s_k h_k = (lr beta / 2)(p mu_+ - (1 - p) mu_-)`` (batch statistics)."""
    beta, lr = _v.positive("beta", beta), _v.positive("lr", lr)
    H = _v.finite_array("H", H, min_ndim=2)
    s = _v.labels("s", s, H.shape[-2])
    return 0.5 * lr * beta * np.einsum("...n,...nd->...d", np.broadcast_to(s, H.shape[:-1]), H) / H.shape[-2]


def first_step_norm_balanced(lr: float, beta: float, distinguishability) -> np.ndarray:
    """``||W_1 - W_0|| = (sqrt(2) lr beta / 4) ||mu_+ - mu_-||`` for a class-balanced batch."""
    return math.sqrt(2.0) * lr * beta / 4.0 * np.asarray(distinguishability, dtype=np.float64)


def decision_direction(a, v) -> np.ndarray:
    """``theta_t = W_0^T u + 2 v_t``: the policy prefers Yes on h exactly when ``theta_t^T h > 0``."""
    return np.asarray(a, dtype=np.float64) + 2.0 * np.asarray(v, dtype=np.float64)


def linear_accuracy(theta, H, s) -> np.ndarray:
    """Fraction of examples with ``s theta^T h > 0`` (ties count as wrong), for ``theta (..., [T,] d)``."""
    theta = np.asarray(theta)
    if theta.ndim == np.ndim(H) - 1:
        z = np.einsum("...nd,...d->...n", H, theta)
    else:
        z = np.einsum("...nd,...td->...tn", H, theta)
    return np.mean(s * z > 0, axis=-1)


def _class_mean(H: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the rows ``mask`` selects (leading axes kept); NaN, without a warning, for an empty class."""
    if not mask.any():
        return np.full(H.shape[:-2] + H.shape[-1:], np.nan)
    return H[..., mask, :].mean(-2)


def sample_statistics(H, s) -> dict[str, np.ndarray]:
    """The empirical quantities the bounds use, per training set (leading axes kept).

    ``m_hat = mean s h``, ``M1 = mean ||h||``, ``M2 = mean ||h||^2``, ``G_norm = ||mean h h^T||``,
    ``max_norm = max ||h||``, the class means (NaN for an empty class) and counts.
    """
    H = _v.finite_array("H", H, min_ndim=2)
    s = _v.labels("s", s, H.shape[-2])
    n = H.shape[-2]
    norms = np.linalg.norm(H, axis=-1)
    plus = s > 0
    G = np.matmul(np.swapaxes(H, -1, -2), H) / n
    return {
        "m_hat": np.einsum("...n,...nd->...d", np.broadcast_to(s, H.shape[:-1]), H) / n,
        "M1": norms.mean(-1),
        "M2": (norms ** 2).mean(-1),
        "G_norm": np.linalg.eigvalsh(G)[..., -1],
        "max_norm": norms.max(-1),
        "mu_plus": _class_mean(H, plus),
        "mu_minus": _class_mean(H, ~plus),
        "n_plus": int(plus.sum()),
        "n_minus": int((~plus).sum()),
    }


def logistic_sgd(H, s, *, beta: float, lr: float, steps: int, batch: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch SGD on the logistic recursion: each step draws ``batch`` distinct examples uniformly (a
    fresh draw per step and per training set, independent of the data, as the official code does) and
    sets ``v <- v + lr beta mean_batch[s sigma(-2 beta s v^T h) h]``. ``H (R, n, d)``.

    Returns ``(v (R, steps + 1, d), var (R, steps))`` where ``var[:, t]`` is the conditional variance
    ``E[||g_B - g||^2 | v_t] = (n - B) / ((n - 1) B) * (mean_k ||s_k sigma_k h_k||^2 - ||g(v_t)||^2)``
    of the batch gradient at the SGD iterate (exact, for sampling without replacement).
    """
    from scipy.special import expit

    H = _v.finite_array("H", H, min_ndim=3)
    rng = as_rng(rng)
    R, n, d = H.shape
    B = _v.count("batch", batch, lo=1)
    if B > n:
        raise _v.InputError(f"batch {B} exceeds the {n} training examples")
    s = np.asarray(s, dtype=np.float64)
    hn2 = np.sum(H ** 2, -1)  # (R, n)
    v = np.zeros((R, d))
    out = np.empty((R, int(steps) + 1, d))
    var = np.empty((R, int(steps)))
    out[:, 0] = v
    fpc = (n - B) / ((n - 1) * B) if n > 1 else 0.0
    rows = np.arange(R)[:, None]
    for t in range(int(steps)):
        w = s * expit(-2.0 * beta * s * np.einsum("rnd,rd->rn", H, v))  # (R, n): s_k sigma_k
        g = np.einsum("rn,rnd->rd", w, H) / n
        var[:, t] = fpc * (np.mean(w ** 2 * hn2, -1) - np.sum(g ** 2, -1))
        idx = np.argsort(rng.random((R, n)), axis=1)[:, :B]
        gb = np.einsum("rn,rnd->rd", w[rows, idx], H[rows, idx]) / B
        v = v + lr * beta * gb
        out[:, t + 1] = v
    return out, var
