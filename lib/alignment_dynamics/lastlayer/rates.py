"""The learning rate of the last-layer runs: the effective step η β² E‖h‖².

β and η enter the loss dynamics only through the effective step κ = η β² E‖h‖²
(:func:`effective_step`; invariance under h → c h, η → η/c²), so η is chosen to give our models the
effective step of the official run on Llama-2-7B (:func:`official_effective_step`, :func:`matched_lr`,
:func:`lr_scenarios`, :func:`lr_choice`), or β is rescaled as β′/√d (:func:`beta_for`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .. import embed
from ..config import ConfigError, suggest
from .checks import DynamicsError, require_positive
from .features import BehaviorSet, HeadFacts, mean_sq_norm

OFFICIAL_LR = 0.1  # the SGD learning rate of the plotted last-layer runs [official code]
OFFICIAL_BETA = 0.01
OFFICIAL_BATCH = 128
OFFICIAL_STEPS = 100
LLAMA2_7B_D = 4096  # the width of the official run's features (Llama-2-7B)
BETA_PRIME = OFFICIAL_BETA * math.sqrt(LLAMA2_7B_D)  # 0.64: β = β′/√d in Theorem 4.1's scaling
BETA_MODES = ("official", "matched")


def beta_for(mode: str, d: int) -> float:
    """β of a ``beta_mode``: ``"official"`` keeps 0.01; ``"matched"`` keeps β′ = 0.01·√4096 = 0.64 of
    Theorem 4.1's scaling β = β′/√d at our width ``d``.
    """
    if mode not in BETA_MODES:
        raise ConfigError(f"unknown beta_mode {mode!r}; valid: {list(BETA_MODES)} ('official': beta = 0.01; "
                          f"'matched': beta = 0.64/sqrt(d)).{suggest(mode, BETA_MODES)}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise DynamicsError(f"d must be a positive int, got {d!r}")
    return OFFICIAL_BETA if mode == "official" else BETA_PRIME / math.sqrt(int(d))


def effective_step(lr: float, beta: float, mean_sq_norm: float) -> float:
    """κ = η β² E‖h‖², the size of one step in margin space.

    Each step changes the margins r = 2βs vᵀh by 2ηβ² sᵀ(h h')·(…); rescaling the features h → c h and
    η → η/c² leaves every margin, loss and accuracy unchanged, so κ is what must match between models.
    """
    return (require_positive("lr", lr) * require_positive("beta", beta) ** 2
            * require_positive("mean_sq_norm", mean_sq_norm))


def official_effective_step(per_coordinate: float, *, d: int = LLAMA2_7B_D, lr: float = OFFICIAL_LR,
                            beta: float = OFFICIAL_BETA) -> float:
    """κ of the official run: η β² E‖h‖² with E‖h‖² = d · ``per_coordinate`` (the mean square of one
    coordinate of Llama-2-7B's features, which we do not have and must assume).
    """
    return effective_step(lr, beta, require_positive("per_coordinate", per_coordinate) * int(d))


def matched_lr(target_step: float, beta: float, mean_sq_norm: float) -> float:
    """The η that gives features with E‖h‖² = ``mean_sq_norm`` the effective step ``target_step`` at β.
    """
    return require_positive("target_step", target_step) / (require_positive("beta", beta) ** 2
                                                           * require_positive("mean_sq_norm", mean_sq_norm))


def feature_scale(facts: HeadFacts, sets: Sequence[BehaviorSet], norm: str = "model") -> dict[str, float]:
    """The mean square of one coordinate, q = E‖h‖²/d, of a model's features normalised once (the
    model's own features, ``q_once``) and twice (the official code's, ``q_twice``).

    ``norm`` says how ``sets`` were embedded: ``"model"`` (once; the second normalisation is applied
    here with the model's final-norm gain) or ``"double"`` (already twice; ``q_once`` is then unknown,
    NaN).
    """
    if norm not in embed.NORMS:
        raise ConfigError(f"unknown norm {norm!r}; valid: {list(embed.NORMS)}")
    if norm == "double":
        return {"q_once": math.nan, "q_twice": mean_sq_norm(sets) / facts.d}
    return {"q_once": mean_sq_norm(sets) / facts.d, "q_twice": mean_sq_norm(sets, transform=facts.double_norm) / facts.d}


def lr_scenarios(models_data: Mapping[str, tuple[HeadFacts, Sequence[BehaviorSet]]], *, proxy: str,
                 norm: str = "model") -> list[dict[str, Any]]:
    """Assumptions about the mean square q of one coordinate of Llama-2-7B's (official) features.

    For RMS-normalised features h = g ⊙ x/rms(x), ‖h‖² = Σ g_k² x_k²/mean(x²) lies between
    d·min g² and d·max g², and equals ‖g‖² = d·mean g² when x spreads its energy evenly over the
    coordinates (the norm-weight argument of ``paper.md`` §4). Without Llama-2-7B's weights, q is
    bracketed by: unit gains (q = 1, an RMS norm at initialisation) and, for each model, its measured q
    of the features normalised once (as our book trains on) and twice (as the official code trains on;
    :func:`feature_scale`). Returns rows ``{"assumption", "model", "q", "in_range"}``. ``in_range``
    marks the rows that define the plausible range: all but the twice-normalised features of models
    other than ``proxy`` (the Llama-architecture stand-in), whose second normalisation multiplies by
    gains that Llama-2's plain RMS norm need not share. Rows whose q is unknown (``norm="double"``:
    the once-normalised scale) are left out.
    """
    if proxy not in models_data:
        raise DynamicsError(f"the proxy model {proxy!r} must be among the models given ({sorted(models_data)})")
    rows = [{"assumption": "unit gains (q = 1)", "model": "—", "q": 1.0, "in_range": True}]
    for name, (facts, sets) in models_data.items():
        fs = feature_scale(facts, sets, norm)
        if not math.isnan(fs["q_once"]):
            rows.append({"assumption": "like this model, normalised once", "model": name, "q": fs["q_once"],
                         "in_range": True})
        rows.append({"assumption": "like this model, normalised twice (official features)", "model": name,
                     "q": fs["q_twice"], "in_range": name == proxy})
    return rows


def lr_choice(models_data: Mapping[str, tuple[HeadFacts, Sequence[BehaviorSet]]], *, proxy: str,
              beta_mode: str = "official", lr: float | None = None, norm: str = "model",
              q_official: float | None = None) -> dict[str, dict[str, float]]:
    """β and η for each model, and the effective steps behind them.

    The official run's effective step is :func:`official_effective_step` with q = the ``proxy`` model's
    per-coordinate mean square of twice-normalised features (the official code's features; the proxy
    stands in for Llama-2-7B; :func:`feature_scale`, with ``norm`` saying how the sets were embedded).
    Then, per model, with E‖h‖² measured on its training pairs (the features it is trained on):

    * ``lr`` given: that η (and β of ``beta_mode``);
    * ``beta_mode="official"``: β = 0.01 and η = :func:`matched_lr` of the official effective step;
    * ``beta_mode="matched"``: β = 0.64/√d and the official η = 0.1 (the effective step is then the
      official one if Llama-2-7B's features have our model's per-coordinate scale).

    Returns ``{model: {"lr", "beta", "mean_sq_norm", "kappa", "kappa_official", "q_official"}}``.

    ``q_official`` gives the proxy's feature scale directly (e.g. from a stored reference) instead of
    measuring it on the proxy's sets; the proxy need then not be among the models.
    """
    if q_official is not None:
        q_off = require_positive("q_official", q_official)
    elif proxy not in models_data:
        raise DynamicsError(f"the proxy model {proxy!r} must be among the models given ({sorted(models_data)}): "
                            "its features stand in for Llama-2-7B's scale")
    else:
        q_off = feature_scale(*models_data[proxy], norm)["q_twice"]
    kappa_off = official_effective_step(q_off)
    out = {}
    for name, (facts, sets) in models_data.items():
        beta = beta_for(beta_mode, facts.d)
        msn = mean_sq_norm(sets)
        if lr is not None:
            eta = require_positive("lr", lr)
        elif beta_mode == "official":
            eta = matched_lr(kappa_off, beta, msn)
        else:
            eta = OFFICIAL_LR
        out[name] = {"lr": eta, "beta": beta, "mean_sq_norm": msn, "kappa": effective_step(eta, beta, msn),
                     "kappa_official": kappa_off, "q_official": q_off}
    return out
