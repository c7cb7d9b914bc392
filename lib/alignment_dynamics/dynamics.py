"""Learning dynamics of last-layer DPO on real embeddings: the experiments of Part II.

The paper's last-layer protocol [official code]: only the unembedding W_U is trained, by plain SGD
with β = 0.01 and a fresh random batch of 128 training pairs per step, for 100 steps, with the initial
model as the reference and the official 90/10 split. By the reduction of ``book/dpo_last_layer.md``
this is logistic regression on the frozen features h(x), which
:func:`alignment_dynamics.dpo.train_two_row` runs exactly and in batches. This module holds what the
chapters ``training_dynamics`` and ``prioritization`` do on top of it:

* **data** -- a behaviour's frozen features split into the official training and test sets, on a
  nested stratified sample (:func:`behavior_set`), or several behaviours split from one random
  stream as in the official two-behaviour script (:func:`joint_splits`); what the reference model's
  head says about the answers (:func:`head_facts`, cached);
* **the learning rate** -- β and η enter the loss dynamics only through the effective step
  κ = η β² E‖h‖² (:func:`effective_step`; invariance under h → c h, η → η/c²), so η is chosen to give
  our models the effective step of the official run on Llama-2-7B (:func:`official_effective_step`,
  :func:`matched_lr`, :func:`lr_scenarios`), or β is rescaled as β′/√d (:func:`beta_for`);
* **training runs** -- behaviours (or groups of behaviours trained jointly) × learning rates × seeds
  in one call, with every per-behaviour curve the chapters plot (:func:`train_runs`);
* **learning-speed measures** and the **statistics** that test the paper's claims: rank and partial
  rank correlations with bootstrap intervals, Wilson intervals for fractions, verdict rules, and the
  prioritisation analyses (who is learned first, priority predictions, reweighting).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import cache, data, embed, models, stats
from .threads import one_thread
from .config import ConfigError, suggest

OFFICIAL_LR = 0.1  # the SGD learning rate of the plotted last-layer runs [official code]
OFFICIAL_BETA = 0.01
OFFICIAL_BATCH = 128
OFFICIAL_STEPS = 100
LLAMA2_7B_D = 4096  # the width of the official run's features (Llama-2-7B)
BETA_PRIME = OFFICIAL_BETA * math.sqrt(LLAMA2_7B_D)  # 0.64: β = β′/√d in Theorem 4.1's scaling
BETA_MODES = ("official", "matched")
LEARNED_FIRST_METRICS = ("loss", "accuracy")
LN2 = math.log(2.0)
HEAD_FACTS_VERSION = 1


class DynamicsError(ValueError):
    """An input the experiments cannot use (an empty set, a wrong shape, an invalid setting)."""


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise DynamicsError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------
# The reference model's head: the answer rows and the final-norm gain
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadFacts:
    """What the last-layer experiments need from a model besides its features (all float64).

    ``w_yes``/``w_no`` are the unembedding rows of the answer tokens ``yes_id``/``no_id``, so that
    ``a = w_yes − w_no`` gives the reference model's log-odds log π₀(Yes|x) − log π₀(No|x) = a·h(x).
    ``gain`` is the effective gain g of the final RMS norm (for Gemma's ``1 + w`` parametrisation,
    ``1 + w``) and ``eps`` its ε, so that the norm maps x to g ⊙ x / √(mean(x²) + ε).
    """

    model: str
    yes_id: int
    no_id: int
    w_yes: np.ndarray
    w_no: np.ndarray
    gain: np.ndarray
    eps: float
    vocab_size: int

    @property
    def d(self) -> int:
        return int(self.gain.shape[0])

    @property
    def a(self) -> np.ndarray:
        """The reference model's Yes-minus-No direction W₀ᵀu."""
        return self.w_yes - self.w_no

    def double_norm(self, h: Any) -> np.ndarray:
        """The official code's second normalisation of features ``h`` (n × d): g ⊙ h / √(mean(h²) + ε)."""
        x = np.asarray(h, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise DynamicsError(f"h must be (n, {self.d}), got shape {x.shape}")
        return self.gain * x / np.sqrt((x * x).mean(axis=1, keepdims=True) + self.eps)

    def gain_moments(self) -> dict[str, float]:
        """Moments of the gain: mean g², E g⁴ / E g², max g² (the norm-weight argument's inputs)."""
        g2 = self.gain ** 2
        return {"mean_sq": float(g2.mean()), "fourth_over_second": float((g2 * g2).mean() / g2.mean()),
                "max_sq": float(g2.max()), "min_abs": float(np.abs(self.gain).min())}


def _final_norm_gain(lm: models.LoadedModel) -> tuple[np.ndarray, float]:
    import torch

    norm = lm.final_norm
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm, "eps", None)
    if eps is None:
        raise models.ModelError(f"{lm.name}: the final norm {type(norm).__name__} has no epsilon "
                                "(expected 'variance_epsilon' or 'eps'); cannot read its gain")
    with torch.no_grad():
        ones = torch.ones(1, lm.d_model, dtype=torch.float32, device=lm.device)
        g = norm(ones.to(lm.dtype)).float().squeeze(0).cpu().double().numpy() * math.sqrt(1.0 + float(eps))
    return g, float(eps)


def head_facts(model_name: str) -> HeadFacts:
    """The :class:`HeadFacts` of a model, cached (content-addressed by the model's fingerprint).

    The first call loads the model once (float32) to read the answer rows of W_U and the final-norm
    gain (as ``norm(ones)·√(1 + ε)``, which covers both ``g`` and ``1 + w`` parametrisations); later
    calls read a small safetensors file.
    """
    from safetensors.numpy import load_file, save_file

    name = models.validate_name(model_name)
    key = cache.digest("head-facts", HEAD_FACTS_VERSION, models.fingerprint(name))
    path = cache.user_cache_dir("head_facts") / f"{key[:32]}.safetensors"
    if path.exists():
        try:
            t = load_file(str(path))
            meta = json.loads(str(np.asarray(t["meta"]).tobytes(), "utf-8"))
            return HeadFacts(name, meta["yes_id"], meta["no_id"], t["w_yes"].astype(np.float64),
                             t["w_no"].astype(np.float64), t["gain"].astype(np.float64), meta["eps"], meta["vocab"])
        except Exception:  # an unreadable file is recomputed, never trusted
            pass
    lm = models.load(name, dtype="float32")
    yes, no = lm.answer_token_ids()
    W = lm.W_U
    gain, eps = _final_norm_gain(lm)
    facts = HeadFacts(name, int(yes), int(no), W[yes].double().numpy(), W[no].double().numpy(), gain, eps,
                      lm.vocab_size)
    meta = json.dumps({"yes_id": facts.yes_id, "no_id": facts.no_id, "eps": eps, "vocab": facts.vocab_size})
    with cache.atomic_path(path) as tmp:
        save_file({"w_yes": W[yes].numpy(), "w_no": W[no].numpy(), "gain": gain.astype(np.float64),
                   "meta": np.frombuffer(meta.encode("utf-8"), dtype=np.uint8).copy()}, str(tmp))
    del lm
    return facts


