"""The accuracy bounds of `book/accuracy.md` (our statements in the spirit of Theorem 4.2 of Im & Li):
accuracy as a linear classifier, tail bounds under our α-subexponential definition, the comparator
bounds on the expected loss and error, the realised guarantees, and the chapter's sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .checks import as_rng, LN2, require_positive, require_prob
from .closed_form import decision_direction, dpo_loss_from_v, linear_accuracy, logistic_gd, sample_statistics
from .families import TwoClass
from .headline import excess, FP_RTOL, headline_row, mc_margin, mutate_bound
from .sweeps import InstanceRanges, loguniform, model_from, run_curves, run_sweep
from .update_rate import kappa_of, phi, remainder_bound
from ..threads import one_thread


def tail_error_bound(margin, norm, alpha: float, tau=0.0):
    """``min(1, 2 exp(-(margin - tau) / (alpha norm)))`` if ``margin > tau`` else 1: a bound on
    ``P(s theta^T h <= tau)`` when ``s theta^T mu >= margin`` and ``||theta|| <= norm``.
    """
    margin = np.asarray(margin, dtype=np.float64) - np.asarray(tau, dtype=np.float64)
    norm = np.asarray(norm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        val = 2.0 * np.exp(-margin / (alpha * norm))
    return np.where(margin > 0, np.minimum(1.0, val), 1.0)


@dataclass(frozen=True)
class AccuracyProblem:
    """Everything the accuracy bounds need: the distribution, the offset, the class counts, β, η.

    ``a = W_0^T u`` is the reference model's Yes-minus-No direction; ``n_plus, n_minus`` the training
    counts (the class balance ``pi_+ = n_plus / n``).
    """

    model: TwoClass
    a: np.ndarray
    n_plus: int
    n_minus: int
    beta: float
    lr: float

    def __post_init__(self):
        if self.n_plus < 1 or self.n_minus < 1:
            raise ValueError(f"need examples of both classes, got n_plus={self.n_plus}, n_minus={self.n_minus}")
        require_positive("beta", self.beta)
        require_positive("lr", self.lr)
        a = np.asarray(self.a, dtype=np.float64)
        if a.shape != (self.model.d,):
            raise ValueError(f"offset a must have shape ({self.model.d},), got {a.shape}")
        object.__setattr__(self, "a", a)

    @property
    def n(self) -> int:
        return self.n_plus + self.n_minus

    @property
    def pi(self) -> dict[int, float]:
        return {+1: self.n_plus / self.n, -1: self.n_minus / self.n}

    @property
    def m(self) -> np.ndarray:
        """``E m_hat = pi_+ mu_+ - pi_- mu_-``."""
        return self.pi[+1] * self.model.plus.mean - self.pi[-1] * self.model.minus.mean

    def directions(self) -> dict[str, np.ndarray]:
        """The fixed comparator directions the bounds try: ``mu_+ - mu_-`` and ``m``, normalised."""
        out = {}
        for name, w in (("b", self.model.b), ("m", self.m)):
            nw = np.linalg.norm(w)
            if nw > 0:
                out[name] = w / nw
        if not out:
            raise ValueError("mu_+ = mu_- and m = 0: no comparator direction")
        return out

    def x_max(self, variance: bool = False) -> float:
        """The largest admissible ``x``: ``1/(2 alpha)`` (``1/(4 alpha)`` for the variance term)."""
        return 1.0 / ((4.0 if variance else 2.0) * self.model.alpha)


def population_error(model: TwoClass, theta, pi: dict[int, float]):
    """Exact fresh-example error ``sum_j pi_j P_j(s_j theta^T h <= 0)`` of the classifier ``theta``."""
    return sum(pi[j] * cls.error(theta, j) for j, cls in model.classes())


def lemma_error_bound(model: TwoClass, theta, pi: dict[int, float]):
    """Our tail lemma for a fixed classifier: ``sum_j pi_j min(1, 2 exp(-[s_j theta^T mu_j]_+ / (alpha_j ||theta||)))``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    nt = np.linalg.norm(theta, axis=-1)
    return sum(pi[j] * tail_error_bound(j * theta @ cls.mean, nt, cls.alpha) for j, cls in model.classes())


