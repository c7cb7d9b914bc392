"""Non-circular tests of "X predicts Y across behaviours": the predictor and the outcome on disjoint
statements.

The circular version of these tests takes the predictor (‖b̂‖, the sign of the priority gap) and the
outcome (the training loss drop) from the same statements. Near ln 2 the loss drop is ≈ κ t ‖b̂‖²/8
*algebraically*, so a high correlation follows from the construction. Here each behaviour's sampled
statements are dealt into three class-stratified folds (:func:`alignment_dynamics.stats.stratified_folds`)
and, in each of three rotations, the predictor is measured on fold X, the head is trained on fold T and
the outcome is measured on fold Y, never trained on and disjoint from X. The estimate is the mean over
the rotations of each rotation's statistic (each one is non-circular); its interval is a bootstrap by
behaviour. The circular statistic on the same runs (X and Y both on the training fold) is returned
beside it as a labelled contrast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from . import stats, verdicts
from .lastlayer import LN2, BehaviorSet, DynamicsError, HeadFacts, train_runs

__all__ = ["ROLES", "fold_sets", "SpeedCrossFit", "speed_crossfit", "PairCrossFit", "pair_crossfit"]

ROLES = ("predictor", "training", "outcome")


def fold_sets(bs: BehaviorSet, *, n_folds: int = 3, seed: int = 0) -> list[tuple[np.ndarray, BehaviorSet]]:
    """The cross-fitting rotations of one behaviour: a list of ``(b_x, fit)`` per rotation r, with b_x
    = μ̂₊ − μ̂₋ on fold r (the predictor's statements) and ``fit`` a :class:`BehaviorSet` whose training
    part is fold r + 1 and whose test part is fold r + 2 (mod ``n_folds``). All the sampled statements
    (the set's training and test parts) are dealt; the folds are class-stratified with stream ``seed``.
    """
    h, s = bs.part("all")
    idx = np.concatenate([bs.idx_train, bs.idx_test])
    fold = stats.stratified_folds(s, n_folds, seed=seed)
    out = []
    for r in range(n_folds):
        fx, ft, fy = r, (r + 1) % n_folds, (r + 2) % n_folds
        x = fold == fx
        bx = h[x & (s > 0)].mean(0) - h[x & (s < 0)].mean(0)
        tr, te = fold == ft, fold == fy
        out.append((bx, BehaviorSet(bs.behavior, bs.model, h[tr], s[tr], idx[tr], h[te], s[te], idx[te])))
    return out


def _mean_by_group(values: np.ndarray, group: np.ndarray, k: int) -> np.ndarray:
    return np.stack([values[group == g].mean(0) for g in range(k)])


def _batch(batch_size: int | None, groups: Sequence[Sequence[BehaviorSet]]) -> int | None:
    if batch_size is None:
        return None
    return int(min(batch_size, min(sum(bs.n_train for bs in g) for g in groups)))


@dataclass(frozen=True)
class SpeedCrossFit:
    """Distinguishability against the loss drop, cross-fitted (``x``, ``y``: [folds, behaviours]) and
    circular (``x_circular``, ``y_circular``: the training fold's ‖b̂‖ and training loss drop, same runs).

    ``rho``/``lo``/``hi``: the mean over rotations of Spearman's ρ of x and y with its bootstrap interval
    by behaviour; ``circular``: the same for the circular pair. ``verdict``: the
    :func:`alignment_dynamics.verdicts.positive` verdict of the cross-fitted ρ; ``batch``: the batch the
    fold runs used (at most the smallest training fold).
    """

    behaviors: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    x_circular: np.ndarray
    y_circular: np.ndarray
    rho: float
    lo: float
    hi: float
    circular: tuple[float, float, float]
    n_folds: int
    batch: int | None
    verdict: verdicts.Verdict
    circular_verdict: verdicts.Verdict

    @property
    def n(self) -> int:
        return len(self.behaviors)


def speed_crossfit(sets: Sequence[BehaviorSet], *, facts: HeadFacts, steps: int, batch_size: int | None,
                   seeds: Sequence[int], lr: float, beta: float, n_folds: int = 3, seed: int = 0,
                   n_boot: int = 2000, strong: float = 0.5) -> SpeedCrossFit:
    """Does distinguishability measured on some statements predict the loss drop on others?

    For each behaviour and rotation (:func:`fold_sets`), X = ‖b̂‖ on the predictor fold, the head is
    trained on the training fold (the official last-layer protocol, :func:`alignment_dynamics.lastlayer.train_runs`,
    one run per seed), and Y = ln 2 − L(T) on the outcome fold, averaged over the seeds.
    """
    if len(sets) < 4:
        raise DynamicsError(f"speed_crossfit needs at least 4 behaviours, got {len(sets)}")
    folds = [fold_sets(bs, n_folds=n_folds, seed=seed) for bs in sets]
    groups = [[folds[i][r][1]] for r in range(n_folds) for i in range(len(sets))]  # rotation-major
    batch = _batch(batch_size, groups)
    runs = train_runs(groups, facts=facts, steps=steps, batch_size=batch, seeds=list(seeds), lr=lr, beta=beta,
                      progress=False)
    k = len(groups)
    y_out = _mean_by_group(LN2 - runs.loss["test"][:, -1, 0], runs.group, k).reshape(n_folds, len(sets))
    y_in = _mean_by_group(LN2 - runs.loss["train"][:, -1, 0], runs.group, k).reshape(n_folds, len(sets))
    x_out = np.array([[np.linalg.norm(folds[i][r][0]) for i in range(len(sets))] for r in range(n_folds)])
    x_in = np.array([[np.linalg.norm(folds[i][r][1].b("train")) for i in range(len(sets))] for r in range(n_folds)])
    rho, lo, hi = stats.crossfit_spearman(x_out, y_out, n_boot=n_boot, seed=seed)
    circ = stats.crossfit_spearman(x_in, y_in, n_boot=n_boot, seed=seed)
    n = len(sets)
    return SpeedCrossFit(tuple(bs.behavior for bs in sets), x_out, y_out, x_in, y_in, rho, lo, hi, circ, n_folds,
                         batch, verdicts.positive(rho, lo, hi, n, strong=strong),
                         verdicts.positive(*circ, n, strong=strong))


@dataclass(frozen=True)
class PairCrossFit:
    """Does the sign of the priority gap, measured on some statements, predict which behaviour of a
    jointly trained pair is learned first on others?

    ``agree``: [pairs] the share of rotations in which the predictor fold's gap sign matched which
    member's outcome-fold loss fell more; ``agree_circular``: the same with the gap and the loss drops
    on the training folds (the circular test). ``share``, ``lo``, ``hi``: the mean agreement with a
    bootstrap interval by behaviour (:func:`alignment_dynamics.stats.pair_share_by_behaviour`);
    ``circular``: the same for the circular test; ``verdict``/``circular_verdict``:
    :func:`alignment_dynamics.verdicts.share` against chance ½.
    """

    pairs: tuple[tuple[str, str], ...]
    agree: np.ndarray
    agree_circular: np.ndarray
    share: float
    lo: float
    hi: float
    circular: tuple[float, float, float]
    n_folds: int
    batch: int | None
    verdict: verdicts.Verdict
    circular_verdict: verdicts.Verdict

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def n_behaviors(self) -> int:
        return len({b for p in self.pairs for b in p})


def pair_crossfit(pairs: Sequence[Sequence[str]], sets: Mapping[str, BehaviorSet], *, facts: HeadFacts, steps: int,
                  batch_size: int | None, seeds: Sequence[int], lr: float, beta: float, n_folds: int = 3,
                  seed: int = 0, n_boot: int = 2000, strong: float = 0.8) -> PairCrossFit:
    """The cross-fitted random-pair test (see :class:`PairCrossFit`).

    In each rotation both members contribute their training fold to one joint run per seed (batches
    drawn from the union); the predictor is sign(‖b̂_X,1‖ − ‖b̂_X,2‖), the sign of the official priority
    gap with equal weights ({prf:ref}`lem-priority-sign`), and the outcome which member's outcome-fold
    loss fell more (averaged over seeds). A zero gap or a tie counts as disagreement.
    """
    pairs = [tuple(p) for p in pairs]
    if not pairs or any(len(p) != 2 or p[0] == p[1] for p in pairs):
        raise DynamicsError("pairs must be a non-empty list of pairs of two different behaviours")
    missing = sorted({b for p in pairs for b in p} - set(sets))
    if missing:
        raise DynamicsError(f"no behaviour set for {missing}")
    folds = {b: fold_sets(sets[b], n_folds=n_folds, seed=seed) for b in {b for p in pairs for b in p}}
    groups = [[folds[a][r][1], folds[b][r][1]] for r in range(n_folds) for a, b in pairs]
    batch = _batch(batch_size, groups)
    runs = train_runs(groups, facts=facts, steps=steps, batch_size=batch, seeds=list(seeds), lr=lr, beta=beta,
                      progress=False)
    k = len(groups)
    out = _mean_by_group(LN2 - runs.loss["test"][:, -1, :], runs.group, k)  # [G, 2]
    inn = _mean_by_group(LN2 - runs.loss["train"][:, -1, :], runs.group, k)
    agree = np.zeros((n_folds, len(pairs)))
    agree_in = np.zeros((n_folds, len(pairs)))
    for r in range(n_folds):
        for j, (a, b) in enumerate(pairs):
            g = r * len(pairs) + j
            gx = np.sign(np.linalg.norm(folds[a][r][0]) - np.linalg.norm(folds[b][r][0]))
            gt = np.sign(np.linalg.norm(folds[a][r][1].b("train")) - np.linalg.norm(folds[b][r][1].b("train")))
            agree[r, j] = float(gx != 0 and gx == np.sign(out[g, 0] - out[g, 1]))
            agree_in[r, j] = float(gt != 0 and gt == np.sign(inn[g, 0] - inn[g, 1]))
    a_mean, a_in = agree.mean(0), agree_in.mean(0)
    share, lo, hi = stats.pair_share_by_behaviour(a_mean, pairs, n_boot=n_boot, seed=seed)
    circ = stats.pair_share_by_behaviour(a_in, pairs, n_boot=n_boot, seed=seed)
    n = len(pairs)
    return PairCrossFit(tuple(pairs), a_mean, a_in, share, lo, hi, circ, n_folds, batch,
                        verdicts.share(share, lo, hi, n, strong=strong),
                        verdicts.share(*circ, n, strong=strong))