# ---------------------------------------------------------------------------------------------------
# Data: official splits on nested samples
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BehaviorSet:
    """One behaviour's frozen features, split into training and test pairs.

    ``s_*`` is +1 where the preferred answer is " Yes" and −1 where it is " No"; ``idx_*`` are the
    record indices (lines of the behaviour's file). ``h_*`` are float64 (n × d). ``computed`` counts
    the embeddings that had to be computed (not found in the cache) when the set was made.
    """

    behavior: str
    model: str
    h_train: np.ndarray
    s_train: np.ndarray
    idx_train: np.ndarray
    h_test: np.ndarray
    s_test: np.ndarray
    idx_test: np.ndarray
    computed: int = field(default=0, compare=False)  # embeddings computed (not cached) when it was made

    def __post_init__(self):
        for part in ("train", "test"):
            h, s, i = (getattr(self, f"{k}_{part}") for k in ("h", "s", "idx"))
            if h.ndim != 2 or s.shape != (h.shape[0],) or i.shape != (h.shape[0],):
                raise DynamicsError(f"{self.behavior}: {part} features, labels and indices disagree in shape "
                                    f"({h.shape}, {s.shape}, {i.shape})")
            if s.size and not np.all(np.abs(s) == 1):
                raise DynamicsError(f"{self.behavior}: labels must be +1 or -1")
        if self.h_train.shape[0] < 2 or len(np.unique(self.s_train)) < 2:
            raise DynamicsError(f"{self.behavior}: the training set needs both classes (got {self.h_train.shape[0]} "
                                "pairs); use a larger sample")
        if self.h_test.shape[0] and self.h_test.shape[1] != self.h_train.shape[1]:
            raise DynamicsError(f"{self.behavior}: training and test features differ in width")

    @property
    def n_train(self) -> int:
        return int(self.h_train.shape[0])

    @property
    def d(self) -> int:
        return int(self.h_train.shape[1])

    def b(self, part: str = "train") -> np.ndarray:
        """b̂ = μ̂₊ − μ̂₋ on the training (or test, or ``"all"``) pairs."""
        h, s = self.part(part)
        if not ((s > 0).any() and (s < 0).any()):
            raise DynamicsError(f"{self.behavior}: the {part} set lacks a class; b is undefined")
        return h[s > 0].mean(0) - h[s < 0].mean(0)

    def part(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """``(h, s)`` of the ``"train"``, ``"test"`` or ``"all"`` pairs."""
        if part == "train":
            return self.h_train, self.s_train
        if part == "test":
            return self.h_test, self.s_test
        if part == "all":
            return np.concatenate([self.h_train, self.h_test]), np.concatenate([self.s_train, self.s_test])
        raise DynamicsError(f"part must be 'train', 'test' or 'all', got {part!r}")


def joint_splits(behaviors: Sequence[str], *, seed: int = data.OFFICIAL_SEED) -> list[data.Split]:
    """The official splits of behaviours trained together: one ``random`` stream seeded once, each
    behaviour's indices shuffled in turn from it (the two-behaviour script's convention, extended to
    any number). The first behaviour's split is its single-behaviour split.
    """
    names = data.validate_behaviors(list(behaviors))
    rng = random.Random(seed)
    return [data.split_indices(len(data.load_persona(b)), rng=rng) for b in names]


def behavior_set(model_name: str, behavior: str, per_class: int | None, *, seed: int = data.OFFICIAL_SEED,
                 split: data.Split | None = None, norm: str = "model", dtype: str = "bfloat16",
                 flip: bool = False) -> BehaviorSet:
    """A behaviour's features on the nested stratified sample of ``per_class`` statements per class
    (``None``: every statement), split by the official split (or ``split``): the sample's records in
    the split's training part train, the others test.

    With ``per_class=None`` this is exactly the official protocol's 900/100 split. The sample is
    :func:`alignment_dynamics.data.stratified_sample` with ``seed``, so the distinguishability chapter's
    cached embeddings are reused. Features come from :func:`alignment_dynamics.embed.behavior_embeddings`.
    """
    behavior = data.validate_behaviors([behavior])[0]
    split = data.persona_split(behavior) if split is None else split
    idx = data.stratified_sample(behavior, per_class, seed=seed)
    e = embed.behavior_embeddings(model_name, behavior, idx, norm=norm, dtype=dtype, flip=flip, progress=False)
    train = np.isin(e.indices, np.asarray(split.train, dtype=np.int64))
    h = e.h.astype(np.float64)
    s = e.labels.astype(np.float64)
    return BehaviorSet(behavior, e.model, h[train], s[train], e.indices[train], h[~train], s[~train],
                       e.indices[~train], computed=e.computed)


def mean_sq_norm(sets: Sequence[BehaviorSet], *, part: str = "train", transform=None) -> float:
    """E‖h‖² over the pooled pairs of ``sets`` (optionally of ``transform(h)``, e.g. a double norm)."""
    if not sets:
        raise DynamicsError("mean_sq_norm needs at least one behaviour set")
    total, count = 0.0, 0
    for bs in sets:
        h = bs.part(part)[0]
        if transform is not None:
            h = transform(h)
        total += float(np.einsum("ij,ij->", h, h))
        count += h.shape[0]
    if count == 0:
        raise DynamicsError(f"no {part} pairs in the given sets")
    return total / count


# ---------------------------------------------------------------------------------------------------
# The learning rate: the effective step η β² E‖h‖²
# ---------------------------------------------------------------------------------------------------

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
    return _positive("lr", lr) * _positive("beta", beta) ** 2 * _positive("mean_sq_norm", mean_sq_norm)


def official_effective_step(per_coordinate: float, *, d: int = LLAMA2_7B_D, lr: float = OFFICIAL_LR,
                            beta: float = OFFICIAL_BETA) -> float:
    """κ of the official run: η β² E‖h‖² with E‖h‖² = d · ``per_coordinate`` (the mean square of one
    coordinate of Llama-2-7B's features, which we do not have and must assume).
    """
    return effective_step(lr, beta, _positive("per_coordinate", per_coordinate) * int(d))


def matched_lr(target_step: float, beta: float, mean_sq_norm: float) -> float:
    """The η that gives features with E‖h‖² = ``mean_sq_norm`` the effective step ``target_step`` at β."""
    return _positive("target_step", target_step) / (_positive("beta", beta) ** 2
                                                     * _positive("mean_sq_norm", mean_sq_norm))


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
        q_off = _positive("q_official", q_official)
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
            eta = _positive("lr", lr)
        elif beta_mode == "official":
            eta = matched_lr(kappa_off, beta, msn)
        else:
            eta = OFFICIAL_LR
        out[name] = {"lr": eta, "beta": beta, "mean_sq_norm": msn, "kappa": effective_step(eta, beta, msn),
                     "kappa_official": kappa_off, "q_official": q_off}
    return out


def update_rate_overlay(sets: Sequence[BehaviorSet], runs: Runs) -> dict[str, np.ndarray]:
    """The update-rate theory for single-behaviour runs, ``[R, T + 1]`` each (run r trains ``sets[group[r]]``).

    ``first_order``: √2 (ηβt/2)‖m̂‖ with m̂ = mean s h over the training pairs (the first-order term of
    the deterministic proposition, exact at t = 1 for a full batch); ``distinguishability``:
    √2 (ηβt/4)‖μ̂₊ − μ̂₋‖, the same for exactly balanced classes (the paper's quantity); ``bound``: the
    linear bound √2 ηβ M₁ t with M₁ the run's largest batch-mean ‖h‖, which holds for every t and every
    batch sequence. Also ``first_step_error``, the relative error of the exact first-step formula
    (computed from the first batch) against the measured ‖W_1 − W_0‖.
    """
    from .theory import linear_upper_bound

    t = runs.t.astype(np.float64)
    R = runs.runs
    out = {k: np.zeros((R, t.shape[0])) for k in ("first_order", "distinguishability", "bound")}
    for r in range(R):
        bs = sets[runs.group[r]]
        if runs.groups[runs.group[r]] != (bs.behavior,):
            raise DynamicsError(f"run {r} trained {runs.groups[runs.group[r]]}, but the set given is {bs.behavior!r}")
        h, s = bs.part("train")
        m = (s[:, None] * h).mean(0)
        eb = runs.lr[r] * runs.beta[r]
        out["first_order"][r] = math.sqrt(2.0) * eb * t / 2.0 * np.linalg.norm(m)
        out["distinguishability"][r] = math.sqrt(2.0) * eb * t / 4.0 * np.linalg.norm(bs.b("train"))
        out["bound"][r] = linear_upper_bound(t, lr=runs.lr[r], beta=runs.beta[r], M1=runs.max_batch_norm[r])
    measured = runs.head_change[:, 1]
    out["first_step_error"] = np.abs(runs.first_step - measured) / np.maximum(measured, 1e-300)
    return out


@dataclass(frozen=True)
class FirstStepCheck:
    """Is the first step of ‖W_U − W_U(0)‖ ordered by distinguishability at a given batch?

    ``batch``: the batch used (the requested one, capped at the smallest training set); ``ratio``: the
    median over behaviours of the batch-imbalance / signal ratio of :func:`first_step_terms`;
    ``first``: the mean first-step head change of each behaviour over its runs; ``verdict``: the
    :func:`alignment_dynamics.verdicts.rank_order` test of ``first`` against ``distinguishability``.
    """

    batch: int
    ratio: float
    first: np.ndarray
    verdict: Any


def first_step_check(runs: "Runs", sets: dict, distinguishability: Sequence[float], batch_size: int, *,
                     seed: int = 0) -> FirstStepCheck:
    """The single-step ordering question on trained runs with one behaviour per group (``runs.groups``),
    their behaviour sets ``sets[name]`` and each behaviour's distinguishability, in group order.
    """
    from . import verdicts

    names = [g[0] for g in runs.groups]
    if len(distinguishability) != len(names):
        raise DynamicsError(f"need one distinguishability per group ({len(names)}), got {len(distinguishability)}")
    batch = min(int(batch_size), min(sets[b].n_train for b in names))
    ratio = float(np.median([first_step_terms(sets[b], batch)["ratio"] for b in names]))
    first = np.array([runs.head_change[runs.group == i][:, 1].mean() for i in range(len(names))])
    verdict = verdicts.rank_order(np.asarray(distinguishability, dtype=float), first, seed=seed)
    return FirstStepCheck(batch, ratio, first, verdict)


def first_step_terms(bs: BehaviorSet, batch_size: int) -> dict[str, float]:
    """The parts of a first SGD step's squared size E‖m̂_B‖², over random batches B.

    With the class means of the training pairs, m̂_B = ½(μ̂₊ − μ̂₋) + (p_B − ½)(μ̂₊ + μ̂₋) plus the
    batch's within-class noise, where p_B is the batch's share of Yes-preferred pairs. Drawing B of n
    pairs without replacement, E p_B = p and Var p_B = p(1 − p)/B · (n − B)/(n − 1). Returns ``signal``
    = ¼‖μ̂₊ − μ̂₋‖², ``imbalance`` = E(p_B − ½)² ‖μ̂₊ + μ̂₋‖², ``cross`` = (p − ½)⟨μ̂₊ − μ̂₋, μ̂₊ + μ̂₋⟩,
    ``class_means`` = their sum (exact when every statement equals its class mean) and ``ratio`` =
    imbalance/signal.
    """
    h, s = bs.part("train")
    n = h.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= n:
        raise DynamicsError(f"batch_size must be an int in 1..{n}, got {batch_size!r}")
    p = float((s > 0).mean())
    var = p * (1 - p) / batch_size * ((n - batch_size) / (n - 1) if n > 1 else 0.0)
    plus, minus = h[s > 0].mean(0), h[s < 0].mean(0)
    b, c = plus - minus, plus + minus
    signal = 0.25 * float(b @ b)
    imbalance = (var + (p - 0.5) ** 2) * float(c @ c)
    cross = (p - 0.5) * float(b @ c)
    return {"signal": signal, "imbalance": imbalance, "cross": cross, "class_means": signal + imbalance + cross,
            "ratio": imbalance / signal if signal > 0 else math.inf}


def margin_overlay(group: Sequence[BehaviorSet], runs: Runs, run: int) -> dict[str, Any]:
    """The priority theorem drawn over one joint run's measured training margins.

    ``theorem``: (ηβt/4)⟨b̄, b̂_i⟩ (class means, weights = shares of training pairs; exact for
    class-balanced sets), ``imbalance``: the same first-order formula with b̂_i replaced by 2m̂_i,
    m̂_i = mean s h over behaviour i (exact at t = 1 for any class balance, full batch), ``band``:
    the theorem's remainder ρ_t‖b̂_i‖ around ``theorem`` (full-batch gradient descent), and
    ``band_holds_until``: the last step at which every band is narrower than the predicted change.
    Arrays are ``[K, T + 1]``.
    """
    from .theory import margin_change_prediction, remainder_bound, sample_statistics

    if runs.groups[runs.group[run]] != tuple(bs.behavior for bs in group):
        raise DynamicsError(f"run {run} trained {runs.groups[runs.group[run]]}, not {[bs.behavior for bs in group]}")
    rep = runs.replicate[runs.group[run]]
    pr = group_priorities(group, rep)
    lr, beta = float(runs.lr[run]), float(runs.beta[run])
    t = runs.t.astype(np.float64)
    H, S, _ = _pooled_training(group, rep)
    sst = sample_statistics(H, S)
    m_all = 2.0 * sst["m_hat"]
    theorem, imbalance, band = [], [], []
    for k, bs in enumerate(group):
        h, s = bs.part("train")
        theorem.append(margin_change_prediction(t, lr=lr, beta=beta, bbar=pr["bbar"], b_i=pr["b"][k]))
        imbalance.append(margin_change_prediction(t, lr=lr, beta=beta, bbar=m_all, b_i=2.0 * (s[:, None] * h).mean(0)))
        rho = remainder_bound(t, lr=lr, beta=beta, mhat_norm=np.linalg.norm(pr["bbar"]) / 2.0, G_norm=sst["G_norm"])
        band.append(rho * np.linalg.norm(pr["b"][k]))
    theorem, imbalance, band = np.array(theorem), np.array(imbalance), np.array(band)
    ok = (band < np.abs(theorem)) | (t == 0)
    holds = int(np.argmin(ok.all(0))) - 1 if not ok.all() else int(t[-1])
    return {"theorem": theorem, "imbalance": imbalance, "band": band, "band_holds_until": holds,
            "kappa": float(lr * beta ** 2 * sst["G_norm"] / 2.0)}


# ---------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------

@dataclass
class Runs:
    """Curves of many training runs; run r trains jointly on the behaviours ``groups[group[r]]``.

    Per-behaviour curves are ``[R, T + 1, K]`` (K behaviours per group, t = 0..T, evaluated at W_t on
    each behaviour's whole training or test set): ``loss``, ``margin`` (the mean DPO margin Δ = 2 s vᵀh,
    i.e. the change M(t) − M(0) of the mean signed log-odds), ``policy_accuracy`` (the policy prefers the
    chosen answer: s (a + 2v)ᵀh > 0, the official accuracy), ``policy_yes`` (the share of statements on
    which the policy prefers " Yes": (a + 2v)ᵀh > 0) and ``reward_accuracy`` (TRL's
    ``rewards/accuracies``: Δ > 0). Each is a dict with ``"train"`` and ``"test"`` (NaN where a test
    set is empty). ``head_change`` is ‖W_t − W_0‖_F ``[R, T + 1]``, ``batch_loss`` the loss of each
    step's batch ``[R, T]``, ``first_step`` the exact prediction of ‖W_1 − W_0‖ from the first batch's
    own statistics, and ``max_batch_norm`` the largest batch mean of ‖h‖ (for the linear bound).
    """

    groups: list[tuple[str, ...]]
    group: np.ndarray
    lr: np.ndarray
    beta: np.ndarray
    seed: np.ndarray
    replicate: list[tuple[int, ...]]
    steps: int
    batch_size: int | None
    loss: dict[str, np.ndarray]
    margin: dict[str, np.ndarray]
    policy_accuracy: dict[str, np.ndarray]
    policy_yes: dict[str, np.ndarray]
    reward_accuracy: dict[str, np.ndarray]
    head_change: np.ndarray
    batch_loss: np.ndarray
    first_step: np.ndarray
    max_batch_norm: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return int(self.group.shape[0])

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.steps + 1)

    def curves(self, behaviors: Sequence[str], metric: str = "loss", part: str = "train") -> np.ndarray:
        """``(K, T + 1)`` curves of the named behaviours from single-behaviour runs, in the order given
        (the mean over a behaviour's runs, e.g. its seeds). ``metric`` is ``"loss"``, ``"margin"``,
        ``"policy_accuracy"``, ``"policy_yes"`` or ``"reward_accuracy"``; ``part`` ``"train"`` or ``"test"``.
        """
        metrics = ("loss", "margin", "policy_accuracy", "policy_yes", "reward_accuracy")
        if metric not in metrics:
            raise DynamicsError(f"metric must be one of {list(metrics)}, got {metric!r}")
        if part not in ("train", "test"):
            raise DynamicsError(f"part must be 'train' or 'test', got {part!r}")
        pos = {g[0]: i for i, g in enumerate(self.groups) if len(g) == 1}
        missing = [b for b in behaviors if b not in pos]
        if missing:
            raise DynamicsError(f"no single-behaviour runs of {missing}; the runs trained {self.groups}")
        values = getattr(self, metric)[part]
        return np.stack([values[self.group == pos[b]][:, :, 0].mean(axis=0) for b in behaviors])

    def select(self, mask) -> "Runs":
        """The runs where ``mask`` (bool [R]) holds."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self.runs,):
            raise DynamicsError(f"mask must be [{self.runs}] bools, got shape {m.shape}")

        def sub(d_):
            return {k: v[m] for k, v in d_.items()}

        return Runs(self.groups, self.group[m], self.lr[m], self.beta[m], self.seed[m], self.replicate, self.steps,
                    self.batch_size, sub(self.loss), sub(self.margin), sub(self.policy_accuracy),
                    sub(self.policy_yes), sub(self.reward_accuracy), self.head_change[m], self.batch_loss[m], self.first_step[m],
                    self.max_batch_norm[m], dict(self.meta))


def _as_list(name: str, value, kind=float) -> list:
    vals = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if not vals:
        raise DynamicsError(f"{name} must not be empty")
    return [kind(v) for v in vals]


def _pooled_training(group: Sequence[BehaviorSet], replicate: Sequence[int]):
    """The pooled training pairs of a group, behaviour k's set repeated ``replicate[k]`` times as a
    whole (features and labels stay aligned): ``(H, s, behavior_id)``."""
    h = np.concatenate([np.tile(bs.h_train, (r, 1)) for bs, r in zip(group, replicate)])
    s = np.concatenate([np.tile(bs.s_train, r) for bs, r in zip(group, replicate)])
    bid = np.concatenate([np.full(bs.n_train * r, i) for i, (bs, r) in enumerate(zip(group, replicate))])
    return h, s, bid


def _group_arrays(group: Sequence[BehaviorSet], replicate: Sequence[int], facts: HeadFacts):
    import torch

    k = len(group)
    if len(replicate) != k or any((not isinstance(r, (int, np.integer))) or r < 1 for r in replicate):
        raise DynamicsError(f"replicate must give a positive int per behaviour of the group, got {replicate!r}")
    d = group[0].d
    if any(bs.d != d for bs in group) or facts.d != d:
        raise DynamicsError(f"every behaviour set and the head facts must have the same width d; got "
                            f"{sorted({bs.d for bs in group} | {facts.d})}")
    if len({bs.model for bs in group} | {facts.model}) != 1:
        raise DynamicsError(f"the sets and head facts come from different models: "
                            f"{sorted({bs.model for bs in group} | {facts.model})}")
    h_tr, s_tr, bid_tr = _pooled_training(group, replicate)
    ev = {}
    for part in ("train", "test"):
        h = np.concatenate([bs.part(part)[0] for bs in group])
        s = np.concatenate([bs.part(part)[1] for bs in group])
        bid = np.concatenate([np.full(bs.part(part)[0].shape[0], i) for i, bs in enumerate(group)])
        ev[part] = (torch.from_numpy(np.ascontiguousarray(h)), torch.from_numpy(s), torch.from_numpy(bid).long(),
                    h @ facts.a)
    return (torch.from_numpy(np.ascontiguousarray(h_tr)), torch.from_numpy(s_tr), torch.from_numpy(bid_tr).long(),
            np.linalg.norm(h_tr, axis=1), ev)


def _group_mean(x: np.ndarray, bid: np.ndarray, k: int) -> np.ndarray:
    """Means over the last axis per group id (NaN for an empty group): [..., n] -> [..., k]."""
    out = np.full(x.shape[:-1] + (k,), np.nan)
    for i in range(k):
        sel = bid == i
        if sel.any():
            out[..., i] = x[..., sel].mean(-1)
    return out


def train_runs(groups: Sequence[Sequence[BehaviorSet]], *, facts: HeadFacts, steps: int, batch_size: int | None,
               seeds: Sequence[int] | int, lr: float | Sequence[float], beta: float,
               replicate: Sequence[Sequence[int]] | None = None, chunk: int = 96, progress: bool = True) -> Runs:
    """Train every group (one behaviour, or several jointly) at every learning rate with every seed.

    Runs are ordered group-major, then learning rate, then seed. Each run is the official last-layer
    protocol on the group's pooled training pairs: plain SGD on the head, a fresh random batch of
    ``batch_size`` pairs per step from seed ``seed`` (``None``: full batch), ``steps`` steps, the initial
    head as the reference; it runs on :func:`alignment_dynamics.dpo.train_two_row` (exact), ``chunk``
    runs per call. ``replicate`` repeats each behaviour's training pairs (an integer weight per behaviour
    and group: oversampling). Metrics are evaluated at W_t on every behaviour's whole, unreplicated
    training and test sets (see :class:`Runs`).
    """
    from tqdm.auto import tqdm

    from .dpo import train_two_row
    from .theory import first_step_v

    groups = [tuple(g) for g in groups]
    if not groups or any(len(g) == 0 for g in groups):
        raise DynamicsError("groups must be a non-empty list of non-empty groups of behaviour sets")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise DynamicsError(f"steps must be a positive int, got {steps!r}")
    seeds_l = _as_list("seeds", seeds, int)
    lrs = [_positive("lr", v) for v in _as_list("lr", lr)]
    beta = _positive("beta", beta)
    reps = [tuple([1] * len(g)) for g in groups] if replicate is None else [tuple(int(x) for x in r) for r in replicate]
    if len(reps) != len(groups):
        raise DynamicsError(f"replicate must have one entry per group ({len(groups)}), got {len(reps)}")
    ks = {len(g) for g in groups}
    if len(ks) != 1:
        raise DynamicsError(f"all groups must have the same number of behaviours, got sizes {sorted(ks)}")
    K = ks.pop()
    arrays = [_group_arrays(g, r, facts) for g, r in zip(groups, reps)]
    for (h_tr, *_), g in zip(arrays, groups):
        if batch_size is not None and batch_size > h_tr.shape[0]:
            raise DynamicsError(f"batch_size {batch_size} exceeds the {h_tr.shape[0]} training pairs of group "
                                f"{[bs.behavior for bs in g]}; use a smaller batch or a larger sample")
    plan = [(gi, l_, s_) for gi in range(len(groups)) for l_ in lrs for s_ in seeds_l]
    R, T = len(plan), steps
    names = ("train", "test")
    out = {key: {p: np.full((R, T + 1, K), np.nan) for p in names}
           for key in ("loss", "margin", "policy_accuracy", "policy_yes", "reward_accuracy")}
    head_change = np.zeros((R, T + 1))
    batch_loss = np.zeros((R, T))
    first_step = np.zeros(R)
    max_batch_norm = np.zeros(R)
    # runs whose groups lack a test set (tiny samples) are trained in chunks of their own
    has = {gi: tuple(p for p in names if arrays[gi][4][p][0].shape[0] > 0) for gi in range(len(groups))}
    order = sorted(range(R), key=lambda r: (has[plan[r][0]] != names, r))
    chunks = [order[i:i + chunk] for i in range(0, R, chunk)]
    chunks = [[r for r in c if has[plan[r][0]] == key] for c in chunks for key in dict.fromkeys(has[plan[r][0]] for r in c)]
    with one_thread(), tqdm(total=R, desc="training runs", unit="run", disable=not progress or R < 50,
                                 leave=False) as bar:
        for part in chunks:
            gis = [plan[r][0] for r in part]
            evsets = {p: [(arrays[gi][4][p][0], arrays[gi][4][p][1], None, arrays[gi][4][p][2]) for gi in gis]
                      for p in has[gis[0]]}
            traj = train_two_row([arrays[gi][0] for gi in gis], [arrays[gi][1] for gi in gis], beta=beta,
                                 lr=[plan[r][1] for r in part], steps=T, batch_size=batch_size,
                                 generator=[plan[r][2] for r in part], behavior_id=[arrays[gi][2] for gi in gis],
                                 n_behaviors=K, eval_sets=evsets, keep_v=True)
            V = traj.v.numpy()
            for j, r in enumerate(part):
                gi, l_, _ = plan[r]
                for p in evsets:
                    by = traj.eval_by_behavior[p]
                    out["loss"][p][r] = by["loss"][j].numpy()
                    out["margin"][p][r] = by["rewards/margins"][j].numpy() / beta
                    out["reward_accuracy"][p][r] = by["rewards/accuracies"][j].numpy()
                    h_e, s_e, bid_e, ah = arrays[gi][4][p]
                    z = h_e.numpy() @ V[j].T  # [n, T+1]
                    logodds = ah[:, None] + 2.0 * z  # log pi(Yes) - log pi(No) at W_t
                    correct = (s_e.numpy()[:, None] * logodds > 0).astype(np.float64)
                    out["policy_accuracy"][p][r] = _group_mean(correct.T, bid_e.numpy(), K)
                    out["policy_yes"][p][r] = _group_mean((logodds > 0).astype(np.float64).T, bid_e.numpy(), K)
                head_change[r] = traj.head_change[j].numpy()
                batch_loss[r] = traj.train["loss"][j].numpy()
                b = traj.batches[j].numpy()
                b0 = b[0][b[0] >= 0]
                h_tr, s_tr, norms = arrays[gi][0].numpy(), arrays[gi][1].numpy(), arrays[gi][3]
                first_step[r] = math.sqrt(2.0) * np.linalg.norm(first_step_v(h_tr[b0], s_tr[b0], beta=beta, lr=l_))
                bn = np.where(b >= 0, norms[b.clip(0)], np.nan)
                max_batch_norm[r] = float(np.nanmax(np.nanmean(bn, axis=1)))
            bar.update(len(part))
            del traj, V
    plan_a = np.array(plan, dtype=object)
    return Runs(groups=[tuple(bs.behavior for bs in g) for g in groups], group=plan_a[:, 0].astype(int),
                lr=plan_a[:, 1].astype(float), beta=np.full(R, beta), seed=plan_a[:, 2].astype(int),
                replicate=reps, steps=T, batch_size=batch_size, loss=out["loss"], margin=out["margin"],
                policy_accuracy=out["policy_accuracy"], policy_yes=out["policy_yes"],
                reward_accuracy=out["reward_accuracy"],
                head_change=head_change, batch_loss=batch_loss, first_step=first_step,
                max_batch_norm=max_batch_norm, meta={"model": facts.model, "K": K})


# ---------------------------------------------------------------------------------------------------
# Learning-speed measures
# ---------------------------------------------------------------------------------------------------

def change_slope(head_change: Any) -> np.ndarray:
    """The least-squares slope through the origin of ‖W_t − W_0‖ against t: Σ t c_t / Σ t²."""
    c = np.asarray(head_change, dtype=np.float64)
    if c.ndim < 1 or c.shape[-1] < 2:
        raise DynamicsError(f"head_change needs at least two steps, got shape {c.shape}")
    t = np.arange(c.shape[-1], dtype=np.float64)
    return (c * t).sum(-1) / (t * t).sum()


def speed_table(runs: Runs, *, k_early: int, level: float = 0.9):
    """Learning-speed measures per behaviour of single-behaviour runs, averaged over seeds.

    Columns: ``loss_drop_k`` and ``loss_drop_end`` (ln 2 minus the training loss after ``k_early`` and
    after all steps), ``steps_to_level`` (the median over seeds of the first step with training policy
    accuracy ≥ ``level``, counting a run that never reaches it as T + 1, so it ranks last),
    ``reached`` (share of seeds reaching it), ``acc_0`` and ``acc_gain`` (training policy accuracy at t = 0 and its gain by T), ``slope``
    (:func:`change_slope`), ``first_step`` (‖W_1 − W_0‖), one row per behaviour (group), for one
    learning rate.
    """
    import pandas as pd

    if runs.meta.get("K") != 1:
        raise DynamicsError("speed_table needs single-behaviour runs (groups of one)")
    if len(np.unique(runs.lr)) != 1:
        raise DynamicsError("speed_table needs runs at one learning rate; select them first")
    if not 0 < k_early <= runs.steps:
        raise DynamicsError(f"k_early must be in 1..{runs.steps}, got {k_early!r}")
    loss = runs.loss["train"][:, :, 0]
    acc = runs.policy_accuracy["train"][:, :, 0]
    steps = np.asarray(stats.first_reaching(acc, level), dtype=np.float64)
    per_run = pd.DataFrame({
        "group": runs.group,
        "loss_drop_k": LN2 - loss[:, k_early],
        "loss_drop_end": LN2 - loss[:, -1],
        "steps_to_level": np.minimum(steps, runs.steps + 1),
        "reached": np.isfinite(steps).astype(np.float64),
        "acc_0": acc[:, 0],
        "acc_gain": acc[:, -1] - acc[:, 0],
        "slope": change_slope(runs.head_change),
        "first_step": runs.head_change[:, 1],
    })
    agg = per_run.groupby("group").agg(
        loss_drop_k=("loss_drop_k", "mean"), loss_drop_end=("loss_drop_end", "mean"),
        steps_to_level=("steps_to_level", "median"),
        reached=("reached", "mean"),
        acc_0=("acc_0", "mean"), acc_gain=("acc_gain", "mean"), slope=("slope", "mean"),
        first_step=("first_step", "mean"))
    agg.index = pd.Index([runs.groups[g][0] for g in agg.index], name="behavior")
    return agg


# ---------------------------------------------------------------------------------------------------
# Statistics: rank correlations, partial correlations, fractions, verdicts
# ---------------------------------------------------------------------------------------------------

def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _check_xy(x, y, covariates=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DynamicsError(f"x and y must be 1-D of the same length, got shapes {a.shape} and {b.shape}")
    c = np.zeros((a.shape[0], 0)) if covariates is None else np.asarray(covariates, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] != a.shape[0]:
        raise DynamicsError(f"covariates must be (n, k) with n = {a.shape[0]}, got shape {c.shape}")
    if a.shape[0] < c.shape[1] + 4:
        raise DynamicsError(f"need at least {c.shape[1] + 4} observations for a partial correlation with "
                            f"{c.shape[1]} covariates, got {a.shape[0]}")
    if np.isnan(a).any() or np.isnan(b).any() or np.isnan(c).any():
        raise DynamicsError("x, y and covariates must not contain NaN (infinities are ranked last)")
    return a, b, c


def _partial_rows(ra: np.ndarray, rb: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """Pearson correlation of the residuals of ra and rb after regressing both on rc (batched rows)."""
    n = ra.shape[-1]
    X = np.concatenate([np.ones(ra.shape + (1,)), rc], axis=-1)  # [B, n, k+1]
    Y = np.stack([ra, rb], axis=-1)  # [B, n, 2]
    coef, *_ = _lstsq_batched(X, Y)
    res = Y - X @ coef
    res -= res.mean(axis=-2, keepdims=True)
    num = (res[..., 0] * res[..., 1]).sum(-1)
    den = np.sqrt((res[..., 0] ** 2).sum(-1) * (res[..., 1] ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den if n else num


def _lstsq_batched(X: np.ndarray, Y: np.ndarray):
    XtX = np.swapaxes(X, -1, -2) @ X
    XtY = np.swapaxes(X, -1, -2) @ Y
    return (np.linalg.pinv(XtX) @ XtY,)


def partial_spearman(x: Any, y: Any, covariates: Any = None) -> float:
    """Spearman's ρ of ``x`` and ``y`` with the ranks of ``covariates`` (n × k) partialled out.

    All variables are ranked (average ranks for ties); the ranks of x and y are regressed on the
    covariates' ranks (with an intercept) and the residuals correlated. With no covariates this is
    Spearman's ρ.
    """
    a, b, c = _check_xy(x, y, covariates)
    rc = _rank(c.T).T if c.shape[1] else c
    rho = _partial_rows(_rank(a)[None], _rank(b)[None], rc[None])[0]
    return float(rho)


def partial_spearman_ci(x: Any, y: Any, covariates: Any = None, *, n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """:func:`partial_spearman` with a percentile bootstrap interval over the observations (behaviours):
    ``(rho, lo, hi)``. Each replicate re-ranks the resampled observations.
    """
    a, b, c = _check_xy(x, y, covariates)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise DynamicsError(f"n_boot must be an int >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise DynamicsError(f"level must be in (0, 1), got {level!r}")
    rho = partial_spearman(a, b, c)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    n = a.shape[0]
    reps = []
    for start in range(0, n_boot, 250):
        idx = rng.integers(0, n, size=(min(250, n_boot - start), n))
        rc = np.moveaxis(_rank(np.moveaxis(c[idx], 1, 2)), 1, 2) if c.shape[1] else c[idx]
        reps.append(_partial_rows(_rank(a[idx]), _rank(b[idx]), rc))
    r = np.concatenate(reps)
    r = r[np.isfinite(r)]
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return rho, float(lo), float(hi)


def speed_correlations(table, speeds: Sequence[str], properties: Sequence[str], *, n_boot: int, seed: int):
    """Spearman's ρ of each speed with each property over the rows (behaviours) of ``table``, with a
    bootstrap interval, and the partial ρ holding the other properties fixed (:func:`partial_spearman_ci`).

    Returns a DataFrame with columns ``speed``, ``property``, ``rho``, ``lo``, ``hi``, ``prho``, ``plo``,
    ``phi``; a speed or property that is constant over the behaviours gives NaN (undefined). The plain
    interval comes from :func:`alignment_dynamics.stats.spearman_ci`, stream ``(seed, j, i)``.
    """
    import pandas as pd

    missing = [c for c in list(speeds) + list(properties) if c not in table.columns]
    if missing:
        raise DynamicsError(f"columns {missing} are not in the table; it has {list(table.columns)}")
    rows = []
    with one_thread():  # many small rank regressions
        for j, key in enumerate(speeds):
            y = table[key].to_numpy(dtype=np.float64)
            for i, prop in enumerate(properties):
                x = table[prop].to_numpy(dtype=np.float64)
                others = table[[p for p in properties if p != prop]].to_numpy(dtype=np.float64)
                if np.ptp(x) == 0 or np.ptp(y) == 0:
                    vals = [math.nan] * 6
                else:
                    vals = [*stats.spearman_ci(x, y, n_boot=n_boot, seed=(int(seed), j, i)),
                            *partial_spearman_ci(x, y, others, n_boot=n_boot, seed=int(seed) + 101 * j + i)]
                rows.append(dict(zip(("speed", "property", "rho", "lo", "hi", "prho", "plo", "phi"),
                                     [key, prop, *vals])))
    return pd.DataFrame(rows)


def rank_outliers(x: Any, y: Any, names: Sequence[str], k: int = 3):
    """The ``k`` observations farthest from the rank trend of y on x: residuals of rank(y) regressed
    on rank(x), largest |residual| first (a DataFrame with x, y, their ranks and the residual).
    """
    import pandas as pd

    a, b, _ = _check_xy(x, y)
    if len(names) != a.shape[0]:
        raise DynamicsError(f"names must have {a.shape[0]} entries, got {len(names)}")
    ra, rb = _rank(a), _rank(b)
    slope, icpt = np.polyfit(ra, rb, 1)
    res = rb - (slope * ra + icpt)
    order = np.argsort(-np.abs(res), kind="stable")[:k]
    return pd.DataFrame({"x": a[order], "y": b[order], "rank_x": ra[order], "rank_y": rb[order],
                         "residual": res[order]}, index=pd.Index([names[i] for i in order], name="behavior"))


def finite_spearman(x: Any, y: Any) -> float:
    """Spearman's ρ over the pairs where both values are finite; NaN when fewer than 3 remain
    (e.g. behaviours whose tiny test sample is empty).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DynamicsError(f"x and y must be 1-D of the same length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return math.nan
    return stats.spearman(a[keep], b[keep])


def gap_size_comparison(pair_a: Sequence["BehaviorSet"], pair_b: Sequence["BehaviorSet"], *, n_boot: int,
                        seed: int) -> dict[str, float | str]:
    """Is pair (a)'s priority gap larger than pair (b)'s? A stratified-bootstrap answer on the pairs'
    training sets.

    Returns |G(a)|, |G(b)|, the 95 % percentile interval of |G(a)| − |G(b)| over ``n_boot`` replicates
    (:func:`alignment_dynamics.geometry.bootstrap_gaps`), and ``verdict``, the
    :func:`alignment_dynamics.verdicts.difference` verdict on "pair (a) has the larger gap" ("not
    resolvable at this sample size" when the interval contains 0). ``n`` is the number of training
    statements the bootstrap resampled.
    """
    from . import geometry, verdicts

    sets = list(pair_a) + list(pair_b)
    if len(pair_a) != 2 or len(pair_b) != 2:
        raise DynamicsError("each pair must hold exactly two behaviour sets")
    data_ = {bs.behavior: (bs.h_train, bs.s_train > 0) for bs in sets}
    pa, pb = tuple(bs.behavior for bs in pair_a), tuple(bs.behavior for bs in pair_b)
    boot = geometry.bootstrap_gaps(data_, [pa, pb], n_boot=n_boot, seed=seed)
    ga = abs(geometry.priority_gap(pair_a[0].b("train"), pair_a[1].b("train")))
    gb = abs(geometry.priority_gap(pair_b[0].b("train"), pair_b[1].b("train")))
    lo, hi = geometry.percentile_ci(np.abs(boot[pa]) - np.abs(boot[pb]))
    n = int(sum(bs.n_train for bs in sets))
    diff = ga - gb
    verdict = verdicts.difference(min(max(diff, float(lo)), float(hi)), float(lo), float(hi), n, unit="statements")
    return {"gap_a": ga, "gap_b": gb, "diff": diff, "diff_lo": float(lo), "diff_hi": float(hi), "n": n,
            "verdict": verdict}


# ---------------------------------------------------------------------------------------------------
# Prioritisation: groups, priority predictions, who is learned first, reweighting
# ---------------------------------------------------------------------------------------------------

def random_groups(names: Sequence[str], size: int, count: int, *, seed: int) -> list[tuple[str, ...]]:
    """``count`` distinct random groups of ``size`` different behaviours (ordered as drawn)."""
    names = list(names)
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= len(names):
        raise DynamicsError(f"size must be an int in 2..{len(names)}, got {size!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DynamicsError(f"count must be a positive int, got {count!r}")
    available = math.comb(len(names), size)
    if count > available:
        raise DynamicsError(f"only {available} distinct groups of {size} exist among {len(names)} behaviours")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), size]))
    seen, out = set(), []
    while len(out) < count:
        g = tuple(names[i] for i in rng.choice(len(names), size=size, replace=False))
        if frozenset(g) not in seen:
            seen.add(frozenset(g))
            out.append(g)
    return out


