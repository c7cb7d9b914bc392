"""The glue keys the Part II chapters' result objects share: models by position (``m1``, ``m2``, ...)
and an estimate with its interval under one stem."""

from __future__ import annotations

from typing import Any, Sequence

from .checks import DynamicsError


def model_keys(models: Sequence[str]) -> dict[str, str]:
    """``{"m1_name": first model, "m2_name": second, ...}``: the model names the prose glues.
    """
    models = list(models)
    if not models or not all(isinstance(m, str) and m for m in models):
        raise DynamicsError(f"models must be a non-empty list of model names, got {models!r}")
    return {f"m{k}_name": m for k, m in enumerate(models, start=1)}


def interval_values(stem: str, trio: Sequence[Any], names: Sequence[str] = ("p", "lo", "hi")) -> dict[str, Any]:
    """``{"<stem>_<name>": value}`` for an estimate and its interval, e.g. ``("m1_pairs_xfit", (0.7, 0.6,
    0.8))`` -> ``m1_pairs_xfit_p``, ``m1_pairs_xfit_lo``, ``m1_pairs_xfit_hi``."""
    trio, names = list(trio), list(names)
    if len(trio) != len(names):
        raise DynamicsError(f"{stem}: {len(trio)} values for the {len(names)} names {names}")
    return {f"{stem}_{n}": v for n, v in zip(names, trio)}