def first_order_direction(problem: AccuracyProblem, t, m=None):
    """``a + lr beta t m``: the decision direction to first order (exact at t = 1 with ``m = m_hat``).

    ``m`` defaults to the population ``pi_+ mu_+ - pi_- mu_-``. Returns shape ``(T, d)``.
    """
    m = problem.m if m is None else np.asarray(m, dtype=np.float64)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    return problem.a[None, :] + problem.lr * problem.beta * t[:, None] * m[None, :]


def comparator_loss(problem: AccuracyProblem, w, x):
    """``(C, C2)``: ``C = sum_j pi_j exp(-x M_j + 4 x^2 alpha_j^2) >= E L_S(u)`` and
    ``C2 = sum_j pi_j exp(-2 x M_j + 16 x^2 alpha_j^2) >= n Var L_S(u)`` for the comparator
    ``u = x w / (2 beta)``, ``M_j = s_j w^T mu_j`` (``C2`` is ``inf`` above ``x = 1/(4 alpha)``).
    """
    x = np.asarray(x, dtype=np.float64)
    if np.any(x <= 0) or np.any(x > problem.x_max() * (1 + 1e-12)):
        raise ValueError(f"x must lie in (0, 1/(2 alpha)] = (0, {problem.x_max():.4g}]")
    C = np.zeros_like(x)
    C2 = np.zeros_like(x)
    for j, cls in problem.model.classes():
        M = j * float(np.dot(w, cls.mean))
        al = cls.alpha
        C = C + problem.pi[j] * np.exp(-x * M + 4 * x ** 2 * al ** 2)
        C2 = C2 + problem.pi[j] * np.exp(-2 * x * M + 16 * x ** 2 * al ** 2)
    C2 = np.where(x <= problem.x_max(variance=True) * (1 + 1e-12), C2, np.inf)
    return C, C2


def offset_tail(problem: AccuracyProblem, y):
    """``sum_j pi_j min(1, 2 exp(-[y + s_j a^T mu_j]_+ / (alpha_j ||a||)))``: a bound on the expected
    fraction of examples with ``-s a^T h > y`` (where the reference offset outvotes a DPO margin).
    """
    y = np.asarray(y, dtype=np.float64)
    na = float(np.linalg.norm(problem.a))
    out = np.zeros_like(y)
    for j, cls in problem.model.classes():
        off = j * float(problem.a @ cls.mean)
        if na == 0:
            out = out + problem.pi[j] * (y < 0)
        else:
            out = out + problem.pi[j] * tail_error_bound(y + off, na, cls.alpha)
    return out


def loss_threshold(beta: float, y):
    """``ell(beta y) = log(1 + exp(-beta y))``: the DPO loss at margin ``r = beta y``."""
    return np.logaddexp(0.0, -beta * np.asarray(y, dtype=np.float64))


def _x_grid(problem: AccuracyProblem, variance: bool, n: int = 80) -> np.ndarray:
    hi = problem.x_max(variance)
    return np.geomspace(hi * 1e-4, hi, n)


def _y_grid(problem: AccuracyProblem, n: int = 81) -> np.ndarray:
    na = float(np.linalg.norm(problem.a))
    scale = max(na * problem.model.alpha + max(abs(float(problem.a @ c.mean)) for _, c in problem.model.classes()), 1e-12)
    return np.concatenate([[0.0], np.linspace(-4 * scale, 12 * scale, n)])