def group_priorities(group: Sequence[BehaviorSet], replicate: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The quantities of the priority theorem for a group trained jointly, from the training sets.

    ``b`` (K × d, b̂_i on each behaviour's training pairs), ``weights`` w_i = r_i n_i / Σ r_j n_j (the
    share of training pairs, after replication r), ``bbar`` = Σ w_i b̂_i, ``levels`` p_i = ⟨b̄, b̂_i⟩/‖b̄‖
    and ``inner`` ⟨b̄, b̂_i⟩. For two behaviours also ``gap``, the official priority gap of the first
    over the second (equal weights, :func:`alignment_dynamics.geometry.priority_gap`).
    """
    from .geometry import priority_gap

    k = len(group)
    rep = [1] * k if replicate is None else list(replicate)
    b = np.stack([bs.b("train") for bs in group])
    n = np.array([bs.n_train * r for bs, r in zip(group, rep)], dtype=np.float64)
    w = n / n.sum()
    bbar = w @ b
    nb = float(np.linalg.norm(bbar))
    if not nb > 1e-12 * float(np.linalg.norm(b, axis=1).max()):
        raise DynamicsError("the behaviours' b vectors cancel (b̄ ≈ 0): priority levels are undefined")
    out = {"b": b, "weights": w, "bbar": bbar, "inner": b @ bbar, "levels": b @ bbar / nb}
    if k == 2:
        out["gap"] = np.array(priority_gap(b[0], b[1]))
    return out


def final_gains(runs: Runs, *, metric: str = "loss", part: str = "train") -> np.ndarray:
    """How much each behaviour of each run has been learned by the last step, ``[R, K]``.

    ``metric="loss"``: ln 2 − L_i(T), the drop of its DPO loss (every loss starts at ln 2);
    ``metric="accuracy"``: its policy-accuracy gain acc_i(T) − acc_i(0).
    """
    if metric not in LEARNED_FIRST_METRICS:
        raise DynamicsError(f"metric must be one of {list(LEARNED_FIRST_METRICS)}, got {metric!r}")
    if part not in ("train", "test"):
        raise DynamicsError(f"part must be 'train' or 'test', got {part!r}")
    if metric == "loss":
        return LN2 - runs.loss[part][:, -1, :]
    acc = runs.policy_accuracy[part]
    return acc[:, -1, :] - acc[:, 0, :]


def order_agreement(predicted: Any, measured: Any) -> dict[str, np.ndarray]:
    """Whether measured gains follow predicted priorities, per run (rows of K values each).

    ``top``: the behaviour with the highest prediction has the largest gain; ``order``: the whole
    order agrees; ``tau``: Kendall's τ between prediction and gain. Ties in the gains count as
    disagreement.
    """
    p = np.asarray(predicted, dtype=np.float64)
    g = np.asarray(measured, dtype=np.float64)
    if p.ndim != 2 or p.shape != g.shape or p.shape[1] < 2:
        raise DynamicsError(f"predicted and measured must both be [runs, K >= 2], got {p.shape} and {g.shape}")
    top = np.argmax(p, axis=1)
    top_ok = np.array([gi[t] > np.delete(gi, t).max() for gi, t in zip(g, top)])
    pairs = list(itertools.combinations(range(p.shape[1]), 2))
    conc = np.zeros(p.shape[0])
    for i, j in pairs:
        conc += np.sign(p[:, i] - p[:, j]) * np.sign(g[:, i] - g[:, j])
    tau = conc / len(pairs)
    return {"top": top_ok, "order": tau == 1.0, "tau": tau}


def balancing_replication(b_low: Any, b_high: Any, *, max_factor: int = 16) -> int:
    """The integer oversampling of the less distinguishable behaviour that makes the two behaviours'
    first-order margin gains equal.

    With weights w_l, w_h, ⟨b̄, b_l⟩ = ⟨b̄, b_h⟩ requires w_l/w_h = (‖b_h‖² − c)/(‖b_l‖² − c) with
    c = ⟨b_l, b_h⟩ (the priority theorem's first-order term). The ratio is rounded to an integer in
    1..``max_factor``; when ‖b_l‖² ≤ c no weighting equalises them and ``max_factor`` is returned.
    """
    bl = np.asarray(b_low, dtype=np.float64)
    bh = np.asarray(b_high, dtype=np.float64)
    if bl.ndim != 1 or bl.shape != bh.shape:
        raise DynamicsError(f"b_low and b_high must be vectors of one length, got {bl.shape} and {bh.shape}")
    if isinstance(max_factor, bool) or not isinstance(max_factor, int) or max_factor < 1:
        raise DynamicsError(f"max_factor must be a positive int, got {max_factor!r}")
    c = float(bl @ bh)
    den = float(bl @ bl) - c
    if den <= 0:
        return max_factor
    ratio = (float(bh @ bh) - c) / den
    return int(min(max_factor, max(1, round(ratio))))


def priority_outcomes(groups: Sequence[Sequence[BehaviorSet]], runs: Runs):
    """Predicted priorities against measured learning, one row per group (gains averaged over seeds).

    Columns: ``members`` (names, in the group's order), ``levels`` (priority levels with the shares of
    training pairs as weights, :func:`group_priorities`), ``gains_loss`` and ``gains_accuracy``
    (:func:`final_gains` on the training sets, mean over the group's runs), and for each metric ``top_*``,
    ``order_*`` and ``tau_*`` (:func:`order_agreement` of levels and gains). For pairs also ``gap``
    (the official priority gap of the first over the second) and ``agree_*``: the sign of the gap
    matches which behaviour gained more (a zero gap or a tie counts as disagreement).
    """
    import pandas as pd

    if len(groups) != len(runs.groups):
        raise DynamicsError(f"got {len(groups)} groups for runs of {len(runs.groups)} groups")
    gains = {m: final_gains(runs, metric=m) for m in LEARNED_FIRST_METRICS}
    rows = []
    for gi, group in enumerate(groups):
        names = tuple(bs.behavior for bs in group)
        if names != runs.groups[gi]:
            raise DynamicsError(f"group {gi} is {names}, but the runs trained {runs.groups[gi]}")
        sel = runs.group == gi
        pr = group_priorities(group, runs.replicate[gi])
        row: dict[str, Any] = {"members": names, "levels": pr["levels"],
                               "distinguishability": np.linalg.norm(pr["b"], axis=1)}
        for metric, g in gains.items():
            mean_gain = g[sel].mean(axis=0)
            row[f"gains_{metric}"] = mean_gain
            agree = order_agreement(pr["levels"][None], mean_gain[None])
            row[f"top_{metric}"] = bool(agree["top"][0])
            row[f"order_{metric}"] = bool(agree["order"][0])
            row[f"tau_{metric}"] = float(agree["tau"][0])
            if len(group) == 2:
                gap = float(pr["gap"])
                row["gap"] = gap
                row[f"agree_{metric}"] = bool(gap != 0 and np.sign(gap) == np.sign(mean_gain[0] - mean_gain[1]))
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_by_bins(values: Any, agree: Any, edges: Sequence[float], *, level: float = 0.95):
    """The share of agreements per bin of ``values`` (e.g. |priority gap|), with Wilson intervals.

    Bins are [edges[k], edges[k+1]) (the last one closed); returns a DataFrame with ``bin``, ``n``,
    ``p``, ``lo``, ``hi`` (NaN for an empty bin).
    """
    import pandas as pd

    v = np.asarray(values, dtype=np.float64)
    a = np.asarray(agree, dtype=bool)
    e = np.asarray(edges, dtype=np.float64)
    if v.shape != a.shape or v.ndim != 1:
        raise DynamicsError(f"values and agree must be 1-D of one length, got {v.shape} and {a.shape}")
    if e.ndim != 1 or e.shape[0] < 2 or np.any(np.diff(e) <= 0):
        raise DynamicsError(f"edges must be at least two increasing numbers, got {list(edges)}")
    rows = []
    for k in range(e.shape[0] - 1):
        last = k == e.shape[0] - 2
        sel = (v >= e[k]) & ((v <= e[k + 1]) if last else (v < e[k + 1]))
        n = int(sel.sum())
        p, lo, hi = stats.wilson(int(a[sel].sum()), n, level=level) if n else (math.nan,) * 3
        rows.append({"bin": f"[{e[k]:g}, {e[k + 1]:g}{']' if last else ')'}", "n": n, "p": p, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def less_distinguishable(group: Sequence[BehaviorSet]) -> int:
    """The position in ``group`` of the behaviour with the smallest ‖b̂‖ on its training pairs."""
    if not group:
        raise DynamicsError("the group is empty")
    return int(np.argmin([np.linalg.norm(bs.b("train")) for bs in group]))


def reweighting_plan(groups: Sequence[Sequence[BehaviorSet]], *, max_factor: int = 16) -> list[tuple[int, int]]:
    """For each pair, the replication (r₁, r₂) that oversamples its less distinguishable member
    (:func:`less_distinguishable`) by :func:`balancing_replication`; the other member keeps 1.
    """
    out = []
    for group in groups:
        if len(group) != 2:
            raise DynamicsError(f"reweighting_plan needs pairs, got a group of {len(group)}")
        low = less_distinguishable(group)
        r = balancing_replication(group[low].b("train"), group[1 - low].b("train"), max_factor=max_factor)
        out.append((r, 1) if low == 0 else (1, r))
    return out


def reweighting_effect(groups: Sequence[Sequence[BehaviorSet]], before, after, *, metric: str = "loss",
                       level: float = 0.95) -> dict[str, Any]:
    """What oversampling did to each pair: the gains of its less and more distinguishable members.

    ``before`` and ``after`` are :func:`priority_outcomes` of the same pairs without and with the
    reweighting. Returns arrays ``low_before``, ``low_after``, ``high_before``, ``high_after`` (the
    members' gains by ``metric``), ``shrinks`` (the gap between the two gains got smaller), and
    numbers: ``shrinks_p``/``_lo``/``_hi`` (share with a Wilson interval), ``low_last_before`` and
    ``low_last_after`` (share of pairs where the less distinguishable member gained less),
    ``low_ratio``, ``high_ratio`` and ``total_ratio`` (medians of after/before).
    """
    if len(groups) != len(before) or len(groups) != len(after):
        raise DynamicsError(f"got {len(groups)} pairs, {len(before)} outcomes before and {len(after)} after")
    if any(len(g) != 2 for g in groups):
        raise DynamicsError("reweighting_effect needs pairs")
    if list(before["members"]) != list(after["members"]):
        raise DynamicsError("the outcomes before and after must describe the same pairs in the same order")
    low = np.array([less_distinguishable(g) for g in groups])
    idx = np.arange(len(groups))
    b = np.stack(before[f"gains_{metric}"])
    a = np.stack(after[f"gains_{metric}"])
    out: dict[str, Any] = {"low_before": b[idx, low], "low_after": a[idx, low],
                           "high_before": b[idx, 1 - low], "high_after": a[idx, 1 - low]}
    out["shrinks"] = np.abs(out["high_after"] - out["low_after"]) < np.abs(out["high_before"] - out["low_before"])
    p, lo, hi = stats.wilson(int(out["shrinks"].sum()), len(groups), level=level)
    out.update(shrinks_p=p, shrinks_lo=lo, shrinks_hi=hi,
               low_last_before=float(np.mean(out["low_before"] < out["high_before"])),
               low_last_after=float(np.mean(out["low_after"] < out["high_after"])),
               low_ratio=float(np.median(out["low_after"] / out["low_before"])),
               high_ratio=float(np.median(out["high_after"] / out["high_before"])),
               total_ratio=float(np.median((out["low_after"] + out["high_after"])
                                           / (out["low_before"] + out["high_before"]))))
    return out
