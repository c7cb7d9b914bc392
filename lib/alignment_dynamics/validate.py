"""The book's shared vocabulary of bad input: the configuration error, name suggestions and the checks
that public library functions apply at their entry.

A leaf module: it imports nothing from the package, so ``config``, ``data``, ``models`` and the
numerical modules can all use it without import cycles.

* :class:`ConfigError` (also ``alignment_dynamics.config.ConfigError``): an unknown chapter, profile,
  parameter, model or behaviour, or an invalid value of one.
* :class:`InputError`: a library function called with data it cannot use (NaN, inf, an empty array,
  a wrong shape) or with an invalid scalar (beta, a learning rate, a sample size).
* :func:`suggest`: " Did you mean ...?" for the closest valid names.
* :func:`finite_array`, :func:`positive`, :func:`nonneg`, :func:`probability`, :func:`count`,
  :func:`labels`: the checks themselves; each names the argument and says what is valid.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any

__all__ = ["ConfigError", "InputError", "suggest", "finite_array", "finite_tensor", "positive", "nonneg",
           "probability", "count", "labels", "finite_number"]


class ConfigError(ValueError):
    """An unknown chapter, profile or parameter, or an invalid value."""


class InputError(ValueError):
    """A library function's argument that it cannot use: NaN, inf, empty, the wrong shape or range."""


def suggest(name: Any, valid, n: int = 3) -> str:
    """' Did you mean …?' for the closest valid names, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# ---------------------------------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------------------------------

def finite_number(name: str, value: Any, *, error: type = InputError) -> float:
    """``value`` as a finite float (bools, strings, NaN and inf are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if hasattr(value, "item") and getattr(value, "shape", ()) in ((), (1,)):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise error(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value!r}")
    return value


def positive(name: str, value: Any, *, error: type = InputError) -> float:
    """A finite number > 0 (beta, a learning rate, a scale)."""
    v = finite_number(name, value, error=error)
    if not v > 0:
        raise error(f"{name} must be a positive finite number (> 0), got {value!r}")
    return v


def nonneg(name: str, value: Any, *, error: type = InputError) -> float:
    """A finite number >= 0."""
    v = finite_number(name, value, error=error)
    if v < 0:
        raise error(f"{name} must be a non-negative finite number (>= 0), got {value!r}")
    return v


def probability(name: str, value: Any, *, open_interval: bool = True, error: type = InputError) -> float:
    """A number in (0, 1) (``open_interval``) or [0, 1]."""
    v = finite_number(name, value, error=error)
    ok = 0 < v < 1 if open_interval else 0 <= v <= 1
    if not ok:
        raise error(f"{name} must lie {'strictly ' if open_interval else ''}between 0 and 1, got {value!r}")
    return v


def count(name: str, value: Any, *, lo: int = 1, hi: int | None = None, even: bool = False,
          error: type = InputError) -> int:
    """An integer in ``[lo, hi]`` (and even when ``even``); floats with an integer value are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer >= {lo}, got {value!r} ({type(value).__name__})")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise error(f"{name} must be an integer {rng}{' and even' if even else ''}, got {v}")
    if even and v % 2:
        raise error(f"{name} must be even (two equal classes), got {v}; use {v - 1} or {v + 1}")
    return v


# ---------------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------------

def finite_array(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None, min_ndim: int = 0,
                 min_len: int = 1, error: type = InputError):
    """``value`` as a float64 NumPy array that is finite and not empty (``min_len`` along the last
    axis but one for a 2-D-or-more array, along the only axis for 1-D).

    torch tensors are converted on the torch side (NumPy cannot read bfloat16).
    """
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be an array of numbers, got {type(value).__name__}: {exc}") from None
    if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise error(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.ndim < min_ndim:
        raise error(f"{name} must have at least {min_ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise error(f"{name} is empty (shape {a.shape})")
    axis_len = a.shape[-2] if a.ndim >= 2 else (a.shape[0] if a.ndim == 1 else 1)
    if axis_len < min_len:
        raise error(f"{name} needs at least {min_len} rows, got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise error(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf), the first at index {first}")
    return a


def finite_tensor(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None, min_len: int = 1,
                  error: type = InputError):
    """A torch tensor that is finite and not empty (returned unchanged; no copy)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise error(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise error(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    if value.numel() == 0 or (value.dim() >= 1 and value.shape[0] < min_len):
        raise error(f"{name} is empty (shape {tuple(value.shape)})")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        n_bad = int((~torch.isfinite(value)).sum())
        raise error(f"{name} has {n_bad} non-finite value(s) (NaN or inf)")
    return value


def labels(name: str, value: Any, n: int | None = None, *, error: type = InputError):
    """Labels ``s`` in {+1, -1} (as float64), ``n`` of them along the last axis when given."""
    import numpy as np

    s = finite_array(name, value, error=error)
    if n is not None and s.shape[-1] != n:
        raise error(f"{name} has {s.shape[-1]} labels but there are {n} examples")
    if not np.all(np.abs(s) == 1):
        raise error(f"{name}: labels must be +1 or -1")
    return s