def comparator_choice(problem: AccuracyProblem, t, *, eps: float | None = None):
    """The comparator ``u_t = x w / (2 beta)`` minimising our loss bound at each t, and that bound.

    ``eps=None``: minimise ``C(x, w) + x^2 / (4 beta^2 lr t)``, a bound on ``E[L_S(v_t) 1{kappa <= 1}]``.
    ``eps`` given: minimise ``C + sqrt(C2 / (n eps)) + x^2 / (4 beta^2 lr t)``, a bound on ``L_S(v_t)``
    that holds with probability at least ``1 - eps`` when ``kappa <= 1`` (the choice depends only on
    the distribution, so no union bound is needed for one t). The comparator ``u = 0`` (loss exactly
    ``ln 2``) is always among the candidates. Returns ``(u (T, d), bound (T,))``.
    """
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    variance = eps is not None
    if variance:
        require_prob("eps", eps)
    xs = _x_grid(problem, variance)
    best = np.full(t.shape, np.inf)
    u = np.zeros(t.shape + (problem.model.d,))
    tt = np.where(t > 0, t, 1.0)
    for w in problem.directions().values():
        C, C2 = comparator_loss(problem, w, xs)
        extra = np.sqrt(C2 / (problem.n * eps)) if variance else 0.0
        val = (C + extra)[None, :] + xs[None, :] ** 2 / (4 * problem.beta ** 2 * problem.lr * tt[:, None])
        k = val.argmin(axis=1)
        better = val[np.arange(t.size), k] < best
        best = np.where(better, val[np.arange(t.size), k], best)
        u[better] = (xs[k] / (2 * problem.beta))[better, None] * w[None, :]
    # the comparator u = 0 gives L_S(0) = ln 2 exactly (the loss never rises above it when kappa <= 1)
    zero = (t == 0) | (best >= LN2)
    u[zero] = 0.0
    return u, np.where(zero, LN2, best)


def expected_loss_bound(problem: AccuracyProblem, t, *, eps: float | None = None):
    """The value of :func:`comparator_choice`: our bound on the training loss after t GD steps."""
    return comparator_choice(problem, t, eps=eps)[1]


def expected_error_bound(problem: AccuracyProblem, t, kind: str = "official"):
    """Our bound on ``E[(1 - A_t) 1{kappa <= 1}]`` after t GD steps (the accuracy theorem, part (iii)).

    ``kind="reward"``: TRL's reward accuracy ``1{r > 0}``: ``loss_bound / ln 2``.
    ``kind="official"``: the official accuracy ``1{s theta_t^T h > 0}`` with the reference offset:
    ``min_y loss_bound / ell(beta y) + offset_tail(y)``.
    """
    L = expected_loss_bound(problem, t)
    if kind == "reward":
        return np.minimum(L / LN2, 1.0)
    if kind != "official":
        raise ValueError(f"kind must be 'official' or 'reward', got {kind!r}")
    ys = _y_grid(problem)
    val = L[:, None] / loss_threshold(problem.beta, ys)[None, :] + offset_tail(problem, ys)[None, :]
    return np.minimum(val.min(axis=1), 1.0)


def realised_error_bound(loss, *, beta: float, a, H, s, y_grid=None):
    """The deterministic part (i) of the accuracy theorem on a realised training set: the official
    error is at most ``min_y loss / ell(beta y) + F_a(y)``, with ``F_a(y)`` the fraction of training
    examples with ``-s a^T h > y`` (a property of the reference model, known before training).

    ``loss`` has shape ``(..., T)``; ``H`` ``(..., n, d)``. Returns shape ``(..., T)``.
    """
    z = -np.asarray(s) * np.einsum("...nd,d->...n", H, np.asarray(a, dtype=np.float64))  # -s a^T h
    if y_grid is None:
        y_grid = np.concatenate([[0.0], np.quantile(z, np.linspace(0, 1, 41)), [np.max(np.abs(z)) + 1.0]])
    y_grid = np.asarray(y_grid, dtype=np.float64)
    frac = np.mean(z[..., :, None] > y_grid, axis=-2)  # (..., Y)
    loss = np.asarray(loss)
    val = loss[..., :, None] / loss_threshold(beta, y_grid) + frac[..., None, :]
    return np.minimum(val.min(-1), 1.0)


