"""The data of the last-layer experiments: what the reference model's head says about the answers
(:class:`HeadFacts`, :func:`head_facts`, cached) and a behaviour's frozen features split into the official
training and test sets on a nested stratified sample (:class:`BehaviorSet`, :func:`behavior_set`), or
several behaviours split from one random stream as in the official two-behaviour script
(:func:`joint_splits`).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import cache, data, embed, models
from .checks import DynamicsError

HEAD_FACTS_VERSION = 1


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
    """E‖h‖² over the pooled pairs of ``sets`` (optionally of ``transform(h)``, e.g. a double norm).
    """
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
