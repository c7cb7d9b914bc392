"""Data for the misalignment protocol: persona and HH-RLHF pairs, tokenised for whole-model DPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batches import Pairs, tokenize_pairs
from .checks import MisalignError, require_count


@dataclass(frozen=True)
class PairSets:
    """Training and test pairs of one data set, tokenised, with what the geometry needs.

    ``labels_*`` are +1 where the statement is positive (its matching answer is " Yes") and -1
    otherwise (persona only; empty for HH-RLHF); ``index_*`` are the records' indices in the data set
    (persona: in ``data.load_persona``; HH-RLHF: in ``data.load_hh_rlhf().pairs``).
    """

    name: str
    train: Pairs
    test: Pairs
    index_train: np.ndarray
    index_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray

    def flipped(self) -> "PairSets":
        """The same sets with chosen and rejected swapped (labels negated)."""
        return PairSets(self.name, self.train.flipped(), self.test.flipped(), self.index_train, self.index_test,
                        -self.labels_train, -self.labels_test)


def persona_sets(tokenizer, behavior: str, *, n_train: int | None = None, n_test: int | None = None,
                 trailing_newline: bool = False) -> PairSets:
    """A behaviour's official 90/10 split as tokenised pairs (chosen = the matching answer).

    ``n_train``/``n_test`` keep the first records of each side of the split (the split is a seeded
    shuffle, so these are uniform random subsets); None keeps all. Prompts are the book's default
    (``data.build_prompt``: the question verbatim; the official TRL runs add a trailing newline).
    """
    from .. import data

    split = data.persona_split(behavior)
    tr = list(split.train if n_train is None else split.train[:require_count("n_train", n_train, len(split.train))])
    te = list(split.test if n_test is None else split.test[:require_count("n_test", n_test, len(split.test))])
    return _persona_pairsets(tokenizer, behavior, tr, te, trailing_newline=trailing_newline)


def resampled_sets(tokenizer, behavior: str, *, seed: int, n_train: int, n_test: int) -> PairSets:
    """A seeded random draw of ``n_train`` statements from the behaviour's official 90 % split and
    ``n_test`` from its 10 % split (a different seed draws different statements; the test statements are
    never trained on), tokenised as :func:`persona_sets` does."""
    from .. import data, stats

    split = data.persona_split(behavior)
    rng = stats.generator((int(seed), 0x5EED))
    tr = rng.choice(np.asarray(split.train), size=require_count("n_train", n_train, len(split.train)), replace=False)
    te = rng.choice(np.asarray(split.test), size=require_count("n_test", n_test, len(split.test)), replace=False)
    return _persona_pairsets(tokenizer, behavior, [int(i) for i in tr], [int(i) for i in te])


def predictor_sets(tokenizer, behavior: str, *, seed: int, n_predict: int, n_train: int,
                   n_test: int) -> tuple[PairSets, PairSets]:
    """Three disjoint random parts of a behaviour, for a predictor estimated on statements that neither
    train nor test: ``(predictor, sets)``. ``predictor.train`` holds ``n_predict`` statements of the 90 %
    split, half of each class (:func:`alignment_dynamics.data.stratified_sample`, seeded), ``sets.train``
    ``n_train`` others of the 90 % split (uniform), and both ``.test`` the same ``n_test`` statements of
    the 10 % split. ``n_predict`` must be even."""
    from .. import data, stats

    if isinstance(n_predict, bool) or not isinstance(n_predict, int) or n_predict < 2 or n_predict % 2:
        raise MisalignError(f"n_predict must be an even int >= 2 (half of each class), got {n_predict!r}")
    split = data.persona_split(behavior)
    pred = data.stratified_sample(behavior, n_predict // 2, seed=int(seed), pool=split.train)
    if len(pred) != n_predict:
        raise MisalignError(f"{behavior}: its training split lacks {n_predict // 2} statements of each class "
                            f"for the predictor (got {len(pred)} in all)")
    rest = np.setdiff1d(np.asarray(split.train), pred)
    rng = stats.generator((int(seed), 0x5EED, 0x9D))
    tr = rng.choice(rest, size=require_count("n_train", n_train, len(rest)), replace=False)
    te = rng.choice(np.asarray(split.test), size=require_count("n_test", n_test, len(split.test)), replace=False)
    te = [int(i) for i in te]
    return (_persona_pairsets(tokenizer, behavior, [int(i) for i in pred], te),
            _persona_pairsets(tokenizer, behavior, [int(i) for i in tr], te))


def _persona_pairsets(tokenizer, behavior: str, tr: list[int], te: list[int], *,
                      trailing_newline: bool = False) -> PairSets:
    from .. import data

    sets = []
    for idx in (tr, te):
        pp = data.persona_pairs(behavior, idx, trailing_newline=trailing_newline)
        sets.append((tokenize_pairs(tokenizer, [p.prompt for p in pp], [p.chosen for p in pp],
                                       [p.rejected for p in pp]),
                     np.array([p.label for p in pp], dtype=np.int8)))
    return PairSets(behavior, sets[0][0], sets[1][0], np.asarray(tr), np.asarray(te), sets[0][1], sets[1][1])


def hh_sets(tokenizer, *, n_train: int, n_test: int, max_tokens: int) -> PairSets:
    """HH-RLHF (harmless-base test file) pairs that fit in ``max_tokens`` packed tokens, split 90/10.

    The split is the data module's seeded one (``data.hh_rlhf_split``); then each side keeps, in its
    shuffled order, the first ``n_train`` (``n_test``) pairs whose prompt plus both responses (EOS
    included) have at most ``max_tokens`` tokens. This favours short dialogues: a CPU-sized subset,
    not a uniform one.
    """
    from .. import data

    hh = data.load_hh_rlhf()
    split = data.hh_rlhf_split(len(hh.pairs))
    require_count("max_tokens", max_tokens, 10 ** 9)
    out = []
    for idx, n, what in ((split.train, n_train, "n_train"), (split.test, n_test, "n_test")):
        require_count(what, n, len(idx))
        keep, pairs = [], None
        for start in range(0, len(idx), 256):
            chunk = list(idx[start:start + 256])
            pp = [hh.pairs[i] for i in chunk]
            tok = tokenize_pairs(tokenizer, [p.prompt for p in pp], [p.chosen for p in pp], [p.rejected for p in pp])
            for j, length in enumerate(tok.packed_lengths()):
                if length <= max_tokens and len(keep) < n:
                    keep.append((chunk[j], tok.take([j])))
            if len(keep) == n:
                break
        if len(keep) < n:
            raise MisalignError(f"only {len(keep)} HH-RLHF pairs of the {what[2:]} split fit in {max_tokens} tokens; "
                                f"asked for {n}: raise max_tokens or lower {what}")
        pairs = Pairs.concat([p for _, p in keep])
        out.append((np.array([i for i, _ in keep]), pairs))
    empty = np.zeros(0, dtype=np.int8)
    return PairSets("hh-rlhf", out[0][1], out[1][1], out[0][0], out[1][0], empty, empty)