def margin_remainder(H, m_hat, t, *, lr: float, beta: float, rho):
    """Per example, a bound on ``|2 R_t^T h_k|`` with ``R_t = v_t - (lr beta t / 2) m_hat`` (full-batch GD):
    the smaller of ``2 rho_t ||h_k||`` (Cauchy-Schwarz with :func:`remainder_bound`) and our sharper
    ``lr beta phi_kappa(t) sqrt(h_k^T G h_k) sqrt(m_hat^T G m_hat) / ||G||`` (``G = mean h h^T``), which sees
    how little of the curvature lies along ``m_hat`` and along ``h_k``. ``H (..., n, d)``, ``m_hat (..., d)``,
    ``rho (..., T)``; returns ``(..., T, n)``.
    """
    H = np.asarray(H, dtype=np.float64)
    m_hat = np.asarray(m_hat, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    n = H.shape[-2]
    G = np.matmul(np.swapaxes(H, -1, -2), H) / n
    g_norm = np.linalg.eigvalsh(G)[..., -1]
    kap = kappa_of(lr, beta, g_norm)
    hGh = np.sqrt(np.maximum(np.einsum("...nd,...de,...ne->...n", H, G, H), 0.0))
    mGm = np.sqrt(np.maximum(np.einsum("...d,...de,...e->...", m_hat, G, m_hat), 0.0))
    ph = phi(np.asarray(kap)[..., None], t)  # (..., T)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(g_norm > 0, mGm / g_norm, 0.0)
    sharp = lr * beta * (scale[..., None] * ph)[..., :, None] * hGh[..., None, :]
    cs = 2.0 * np.asarray(rho, dtype=np.float64)[..., :, None] * np.linalg.norm(H, axis=-1)[..., None, :]
    return np.minimum(sharp, cs)


def boundary_guarantee(a, m_hat, H, s, t, *, lr: float, beta: float, rho, sharp: bool = True):
    """Our decision-boundary guarantee on the official training accuracy after t full-batch steps: the
    fraction of training pairs with ``s (a + lr beta t m_hat)^T h_k > r_k(t)``, where ``r_k(t)`` bounds
    ``|2 R_t^T h_k|`` (:func:`margin_remainder`; with ``sharp=False`` only ``2 rho_t ||h_k||``, ``rho_t``
    from :func:`remainder_bound`). Computed from the data alone, before training. ``H (..., n, d)``,
    ``m_hat (..., d)``, ``rho (..., T)``; returns ``(..., T)``.
    """
    H = np.asarray(H, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    base = s * np.einsum("...nd,d->...n", H, np.asarray(a, dtype=np.float64))  # s a^T h
    lin = s * np.einsum("...nd,...d->...n", H, np.asarray(m_hat, dtype=np.float64))  # s m_hat^T h
    rho = np.asarray(rho, dtype=np.float64)
    if sharp:
        rem = margin_remainder(H, m_hat, t, lr=lr, beta=beta, rho=rho)
    else:
        rem = 2.0 * rho[..., :, None] * np.linalg.norm(H, axis=-1)[..., None, :]
    margin = base[..., None, :] + lr * beta * t[:, None] * lin[..., None, :]
    return np.mean(margin > rem, axis=-1)


def guarantee_horizon(guarantee, t_min: int = 1):
    """The horizon our a-priori guarantee picks for itself: per training set, the first step
    ``t* >= t_min`` where the decision-boundary guarantee (computed before training) is largest, and
    that guarantee. ``guarantee (..., T + 1)``; returns ``(t_star (...), value (...))``.
    """
    g = np.asarray(guarantee, dtype=np.float64)[..., t_min:]
    k = np.argmax(g, axis=-1)
    return k + t_min, np.take_along_axis(g, k[..., None], -1)[..., 0]


def realised_comparator_loss(H, s, t, *, beta: float, lr: float, n_x: int = 200):
    """A bound on the training loss after t full-batch steps that holds whenever ``kappa <= 1``, computed
    from the data before training: ``min(ln 2, min_u [L_S(u) + ||u||^2 / (lr t)])`` over comparators
    ``u = x w / (2 beta)`` with ``w`` along the sample ``mu_+ - mu_-`` or along ``m_hat`` and ``x`` on a
    log grid (item 2 of the accuracy theorem). ``H (R, n, d)`` or ``(n, d)``; returns ``(R, T)`` or ``(T,)``.
    """
    from scipy.special import log_expit

    H = np.asarray(H, dtype=np.float64)
    single = H.ndim == 2
    H = H[None] if single else H
    s = np.asarray(s, dtype=np.float64)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    xs = np.geomspace(1e-3, 1e3, int(n_x))
    with np.errstate(divide="ignore"):
        pen = xs[None, :] ** 2 / (4.0 * beta ** 2 * lr * t[:, None])  # (T, X); inf at t = 0
    out = np.full((H.shape[0], t.size), LN2)
    st = sample_statistics(H, s)
    dirs = [st["mu_plus"] - st["mu_minus"], st["m_hat"]]
    for w in dirs:
        nw = np.linalg.norm(w, axis=-1, keepdims=True)
        w = np.where(nw > 0, w / np.where(nw > 0, nw, 1.0), 0.0)
        z = s * np.einsum("rnd,rd->rn", H, w)  # (R, n)
        Lu = -np.mean(log_expit(xs[None, :, None] * z[:, None, :]), axis=-1)  # (R, X)
        out = np.minimum(out, np.min(Lu[:, None, :] + pen[None], axis=-1))
    return out[0] if single else out


def kappa_tail_bound(problem: AccuracyProblem) -> float:
    """A bound on ``P(kappa > 1)`` under the hypotheses of part (iii) of the accuracy theorem (independent
    embeddings, fixed labels): ``kappa <= lr beta^2 M2_hat / 2`` with ``M2_hat = mean ||h||^2``, and
    Cantelli's inequality with the exact mean and variance of ``M2_hat``; 1 when the step exceeds the
    limit ``2 / (beta^2 E M2_hat)``.
    """
    limit = 2.0 / (problem.lr * problem.beta ** 2)
    n = {+1: problem.n_plus, -1: problem.n_minus}
    mean = sum(problem.pi[j] * (c.mean @ c.mean + c.trace) for j, c in problem.model.classes())
    var = sum(n[j] * c.norm_sq_var for j, c in problem.model.classes()) / problem.n ** 2
    gap = limit - mean
    if gap <= 0:
        return 1.0
    return float(var / (var + gap ** 2))


def unconditional_error_bound(problem: AccuracyProblem, t, kind: str = "official"):
    """Our bound on the *unconditional* expected training error ``E[1 - A_t]``: the truncated bound of
    :func:`expected_error_bound` (on ``E[(1 - A_t) 1{kappa <= 1}]``) plus :func:`kappa_tail_bound`
    (``1 - A_t <= 1`` on ``kappa > 1``), capped at 1.
    """
    return np.minimum(expected_error_bound(problem, t, kind) + kappa_tail_bound(problem), 1.0)


def random_offset(rng, model: TwoClass, norm: float, cos: float) -> np.ndarray:
    """A reference offset ``a = W_0^T u`` of norm ``norm`` whose cosine with ``mu_+ - mu_-`` is ``cos``
    (negative: the reference model leans the wrong way).
    """
    rng = as_rng(rng)
    if not -1 <= cos <= 1:
        raise ValueError(f"cos must lie in [-1, 1], got {cos!r}")
    e_b = model.b / np.linalg.norm(model.b)
    x = rng.standard_normal(model.d)
    x -= (x @ e_b) * e_b
    e_p = x / np.linalg.norm(x)
    return norm * (cos * e_b + math.sqrt(1 - cos ** 2) * e_p)


@one_thread()
def accuracy_instance(params: dict[str, Any], rng, *, steps: int, repeats: int, eps: float = 0.1,
                      mutate: float = 1.0):
    """Run one random instance of the accuracy sweep. ``params`` adds to :class:`InstanceRanges`'s keys
    ``p_plus`` (class balance), ``a_rel`` and ``a_cos`` (the offset's norm, in units of
    ``2 / (beta ||mu_+ - mu_-||)``, where its margin matches a DPO margin of order 1, and its cosine
    with ``mu_+ - mu_-``) and ``lr_frac``: the step is
    ``lr_frac`` times the largest step the condition ``kappa <= 1`` allows on average
    (``2 / (beta^2 E M2)``). Returns ``(row, curves)``. ``mutate`` < 1 moves every headline bound in the
    direction of violation before it is checked (:func:`mutate_bound`; for the mutation tests).
    """
    d, n = params["d"], params["n"]
    model = model_from(params, rng)
    beta = params["beta_prime"] / math.sqrt(d)
    n_plus = min(max(int(round(params["p_plus"] * n)), 2), n - 2)
    pi = {+1: n_plus / n, -1: (n - n_plus) / n}
    m2 = sum(pi[j] * (c.mean @ c.mean + c.trace) for j, c in model.classes())
    lr = params["lr_frac"] * 2.0 / (beta ** 2 * m2)
    a = random_offset(rng, model, params["a_rel"] * 2.0 / (beta * model.distinguishability), params["a_cos"])
    problem = AccuracyProblem(model, a, n_plus, n - n_plus, beta, lr)
    H, s = model.sample(rng, n_plus, n - n_plus, repeats)
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)
    t = np.arange(steps + 1, dtype=np.float64)
    st = sample_statistics(H, s)
    kap = kappa_of(lr, beta, st["G_norm"])
    ok = kap <= 1.0  # the step condition, per run
    loss = dpo_loss_from_v(v, H, s, beta)  # (R, T+1)
    theta = decision_direction(a, v)
    acc = linear_accuracy(theta, H, s)
    acc_r = linear_accuracy(v, H, s)
    # first step: theta_1 = a + lr beta m_hat exactly; its fresh error obeys the tail lemma
    theta1 = a + lr * beta * st["m_hat"]
    first_exact = float(np.max(np.abs(theta[:, 1] - theta1)) / max(np.max(np.abs(theta1)), 1e-300))
    viol_lemma = excess(population_error(model, theta[:, 1], pi), lemma_error_bound(model, theta[:, 1], pi))
    # (i) deterministic: error <= loss-based bound, on every run and step
    viol_reward = excess(1 - acc_r, np.minimum(loss / LN2, 1.0))
    viol_official = excess(1 - acc, realised_error_bound(loss, beta=beta, a=a, H=H, s=s))
    # (ii) deterministic under kappa <= 1: L_S(v_t) <= L_S(u_t) + ||u_t||^2 / (lr t)
    u, _ = comparator_choice(problem, t)
    lu = dpo_loss_from_v(u[None], H, s, beta)  # (R, T+1): L_S(u_t)
    slack = lu + np.sum(u ** 2, -1) / (lr * np.where(t > 0, t, np.inf))
    sel = ok[:, None] & (t > 0)
    viol_comp = excess(loss[sel], np.broadcast_to(slack, loss.shape)[sel]) if sel.any() else -np.inf
    # (iii) expectations (Monte Carlo, 5 standard errors)
    b_loss = expected_loss_bound(problem, t)
    b_off = expected_error_bound(problem, t, "official")
    b_rew = expected_error_bound(problem, t, "reward")

    def mean_se(x):
        return x.mean(0), (x.std(0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros(x.shape[1]))

    ml, sl = mean_se(loss * ok[:, None])
    me, se = mean_se((1 - acc) * ok[:, None])
    mr, sr = mean_se((1 - acc_r) * ok[:, None])
    # (iv) probability: failure frequency of the eps-bound on the loss, per step
    b_prob = expected_loss_bound(problem, t, eps=eps)
    fail = np.mean(ok[:, None] & (loss > b_prob * (1 + FP_RTOL)), axis=0)
    # first-order prediction of the decision direction (population m) and its tail-lemma accuracy
    fo = first_order_direction(problem, t)
    T = steps
    # the headline guarantees: decision boundary (before training), comparator loss (before training,
    # kappa <= 1) and the loss route (after training, from the measured loss)
    rho = remainder_bound(t[None], lr=lr, beta=beta, mhat_norm=np.linalg.norm(st["m_hat"], axis=-1)[:, None],
                          G_norm=st["G_norm"][:, None], M1=st["M1"][:, None])
    g_bd = boundary_guarantee(a, st["m_hat"], H, s, t, lr=lr, beta=beta, rho=rho)
    comp = realised_comparator_loss(H, s, t, beta=beta, lr=lr)
    g_cmp = np.where(ok[:, None], 1.0 - realised_error_bound(comp, beta=beta, a=a, H=H, s=s), 0.0)
    g_post = 1.0 - realised_error_bound(loss, beta=beta, a=a, H=H, s=s)
    g_prior = np.maximum(g_bd, g_cmp)
    g_post = np.maximum(g_bd, g_post)
    comp_ok = np.where(ok[:, None], comp, np.inf)
    # the guarantee at the horizon it picks for itself (before training): t* = argmax_t g_bd(t), t >= 1
    t_star, g_hor = guarantee_horizon(g_bd, t_min=2)  # t = 1 is exact by construction (rho_1 = 0)
    acc_star = acc[np.arange(acc.shape[0]), t_star]
    g_bd_cs = boundary_guarantee(a, st["m_hat"], H, s, t, lr=lr, beta=beta, rho=rho, sharp=False)
    b_unc = unconditional_error_bound(problem, t)
    mu_, su_ = mean_se(1 - acc)
    row = dict(params)
    row.update({
        "lr": lr, "beta": beta, "alpha": model.alpha, "c_n": model.c_n, "c_v": model.c_v, "n_plus": n_plus,
        "a_norm": float(np.linalg.norm(a)), "kappa_max": float(kap.max()), "frac_step_ok": float(ok.mean()),
        "first_step_rel_err": first_exact, "viol_lemma": viol_lemma,
        "viol_reward": viol_reward, "viol_official": viol_official, "viol_comparator": viol_comp,
        # t >= 1 only: at t = 0 the boundary guarantee is the reference accuracy itself
        "viol_guarantee_prior": excess(acc[:, 1:], mutate_bound(g_prior[:, 1:], "lower", mutate), upper=False),
        "viol_guarantee_post": excess(acc[:, 1:], mutate_bound(g_post[:, 1:], "lower", mutate), upper=False),
        "viol_loss_prior": excess(loss[:, 1:], mutate_bound(comp_ok[:, 1:], "upper", mutate)),
        "viol_guarantee_horizon": excess(acc_star, mutate_bound(g_hor, "lower", mutate), upper=False),
        "t_star_median": float(np.median(t_star)), "guarantee_horizon": float(g_hor.mean()),
        "certified_gain": float(np.median(np.where(acc[:, T] > acc[:, 0], (g_hor - acc[:, 0]) / np.maximum(acc[:, T] - acc[:, 0], 1e-12), np.nan))) if np.any(acc[:, T] > acc[:, 0]) else float("nan"),
        "acc_star": float(acc_star.mean()), "boundary_cs_best": float(g_bd_cs[:, 1:].max(1).mean()),
        "boundary_cs_T": float(g_bd_cs[:, T].mean()),
        "phi_exceeds_T": float(np.mean(phi(kap, T) >= T)),
        "mc_unconditional_margin": mc_margin(b_unc, mu_, su_),
        "p_kappa_bound": kappa_tail_bound(problem),
        "unconditional_nonvacuous": float(b_unc[T] < 1),
        "guarantee_prior_T": float(g_prior[:, T].mean()), "guarantee_post_T": float(g_post[:, T].mean()),
        "boundary_T": float(g_bd[:, T].mean()), "boundary_best": float(g_bd.max(1).mean()),
        "mc_loss_margin": mc_margin(b_loss, ml, sl),
        "mc_official_margin": mc_margin(b_off, me, se),
        "mc_reward_margin": mc_margin(b_rew, mr, sr),
        "prob_fail_max": float(fail.max()),
        "prob_fail_allowed": float(eps + 5 * math.sqrt(eps * (1 - eps) / repeats)),
        "acc_0": float(acc.mean(0)[0]), "acc_T": float(acc.mean(0)[T]), "reward_acc_T": float(acc_r.mean(0)[T]),
        "loss_T": float(loss.mean(0)[T]),
        "bound_acc_T": float(1 - b_off[T]), "bound_reward_acc_T": float(1 - b_rew[T]),
        "bound_loss_T": float(b_loss[T]),
        # tightness at the last step: measured / bound (<= 1 when the bound holds)
        "ratio_loss": float(ml[T] / b_loss[T]),
        "ratio_error_official": float(me[T] / b_off[T]),
        "ratio_error_reward": float(mr[T] / b_rew[T]),
    })
    accT = acc[:, T]
    row.update(headline_row("guarantee_prior", accT, g_prior[:, T], "lower", g_prior[:, T] > 0))
    row.update(headline_row("guarantee_horizon", acc_star, g_hor, "lower", g_hor > 0))
    row.update(headline_row("guarantee_post", accT, g_post[:, T], "lower", g_post[:, T] > 0))
    row.update(headline_row("loss_prior", loss[:, T], comp_ok[:, T], "upper", comp_ok[:, T] < LN2 * (1 - FP_RTOL)))
    curves = {"t": t, "loss": ml, "error": me, "error_reward": mr, "bound_loss": b_loss,
              "bound_error": b_off, "bound_error_reward": b_rew, "bound_loss_prob": b_prob,
              "first_order_error": population_error(model, fo, pi),
              "first_order_lemma": lemma_error_bound(model, fo, pi),
              "fresh_error": population_error(model, theta, pi).mean(0),
              "accuracy": acc.mean(0), "guarantee_boundary": g_bd.mean(0), "guarantee_comparator": g_cmp.mean(0),
              "guarantee_prior": g_prior.mean(0), "guarantee_post": g_post.mean(0),
              "loss_prior": np.where(ok[:, None], comp, LN2).mean(0), "bound_error_unconditional": b_unc}
    return row, curves


@dataclass(frozen=True)
class AccuracyRanges(InstanceRanges):
    """:class:`InstanceRanges` plus the class balance, the reference offset and the step as a fraction of
    the step condition's limit.
    """

    delta_range: tuple[float, float] = (0.2, 3.0)
    p_plus_range: tuple[float, float] = (0.3, 0.7)
    a_rel_range: tuple[float, float] = (0.0, 1.0)
    a_cos_range: tuple[float, float] = (-0.8, 0.8)
    lr_frac_range: tuple[float, float] = (0.05, 0.9)

    def draw(self, rng) -> dict[str, Any]:
        p = super().draw(rng)
        p.pop("lr")
        p.update(p_plus=float(rng.uniform(*self.p_plus_range)), a_rel=float(rng.uniform(*self.a_rel_range)),
                 a_cos=float(rng.uniform(*self.a_cos_range)), lr_frac=loguniform(rng, *self.lr_frac_range))
        return p


@one_thread()
def sweep_accuracy(seed: int, n_instances: int, *, steps: int = 100, repeats: int = 16,
                   ranges: AccuracyRanges | None = None, mutate: float = 1.0):
    """The accuracy sweep: a DataFrame with one row per random instance (see :func:`accuracy_instance`)."""
    import pandas as pd

    out = run_sweep(accuracy_instance, ranges or AccuracyRanges(), seed, n_instances, "accuracy sweep",
                    steps=steps, repeats=repeats, mutate=mutate)
    return pd.DataFrame([row for row, _ in out])


@one_thread()
def accuracy_curves(seed: int, *, d: int, n: int, beta_prime: float, lr_frac: float, steps: int,
                    deltas: Sequence[float], family: str = "gaussian", repeats: int = 8, p_plus: float = 0.5,
                    a_rel: float = 0.5, a_cos: float = -0.5, center_norm: float = 0.5, trace_per_dim: float = 0.5,
                    decay: float = 0.5) -> list[dict[str, Any]]:
    """Mean training loss and errors over steps, with our bounds, one entry per distinguishability in
    ``deltas`` (see :func:`accuracy_instance` for the parameters). Each entry also holds the instance's
    ``row``.
    """
    base = {"d": d, "n": n, "center_norm": center_norm, "trace_per_dim": trace_per_dim, "decay": decay,
            "family": family, "beta_prime": beta_prime, "lr_frac": lr_frac, "p_plus": p_plus, "a_rel": a_rel,
            "a_cos": a_cos}
    return run_curves(accuracy_instance, seed, base, deltas, steps=steps, repeats=repeats)
