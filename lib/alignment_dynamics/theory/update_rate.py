"""The update-rate bounds of `book/update_rate.md` (our statements in the spirit of Theorem 4.1 of Im & Li):
the first-order band, the energy and convexity bounds, the scaled bounds with Bernstein's lemma, the SGD
fluctuation bound and the margin concentration, and the chapter's sweep over random instances.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import validate as _v
from .checks import as_rng, require_prob
from .closed_form import (
    dpo_loss_from_v, first_step_norm_balanced, first_step_v, head_change, logistic_gd, logistic_sgd,
    sample_statistics,
)
from .families import (
    ClassConditional, FAMILIES, gaussian_tail_constant, make_two_class, random_orthogonal, random_unit,
    TwoClass,
)
from .headline import excess, FP_RTOL, headline_row, mc_margin, mutate_bound
from .sweeps import InstanceRanges, model_from, run_curves, run_sweep
from ..threads import one_thread


def phi(kappa, t):
    """``phi_kappa(t) = ((1 + kappa)^t - 1 - kappa t) / kappa`` (0 at kappa = 0; about kappa t^2 / 2)."""
    kappa = np.asarray(kappa, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if np.any(kappa < 0):
        raise ValueError("kappa must be non-negative")
    kt = kappa * t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exact = (np.expm1(t * np.log1p(kappa)) - kt) / kappa
    series = kt * (t - 1) / 2 + kappa * kt * (t - 1) * (t - 2) / 6
    return np.where(kt < 1e-6, series, exact)


def kappa_of(lr: float, beta: float, G_norm) -> np.ndarray:
    """``kappa = lr beta^2 ||G_hat|| / 2``, the curvature factor of one step (``G_hat = mean h h^T``)."""
    lr, beta = _v.positive("lr", lr), _v.positive("beta", beta)
    G_norm = _v.finite_array("G_norm", G_norm)
    if np.any(G_norm < 0):
        raise _v.InputError("G_norm (the largest eigenvalue of mean h h^T) must be >= 0")
    return lr * beta ** 2 * G_norm / 2.0


def remainder_bound(t, *, lr: float, beta: float, mhat_norm, G_norm, M1=None):
    """``rho_t``: a bound on ``||v_t - (lr beta t / 2) m_hat||`` for full-batch GD.

    ``rho_t = (lr beta ||m_hat|| / 2) phi_kappa(t)``, and, when ``M1 = mean ||h||`` is given, the minimum
    with ``kappa lr beta M1 t (t - 1) / 2``.
    """
    kappa = kappa_of(lr, beta, G_norm)
    t = np.asarray(t, dtype=np.float64)
    rho = 0.5 * lr * beta * np.asarray(mhat_norm) * phi(kappa, t)
    if M1 is not None:
        rho = np.minimum(rho, kappa * lr * beta * np.asarray(M1) * t * (t - 1) / 2.0)
    return rho


def linear_upper_bound(t, *, lr: float, beta: float, M1):
    """``||W_t - W_0||_F <= sqrt(2) lr beta M1 t`` (``M1`` the mean embedding norm).

    For SGD, pass ``M1`` as the largest batch-mean norm (or the largest norm).
    """
    return math.sqrt(2.0) * lr * beta * np.asarray(M1) * np.asarray(t, dtype=np.float64)


def first_order_band(t, *, lr: float, beta: float, mhat_norm, G_norm, M1):
    """``(lower, first_order, upper)`` for ``||W_t - W_0||_F``: ``sqrt(2)|lr beta t ||m_hat||/2 +- rho_t|``,
    the upper side also capped by :func:`linear_upper_bound`.
    """
    t = np.asarray(t, dtype=np.float64)
    main = math.sqrt(2.0) * lr * beta * t * np.asarray(mhat_norm) / 2.0
    rho = math.sqrt(2.0) * remainder_bound(t, lr=lr, beta=beta, mhat_norm=mhat_norm, G_norm=G_norm, M1=M1)
    upper = np.minimum(main + rho, linear_upper_bound(t, lr=lr, beta=beta, M1=M1))
    return np.maximum(main - rho, 0.0), main, upper


def bernstein_radius(eps: float, n: int, alpha: float):
    """``y`` with ``P(|mean of n independent alpha-subexponential| >= y) <= eps``:
    ``4 alpha max(sqrt(L/n), L/n)``, ``L = ln(2/eps)`` (our Lemma on sums).
    """
    require_prob("eps", eps)
    n = _v.count("n", n, lo=1)
    alpha = _v.positive("alpha", alpha)
    L = math.log(2.0 / eps)
    return 4.0 * alpha * max(math.sqrt(L / n), L / n)


def scaled_upper_expected(t, *, lr: float, beta_prime: float, c_n: float):
    """``E ||W_t - W_0||_F <= sqrt(2) lr beta' c_n t`` under (H2) and ``beta = beta' / sqrt(d)``."""
    return math.sqrt(2.0) * lr * beta_prime * c_n * np.asarray(t, dtype=np.float64)


def scaled_bounds(t, *, lr: float, beta_prime: float, delta: float, c_v: float, c_n: float, n: int,
                  d: int, alpha: float | None = None, eps1: float = 0.05, eps2: float = 0.05,
                  kappa=None):
    """The high-probability two-sided bounds of our update-rate theorem, balanced classes.

    With probability at least ``1 - eps1 - eps2``, for every t,
    ``lower(t) <= ||W_t - W_0||_F <= upper(t)`` where
    ``lower = (sqrt(2)/4) lr beta' [delta - omega]_+ [t - phi_kbar(t)]_+``,
    ``upper = sqrt(2) lr beta' c_n t / sqrt(eps2)``, ``kbar = lr beta'^2 c_n^2 / (2 eps2)``,
    ``omega = min(2 sqrt(c_v / (gamma d eps1)), 8 alpha max(sqrt(L/n), L/n) / sqrt(d))``,
    ``gamma = n / sqrt(d)``, ``L = ln(2 / eps1)``. Returns ``(lower, upper, omega, kbar)``.

    With ``kappa`` given (the realised ``lr beta^2 ||G_hat|| / 2``, known before training), ``lower`` uses
    it instead of ``kbar`` and then holds with probability at least ``1 - eps1``.
    """
    require_prob("eps1", eps1)
    require_prob("eps2", eps2)
    gamma = n / math.sqrt(d)
    omega = 2.0 * math.sqrt(c_v / (gamma * d * eps1))
    if alpha is not None:
        omega = min(omega, 2.0 * bernstein_radius(eps1, n, alpha) / math.sqrt(d))
    kbar = lr * beta_prime ** 2 * c_n ** 2 / (2.0 * eps2)
    t = np.asarray(t, dtype=np.float64)
    k = kbar if kappa is None else np.asarray(kappa, dtype=np.float64)
    lower = math.sqrt(2.0) / 4.0 * lr * beta_prime * max(delta - omega, 0.0) * np.maximum(t - phi(k, t), 0.0)
    upper = math.sqrt(2.0) * lr * beta_prime * c_n * t / math.sqrt(eps2)
    return lower, upper, omega, kbar


def energy_upper_bound(loss0, loss_t, t, *, lr: float, kappa):
    """``sqrt(lr t (L_0 - L_t) / (1 - kappa / 2))``: our energy bound on ``||W_t - W_0||_F`` for full-batch
    GD with ``kappa = lr beta^2 ||G_hat|| / 2 < 2`` (``inf`` where ``kappa >= 2``). It ties the loss drop
    (the paper's Figure 3) to the head change (Figure 4). Broadcasts over its inputs.
    """
    t = np.asarray(t, dtype=np.float64)
    kappa = np.asarray(kappa, dtype=np.float64)
    drop = np.maximum(np.asarray(loss0, dtype=np.float64) - np.asarray(loss_t, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.sqrt(lr * t * drop / (1.0 - kappa / 2.0))
    return np.where(kappa < 2.0, val, np.inf)


def convexity_lower_bound(loss0, loss_t, *, beta: float, mhat_norm):
    """``sqrt(2) (L_0 - L_t) / (beta ||m_hat||)``: our convexity bound from below on ``||W_t - W_0||_F``
    (any training that starts at the reference; ``m_hat = mean s h``).
    """
    drop = np.asarray(loss0, dtype=np.float64) - np.asarray(loss_t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(math.sqrt(2.0) * drop / (beta * np.asarray(mhat_norm, dtype=np.float64)), 0.0)


def smoothness_step_limit(beta: float, G_norm: float) -> float:
    """The largest step with guaranteed descent, ``lr < 4 / (beta^2 ||G_hat||)`` (``L`` is
    ``beta^2 ||G_hat|| / 2``-smooth in W).
    """
    return 4.0 / (beta ** 2 * G_norm)


def propagated_window(kappa, t):
    """``ell_kappa(t) = max{[t - phi_kappa(t)]_+, max_{1 <= t' <= t} (1 - kappa/2) [t' - phi_kappa(t')]_+^2 / t'}``:
    the effective number of first-order steps in our a-priori lower bound. The first term is the
    first-order window; the second carries it past ``kappa t ~ 1`` through the descent lemma and
    convexity (only for ``kappa < 2``; it never falls as t grows). ``t`` is the step grid ``0, 1, ..., T``
    on the last axis; ``kappa`` broadcasts against ``t[..., None]`` minus the last axis.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    win = np.maximum(t - phi(kappa, t), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prop = np.where(t > 0, (1.0 - kappa / 2.0) * win ** 2 / np.where(t > 0, t, 1.0), 0.0)
    prop = np.where(kappa < 2.0, np.maximum.accumulate(np.maximum(prop, 0.0), axis=-1), 0.0)
    return np.maximum(win, prop)


def scaling_lower_bound(t, *, lr: float, beta_prime: float, delta_hat, kappa):
    """Item 3 of our update-rate theorem: ``||W_t - W_0||_F >= (sqrt(2)/4) lr beta' delta_hat ell_kappa(t)``
    for balanced full-batch GD, with ``delta_hat = ||mu_hat_+ - mu_hat_-|| / sqrt(d)`` the sample's
    normalised distinguishability and ``kappa`` the realised curvature factor (both known before
    training); :func:`propagated_window` gives ``ell``. Deterministic.
    """
    return (math.sqrt(2.0) / 4.0 * lr * beta_prime * np.asarray(delta_hat, dtype=np.float64)
            * propagated_window(kappa, t))


def _projected_noise(cls: "ClassConditional", P: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """``(tr S, ||S||_F^2, Var ||P (h - mu)||^2, S)`` with ``S = P Sigma P`` (exact for our scale mixtures)."""
    S = P @ cls.cov @ P
    ev2 = cls.v_second_moment
    tr, fr = float(np.trace(S)), float(np.sum(S ** 2))
    return tr, fr, (ev2 - 1.0) * tr ** 2 + 2.0 * ev2 * fr, S


def population_distinguishability_bound(model: "TwoClass", n_plus: int, n_minus: int, eps: float) -> dict[str, float]:
    """Item 4 of our update-rate theorem: a lower bound ``delta_eps`` on the sample's normalised
    distinguishability ``||mu_hat_+ - mu_hat_-|| / sqrt(d)`` that holds with probability at least
    ``1 - eps``, from the distribution alone.

    ``delta_eps^2 d = [||b|| - x_1]_+^2 + [tau_perp - x_3]_+`` where, with ``e = b / ||b||`` and
    ``P = I - e e^T``: ``x_1 = sigma_e sqrt(2/eps - 1)`` (Cantelli at ``eps/2``),
    ``sigma_e^2 = e^T Sigma_+ e / n_+ + e^T Sigma_- e / n_-``; ``tau_perp = sum_i tr(P Sigma_i P) / n_i``
    (the sampling noise orthogonal to b, which *adds* to the norm); ``x_3 = s_perp sqrt(2/eps - 1)`` with
    ``s_perp^2 = sum_i [nu_i + 2 (n_i - 1) ||P Sigma_i P||_F^2] / n_i^3 + 4 tr(P Sigma_+ P Sigma_- P) / (n_+ n_-)``
    (the exact variance of ``||P (Z_+ - Z_-)||^2``), ``nu_i = Var ||P (h - mu_i)||^2``. Returns the parts.
    """
    require_prob("eps", eps)
    d = model.d
    b = model.b
    nb = float(np.linalg.norm(b))
    e = b / nb if nb > 0 else np.eye(d)[0]
    P = np.eye(d) - np.outer(e, e)
    n = {+1: int(n_plus), -1: int(n_minus)}
    k = math.sqrt(2.0 / eps - 1.0)
    sig_e2 = sum(float(e @ c.cov @ e) / n[j] for j, c in model.classes())
    parts = {j: _projected_noise(c, P) for j, c in model.classes()}
    tau = sum(parts[j][0] / n[j] for j in n)
    s2 = sum((parts[j][2] + 2.0 * (n[j] - 1) * parts[j][1]) / n[j] ** 3 for j in n)
    s2 += 4.0 * float(np.sum(parts[+1][3] * parts[-1][3])) / (n[+1] * n[-1])
    x1, x3 = k * math.sqrt(sig_e2), k * math.sqrt(s2)
    d2 = max(nb - x1, 0.0) ** 2 + max(tau - x3, 0.0)
    return {"delta_eps": math.sqrt(d2 / d), "x1": x1, "tau_perp": tau, "x3": x3, "sigma_e": math.sqrt(sig_e2),
            "s_perp": math.sqrt(s2), "along_b_vacuous": float(nb <= x1), "noise_vacuous": float(tau <= x3)}


def sgd_fluctuation_bound(var, *, lr: float, beta: float):
    """Our SGD statement: ``E ||W^SGD_t - W^GD_t||_F^2 <= 2 lr^2 beta^2 sum_{t' < t} E V_t'`` when
    ``kappa <= 2``, with ``V_t'`` the conditional batch-gradient variance at the SGD iterate
    (:func:`logistic_sgd`). ``var (..., T)``; returns the bound on the RMS distance, ``(..., T + 1)``
    (0 at t = 0). Averaging ``var`` over training sets first gives the bound on the mean square.
    """
    var = np.asarray(var, dtype=np.float64)
    cum = np.concatenate([np.zeros(var.shape[:-1] + (1,)), np.cumsum(var, -1)], -1)
    return math.sqrt(2.0) * lr * beta * np.sqrt(cum)


def sgd_rate_bound(t, *, lr: float, beta: float, M2, n: int, batch: int):
    """The a-priori corollary: ``E ||W^SGD_t - W^GD_t||_F^2 <= 2 lr^2 beta^2 M2 (n - B) / ((n - 1) B) t``
    (``M2 = mean ||h||^2``), i.e. an RMS fluctuation of order ``lr beta sqrt(M2 t / B)``.
    """
    fpc = (n - batch) / ((n - 1) * batch) if n > 1 else 0.0
    return math.sqrt(2.0) * lr * beta * np.sqrt(np.asarray(M2, dtype=np.float64) * fpc * np.asarray(t, dtype=np.float64))


def check_bernstein(rng, *, n: int = 50, trials: int = 20000, levels: Sequence[float] = (0.5, 0.1, 0.01)) -> "Any":
    """Monte Carlo check of our Bernstein lemma for means of n independent alpha-subexponential
    variables: the empirical ``P(|mean| >= y_eps)`` (with its standard error) against ``eps``, where
    ``y_eps`` is :func:`bernstein_radius`. One row per (family, eps).
    """
    import pandas as pd

    rng = as_rng(rng)
    rows = []
    for fam in FAMILIES:
        cls = ClassConditional(np.zeros(1), np.ones((1, 1)), fam)
        means = cls.sample(rng, (trials, n))[..., 0].mean(-1)
        for eps in levels:
            y = bernstein_radius(eps, n, cls.alpha)
            p = float(np.mean(np.abs(means) >= y))
            rows.append({"family": fam, "eps": eps, "radius": y, "empirical": p,
                         "se": math.sqrt(max(p * (1 - p), 1.0 / trials) / trials), "std of mean": float(means.std())})
    return pd.DataFrame(rows)


def bernstein_looseness(n: int, eps: float) -> float:
    """For means of n standard Gaussians (alpha = ``gaussian_tail_constant()``): our Bernstein radius
    divided by the exact radius ``z_{1 - eps/2} / sqrt(n)``. At least 1 exactly when the lemma holds for
    this law; its size is how loose the lemma's constants are.
    """
    from scipy.special import ndtri

    require_prob("eps", eps)
    exact = float(ndtri(1.0 - eps / 2.0)) / math.sqrt(n)
    return bernstein_radius(eps, n, gaussian_tail_constant()) / exact


@one_thread()
def _spiked_two_class(rng, d: int, *, delta: float, center_norm: float, trace_per_dim: float,
                      decay: float = 0.5) -> TwoClass:
    """Gaussian classes sharing the spectrum ``lambda_i ~ i^(-decay)`` (``||Sigma|| = c_v sqrt(d)`` with c_v
    about constant in d for decay 1/2) whose top eigenvector is ``mu_+ - mu_-``: the construction that
    attains our margin-change bound."""
    e_b = random_unit(rng, d)
    Q = random_orthogonal(rng, d)
    Q[:, 0] = e_b
    Q, _ = np.linalg.qr(Q)
    Q[:, 0] *= np.sign(Q[:, 0] @ e_b)
    lam = np.arange(1, d + 1, dtype=np.float64) ** (-float(decay))
    lam *= trace_per_dim * d / lam.sum()
    c = center_norm * math.sqrt(d) * random_unit(rng, d)
    b = delta * math.sqrt(d) * Q[:, 0]
    factor = Q * np.sqrt(lam)
    return TwoClass(ClassConditional(c + b / 2, factor), ClassConditional(c - b / 2, factor))


MARGIN_CASES: tuple[str, ...] = ("isotropic", "spiked", "random")


def check_margin_concentration(rng, *, dims: Sequence[int] = (16, 64, 256, 512), n: int = 256,
                               delta: float = 0.5, beta_prime: float = 0.64, lr: float = 0.1,
                               trace_per_dim: float = 1.0, cases: Sequence[str] = MARGIN_CASES,
                               center_norm: float = 0.5, n_fresh: int = 2000, mutate: float = 1.0):
    """Our per-example margin-change statement, checked: for each ``d`` and covariance case, one balanced
    Gaussian training set of ``n`` pairs, one full-batch step, and ``n_fresh`` fresh examples per class.
    Cases: ``isotropic`` (``Sigma = tau I``), ``spiked`` (spectrum ``i^(-1/2)``, so ``c_v`` is about
    constant in d, with ``mu_+ - mu_-`` along the top eigenvector: the bound's worst case) and ``random``
    (the same spectrum, randomly rotated per class).

    Columns: the measured standard deviation over fresh examples of the one-step change of the reward
    margin ``Delta r(x) = 2 beta s v_1^T x`` (pooled over the classes), its exact value given the training
    set ``(lr beta^2 / 2) sqrt(D^T Sigma_i D)`` (``D = mu_hat_+ - mu_hat_-``), our bound
    ``(lr beta'^2 delta_hat / 2) sqrt(c_v) d^(-1/4)`` (moved by ``mutate`` in the direction of violation),
    the population bound on its root mean square ``(lr beta'^2 / 2) sqrt(c_v) d^(-1/4) sqrt(delta^2 +
    (tr Sigma_+ / n_+ + tr Sigma_- / n_-) / d)``, the mean change per class, and ``margin`` (the bound
    plus 5 standard errors minus the measured SD; >= 0 means the check passes).
    """
    import pandas as pd

    rng = as_rng(rng)
    rows = []
    for d in dims:
        for case in cases:
            if case == "spiked":
                model = _spiked_two_class(rng, int(d), delta=delta, center_norm=center_norm,
                                          trace_per_dim=trace_per_dim)
            elif case in ("isotropic", "random"):
                model = make_two_class(rng, int(d), delta=delta, center_norm=center_norm,
                                       trace_per_dim=trace_per_dim, decay=0.0 if case == "isotropic" else 0.5)
            else:
                raise ValueError(f"unknown case {case!r}; cases: {list(MARGIN_CASES)}")
            beta = beta_prime / math.sqrt(d)
            H, s = model.sample(rng, n // 2, n // 2)
            v1 = first_step_v(H, s, beta=beta, lr=lr)
            st = sample_statistics(H, s)
            D = st["mu_plus"] - st["mu_minus"]
            delta_hat = float(np.linalg.norm(D)) / math.sqrt(d)
            sds, exact, means, ses = [], [], {}, []
            for j, cls in model.classes():
                x = cls.sample(rng, n_fresh)
                dr = 2.0 * beta * j * (x @ v1)
                sd = float(dr.std(ddof=1))
                sds.append(sd)
                ses.append(sd / math.sqrt(2.0 * (n_fresh - 1)))
                exact.append(lr * beta ** 2 / 2.0 * math.sqrt(float(D @ cls.cov @ D)))
                means[j] = float(dr.mean())
            bound = lr * beta_prime ** 2 * delta_hat / 2.0 * math.sqrt(model.c_v) * d ** -0.25
            pop = (lr * beta_prime ** 2 / 2.0 * math.sqrt(model.c_v) * d ** -0.25
                   * math.sqrt(delta ** 2 + (model.plus.trace + model.minus.trace) * 2.0 / (n * d)))
            b_m = float(mutate_bound(bound, "upper", mutate))
            k = int(np.argmax(sds))
            rows.append({"d": int(d), "case": case, "c_v": model.c_v, "measured_sd": max(sds), "exact_sd": max(exact),
                         "bound_sd": bound, "population_rms_bound": pop, "tightness": max(sds) / bound,
                         "sd_times_d_quarter": max(sds) * d ** 0.25, "mean_plus": means[+1], "mean_minus": means[-1],
                         "exact_rel_err": float(np.max(np.abs(np.array(sds) - np.array(exact)) / np.array(exact))),
                         "exact_tolerance": 5.0 * ses[k] / sds[k],
                         "margin": b_m + 5.0 * ses[k] - sds[k], "exact_excess": excess(max(exact), bound)})
    return pd.DataFrame(rows)


@one_thread()
def update_rate_instance(params: dict[str, Any], rng, *, steps: int, repeats: int,
                         eps1: float = 0.05, eps2: float = 0.05,
                         mutate: float = 1.0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run one random instance of the update-rate sweep: ``repeats`` independent balanced training sets,
    ``steps`` full-batch GD steps each. Returns ``(row, curves)``.

    ``row`` holds the instance's constants, the worst violation of every deterministic bound (<= 0
    means it holds), the Monte Carlo margins of the probabilistic statements, tightness ratios at
    the last step, and ``tight_<name>`` / ``nonvac_<name>`` for each headline bound
    (:data:`HEADLINE_BOUNDS`). ``mutate`` < 1 moves every headline bound by that factor in the direction
    of violation before it is checked (:func:`mutate_bound`; for the mutation tests). ``curves`` holds
    mean measured and bound trajectories.
    """
    d, n = params["d"], _v.count("n", params["n"], lo=4, even=True)
    model = model_from(params, rng)
    beta = params["beta_prime"] / math.sqrt(d)
    lr = params["lr"]
    H, s = model.sample(rng, n // 2, n // 2, repeats)
    v = logistic_gd(H, s, beta=beta, lr=lr, steps=steps)
    meas = head_change(v)  # (R, T+1)
    st = sample_statistics(H, s)
    t = np.arange(steps + 1, dtype=np.float64)
    mhat_norm = np.linalg.norm(st["m_hat"], axis=-1)
    lin = linear_upper_bound(t[None], lr=lr, beta=beta, M1=st["M1"][:, None])
    lo, main, up = first_order_band(t[None], lr=lr, beta=beta, mhat_norm=mhat_norm[:, None],
                                    G_norm=st["G_norm"][:, None], M1=st["M1"][:, None])
    first = first_step_norm_balanced(lr, beta, np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1))
    exp_up = scaled_upper_expected(t, lr=lr, beta_prime=params["beta_prime"], c_n=model.c_n)
    s_lo, s_up, omega, kbar = scaled_bounds(t, lr=lr, beta_prime=params["beta_prime"],
                                            delta=model.distinguishability / math.sqrt(d), c_v=model.c_v,
                                            c_n=model.c_n, n=n, d=d, alpha=model.alpha, eps1=eps1, eps2=eps2)
    kap = kappa_of(lr, beta, st["G_norm"])[:, None]
    # item 3 (deterministic, a priori): the sample's normalised distinguishability and the propagated window
    delta_hat = np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1) / math.sqrt(d)
    r_lo = scaling_lower_bound(t[None], lr=lr, beta_prime=params["beta_prime"], delta_hat=delta_hat[:, None],
                               kappa=kap)
    # item 4 (probability >= 1 - eps1): the same with delta_hat replaced by its population lower bound
    pop = population_distinguishability_bound(model, n // 2, n // 2, eps1)
    p_lo = scaling_lower_bound(t[None], lr=lr, beta_prime=params["beta_prime"], delta_hat=pop["delta_eps"],
                               kappa=kap)
    r_fail = np.mean(np.any(meas < mutate_bound(p_lo, "lower", mutate) * (1 - FP_RTOL), axis=1))
    # the a-posteriori sandwich: convexity (below) and energy (above), from the loss drop
    loss = dpo_loss_from_v(v, H, s, beta)  # (R, T+1)
    en = energy_upper_bound(loss[:, :1], loss, t[None], lr=lr, kappa=kap)
    cv = convexity_lower_bound(loss[:, :1], loss, beta=beta, mhat_norm=mhat_norm[:, None])
    mean_meas = meas.mean(0)
    se = meas.std(0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros_like(mean_meas)
    hp_fail = np.mean(np.any((meas < s_lo * (1 - FP_RTOL)) | (meas > s_up * (1 + FP_RTOL)), axis=1))
    p_hp = eps1 + eps2
    T = steps
    rho = np.maximum(up - main, main - lo)
    row = dict(params)
    row.update({
        "beta": beta, "alpha": model.alpha, "c_v": model.c_v, "c_n": model.c_n,
        "gamma": n / math.sqrt(d), "delta_hat": float(np.mean(np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1))) / math.sqrt(d),
        "kappa": float(np.mean(kappa_of(lr, beta, st["G_norm"]))), "omega": omega, "kbar": kbar,
        # deterministic statements (violation <= 0 means the bound holds on every run and step)
        "viol_linear": excess(meas, lin),
        "viol_band_upper": excess(meas, mutate_bound(up, "upper", mutate)),
        "viol_band_lower": excess(meas, mutate_bound(lo, "lower", mutate), upper=False),
        "viol_energy_upper": excess(meas, mutate_bound(en, "upper", mutate)),
        "viol_convexity_lower": excess(meas, mutate_bound(cv, "lower", mutate), upper=False),
        "viol_scaling_lower": excess(meas, mutate_bound(r_lo, "lower", mutate), upper=False),
        "delta_eps": pop["delta_eps"], "pop_along_b_vacuous": pop["along_b_vacuous"],
        "pop_noise_vacuous": pop["noise_vacuous"],
        "first_step_rel_err": float(np.max(np.abs(meas[:, 1] - first) / first)),
        # probabilistic statements (Monte Carlo; margin >= 0 means consistent within 5 standard errors)
        "mc_expected_upper_margin": mc_margin(exp_up[1:], mean_meas[1:], se[1:]),
        "hp_fail_rate": float(hp_fail),
        "hp_fail_allowed": float(p_hp + 5 * math.sqrt(p_hp * (1 - p_hp) / repeats)),
        "realised_fail_rate": float(r_fail),
        "realised_fail_allowed": float(eps1 + 5 * math.sqrt(eps1 * (1 - eps1) / repeats)),
        # tightness at the last step
        "ratio_linear": float(np.mean(meas[:, T] / lin[:, T])),
        "ratio_expected": float(mean_meas[T] / exp_up[T]),
        "ratio_first_order": float(np.mean(meas[:, T] / main[:, T])),
        "band_use": float(np.max(np.abs(meas[:, T] - main[:, T]) / np.maximum(rho[:, T], 1e-300))),
        "ratio_scaled_lower": float(s_lo[T] / mean_meas[T]) if mean_meas[T] > 0 else 0.0,
        "ratio_realised_lower": float(np.mean(r_lo[:, T] / np.maximum(meas[:, T], 1e-300))),
        "ratio_population_lower": float(np.mean(p_lo[:, T] / np.maximum(meas[:, T], 1e-300))),
        "measured_T": float(mean_meas[T]),
        "first_step": float(meas[:, 1].mean()),
        "first_step_pred": float(first.mean()),
        "dist_hat": float(np.mean(np.linalg.norm(st["mu_plus"] - st["mu_minus"], axis=-1))),
        "loss_drop_T": float(np.mean(loss[:, 0] - loss[:, T])),
    })
    # headline bounds at the last step; an upper bound on the head change says something when it is
    # below the label-blind linear bound, a lower bound when it is positive
    mT, linT = meas[:, T], lin[:, T]
    row.update(headline_row("energy_upper", mT, en[:, T], "upper", en[:, T] < linT))
    row.update(headline_row("convexity_lower", mT, cv[:, T], "lower", cv[:, T] > 0))
    row.update(headline_row("band_upper", mT, up[:, T], "upper", up[:, T] < linT * (1 - FP_RTOL)))
    row.update(headline_row("band_lower", mT, lo[:, T], "lower", lo[:, T] > 0))
    row.update(headline_row("scaling_lower", mT, r_lo[:, T], "lower", r_lo[:, T] > 0))
    row.update(headline_row("scaling_population", mT, p_lo[:, T], "lower", p_lo[:, T] > 0))
    # SGD beyond the first step (drawn last, so the full-batch quantities above keep their random streams)
    batch = min(128, max(4, n // 8))
    v_sgd, var = logistic_sgd(H, s, beta=beta, lr=lr, steps=steps, batch=batch, rng=rng)
    dist2 = 2.0 * np.sum((v_sgd - v) ** 2, -1)  # ||W^SGD_t - W^GD_t||_F^2, (R, T+1)
    b_sgd = sgd_fluctuation_bound(var, lr=lr, beta=beta)  # per run, (R, T+1)
    b_sgd_m = mutate_bound(b_sgd, "upper", mutate)
    diff = dist2 - b_sgd_m ** 2
    se_d = diff.std(0, ddof=1) / math.sqrt(repeats) if repeats > 1 else np.zeros(steps + 1)
    sgd_applies = bool(np.all(kap < 2.0))
    rms = np.sqrt(dist2.mean(0))
    rms_bound = np.sqrt(np.mean(b_sgd ** 2, 0))
    rate = sgd_rate_bound(t, lr=lr, beta=beta, M2=st["M2"].mean(), n=n, batch=batch)
    trivial = math.sqrt(2.0) * lr * beta * T * float(np.mean(st["max_norm"] + st["M1"]))
    row.update({"batch": batch, "sgd_applies": float(sgd_applies),
                "mc_sgd_margin": float(np.min(5.0 * se_d[1:] - diff.mean(0)[1:])) if sgd_applies else float("inf"),
                "sgd_rms_T": float(rms[T]), "sgd_ratio_rate": float(rms[T] / rate[T]) if sgd_applies else float("nan"),
                "sgd_ratio_first": float(rms[1] / rms_bound[1]) if sgd_applies else float("nan")})
    if sgd_applies:
        row.update(headline_row("sgd_fluctuation", [rms[T]], [rms_bound[T]], "upper", [rms_bound[T] < trivial]))
    else:
        row.update({"tight_sgd_fluctuation": float("nan"), "nonvac_sgd_fluctuation": float("nan")})
    curves = {"t": t, "measured": mean_meas, "linear": lin.mean(0), "first_order": main.mean(0),
              "band_lower": lo.mean(0), "band_upper": up.mean(0), "expected_upper": exp_up,
              "scaled_lower": s_lo, "scaled_upper": s_up, "realised_lower": r_lo.mean(0),
              "energy_upper": en.mean(0), "convexity_lower": cv.mean(0), "loss": loss.mean(0),
              "population_lower": p_lo.mean(0), "sgd_rms": rms, "sgd_bound": rms_bound, "sgd_rate": rate,
              "sgd_head_change": np.sqrt(2.0) * np.linalg.norm(v_sgd, axis=-1).mean(0)}
    return row, curves


@one_thread()
def sweep_update_rate(seed: int, n_instances: int, *, steps: int = 40, repeats: int = 16,
                      ranges: InstanceRanges | None = None, eps1: float = 0.05, eps2: float = 0.05,
                      mutate: float = 1.0):
    """The update-rate sweep: a DataFrame with one row per random instance (see
    :func:`update_rate_instance`; ``mutate`` < 1 only in the mutation tests).
    """
    import pandas as pd

    out = run_sweep(update_rate_instance, ranges or InstanceRanges(), seed, n_instances, "update-rate sweep",
                    steps=steps, repeats=repeats, eps1=eps1, eps2=eps2, mutate=mutate)
    return pd.DataFrame([row for row, _ in out])


@one_thread()
def update_rate_curves(seed: int, *, d: int, n: int, beta_prime: float, lr: float, steps: int,
                       deltas: Sequence[float], family: str = "gaussian", repeats: int = 8,
                       center_norm: float = 0.5, trace_per_dim: float = 1.0, decay: float = 0.5,
                       eps1: float = 0.05, eps2: float = 0.05) -> list[dict[str, Any]]:
    """Mean ``||W_t - W_0||`` and every bound over steps, one entry per distinguishability in ``deltas``
    (same directions and spectra; only ``delta`` changes).
    """
    n = _v.count("n", n, lo=4, even=True)  # two equal classes of n / 2: the bounds use this n
    d = _v.count("d", d, lo=1)
    steps = _v.count("steps", steps, lo=1)
    repeats = _v.count("repeats", repeats, lo=2)
    beta_prime, lr = _v.positive("beta_prime", beta_prime), _v.positive("lr", lr)
    if len(deltas) == 0:
        raise _v.InputError("deltas is empty: give at least one distinguishability")
    deltas = [_v.positive("delta", x) for x in deltas]
    base = {"d": d, "n": n, "center_norm": center_norm, "trace_per_dim": trace_per_dim, "decay": decay,
            "family": family, "beta_prime": beta_prime, "lr": lr}
    return run_curves(update_rate_instance, seed, base, deltas, steps=steps, repeats=repeats, eps1=eps1, eps2=eps2)
