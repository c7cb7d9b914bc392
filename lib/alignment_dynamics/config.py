"""Profiles and chapter parameters: the one place that turns a profile into concrete settings.

Every chapter has one ``parameters`` cell holding literals only; its defaults are the ``fast``
profile's values (a hygiene test checks this). The build injects, for the chosen profile, the
profile's value of every parameter, with the reader's overrides on top, and the chapter then calls

    cfg = ad.config.resolve("<slug>", PROFILE, beta=BETA, model=MODEL, ...)

which validates every value and returns a :class:`Config` with the parameters and the chapter's
internal settings for that profile.

This module is the machinery (:class:`Param`, :class:`ChapterSpec`, the validators, :func:`register`,
:func:`resolve`); each chapter's specification is its own module, ``alignment_dynamics/chapters/<slug>.py``,
imported on the first use of the registry (``CHAPTERS``, :func:`chapter`, :func:`resolve`).

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

def typed(kind: type | tuple[type, ...], *, allow_none: bool = False,
          lo: float | None = None, hi: float | None = None, lo_open: bool = False, even: bool = False):
    """A validator for a number of ``kind`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), finite,
    even when ``even``; its errors state the valid range.
    """
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
    return typed(int, lo=1)(name, value)


def sized(lo: int, hi: int, *, even: bool = False):
    """An integer size in ``[lo, hi]`` (a sample size, a dimension, a number of steps)."""
    return typed(int, lo=lo, hi=hi, even=even)


def nonneg_int(name: str, value: Any) -> int:
    return typed(int, lo=0)(name, value)


def positive_float(name: str, value: Any) -> float:
    return typed(float, lo=0.0, lo_open=True)(name, value)


def probability(name: str, value: Any) -> float:
    return typed(float, lo=0.0, hi=1.0)(name, value)


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
# The registry. Each chapter's specification is its own module, alignment_dynamics/chapters/<slug>.py,
# which calls register(ChapterSpec(...)); what several chapters share is in chapters/common.py.
# ---------------------------------------------------------------------------------------------------

def same(value: Any) -> dict[str, Any]:
    """The same value in every profile (``{"smoke": v, "fast": v, "full": v}``).
    """
    return {p: value for p in PROFILES}


_CHAPTERS: dict[str, ChapterSpec] = {}


def _registry() -> dict[str, ChapterSpec]:
    """Every registered chapter by slug (``config.CHAPTERS``); the first call imports
    :mod:`alignment_dynamics.chapters`, whose modules register the book's chapters."""
    from . import chapters  # noqa: F401  (imported here, not at the top: chapters/* import this module)

    return _CHAPTERS


def __getattr__(name: str) -> Any:
    if name == "CHAPTERS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(spec: ChapterSpec) -> ChapterSpec:
    """Add a chapter's specification to the registry (one call per chapter, in ``chapters/<slug>.py``).
    """
    if spec.slug in _CHAPTERS:
        raise ConfigError(f"chapter {spec.slug!r} registered twice")
    for key, per_profile in spec.settings.items():
        missing = [p for p in PROFILES if p not in per_profile]
        if missing:
            raise ConfigError(f"{spec.slug}: setting {key!r} has no value for profile(s) {missing}")
    _CHAPTERS[spec.slug] = spec
    return spec


#: The most float64 numbers one array of a theory chapter may hold (2 GiB): larger requests are refused
#: before any kernel starts instead of ending in a MemoryError.
MAX_ARRAY_ELEMENTS = 1 << 28


def array_limit(*names: str, factor: int = 1, what: str = "the sampled embeddings", min_of: dict | None = None):
    """A check of a chapter's parameters together: the product of ``names`` (times ``factor``) within
    :data:`MAX_ARRAY_ELEMENTS`.
    """

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
    chapters = _registry()
    if slug not in chapters:
        raise ConfigError(f"unknown chapter {slug!r}; valid chapters: {sorted(chapters)}.{suggest(slug, chapters)}")
    return chapters[slug]


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


def profile_settings(slug: str, profile: str) -> dict[str, Any]:
    """A chapter's settings under ``profile`` (e.g. to say in the ``fast`` build what ``full`` does)."""
    spec = chapter(slug)
    check_profile(profile)
    return {k: _copy(v[profile]) for k, v in spec.settings.items()}


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
