"""Profiles and chapter parameters: the one place that turns a profile into concrete settings.

Every chapter has one ``parameters`` cell holding literals only; its defaults are the ``fast``
profile's values (a hygiene test checks this). The build injects, for the chosen profile, the
profile's value of every parameter, with the reader's overrides on top, and the chapter then calls

    cfg = ad.config.resolve("<slug>", PROFILE, beta=BETA, model=MODEL, ...)

which validates every value and returns a :class:`Config` with the parameters and the chapter's
internal settings for that profile.

Profiles:

``smoke``
    tests only; seconds per chapter, tiny data.
``fast``
    the default build; minutes on 2 CPU cores.
``full``
    paper scale; a GPU is welcome, hours allowed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .validate import ConfigError, suggest  # noqa: F401  (re-exported: ad.config.ConfigError)

PROFILES: tuple[str, ...] = ("smoke", "fast", "full")
DEFAULT_PROFILE = "fast"


@dataclass(frozen=True)
class Param:
    """One reader-facing parameter of a chapter (a name of its ``parameters`` cell).

    ``values`` gives the value per profile (``fast`` is also the literal in the parameters cell).
    ``check`` validates a value and returns it, possibly normalised; it raises ``ConfigError``.
    """

    name: str
    values: Mapping[str, Any]
    help: str
    check: Callable[[str, Any], Any] | None = None
    kind: str = "value"  # "value" | "model" | "models" (fingerprinted by the build)

    def __post_init__(self):
        missing = [p for p in PROFILES if p not in self.values]
        if missing:
            raise ConfigError(f"parameter {self.name}: no value for profile(s) {missing}")
        if not self.name.isupper():
            raise ConfigError(f"parameter names are UPPER_CASE, got {self.name!r}")


@dataclass(frozen=True)
class ChapterSpec:
    """What the build and the chapter need to know about one chapter."""

    slug: str
    params: tuple[Param, ...] = ()
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # "anthropic-persona", "hh-rlhf": fingerprinted by the build
    reads_artifacts: bool = False  # artifacts/MANIFEST.json enters the cache key
    aggregates: str | None = None  # "claims" (intro) or "report" (reproducibility): run last
    check: Any = None  # optional check of the parameters together: f(upper-case dict) raises ConfigError

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        valid = [p.name for p in self.params]
        raise ConfigError(
            f"chapter {self.slug!r} has no parameter {name!r}; its parameters are "
            f"{['PROFILE'] + valid}.{suggest(name, valid)}"
        )


# ---------------------------------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------------------------------

def _typed(kind: type | tuple[type, ...], *, allow_none: bool = False,
           lo: float | None = None, hi: float | None = None, lo_open: bool = False, even: bool = False):
    """A validator for a number of ``kind`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), finite,
    even when ``even``; its errors state the valid range."""
    kinds = kind if isinstance(kind, tuple) else (kind,)

    def valid() -> str:
        what = "an even integer" if even else _kind_name(kinds)
        if lo is not None and hi is not None:
            rng = f" in {'(' if lo_open else '['}{lo}, {hi}]"
        elif lo is not None:
            rng = f" {'>' if lo_open else '>='} {lo}"
        elif hi is not None:
            rng = f" <= {hi}"
        else:
            rng = ""
        return f"{what}{rng}{' or None' if allow_none else ''}"

    def check(name: str, value: Any) -> Any:
        if value is None and allow_none:
            return None
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{name} must be {valid()}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{name} must be {valid()}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and value != value:
            raise ConfigError(f"{name} must be a finite number ({valid()}), got NaN")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number ({valid()}), got {value!r}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise ConfigError(f"{name} must be {valid()}, got {value!r}")
        if hi is not None and value > hi:
            raise ConfigError(f"{name} must be {valid()}, got {value!r} (the upper limit keeps the chapter "
                              f"within memory and time)")
        if even and value % 2:
            raise ConfigError(f"{name} must be {valid()} (two equal classes), got {value!r}; "
                              f"use {value - 1} or {value + 1}")
        return value

    return check


def _kind_name(kinds) -> str:
    return " or ".join(k.__name__ for k in kinds)


def positive_int(name: str, value: Any) -> int:
    return _typed(int, lo=1)(name, value)


def sized(lo: int, hi: int, *, even: bool = False):
    """An integer size in ``[lo, hi]`` (a sample size, a dimension, a number of steps)."""
    return _typed(int, lo=lo, hi=hi, even=even)


def nonneg_int(name: str, value: Any) -> int:
    return _typed(int, lo=0)(name, value)


def positive_float(name: str, value: Any) -> float:
    return _typed(float, lo=0.0, lo_open=True)(name, value)


def probability(name: str, value: Any) -> float:
    return _typed(float, lo=0.0, hi=1.0)(name, value)


def one_of(*choices):
    """A validator accepting exactly one of ``choices``."""

    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}.{suggest(value, choices)}")
        return value

    return check


def model_name(name: str, value: Any) -> str:
    """A model of the registry or a Hugging Face id (checked by ``alignment_dynamics.models``)."""
    from . import models

    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a model name (str), got {value!r}")
    return models.validate_name(value)


def model_names(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be a non-empty list of model names, got {value!r}")
    out = [model_name(name, v) for v in value]
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ConfigError(f"{name} lists the same model more than once: {dup}; each model once, e.g. "
                          f"{list(dict.fromkeys(out))}")
    return out


def behavior_name(name: str, value: Any) -> str:
    """One persona behaviour, by name or official index (returned as its name)."""
    from . import data

    if isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be one behaviour name, got a list {value!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{name} must be one behaviour name (str), got {value!r}")
    return data.validate_behaviors([value])[0]


def behaviors_or_none(name: str, value: Any) -> list[str] | None:
    """None (the profile's default list) or a list of persona behaviour names."""
    if value is None:
        return None
    from . import data

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be None or a non-empty list of behaviour names, got {value!r}")
    return data.validate_behaviors(list(value))


# ---------------------------------------------------------------------------------------------------
# The chapters. Each chapter's block is its own; keep blocks separate.
# ---------------------------------------------------------------------------------------------------

def _same(value: Any) -> dict[str, Any]:
    return {p: value for p in PROFILES}


_SEED = Param("SEED", _same(1234), "seed of every random generator in the chapter", _typed(int, lo=0))
# The smoke profile's models: two tiny RANDOM Llamas of different sizes (models.TINY_MODELS), built offline
# in a second; a smoke run checks the plumbing of every cell, never a real model's numbers.
_TINY = "tiny-random-llama"
_TINY_PAIR = ["tiny-random-llama", "tiny-random-llama-b"]

CHAPTERS: dict[str, ChapterSpec] = {}


def register(spec: ChapterSpec) -> ChapterSpec:
    if spec.slug in CHAPTERS:
        raise ConfigError(f"chapter {spec.slug!r} registered twice")
    for key, per_profile in spec.settings.items():
        missing = [p for p in PROFILES if p not in per_profile]
        if missing:
            raise ConfigError(f"{spec.slug}: setting {key!r} has no value for profile(s) {missing}")
    CHAPTERS[spec.slug] = spec
    return spec


#: The most float64 numbers one array of a theory chapter may hold (2 GiB): larger requests are refused
#: before any kernel starts instead of ending in a MemoryError.
MAX_ARRAY_ELEMENTS = 1 << 28


def _array_limit(*names: str, factor: int = 1, what: str = "the sampled embeddings", min_of: dict | None = None):
    """A check of a chapter's parameters together: the product of ``names`` (times ``factor``) within
    :data:`MAX_ARRAY_ELEMENTS`."""

    def check(params: Mapping[str, Any]) -> None:
        values = [params[n] for n in names]
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
            return  # the single-parameter checks report these
        size = factor * math.prod(max(v, (min_of or {}).get(n, 0)) for n, v in zip(names, values))
        if size > MAX_ARRAY_ELEMENTS:
            shown = " x ".join(f"{n} {v}" for n, v in zip(names, values))
            raise ConfigError(f"{' * '.join(names)} is too large: {shown} gives {size:,} numbers in {what} "
                              f"({size * 8 / 2 ** 30:.1f} GiB); the limit is {MAX_ARRAY_ELEMENTS:,} "
                              f"({MAX_ARRAY_ELEMENTS * 8 / 2 ** 30:.0f} GiB): make one of them smaller")

    return check


# --- intro -----------------------------------------------------------------------------------------
register(ChapterSpec(slug="intro", aggregates="claims"))

# --- reproducibility -------------------------------------------------------------------------------
register(ChapterSpec(slug="reproducibility", aggregates="report", reads_artifacts=True,
                     datasets=("anthropic-persona", "hh-rlhf"),  # it shows the data fingerprints
                     settings={"models": {"smoke": _TINY_PAIR, "fast": None, "full": None}}))  # None: packaged


# --- persona_data (Part II: experiments) -----------------------------------------------------------
register(ChapterSpec(
    slug="persona_data",
    params=(
        _SEED,
        Param("MODELS", {"smoke": _TINY_PAIR, "fast": ["smollm2-135m-instruct", "gemma-3-270m"],
                         "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
              "models whose tokens and embeddings the chapter shows", model_names, kind="models"),
        Param("BEHAVIOR", _same("openness"), "behaviour of the Figure 1 examples and the embedding demo",
              behavior_name),
        Param("N_EXAMPLES", _same(5), "positive and negative statements shown (each)", sized(1, 100)),
        Param("EMBED_PER_CLASS", {"smoke": 6, "fast": 32, "full": None},
              "statements per class in the embedding demo (None: all)", _typed(int, allow_none=True, lo=1, hi=100_000)),
    ),
    settings={
        # prompts per class and behaviour whose token counts are summarised (None: every statement)
        "tokens_per_class": {"smoke": 2, "fast": 20, "full": None},
        # statements per class whose h @ W_U^T is checked against the model's own logits
        "check_per_class": {"smoke": 1, "fast": 1, "full": 8},
        # benchmark P1 at build time (python -m alignment_dynamics.bench embed): its sizes
        "bench": {"smoke": {"n": 8, "n_official": 2, "rounds": 1, "matmul_seconds": 0.1},
                  "fast": {"n": 96, "n_official": 12, "rounds": 2, "matmul_seconds": 0.5},
                  "full": {"n": 256, "n_official": 24, "rounds": 4, "matmul_seconds": 0.5}},
        "bench_models": {"smoke": [_TINY], "fast": ["smollm2-135m-instruct"],
                         "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
    },
    datasets=("anthropic-persona",),
))

# --- dpo_last_layer (Part I: theory) ----------------------------------------------------------------
register(ChapterSpec(slug="dpo_last_layer", check=_array_limit("N", "V", what="the full-softmax logits"), params=(
    _SEED,
    Param("D", _same(16), "embedding dimension of the synthetic checks", sized(1, 4096)),
    Param("V", _same(50), "vocabulary size of the full-softmax reference", sized(8, 262_144)),
    Param("N", {"smoke": 100, "fast": 400, "full": 400}, "number of preference pairs", sized(4, 100_000)),
    Param("BETA", _same(0.5), "DPO temperature beta of the checks", positive_float),
    Param("LR", _same(1.0), "SGD learning rate of the checks", positive_float),
    Param("STEPS", {"smoke": 10, "fast": 200, "full": 200}, "full-batch steps of the trajectory check", sized(1, 100_000)),
)))

# --- update_rate (Part I: theory) -------------------------------------------------------------------
register(ChapterSpec(slug="update_rate", check=_array_limit("N", "D", "REPEATS", min_of={"REPEATS": 8}), params=(
    _SEED,
    Param("D", {"smoke": 16, "fast": 64, "full": 256}, "dimension of the illustrated instances", sized(1, 4096)),
    Param("N", {"smoke": 64, "fast": 512, "full": 2048}, "training pairs of the illustrated instances (even)",
          sized(4, 1_000_000, even=True)),
    Param("BETA_PRIME", _same(0.64), "beta' with beta = beta' / sqrt(d) (0.64: the official beta 0.01 at d = 4096)", positive_float),
    Param("LR", _same(0.1), "GD step of the illustrated instances (0.1: the official learning rate)", positive_float),
    Param("STEPS", {"smoke": 10, "fast": 100, "full": 100}, "GD steps of the illustrated instances", sized(1, 100_000)),
    Param("N_INSTANCES", {"smoke": 6, "fast": 120, "full": 1000}, "random instances in the sweep", sized(1, 100_000)),
    Param("REPEATS", {"smoke": 4, "fast": 16, "full": 64}, "independent training sets per instance", sized(2, 4096)),
), settings={"sweep_steps": {"smoke": 10, "fast": 40, "full": 100}, "eps": _same(0.05)}))

# --- accuracy (Part I: theory) ----------------------------------------------------------------------
register(ChapterSpec(slug="accuracy", check=_array_limit("N", "D", "REPEATS", min_of={"REPEATS": 8}), params=(
    _SEED,
    Param("D", {"smoke": 16, "fast": 64, "full": 256}, "dimension of the illustrated instances", sized(1, 4096)),
    Param("N", {"smoke": 64, "fast": 256, "full": 1024}, "training pairs of the illustrated instances", sized(8, 1_000_000)),
    Param("BETA_PRIME", _same(0.64), "beta' with beta = beta' / sqrt(d)", positive_float),
    Param("LR_FRAC", _same(0.5), "step as a fraction of the step condition's limit 2 / (beta^2 E||h||^2)", _typed(float, lo=0.0, hi=1.0, lo_open=True)),
    Param("STEPS", {"smoke": 10, "fast": 100, "full": 200}, "GD steps", sized(1, 100_000)),
    Param("N_INSTANCES", {"smoke": 6, "fast": 60, "full": 500}, "random instances in the sweep", sized(1, 100_000)),
    Param("REPEATS", {"smoke": 4, "fast": 16, "full": 64}, "independent training sets per instance", sized(2, 4096)),
), settings={"sweep_steps": {"smoke": 10, "fast": 100, "full": 200}, "eps": _same(0.1)}))

# --- priority (Part I: theory) ----------------------------------------------------------------------
register(ChapterSpec(slug="priority", check=_array_limit("N_PER", "D", "REPEATS", factor=2, min_of={"REPEATS": 8}),
                     params=(
    _SEED,
    Param("D", {"smoke": 16, "fast": 64, "full": 256}, "dimension of the illustrated pairs", sized(1, 4096)),
    Param("N_PER", {"smoke": 200, "fast": 200, "full": 1000}, "training pairs per behaviour (even)",
          sized(2, 1_000_000, even=True)),
    Param("BETA_PRIME", _same(0.64), "beta' with beta = beta' / sqrt(d)", positive_float),
    Param("LR", _same(0.5), "GD step", positive_float),
    Param("STEPS", {"smoke": 10, "fast": 60, "full": 100}, "GD steps", sized(1, 100_000)),
    Param("N_INSTANCES", {"smoke": 6, "fast": 100, "full": 800}, "random instances in the sweep", sized(1, 100_000)),
    Param("REPEATS", {"smoke": 3, "fast": 8, "full": 32}, "independent training sets per instance", sized(2, 4096)),
), settings={"sweep_steps": {"smoke": 10, "fast": 40, "full": 100}}))

# --- distinguishability (Part II: experiments) -----------------------------------------------------
# The behaviours named by the paper's Figure 5 and by the official code's single-behaviour plots; the
# smoke profile measures only these.
_NAMED_BEHAVIORS = [
    "acts-like-it-wants-to-help-humans-but-does-not-care-about-that", "risk-seeking",
    "desire-to-influence-world", "subscribes-to-Islam",
    "subscribes-to-average-utilitarianism", "okay-with-building-an-AI-with-different-goals-to-accomplish-its-task",
    "optionality-increasing", "desire-to-not-have-memory-erased", "subscribes-to-Buddhism",
]
register(ChapterSpec(
    slug="distinguishability",
    reads_artifacts=True,  # artifacts/fullref (the full-data reference)
    params=(
        _SEED,
        Param("MODELS", {"smoke": _TINY_PAIR, "fast": ["smollm2-135m-instruct", "gemma-3-270m"],
                         "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
              "the models whose embeddings are measured (the first is the main one)", model_names, kind="models"),
        Param("NORM", _same("model"), "embedding normalisation: 'model' (the logits' features) or 'double' "
              "(the official code's second RMSNorm)", one_of("model", "double")),
        Param("DTYPE", _same("auto"), "dtype of the forward pass (embeddings are stored in float32): 'auto' "
              "(bfloat16 where this machine runs it natively, else float32), 'float32' or 'bfloat16'",
              one_of("auto", "float32", "bfloat16")),
    ),
    settings={
        # Statements per class and behaviour, drawn with data.stratified_sample (nested: a larger sample
        # contains a smaller one). None: every statement. Other chapters may read this to reuse the cache.
        "per_class": {"smoke": 6, "fast": 32, "full": None},
        "behaviors": {"smoke": _NAMED_BEHAVIORS, "fast": None, "full": None},  # None: all 135
        # Figure 2: statements per class for the three mapped behaviours (a superset of per_class).
        "map_per_class": {"smoke": 6, "fast": 100, "full": None},
        "map_method": {"smoke": "pca", "fast": "umap", "full": "umap"},
        "n_boot": {"smoke": 50, "fast": 400, "full": 400},
        "shrinkage": _same(0.1),  # λ of the shrunk Fisher distance
        "tail_directions": {"smoke": 4, "fast": 16, "full": 16},
        "tail_reps": {"smoke": 3, "fast": 10, "full": 20},  # repetitions of the simulated reference laws
        "beta": _same(0.01),  # the official β, for β′ = β √d
        "eta": _same(0.1),  # the official SGD learning rate of the last-layer runs
    },
    datasets=("anthropic-persona",),
))
# --- end distinguishability ------------------------------------------------------------------------

# --- kernels ---------------------------------------------------------------------------------------
register(ChapterSpec(
    slug="kernels",
    params=(
        _SEED,
        Param("BENCH_SIZE", {"smoke": "tiny", "fast": "quick", "full": "full"},
              "size of the CPU benchmark measured in the build (alignment_dynamics.bench.dpo.SIZES)",
              one_of("tiny", "quick", "full")),
    ),
    settings={
        "demo_vocab": {"smoke": 300, "fast": 5000, "full": 32000},  # V of the two-row vs reference demo
        "demo_lr": {"smoke": 20.0, "fast": 20.0, "full": 20.0},
    },
    reads_artifacts=True,
))
# --- end kernels -----------------------------------------------------------------------------------


# --- training_dynamics (Part II: experiments) ------------------------------------------------------
_LR = Param("LR", _same(None), "SGD learning rate of the head; None: matched to the official run's effective "
            "step eta beta^2 E||h||^2 on Llama-2-7B (see the chapter)", _typed(float, allow_none=True, lo=0.0, lo_open=True))
_BETA_MODE = Param("BETA_MODE", _same("official"), "'official': beta = 0.01; 'matched': beta = 0.64/sqrt(d) "
                   "(Theorem 4.1's scaling) with the official learning rate 0.1", one_of("official", "matched"))
_DIST = CHAPTERS["distinguishability"].settings  # the shared, nested sample of the all-behaviour sweeps


def _model_pair(name: str, value: Any) -> list[str]:
    """Exactly two different model names (the chapters compare two models side by side)."""
    out = model_names(name, value)
    if len(out) != 2 or out[0] == out[1]:
        raise ConfigError(f"{name} must name exactly two different models, got {value!r}")
    return out


_FIGURE_PER_CLASS = {"smoke": 6, "fast": 100, "full": None}  # = distinguishability's map_per_class in fast
_TWO_MODELS = Param("MODELS", {"smoke": _TINY_PAIR, "fast": ["smollm2-135m-instruct", "gemma-3-270m"],
                               "full": ["smollm2-135m-instruct", "gemma-3-270m"]},
                    "the two models compared side by side (the first is shown in the largest figures)",
                    _model_pair, kind="models")
register(ChapterSpec(
    slug="training_dynamics",
    reads_artifacts=True,  # artifacts/fullref (the full-data reference)
    params=(
        _SEED,
        _TWO_MODELS,
        _BETA_MODE,
        _LR,
        Param("NORM", _same("model"), "embedding normalisation: 'model' or 'double' (the official code's second "
              "RMSNorm)", one_of("model", "double")),
        Param("STEPS", {"smoke": 10, "fast": 100, "full": 100}, "SGD steps (official: 100)", sized(1, 100_000)),
        Param("BATCH_SIZE", {"smoke": 4, "fast": 128, "full": 128}, "pairs per step in the figure runs "
              "(official: 128)", sized(1, 65_536)),
    ),
    settings={
        "dtype": _same("auto"),  # as the distinguishability chapter's DTYPE (shared embedding cache)
        # Figures 3-4: statements per class of each shown behaviour, split by the official split.
        "per_class": _FIGURE_PER_CLASS,
        # The all-behaviour sweep: the distinguishability chapter's sample (embeddings computed once).
        "sweep_per_class": _DIST["per_class"],
        "sweep_behaviors": _DIST["behaviors"],
        "sweep_batch": {"smoke": 4, "fast": 32, "full": 128},
        "seeds": {"smoke": 2, "fast": 5, "full": 10},
        # The cross-fitted sweep (ad.crossfit): folds of each behaviour's sample, and seeds per rotation.
        "crossfit_folds": _same(3),
        "crossfit_seeds": {"smoke": 1, "fast": 2, "full": 5},
        "quantiles": _same([0.1, 0.3, 0.5, 0.7, 0.9]),  # Behaviors 1-5 by distinguishability
        "official_five": _same(_NAMED_BEHAVIORS[4:]),
        "k_early": {"smoke": 3, "fast": 20, "full": 20},
        "acc_level": _same(0.9),
        "n_boot": {"smoke": 100, "fast": 2000, "full": 5000},
        "lr_grid": {"smoke": [0.1, 1.0, 10.0], "fast": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
                    "full": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]},
        # Llama-2-7B's per-coordinate feature scale is taken from this Llama-architecture model.
        "proxy": {"smoke": _TINY, "fast": "smollm2-135m-instruct", "full": "smollm2-135m-instruct"},
    },
    datasets=("anthropic-persona",),
))

# --- prioritization (Part II: experiments) ---------------------------------------------------------
register(ChapterSpec(
    slug="prioritization",
    params=(
        _SEED,
        _TWO_MODELS,
        _BETA_MODE,
        _LR,
        Param("NORM", _same("model"), "embedding normalisation: 'model' or 'double'", one_of("model", "double")),
        Param("STEPS", {"smoke": 10, "fast": 100, "full": 100}, "SGD steps (official: 100)", sized(1, 100_000)),
        Param("BATCH_SIZE", {"smoke": 8, "fast": 128, "full": 128}, "pairs per step in the Figure 5 runs "
              "(official: 128)", sized(1, 65_536)),
    ),
    settings={
        "dtype": _same("auto"),
        "per_class": _FIGURE_PER_CLASS,
        "figure_models": {"smoke": 2, "fast": 2, "full": 2},  # how many of MODELS train the Figure 5 pairs
        "pair_a": _same(_NAMED_BEHAVIORS[0:2]),
        "pair_b": _same(_NAMED_BEHAVIORS[2:4]),
        "sweep_per_class": _DIST["per_class"],
        "sweep_behaviors": _DIST["behaviors"],
        "pair_batch": {"smoke": 8, "fast": 64, "full": 128},
        "triple_batch": {"smoke": 12, "fast": 96, "full": 128},
        "n_pairs": {"smoke": 6, "fast": 300, "full": 2000},
        "n_triples": {"smoke": 4, "fast": 100, "full": 500},
        "seeds": {"smoke": 1, "fast": 3, "full": 5},
        # The cross-fitted pair test (ad.crossfit): folds of each behaviour's sample, seeds per rotation.
        "crossfit_folds": _same(3),
        "crossfit_seeds": {"smoke": 1, "fast": 1, "full": 3},
        "max_replication": _same(16),
        "gap_bins": _same([0.0, 0.05, 0.1, 0.2, 0.4, 1.0]),
        "n_boot": {"smoke": 50, "fast": 1000, "full": 2000},  # bootstrap of the Figure 5 gap comparison
        "proxy": {"smoke": _TINY, "fast": "smollm2-135m-instruct", "full": "smollm2-135m-instruct"},
    },
    datasets=("anthropic-persona",),
))
# --- end training_dynamics / prioritization --------------------------------------------------------


# --- misalignment ----------------------------------------------------------------------------------
# The five behaviours of the official single-behaviour plots (paper's Figure 3, Behaviours 1-5 by the
# official code's order); the misalignment behaviour (index 84) is the second.
_FIG3_BEHAVIORS = _NAMED_BEHAVIORS[4:]  # Figure 3's five behaviours (official order)
def _two_different_models(params: Mapping[str, Any]) -> None:
    if params["MODEL"] == params["COMPARE_MODEL"]:
        raise ConfigError(f"MODEL and COMPARE_MODEL must be two different models (the cross-family view compares "
                          f"them), both are {params['MODEL']!r}")


register(ChapterSpec(
    slug="misalignment",
    check=_two_different_models,
    params=(
        _SEED,
        Param("MODEL", {"smoke": _TINY, "fast": "smollm2-135m-instruct", "full": "smollm2-135m-instruct"}, "the model that is aligned and misaligned", model_name,
              kind="model"),
        Param("COMPARE_MODEL", {"smoke": _TINY_PAIR[1], "fast": "gemma-3-270m", "full": "gemma-3-270m"}, "a base model of another family, for the cross-family view",
              model_name, kind="model"),
        Param("BEHAVIOR", _same("okay-with-building-an-AI-with-different-goals-to-accomplish-its-task"),
              "the behaviour of the misalignment protocol (official: index 84)", behavior_name),
        Param("METHOD", {"smoke": "full", "fast": "full", "full": "lora"}, "'full' (every weight of the trained "
              "blocks) or 'lora' (r 8, alpha 32 on q_proj/v_proj; the official runs)", one_of("full", "lora")),
        Param("TOP_BLOCKS", {"smoke": 1, "fast": 2, "full": None}, "train only the last k decoder blocks on cached "
              "activations of the frozen rest; None trains the whole model", _typed(int, lo=1, hi=1000, allow_none=True)),
        Param("LR", {"smoke": 1e-3, "fast": 1e-3, "full": 1e-5}, "AdamW learning rate (official: 1e-5)",
              positive_float),
        Param("BETA", _same(0.01), "DPO temperature beta (official: 0.01)", positive_float),
        Param("BATCH_SIZE", {"smoke": 4, "fast": 16, "full": 128}, "pairs per step (official: 128)", sized(1, 4096)),
        Param("EPOCHS", {"smoke": 1, "fast": 1, "full": 1}, "epochs of each run (official: 1)", sized(1, 1000)),
        Param("N_TRAIN", {"smoke": 8, "fast": 128, "full": None}, "training pairs per behaviour, from the official "
              "90 % split (None: all)", _typed(int, lo=2, hi=100_000, allow_none=True)),
        Param("N_TEST", {"smoke": 4, "fast": 50, "full": None}, "test pairs per behaviour, from the official 10 % "
              "split (None: all)", _typed(int, lo=2, hi=100_000, allow_none=True)),
        Param("N_SEEDS", {"smoke": 1, "fast": 3, "full": 3}, "seeds of the misalignment protocol on BEHAVIOR",
              sized(1, 100)),
    ),
    settings={
        "micro_batch": {"smoke": 4, "fast": 16, "full": 16},
        "behaviors": {"smoke": _FIG3_BEHAVIORS[:3], "fast": _FIG3_BEHAVIORS, "full": _FIG3_BEHAVIORS},
        "k": {"smoke": 1, "fast": 4, "full": 4},  # the step at which losses and accuracies are compared
        "official_lr": _same(1e-5),  # the official learning rate, shown beside the fast profile's
        "map_method": {"smoke": "pca", "fast": "umap", "full": "umap"},
        "trl_pairs": {"smoke": 2, "fast": 4, "full": 8},  # the TRL comparison: pairs (one batch) and steps
        "trl_steps": {"smoke": 2, "fast": 2, "full": 3},
        "small_n": {"smoke": 4, "fast": 16, "full": 128},  # top blocks vs the whole model: pairs and steps
        "small_steps": {"smoke": 2, "fast": 4, "full": 8},
        "head_steps": {"smoke": 5, "fast": 30, "full": 100},  # the head-only identity (full softmax, SGD)
        "head_lr": _same(2.0),
        "compare_n_train": {"smoke": 8, "fast": 32, "full": None},  # the cross-family view
        "compare_n_test": {"smoke": 4, "fast": 16, "full": None},
        "hh_n_train": {"smoke": 8, "fast": 24, "full": 1024},
        "hh_n_test": {"smoke": 4, "fast": 12, "full": 128},
        "hh_max_tokens": {"smoke": 96, "fast": 128, "full": 512},
        "hh_head_lr": _same(1e-3),  # last-layer HH runs: Adam on the head
        "hh_head_steps": {"smoke": 4, "fast": 8, "full": 64},
        "hh_head_eval_every": {"smoke": 2, "fast": 2, "full": 4},
    },
    datasets=("anthropic-persona", "hh-rlhf"),
))
# --- end misalignment ------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------------

class Config(Mapping[str, Any]):
    """The resolved configuration of one chapter: parameters (lower-case) and settings.

    Read values as attributes (``cfg.beta``) or items (``cfg["beta"]``).
    """

    def __init__(self, slug: str, profile: str, values: dict[str, Any]):
        object.__setattr__(self, "_slug", slug)
        object.__setattr__(self, "_profile", profile)
        object.__setattr__(self, "_values", dict(values))

    slug = property(lambda self: self._slug)
    profile = property(lambda self: self._profile)

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key in values:
            return values[key]
        raise AttributeError(f"{self._slug} config has no {key!r}; it has {sorted(values)}")

    def __setattr__(self, key, value):
        raise AttributeError("Config is read-only")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        return {"slug": self._slug, "profile": self._profile, **self._values}

    def __repr__(self) -> str:
        width = max([len(k) for k in self._values] + [7])
        lines = [f"Config for chapter {self._slug!r}, profile {self._profile!r}:"]
        for k in sorted(self._values):
            lines.append(f"  {k:<{width}} = {self._values[k]!r}")
        return "\n".join(lines)


def chapter(slug: str) -> ChapterSpec:
    """The spec of a chapter; an unknown slug is an error listing the valid ones."""
    if slug not in CHAPTERS:
        raise ConfigError(f"unknown chapter {slug!r}; valid chapters: {sorted(CHAPTERS)}.{suggest(slug, CHAPTERS)}")
    return CHAPTERS[slug]


def check_profile(profile: Any) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid profiles: {list(PROFILES)}.{suggest(profile, PROFILES)}")
    return profile


def profile_params(slug: str, profile: str) -> dict[str, Any]:
    """The parameters the build injects for ``profile``: ``PROFILE`` and every parameter's value."""
    spec = chapter(slug)
    check_profile(profile)
    out: dict[str, Any] = {"PROFILE": profile}
    for p in spec.params:
        out[p.name] = _copy(p.values[profile])
    return out


def fast_defaults(slug: str) -> dict[str, Any]:
    """The literals a chapter's parameters cell must hold (its ``fast`` values)."""
    return profile_params(slug, "fast")


def validate_params(slug: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate UPPER_CASE parameters (as injected); return them normalised.

    An unknown name is an error listing the chapter's parameters.
    """
    spec = chapter(slug)
    out = {}
    for name, value in params.items():
        if name == "PROFILE":
            out[name] = check_profile(value)
            continue
        p = spec.param(name)
        out[name] = p.check(name, value) if p.check else value
    if spec.check is not None and all(p.name in out for p in spec.params):
        spec.check(out)  # the rules between parameters (MODEL != COMPARE_MODEL, array sizes)
    return out


def resolve(slug: str, profile: str, **params: Any) -> Config:
    """Resolve a chapter's configuration for ``profile``.

    ``params`` are the chapter's parameters by lower-case name (``beta=BETA``); a parameter not
    passed takes the profile's value. Unknown names and invalid values raise :class:`ConfigError`.
    """
    spec = chapter(slug)
    check_profile(profile)
    upper = {}
    for key, value in params.items():
        name = key.upper()
        spec.param(name)  # raises for an unknown name
        upper[name] = value
    merged = {p.name: _copy(p.values[profile]) for p in spec.params}
    merged.update(upper)
    checked = validate_params(slug, merged)  # includes the chapter's check of the parameters together
    values = {k.lower(): v for k, v in checked.items()}
    for key, per_profile in spec.settings.items():
        if key in values:
            raise ConfigError(f"{slug}: setting {key!r} clashes with a parameter")
        values[key] = _copy(per_profile[profile])
    if "dtype" in values:  # "auto" resolved here, once, for the machine the chapter runs on
        from . import hardware

        values["dtype"] = hardware.resolve_dtype(values["dtype"])
    return Config(slug, profile, values)


def model_params(slug: str, params: Mapping[str, Any]) -> list[str]:
    """The model names a chapter's parameters name (for the build's cache key)."""
    spec = chapter(slug)
    names: list[str] = []
    for p in spec.params:
        if p.kind not in ("model", "models") or p.name not in params:
            continue
        v = params[p.name]
        names.extend([v] if isinstance(v, str) else list(v))
    return names


_WORDS = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None, "~": None}


def parse_scalar(text: str) -> Any:
    """One ``-p`` value as papermill's ``-p`` parses it (``papermill.cli._resolve_type``): ``True``,
    ``False``, ``None`` (and the YAML words ``true``, ``false``, ``null``), else an ``int`` if Python's
    ``int()`` reads it (decimal: ``010`` is 10, never octal), else a ``float`` if ``float()`` does
    (``1e-3``), else the string itself (``0x10`` and ``.inf`` stay strings and fail the parameter's
    check). Non-finite numbers (``inf``, ``nan``) are refused here.
    """
    text = text.strip()
    if text in _WORDS:
        return _WORDS[text]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text
    if not math.isfinite(value):
        raise ConfigError(f"parameter value {text!r} is not a finite number; give a finite number such as 0.1 or 1e-3")
    return value


def parse_value(text: str) -> Any:
    """Parse a command-line parameter value as papermill's ``-p`` does (:func:`parse_scalar`), plus
    flow lists ``[a, b]`` (each element parsed the same way), as ``-p MODELS '[gemma-3-270m]'``.
    """
    import yaml

    if not isinstance(text, str):
        raise ConfigError(f"a parameter value is text, got {text!r}")
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            raw = yaml.load(stripped, Loader=yaml.BaseLoader)  # every scalar stays a string
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse parameter value {text!r} as a list: "
                              f"{str(exc).splitlines()[0]}; write e.g. '[a, b]'") from None

        def walk(x):
            if isinstance(x, list):
                return [walk(v) for v in x]
            if isinstance(x, dict):
                return {k: walk(v) for k, v in x.items()}
            return parse_scalar(x)

        return walk(raw)
    return parse_scalar(text)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value
