"""The tails section of `book/distinguishability.md`: are the embeddings α-subexponential?

:func:`tail_study` projects each class of each behaviour on random unit directions and on the
(cross-fitted) mean-difference direction, fits the tail exponent of the pooled standardised
projections, compares it with Gaussian and Laplace samples grouped the same way, and decides the
claim with :func:`alignment_dynamics.verdicts.tails_not_heavier`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import geometry as geo, verdicts
from .geometry_study import COMPACT, Sample

TAIL_T_FAR = 3.5                    # where the tail probabilities are compared (in sd)
TAIL_GRID = np.linspace(0, 6, 121)  # t of the tail figure



@dataclass(frozen=True)
class ModelTails:
    """One model's tail exponents k (measured, and of Gaussian and Laplace samples grouped the same
    way), the smallest α of the definition, per kind of direction, and P(|X| ≥ t_far) on random ones."""

    tail_random: float
    tail_random_gauss: float
    tail_random_laplace: float
    tail_random_alpha: float
    tail_mean_difference: float
    tail_mean_difference_gauss: float
    tail_mean_difference_laplace: float
    tail_mean_difference_alpha: float
    tail_far: float


@dataclass(frozen=True)
class Tails:
    """Pooled standardised projections (``projections[model]``), the measured and reference exponents
    (``cases[(model, kind)] = (k, reference)``), the verdict of :func:`verdicts.tails_not_heavier` and
    the generated readings."""

    tail_directions: int
    tail_t_far: float
    tail_far_gaussian: float
    tail_far_laplace: float
    tail_reading: str
    tail_far_reading: str
    tail_verdict: str
    verdict: Any = field(repr=False)
    projections: dict = field(repr=False)
    cases: dict = field(repr=False)
    table: Any = field(repr=False)
    panels: list = field(repr=False)
    models: tuple = field(repr=False)


KINDS = ("random", "mean_difference")
TAIL_VERDICT_TEXT = {
    "agrees": "the modelling assumption holds: no measured tail is heavier than exponential",
    "differs": "at least one measured tail is heavier than the exponential reference, against the modelling assumption",
    "partly agrees": "some measured tails are lighter than the exponential reference; the others are not shown to be",
    "not resolvable at this sample size": "the measured tails cannot be told apart from the exponential reference at "
                                          "this sample size",
    "not testable here": "the tails cannot be compared with the exponential reference here",
}


def nearest_reading(cases: dict) -> str:
    """Which reference law (Gaussian or Laplace) each measured exponent is closer to, as a phrase;
    ``cases[key] = (k, {"gaussian": (mean, sd), "laplace": (mean, sd)})``."""
    nearest = ["Gaussian" if abs(meas - ref["gaussian"][0]) < abs(meas - ref["laplace"][0]) else "Laplace"
               for meas, ref in cases.values()]
    if len(set(nearest)) == 1:
        return f"closer to the {nearest[0]} reference in all {len(nearest)} cases"
    return f"closer to the Gaussian reference in {nearest.count('Gaussian')} of {len(nearest)} cases"


def far_reading(t: float, measured: dict[str, float], gaussian: float, laplace: float, *, largest: float,
                largest_group: int) -> str:
    """What P(|X| >= t) on random directions shows, per model (``measured[name]``), against the Gaussian
    and Laplace references grouped the same way, as a sentence. When neither the data nor the Gaussian
    reference reach ``t`` (the largest standardised value is ``largest``), the far tail is said to be out
    of this sample's reach, with the reason: a group of g values standardised by its own mean and sd
    (ddof 1) cannot exceed (g − 1)/√g, so with groups of at most ``largest_group`` values that bound
    says whether t can be reached at all."""
    vals = {m: float(v) for m, v in measured.items()}
    for name, v in [*vals.items(), ("gaussian", gaussian), ("laplace", laplace), ("largest", largest)]:
        if not (isinstance(v, float) and np.isfinite(v) and v >= 0):
            raise ValueError(f"far_reading: {name} must be a finite probability or size >= 0, got {v!r}")
    if not vals:
        raise ValueError("far_reading: no model given")
    probs = ", ".join(f"{v:.1e} ({m})" for m, v in vals.items())
    head = (f"Far out, along random directions P(|X| ≥ {t:.1f}) is {probs}, against {gaussian:.1e} for the Gaussian "
            f"and {laplace:.1e} for the Laplace reference")
    if isinstance(largest_group, bool) or not isinstance(largest_group, (int, np.integer)) or largest_group < 2:
        raise ValueError(f"far_reading: largest_group must be an int >= 2, got {largest_group!r}")
    if max(vals.values()) == 0 and gaussian == 0:
        bound = (largest_group - 1) / np.sqrt(largest_group)
        reach = ("cannot reach it at all" if bound < t else
                 f"reach at most {bound:.2f} sd, and only when all but one value coincide")
        return (f"{head}: no measured projection reaches {t:.1f} sd (the largest is {largest:.2f}), and neither does "
                f"the Gaussian reference, because groups of at most {largest_group} statements standardised on "
                f"their own {reach}; the far tail is out of reach at this sample size, and the exponents above "
                f"are the evidence")

    def place(v: float) -> str:
        if v > laplace:
            return "above the Laplace reference (heavier than exponential)"
        if v > gaussian:
            return "between the Gaussian and the Laplace reference"
        return "at or below the Gaussian reference"

    places = {m: place(v) for m, v in vals.items()}
    if len(set(places.values())) == 1:
        who = "" if len(vals) == 1 else "both " if len(vals) == 2 else "all "
        return f"{head}: {who}{next(iter(places.values()))}"
    return f"{head}: " + "; ".join(f"{m} {pl}" for m, pl in places.items())


def tail_study(cfg, sample: Sample) -> Tails:
    """Tail exponents of standardised projections on random and mean-difference directions, against
    Gaussian and Laplace samples grouped the same way (``cfg.tail_reps`` repetitions)."""
    import pandas as pd

    m1 = cfg.models[0]
    proj, cases, per_model = {}, {}, []
    for k, m in enumerate(cfg.models, start=1):
        proj[m] = geo.pooled_projections(sample.items[m], n_directions=cfg.tail_directions, seed=cfg.seed)
        vals = {}
        for kind in KINDS:
            measured = geo.weibull_tail_exponent(proj[m][kind])
            ref = geo.reference_tail_exponents(proj[m][f"{kind}_groups"], seed=(cfg.seed, k), n_rep=cfg.tail_reps)
            cases[(m, kind)] = (measured, ref)
            vals.update({f"tail_{kind}": measured, f"tail_{kind}_gauss": ref["gaussian"][0],
                         f"tail_{kind}_laplace": ref["laplace"][0],
                         f"tail_{kind}_alpha": geo.subexponential_scale(proj[m][kind])})
        per_model.append(ModelTails(**vals, tail_far=geo.survival(proj[m]["random"], TAIL_T_FAR)[0]))
    far = {law: geo.survival(geo.reference_samples(proj[m1]["random_groups"], law, seed=cfg.seed), TAIL_T_FAR)[0]
           for law in ("gaussian", "laplace")}
    verdict = verdicts.tails_not_heavier({key: (meas, ref["laplace"][0], ref["laplace"][1])
                                          for key, (meas, ref) in cases.items()}, cfg.tail_reps)
    table = pd.DataFrame([{"model": m, "direction": kind.replace("_", " "), "k measured": meas,
                           "k Gaussian (same grouping)": f"{ref['gaussian'][0]:.3f} ± {ref['gaussian'][1]:.3f}",
                           "k Laplace (same grouping)": f"{ref['laplace'][0]:.3f} ± {ref['laplace'][1]:.3f}",
                           "α (in sd)": geo.subexponential_scale(proj[m][kind]), "points": len(proj[m][kind])}
                          for (m, kind), (meas, ref) in cases.items()])
    panels = [{"title": kind.replace("_", " ") + " direction",
               "curves": {m: (TAIL_GRID, geo.survival(proj[m][kind], TAIL_GRID)) for m in cfg.models},
               "references": {f"{law} (same grouping)": (TAIL_GRID, geo.survival(
                   geo.reference_samples(proj[m1][f"{kind}_groups"], law, seed=cfg.seed), TAIL_GRID))
                   for law in ("gaussian", "laplace")}}
              for kind in KINDS]
    far_text = far_reading(TAIL_T_FAR, {m: pm.tail_far for m, pm in zip(cfg.models, per_model)}, float(far["gaussian"]),
                           float(far["laplace"]), largest=float(max(np.abs(proj[m]["random"]).max() for m in cfg.models)),
                           largest_group=int(max(max(proj[m]["random_groups"]) for m in cfg.models)))
    return Tails(cfg.tail_directions, TAIL_T_FAR, float(far["gaussian"]), float(far["laplace"]),
                 nearest_reading(cases), far_text, TAIL_VERDICT_TEXT[verdict.verdict], verdict, proj, cases,
                 table.style.format(precision=3).hide(axis="index").set_table_styles(COMPACT[:1]), panels,
                 tuple(per_model))
