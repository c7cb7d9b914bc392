"""Preference pairs for whole-model DPO, tokenised as the official runs do (:class:`Pairs`,
:func:`tokenize_pairs`), and packed into fixed shapes: one row per pair, ``[prompt, a, b]``, with a
block-causal mask (:class:`Layout`, :func:`pack`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .checks import FinetuneError


# ---------------------------------------------------------------------------------------------------
# Preference pairs, tokenised
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pairs:
    """Tokenised preference pairs in a canonical order.

    Pair ``i`` has a prompt and two completions ``a[i]`` and ``b[i]`` (token ids), and
    ``chosen_first[i]`` says whether ``a[i]`` is the chosen one. The order of ``a`` and ``b`` does not
    depend on which is chosen (the smaller token tuple comes first), so a data set and its flipped
    copy (:meth:`flipped`) share every packed row, and hence every cached activation.
    """

    prompt: tuple[tuple[int, ...], ...]
    a: tuple[tuple[int, ...], ...]
    b: tuple[tuple[int, ...], ...]
    chosen_first: tuple[bool, ...]

    def __post_init__(self):
        n = len(self.prompt)
        if not (len(self.a) == len(self.b) == len(self.chosen_first) == n):
            raise FinetuneError(f"Pairs fields differ in length: prompt {n}, a {len(self.a)}, b {len(self.b)}, "
                                f"chosen_first {len(self.chosen_first)}")
        for i in range(n):
            if len(self.prompt[i]) == 0:
                raise FinetuneError(f"pair {i}: the prompt has no tokens")
            if len(self.a[i]) == 0 or len(self.b[i]) == 0:
                raise FinetuneError(f"pair {i}: a completion has no tokens")
            if tuple(self.a[i]) == tuple(self.b[i]):
                raise FinetuneError(f"pair {i}: chosen and rejected completions are the same tokens {self.a[i]}")

    @classmethod
    def from_ids(cls, prompts: Sequence[Sequence[int]], chosen: Sequence[Sequence[int]],
                 rejected: Sequence[Sequence[int]]) -> "Pairs":
        """Pairs from token ids (prompt, chosen completion, rejected completion), put in canonical order."""
        if not (len(prompts) == len(chosen) == len(rejected)):
            raise FinetuneError(f"need as many prompts as chosen and rejected completions, got "
                                f"{len(prompts)}, {len(chosen)}, {len(rejected)}")
        P, A, B, F = [], [], [], []
        for p, c, r in zip(prompts, chosen, rejected):
            c, r = tuple(int(t) for t in c), tuple(int(t) for t in r)
            first = c <= r
            P.append(tuple(int(t) for t in p))
            A.append(c if first else r)
            B.append(r if first else c)
            F.append(bool(first))
        return cls(tuple(P), tuple(A), tuple(B), tuple(F))

    def __len__(self) -> int:
        return len(self.prompt)

    def flipped(self) -> "Pairs":
        """The same pairs with chosen and rejected swapped (the misalignment direction)."""
        return Pairs(self.prompt, self.a, self.b, tuple(not f for f in self.chosen_first))

    @staticmethod
    def concat(parts: Sequence["Pairs"]) -> "Pairs":
        """The pairs of ``parts`` one after the other, in that order."""
        parts = list(parts)
        if not parts:
            raise FinetuneError("Pairs.concat needs at least one set of pairs")
        return Pairs(sum((p.prompt for p in parts), ()), sum((p.a for p in parts), ()), sum((p.b for p in parts), ()),
                     sum((p.chosen_first for p in parts), ()))

    def take(self, idx: Iterable[int]) -> "Pairs":
        """The pairs at positions ``idx``, in that order."""
        idx = [int(i) for i in idx]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise FinetuneError(f"pair indices {bad[:5]} out of range for {len(self)} pairs")
        return Pairs(tuple(self.prompt[i] for i in idx), tuple(self.a[i] for i in idx),
                     tuple(self.b[i] for i in idx), tuple(self.chosen_first[i] for i in idx))

    def chosen(self, i: int) -> tuple[int, ...]:
        return self.a[i] if self.chosen_first[i] else self.b[i]

    def rejected(self, i: int) -> tuple[int, ...]:
        return self.b[i] if self.chosen_first[i] else self.a[i]

    def rows(self) -> tuple:
        """What the packed rows depend on (not which completion is chosen)."""
        return (self.prompt, self.a, self.b)

    def packed_lengths(self) -> np.ndarray:
        return np.array([len(p) + len(a) + len(b) for p, a, b in zip(self.prompt, self.a, self.b)], dtype=np.int64)

    def completion_tokens(self) -> np.ndarray:
        return np.array([len(a) + len(b) for a, b in zip(self.a, self.b)], dtype=np.int64)


def tokenize_pairs(tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
                   append_eos: bool = True, prompt_special_tokens: bool = True) -> Pairs:
    """Tokenise preference pairs as the official whole-model runs do (TRL 0.7.x).

    Prompt and answers are tokenised separately; the answers without special tokens and, with
    ``append_eos``, followed by the EOS token, so the official runs score ``" Yes"`` + EOS against
    ``" No"`` + EOS. A completion's log-probability is the sum over its tokens. The prompt gets the
    tokenizer's default special tokens (``prompt_special_tokens=True``, as the book's last-layer
    chapters and TRL >= 0.8 do; TRL 0.7.x added none, which changes nothing for SmolLM2, whose
    tokenizer adds none).
    """
    if not (len(prompts) == len(chosen) == len(rejected)):
        raise FinetuneError(f"need as many prompts as chosen and rejected answers, got {len(prompts)}, "
                            f"{len(chosen)}, {len(rejected)}")
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if append_eos and eos_id is None:
        raise FinetuneError("append_eos=True needs a tokenizer with an eos_token_id")
    tail = [int(eos_id)] if append_eos else []
    P, C, R = [], [], []
    for p, c, r in zip(prompts, chosen, rejected):
        if not isinstance(p, str) or not isinstance(c, str) or not isinstance(r, str):
            raise FinetuneError("prompts and answers must be strings")
        P.append(list(tokenizer(p, add_special_tokens=prompt_special_tokens)["input_ids"]))
        C.append(list(tokenizer(c, add_special_tokens=False)["input_ids"]) + tail)
        R.append(list(tokenizer(r, add_special_tokens=False)["input_ids"]) + tail)
    return Pairs.from_ids(P, C, R)


# ---------------------------------------------------------------------------------------------------
# Packing: one row per pair, [prompt, a, b], with a block-causal mask
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """The fixed shapes of every forward pass: rows per micro-batch, row length, scored rows per pair.
    """

    micro_batch: int
    seq_len: int
    rows_per_pair: int

    @classmethod
    def for_pairs(cls, *sets: Pairs, micro_batch: int = 16) -> "Layout":
        if micro_batch < 2:
            # A single-row matrix product takes another kernel (gemv) than a multi-row one, so a pair's
            # numbers would depend on the micro-batch size; keep at least two rows.
            raise FinetuneError(f"micro_batch must be >= 2, got {micro_batch}")
        sets = [s for s in sets if len(s)]
        if not sets:
            raise FinetuneError("Layout.for_pairs needs at least one non-empty set of pairs")
        L = max(int(s.packed_lengths().max()) for s in sets)
        R = max(int(s.completion_tokens().max()) for s in sets)
        return cls(int(micro_batch), L, R)


def pack(pairs: Pairs, idx: Sequence[int], layout: Layout, pad_id: int, dtype, device, config=None):
    """:func:`_pack_cached` for a model ``config`` (its sliding window and layer types)."""
    window = getattr(config, "sliding_window", None) if config is not None else None
    types = getattr(config, "layer_types", None) if config is not None else None
    return _pack_cached(pairs, tuple(int(i) for i in idx), layout, int(pad_id), dtype, str(device), window,
                        tuple(types) if types else None)


@functools.lru_cache(maxsize=256)
def _pack_cached(pairs: Pairs, idx: tuple, layout: Layout, pad_id: int, dtype, device: str, window, types):
    """Tensors of one micro-batch of packed rows (``idx`` padded with its first pair to the layout).

    Returns input_ids [m, L], position_ids [m, L], an additive mask [m, 1, L, L] (for a model with
    sliding-window layers, a dict of one mask per layer type, as Gemma-3's forward accepts), the flat positions
    of the scored rows [m·R], their target tokens [m·R], and a weight [m·R, 2] that sums each scored
    token into completion ``a`` (column 0) or ``b`` (column 1).
    """
    import torch

    m, L, R = layout.micro_batch, layout.seq_len, layout.rows_per_pair
    idx = list(idx)
    if not 0 < len(idx) <= m:
        raise FinetuneError(f"a micro-batch holds 1..{m} pairs, got {len(idx)}")
    rows = idx + [idx[0]] * (m - len(idx))
    ids = torch.full((m, L), pad_id, dtype=torch.long)
    pos = torch.zeros((m, L), dtype=torch.long)
    seg = torch.full((m, L), -1, dtype=torch.long)  # 0 prompt, 1 a, 2 b, -1 pad
    src = torch.zeros(m * R, dtype=torch.long)
    tgt = torch.zeros(m * R, dtype=torch.long)
    wsum = torch.zeros(m * R, 2, dtype=dtype)
    for r, i in enumerate(rows):
        p, a, b = pairs.prompt[i], pairs.a[i], pairs.b[i]
        P, A, B = len(p), len(a), len(b)
        ids[r, :P + A + B] = torch.tensor(p + a + b)
        pos[r, :P] = torch.arange(P)
        pos[r, P:P + A] = torch.arange(P, P + A)
        pos[r, P + A:P + A + B] = torch.arange(P, P + B)
        seg[r, :P], seg[r, P:P + A], seg[r, P + A:P + A + B] = 0, 1, 2
        # completion token j is predicted by the previous token of its own branch (the prompt's last for j = 0)
        pa = [P - 1] + list(range(P, P + A - 1))
        pb = [P - 1] + list(range(P + A, P + A + B - 1))
        k0 = r * R
        src[k0:k0 + A + B] = torch.tensor(pa + pb) + r * L
        tgt[k0:k0 + A + B] = torch.tensor(a + b)
        if r < len(idx):
            wsum[k0:k0 + A, 0] = 1
            wsum[k0 + A:k0 + A + B, 1] = 1
    q = torch.arange(L)
    causal = q[None, :, None] >= q[None, None, :]
    sq, sk = seg[:, :, None], seg[:, None, :]
    allowed = causal & (sq >= 0) & (sk >= 0) & ((sk == 0) | (sk == sq))
    eye = torch.eye(L, dtype=torch.bool)[None]  # padding attends to itself only: no empty softmax

    def additive(ok):
        out = torch.zeros((m, 1, L, L), dtype=dtype)
        out.masked_fill_(~(ok | eye)[:, None], torch.finfo(dtype).min)
        return out.to(device)

    # a key is visible to a sliding-window layer when its position is less than `window` before the query's
    near = (pos[:, :, None] - pos[:, None, :]) < window if window else None
    if types:
        mask = {t: additive(allowed & near if (t == "sliding_attention" and window) else allowed) for t in set(types)}
    elif window:
        mask = additive(allowed & near)  # every layer slides (Mistral's convention)
    else:
        mask = additive(allowed)
    return (ids.to(device), pos.to(device), mask, src.to(device), tgt.to(device), wsum.to(device))
