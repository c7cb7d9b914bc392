"""Whole-model DPO: full fine-tuning or LoRA of a causal language model on preference pairs.

This is the lean DPO loop behind the ``misalignment`` chapter. It trains a small causal LM (all its
weights, or LoRA adapters r 8, α 32, dropout 0.05 on ``q_proj``/``v_proj`` as in the official code)
against a frozen reference with TRL's ``sigmoid`` loss, and logs TRL's metric names
(``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``,
``logps/chosen``, ``logps/rejected``) plus the paper's accuracy (``outputs/accuracies``: the policy
gives the chosen answer a higher log-probability than the rejected one).

Design, and how it differs from TRL's ``DPOTrainer`` while computing the same quantities:

* **Tokenisation as the official runs.** Prompt and answers are tokenised separately and EOS is
  appended to each answer (TRL 0.7.x, :func:`tokenize_pairs`). A completion's log-probability is the
  sum over its tokens, EOS included.
* **One packed row per pair.** Chosen and rejected share the prompt. Instead of TRL's two padded
  sequences per pair, a row holds ``[prompt, a, b]`` with a block attention mask (``b`` does not see
  ``a``) and restarted position ids, so the prompt is computed once. This is exactly the two separate
  sequences' computation (a test checks it against the model's own forward).
* **Fixed shapes.** Every forward pass uses micro-batches of ``micro_batch`` rows padded to one
  length, so a pair's log-probs do not depend on which other pairs share its batch. The reference
  log-probs are computed once, before training, by the *same function on the same module*; at step 0
  the policy therefore reproduces them bit for bit: the loss is exactly ln 2 and every margin is 0.
* **Top blocks on cached activations.** ``top_blocks=k`` freezes everything below the last ``k``
  decoder blocks (the embedding, hence the tied head, included). Since the frozen bottom's output
  never changes, it is computed once and cached (content-addressed, atomic), and training runs only
  the top ``k`` blocks on it. This is *identical* to training the whole model with its bottom frozen
  (:func:`train_dpo` with ``cached=False``; a test checks equality of the trajectories). It is not
  the same as full fine-tuning; the chapter measures how close the two are on a small case.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import cache as _cache

METHODS = ("full", "lora")
LORA_DEFAULTS = {"r": 8, "alpha": 32, "dropout": 0.05, "targets": ("q_proj", "v_proj")}
TRL_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected")
METRICS = TRL_METRICS + ("outputs/accuracies",)


class FinetuneError(ValueError):
    """Invalid pairs, model, method or training settings."""


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
    """The fixed shapes of every forward pass: rows per micro-batch, row length, scored rows per pair."""

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


def _pack(pairs: Pairs, idx: Sequence[int], layout: Layout, pad_id: int, dtype, device, config=None):
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


# ---------------------------------------------------------------------------------------------------
# Views of a decoder: the frozen bottom and the trainable top
# ---------------------------------------------------------------------------------------------------

def _decoder_and_head(model):
    """The decoder stack (``.layers``, ``.norm``) and the output head of a causal LM (peft-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    if decoder is None or not hasattr(decoder, "layers"):
        raise FinetuneError(f"{type(base).__name__} has no decoder with `.layers`; whole-model DPO needs a "
                            "decoder-only causal LM (Llama, Gemma-3, Mistral, ...)")
    head = base.get_output_embeddings()
    if head is None:
        raise FinetuneError(f"{type(base).__name__} has no output embeddings (lm_head)")
    return base, decoder, head


def _view(decoder, start: int, stop: int, *, final_norm: bool):
    """A module sharing ``decoder``'s parameters that runs only its blocks ``start:stop``.

    Call it with ``inputs_embeds`` (the hidden state entering block ``start``) or ``input_ids``
    (``start`` must then be 0). Without ``final_norm`` it returns the hidden state leaving block
    ``stop - 1``, before the final norm.
    """
    import torch

    view = copy.copy(decoder)
    view._modules = dict(decoder._modules)
    view._parameters = dict(decoder._parameters)
    view._buffers = dict(decoder._buffers)
    view.layers = torch.nn.ModuleList(list(decoder.layers)[start:stop])
    if not final_norm:
        view.norm = torch.nn.Identity()
    cfg = copy.copy(decoder.config)
    cfg.num_hidden_layers = stop - start
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types)[start:stop]
    view.config = cfg
    return view


def _n_layers(model) -> int:
    return len(_decoder_and_head(model)[1].layers)


# ---------------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------------

@dataclass
class Policy:
    """A trainable copy of a causal LM for DPO.

    ``module`` is the trained model (a peft model for ``method="lora"``); ``split`` is the index of the
    first trainable block (0: the whole model trains); ``cached`` says whether the frozen bottom's
    output is read from the activation cache instead of being recomputed.
    """

    module: Any
    method: str
    split: int
    cached: bool
    seed: int
    lora: dict = field(default_factory=dict)
    _bottom: str | None = field(default=None, repr=False)

    def bottom_digest(self) -> str:
        """SHA-256 of the frozen bottom's weights (embedding and blocks ``0:split``), computed once."""
        if self._bottom is None:
            _, decoder, _ = _decoder_and_head(self.module)
            self._bottom = module_digest(_view(decoder, 0, self.split, final_norm=False))
        return self._bottom

    @property
    def n_layers(self) -> int:
        return _n_layers(self.module)

    def trainable_parameters(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def n_trainable(self) -> int:
        return int(sum(p.numel() for p in self.trainable_parameters()))


def make_policy(model, *, method: str = "full", top_blocks: int | None = None, cached: bool = True,
                seed: int = 1234, lora_r: int = 8, lora_alpha: int = 32, lora_dropout: float = 0.05,
                lora_targets: Sequence[str] = ("q_proj", "v_proj"), disable_dropout: bool = True,
                attn_implementation: str = "eager", copy_model: bool = True) -> Policy:
    """Wrap a causal LM for whole-model DPO; the input model's weights are never modified.

    The policy is a copy (``copy_model=True``), except that with ``top_blocks`` the frozen bottom's
    tensors are shared with ``model`` (they are frozen in the policy, and marked so in ``model`` too).

    ``method="full"`` trains every weight (with ``top_blocks=k``: the last ``k`` blocks and the final
    norm); ``method="lora"`` trains LoRA adapters (official: r 8, α 32, dropout 0.05 on ``q_proj`` and
    ``v_proj``; with ``top_blocks=k`` only in the last ``k`` blocks). With ``top_blocks`` set the
    embedding (and a head tied to it) is frozen, and ``cached=True`` reads the frozen bottom's output
    from :func:`trunk_activations` instead of recomputing it.

    ``disable_dropout=True`` sets every dropout probability to 0, LoRA's included, as TRL's
    ``DPOTrainer`` does by default (``disable_dropout=True`` since TRL 0.7); the official scripts kept
    that default, so their LoRA dropout of 0.05 was in effect 0 [official code, our reading].

    ``attn_implementation="eager"`` (the default here): PyTorch's fused CPU attention gives a row
    results that depend, in the last bit, on the other rows of its batch; eager attention does not,
    which is what makes the reference log-probs, computed once, equal the policy's at step 0 bit for
    bit, and the cached top-block path equal the whole-model path bit for bit.
    """
    import torch

    if method not in METHODS:
        raise FinetuneError(f"method must be one of {list(METHODS)}, got {method!r}")
    L = _n_layers(model)
    if top_blocks is not None:
        if isinstance(top_blocks, bool) or not isinstance(top_blocks, int) or not 1 <= top_blocks <= L:
            raise FinetuneError(f"top_blocks must be None (whole model) or an int in 1..{L} for this "
                                f"{L}-block model, got {top_blocks!r}")
    split = 0 if top_blocks is None else L - top_blocks
    module = copy.deepcopy(model, _frozen_memo(model, split)) if copy_model else model
    if attn_implementation is not None:
        module.set_attn_implementation(attn_implementation)
    module.train()
    lora = {}
    if method == "lora":
        import peft

        if lora_r < 1 or lora_alpha <= 0 or not 0 <= lora_dropout < 1:
            raise FinetuneError(f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1, got r={lora_r}, "
                                f"alpha={lora_alpha}, dropout={lora_dropout}")
        names = {n.rsplit(".", 1)[-1] for n, _ in module.named_modules()}
        missing = [t for t in lora_targets if t not in names]
        if missing:
            raise FinetuneError(f"LoRA targets {missing} are not module names of this model")
        lora = {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout, "targets": list(lora_targets)}
        cfg = peft.LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                              target_modules=list(lora_targets), bias="none", task_type="CAUSAL_LM",
                              layers_to_transform=None if split == 0 else list(range(split, L)))
        with _seeded(seed, module):
            module = peft.get_peft_model(module, cfg)
    else:
        for p in module.parameters():
            p.requires_grad_(True)
        if split > 0:
            _, decoder, head = _decoder_and_head(module)
            trainable = set()
            for blk in list(decoder.layers)[split:]:
                trainable |= {id(p) for p in blk.parameters()}
            trainable |= {id(p) for p in decoder.norm.parameters()}
            for p in module.parameters():
                if id(p) not in trainable:
                    p.requires_grad_(False)
    if disable_dropout:
        for mod in module.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        for cfg_obj in {id(c): c for c in _configs(module)}.values():
            for name in ("attention_dropout", "hidden_dropout", "dropout"):
                if isinstance(getattr(cfg_obj, name, None), float):
                    setattr(cfg_obj, name, 0.0)
    return Policy(module=module, method=method, split=split, cached=bool(cached and split > 0), seed=int(seed),
                  lora=lora)


def _configs(module):
    for mod in module.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            yield cfg


def _frozen_memo(model, split: int) -> dict:
    """A ``copy.deepcopy`` memo that shares (does not copy) the tensors of a frozen bottom.

    With ``split`` > 0 the embedding (and a head tied to it) and blocks ``0:split`` never change, so
    every policy made from one model shares them: a policy then costs the memory of its top blocks only.
    """
    if split == 0:
        return {}
    _, decoder, _ = _decoder_and_head(model)
    memo = {}
    for mod in [decoder.embed_tokens, *list(decoder.layers)[:split]]:
        for t in [*mod.parameters(), *mod.buffers()]:
            memo[id(t)] = t
    return memo


def merged_model(policy: Policy):
    """The policy's weights as a plain causal LM (LoRA adapters merged in), e.g. the "Aligned" model.

    A frozen bottom (``top_blocks``) is shared with the policy, not copied.
    """
    module = copy.deepcopy(policy.module, _frozen_memo(policy.module, policy.split))
    if policy.method == "lora":
        module = module.merge_and_unload()
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module


@contextlib.contextmanager
def _seeded(seed: int, module):
    """Seed torch's generator of the module's device inside the block only (LoRA init and dropout)."""
    import torch

    device = next(module.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


# ---------------------------------------------------------------------------------------------------
# The frozen bottom's output: computed once, cached on disk
# ---------------------------------------------------------------------------------------------------

class TrunkActivations:
    """The hidden state entering block ``split`` for every position of every packed row (fixed shapes)."""

    def __init__(self, pairs_rows: tuple, layout: Layout, values, key: str, bottom: str):
        self.rows = pairs_rows
        self.layout = layout
        self.values = values  # [n, L, d]
        self.key = key
        self.bottom = bottom  # digest of the frozen bottom that produced them

    def matches(self, policy: "Policy", pairs: Pairs, layout: Layout) -> bool:
        """Whether these activations are the frozen bottom's output of ``policy`` for ``pairs``."""
        return self.rows == pairs.rows() and self.layout == layout and self.bottom == policy.bottom_digest()

    def batch(self, idx: Sequence[int]):
        idx = list(idx)
        rows = idx + [idx[0]] * (self.layout.micro_batch - len(idx))
        return self.values[rows]


def module_digest(module) -> str:
    """SHA-256 over a module's parameter and buffer names, dtypes, shapes and bytes."""
    import hashlib

    import torch

    h = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        t = state[name]
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def trunk_activations(policy: Policy, pairs: Pairs, layout: Layout, *, cache: bool = True,
                      progress: bool = True) -> TrunkActivations:
    """The frozen bottom's output for every pair, from the disk cache when present.

    The key is the SHA-256 of the bottom's weights (embedding and blocks ``0:split``), the packed rows,
    the layout and the library versions, so a changed input can never return a stale entry.
    """
    import torch

    from . import cache as adcache

    if policy.split == 0:
        raise FinetuneError("trunk activations need top_blocks (a frozen bottom); this policy trains every block")
    base, decoder, _ = _decoder_and_head(policy.module)
    bottom = _view(decoder, 0, policy.split, final_norm=False)
    device = next(base.parameters()).device
    dtype = next(decoder.layers[0].parameters()).dtype
    key = adcache.digest("trunk-v1", policy.bottom_digest(), pairs.rows(), layout.__dict__, str(dtype),
                         torch.__version__, _transformers_version(), type(decoder).__name__)
    path = adcache.user_cache_dir("finetune", "trunk") / f"{key}.safetensors"
    if cache and path.exists():
        from safetensors.torch import load_file

        values = load_file(str(path))["values"].to(device)
        return TrunkActivations(pairs.rows(), layout, values, key, policy.bottom_digest())
    pad_id = _pad_id(base)
    n, m = len(pairs), layout.micro_batch
    out = torch.empty((n, layout.seq_len, decoder.config.hidden_size), dtype=dtype)
    chunks = [list(range(s, min(s + m, n))) for s in range(0, n, m)]
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            for idx in _progress(chunks, progress, "frozen bottom"):
                ids, pos, mask, *_ = _pack(pairs, idx, layout, pad_id, dtype, device, decoder.config)
                hid = bottom(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
                out[idx[0]:idx[0] + len(idx)] = hid[:len(idx)].cpu()
    finally:
        base.train(was_training)
    if cache:
        from safetensors.torch import save_file

        with adcache.atomic_path(path) as tmp:
            save_file({"values": out.contiguous()}, str(tmp))
    return TrunkActivations(pairs.rows(), layout, out.to(device), key, policy.bottom_digest())


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _pad_id(base) -> int:
    cfg = base.config
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(cfg, name, None)
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return 0


def _progress(it, enabled: bool, desc: str):
    if not enabled or os.environ.get("TQDM_DISABLE"):
        return it
    from . import progress

    return progress.steps(it, desc)


# ---------------------------------------------------------------------------------------------------
# Log-probabilities of both completions, by one code path for policy and reference
# ---------------------------------------------------------------------------------------------------

def _final_hidden(policy: Policy, pairs: Pairs, idx: Sequence[int], layout: Layout,
                  trunk: TrunkActivations | None):
    """The final hidden states (after the final norm) of a packed micro-batch, and its packing tensors."""
    base, decoder, head = _decoder_and_head(policy.module)
    device, dtype = head.weight.device, head.weight.dtype
    ids, pos, mask, src, tgt, wsum = _pack(pairs, idx, layout, _pad_id(base), dtype, device, decoder.config)
    if policy.cached:
        if trunk is None or not trunk.matches(policy, pairs, layout):
            raise FinetuneError("this policy reads the frozen bottom from the cache: pass the TrunkActivations "
                                "of these pairs and layout (trunk_activations(policy, pairs, layout))")
        top = _view(decoder, policy.split, len(decoder.layers), final_norm=True)
        hid = top(inputs_embeds=trunk.batch(idx), attention_mask=mask, position_ids=pos,
                  use_cache=False).last_hidden_state
    else:
        hid = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    return hid, src, tgt, wsum


def completion_logps(policy: Policy, pairs: Pairs, idx: Sequence[int], layout: Layout,
                     trunk: TrunkActivations | None = None):
    """Summed log-probabilities of completions ``a`` and ``b`` of the pairs ``idx`` (one micro-batch).

    Returns a tensor [len(idx), 2]; gradients flow to the policy's trainable weights. Only the scored
    positions go through the output head, and a model's final logit soft-capping is applied.
    """
    import torch

    base, _, head = _decoder_and_head(policy.module)
    hid, src, tgt, wsum = _final_hidden(policy, pairs, idx, layout, trunk)
    rows = hid.reshape(-1, hid.shape[-1])[src]
    logits = head(rows)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-softmax in fp32 at least, as TRL does
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    tok = torch.log_softmax(logits, dim=-1).gather(1, tgt[:, None])[:, 0]
    per = (tok[:, None] * wsum.to(tok.dtype)).reshape(layout.micro_batch, layout.rows_per_pair, 2).sum(1)
    return per[:len(idx)]


def prompt_embeddings(policy: Policy, pairs: Pairs, layout: Layout, trunk: TrunkActivations | None = None,
                      *, progress: bool = False):
    """h(x): the final hidden state (after the final norm) at each prompt's last token, [n, d] float64.

    This is the paper's embedding (`paper.md` §2.3), computed by the policy's own forward pass, so it
    shows how whole-model training moves the representation.
    """
    import torch

    def last_prompt_token(idx):
        hid, *_ = _final_hidden(policy, pairs, idx, layout, trunk)
        last = torch.tensor([len(pairs.prompt[i]) - 1 for i in idx], device=hid.device)
        return hid[torch.arange(len(idx), device=hid.device), last]

    return _evaluate_chunks(policy, len(pairs), layout, last_prompt_token, progress, "embeddings")


def completion_features(policy: Policy, pairs: Pairs, layout: Layout, trunk: TrunkActivations | None = None,
                        *, progress: bool = False):
    """The final hidden states that predict each completion token, with the tokens: ``(h_a, t_a, h_b, t_b)``.

    ``h_a`` is ``[n, L_a, d]`` (float32) and ``t_a`` ``[n, L_a]`` (``-100`` on padding), likewise for
    completion ``b``: exactly the rows :func:`completion_logps` sends through the head, so a head
    trained on them (last-layer DPO on multi-token responses) starts from the same log-probs.
    """
    import torch

    R = layout.rows_per_pair
    rows, which, tokens = [], [], []

    def scored(idx):
        hid, src, tgt, wsum = _final_hidden(policy, pairs, idx, layout, trunk)
        m = len(idx)
        rows.append(hid.reshape(-1, hid.shape[-1])[src].reshape(layout.micro_batch, R, -1)[:m].float().cpu())
        side = torch.where(wsum[:, 0] > 0, 0, torch.where(wsum[:, 1] > 0, 1, -1))
        which.append(side.reshape(layout.micro_batch, R)[:m].cpu())
        tokens.append(tgt.reshape(layout.micro_batch, R)[:m].cpu())
        return torch.zeros(m)

    _evaluate_chunks(policy, len(pairs), layout, scored, progress, "completion features")
    H, S, T = torch.cat(rows), torch.cat(which), torch.cat(tokens)
    out = []
    for side, lens in ((0, [len(a) for a in pairs.a]), (1, [len(b) for b in pairs.b])):
        Ls = max(lens)
        h = torch.zeros((len(pairs), Ls, H.shape[-1]), dtype=torch.float32)
        t = torch.full((len(pairs), Ls), -100, dtype=torch.long)
        for i in range(len(pairs)):
            sel = S[i] == side
            h[i, :lens[i]] = H[i][sel]
            t[i, :lens[i]] = T[i][sel]
        out += [h, t]
    return tuple(out)


def _evaluate_chunks(policy: Policy, n: int, layout: Layout, fn, progress: bool, desc: str):
    """``fn(idx)`` over consecutive micro-batches, in eval mode and without gradients; float64 on the CPU."""
    import torch

    module = policy.module
    was = module.training
    module.eval()
    out = []
    try:
        with torch.no_grad():
            chunks = [list(range(s, min(s + layout.micro_batch, n))) for s in range(0, n, layout.micro_batch)]
            for idx in _progress(chunks, progress, desc):
                out.append(fn(idx).double().cpu())
    finally:
        module.train(was)
    return torch.cat(out)


def _chosen_rejected(logps_ab, pairs: Pairs, idx: Sequence[int]):
    import torch

    first = torch.tensor([pairs.chosen_first[i] for i in idx], device=logps_ab.device)
    chosen = torch.where(first, logps_ab[:, 0], logps_ab[:, 1])
    rejected = torch.where(first, logps_ab[:, 1], logps_ab[:, 0])
    return chosen, rejected


def all_logps(policy: Policy, pairs: Pairs, layout: Layout, trunk: TrunkActivations | None = None,
              *, progress: bool = False):
    """:func:`completion_logps` for every pair, in eval mode and without gradients ([n, 2], float64 on CPU)."""
    return _evaluate_chunks(policy, len(pairs), layout, lambda idx: completion_logps(policy, pairs, idx, layout, trunk),
                            progress, "log-probs")


# ---------------------------------------------------------------------------------------------------
# Loss and metrics (TRL names)
# ---------------------------------------------------------------------------------------------------

def pair_metrics(chosen, rejected, ref_chosen, ref_rejected, beta: float) -> dict[str, float]:
    """TRL's DPO metrics and the paper's accuracy as batch means (Python floats), from summed log-probs.

    A thin wrapper of ``alignment_dynamics.dpo.reference.dpo_metrics``: ``rewards/accuracies`` is TRL's
    (0 at step 0: ties); ``outputs/accuracies`` is the official code's (the policy gives the chosen
    completion a higher log-probability).
    """
    from .dpo import reference

    m = reference.dpo_metrics(chosen, rejected, ref_chosen, ref_rejected, beta=beta)
    return {k: float(m[k]) for k in METRICS}


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSettings:
    """DPO training settings; the defaults are the official whole-model ones (TRL 0.7.3, `paper.md` §6).

    AdamW (``adamw_torch``: betas 0.9/0.999, eps 1e-8, no weight decay), constant learning rate 1e-5
    with no warm-up, β 0.01, batch 128, one epoch, and the Hugging Face trainer's default gradient
    clipping at norm 1 (``max_grad_norm``; None turns it off). ``steps`` (if set) replaces ``epochs``: the data
    are reshuffled at each epoch boundary. The last, partial batch of an epoch is kept (as the HF
    trainer does by default).
    """

    beta: float = 0.01
    lr: float = 1e-5
    batch_size: int = 128
    epochs: int = 1
    steps: int | None = None
    micro_batch: int = 16
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    max_grad_norm: float | None = 1.0

    def __post_init__(self):
        if not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise FinetuneError(f"beta must be > 0, got {self.beta!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise FinetuneError(f"lr must be > 0, got {self.lr!r}")
        for name in ("batch_size", "epochs", "micro_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FinetuneError(f"{name} must be a positive int, got {v!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise FinetuneError(f"steps must be None or a positive int, got {self.steps!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise FinetuneError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise FinetuneError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise FinetuneError(f"max_grad_norm must be None or > 0, got {self.max_grad_norm!r}")


def batch_schedule(n: int, settings: TrainSettings, seed: int) -> list[list[int]]:
    """The pair indices of every training step: a fresh permutation per epoch, batches in order."""
    import torch

    if n < 1:
        raise FinetuneError("no training pairs")
    g = torch.Generator().manual_seed(int(seed))
    steps: list[list[int]] = []
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=g).tolist()
        for s in range(0, n, settings.batch_size):
            steps.append(perm[s:s + settings.batch_size])
            if settings.steps is not None and len(steps) == settings.steps:
                return steps
        epoch += 1
        if settings.steps is None and epoch == settings.epochs:
            return steps


@dataclass
class DPORun:
    """The result of :func:`train_dpo`.

    ``train[name]`` holds the batch metrics at each step (computed before the update, in training
    mode, as TRL logs them; length T). ``evals[set][name]`` holds the metrics of each evaluation set
    at every step t = 0..T (before the update at t; length T + 1). ``reference[set]`` holds the
    reference log-probs [n, 2] of completions a and b.
    """

    policy: Policy
    settings: TrainSettings
    train: dict[str, np.ndarray]
    evals: dict[str, dict[str, np.ndarray]]
    reference: dict[str, Any]
    schedule: list[list[int]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.schedule)


def train_dpo(policy: Policy, train: Pairs, settings: TrainSettings = TrainSettings(), *,
              eval_sets: Mapping[str, Pairs] | None = None, seed: int | None = None,
              trunks: Mapping[str, TrunkActivations] | None = None, layout: Layout | None = None,
              progress: bool = True, cache: bool = False) -> DPORun:
    """Train ``policy`` with DPO on ``train``; the reference is the policy as it starts.

    The reference log-probs of every pair (training and evaluation sets) are computed once, before the
    first step, by :func:`completion_logps` on the same module and with the same shapes as the
    policy's. The loss is TRL's ``sigmoid`` DPO loss (``alignment_dynamics.dpo.reference.dpo_loss``),
    averaged over the batch (gradient accumulation over micro-batches). Evaluation sets are scored at
    every step, before the update, and after the last one. ``seed`` (default: the policy's) fixes the
    batch order and the LoRA dropout masks.

    With ``cache=True`` the run is stored in the user cache (histories as JSON, the trained weights as
    safetensors), addressed by the SHA-256 of the starting weights, the pairs, the settings, the seed,
    the library versions and this module's source; a hit loads the trained weights into ``policy``.
    """
    import torch

    eval_sets = dict(eval_sets or {})
    if "train" in eval_sets:
        raise FinetuneError("'train' is reserved for the training batches; name the evaluation set otherwise")
    if len(train) == 0:
        raise FinetuneError("no training pairs")
    seed = policy.seed if seed is None else int(seed)
    layout = layout or Layout.for_pairs(train, *eval_sets.values(), micro_batch=settings.micro_batch)
    sets = {"train": train, **eval_sets}
    key = _run_key(policy, sets, settings, seed, layout) if cache else None
    if key is not None:
        hit = _load_run(key, policy, settings)
        if hit is not None:
            return hit
    trunks = dict(trunks or {})
    if policy.cached:
        for name, pairs in sets.items():
            t = trunks.get(name)
            if t is None or not t.matches(policy, pairs, layout):
                trunks[name] = trunk_activations(policy, pairs, layout, progress=progress)
    ref = {name: all_logps(policy, pairs, layout, trunks.get(name)) for name, pairs in sets.items()}
    params = policy.trainable_parameters()
    if not params:
        raise FinetuneError("the policy has no trainable parameters")
    if settings.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = batch_schedule(len(train), settings, seed)
    from .dpo.reference import dpo_loss

    hist_train: dict[str, list[float]] = {k: [] for k in METRICS}
    hist_eval: dict[str, dict[str, list[float]]] = {s: {k: [] for k in METRICS} for s in eval_sets}

    def evaluate():
        for name, pairs in eval_sets.items():
            lp = all_logps(policy, pairs, layout, trunks.get(name))
            c, r = _chosen_rejected(lp, pairs, range(len(pairs)))
            rc, rr = _chosen_rejected(ref[name], pairs, range(len(pairs)))
            for k, v in pair_metrics(c, r, rc, rr, settings.beta).items():
                hist_eval[name][k].append(v)

    module = policy.module
    module.train()
    with _seeded(seed, module):
        for step, batch in enumerate(_progress(schedule, progress, "DPO steps")):
            evaluate()
            opt.zero_grad(set_to_none=True)
            B = len(batch)
            cs, rs = [], []
            for s in range(0, B, layout.micro_batch):
                idx = batch[s:s + layout.micro_batch]
                lp = completion_logps(policy, train, idx, layout, trunks.get("train"))
                c, r = _chosen_rejected(lp, train, idx)
                rc, rr = _chosen_rejected(ref["train"][idx].to(lp.device, lp.dtype), train, idx)
                _, per_pair, _, _ = dpo_loss(c, r, rc, rr, settings.beta)
                (per_pair.sum() / B).backward()
                cs.append(c.detach().double().cpu())
                rs.append(r.detach().double().cpu())
            c, r = torch.cat(cs), torch.cat(rs)
            rc, rr = _chosen_rejected(ref["train"][batch], train, batch)
            for k, v in pair_metrics(c, r, rc, rr, settings.beta).items():
                hist_train[k].append(v)
            if settings.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            opt.step()
        evaluate()
    module.train()
    run = DPORun(policy=policy, settings=settings,
                 train={k: np.asarray(v) for k, v in hist_train.items()},
                 evals={s: {k: np.asarray(v) for k, v in d.items()} for s, d in hist_eval.items()},
                 reference={k: v.numpy() for k, v in ref.items()}, schedule=schedule,
                 info={"layout": dict(layout.__dict__), "seed": seed, "method": policy.method, "split": policy.split,
                       "cached": policy.cached, "n_trainable": policy.n_trainable()})
    if key is not None:
        _store_run(key, run)
    return run


# ---------------------------------------------------------------------------------------------------
# The run cache
# ---------------------------------------------------------------------------------------------------

# The source this process runs, read once at import: a run cached by other code is never returned.
_SOURCE_DIGEST = _cache.file_sha256(__file__)


def _source_digest() -> str:
    return _SOURCE_DIGEST


def _run_key(policy: Policy, sets: Mapping[str, Pairs], settings: TrainSettings, seed: int, layout: Layout) -> str:
    import torch

    from . import cache as adcache

    return adcache.digest("dpo-run-v1", module_digest(policy.module), policy.method, policy.split, policy.lora,
                          {k: [v.rows(), v.chosen_first] for k, v in sorted(sets.items())},
                          settings.__dict__, int(seed), layout.__dict__, torch.__version__, _transformers_version(),
                          _source_digest())


def _run_dir(key: str):
    from . import cache as adcache

    return adcache.user_cache_dir("finetune", "runs") / key


def _store_run(key: str, run: DPORun) -> None:
    import json

    from safetensors.torch import save_file

    from . import cache as adcache

    trained = {n: p.detach().cpu().contiguous() for n, p in run.policy.module.named_parameters() if p.requires_grad}
    meta = {"train": {k: v.tolist() for k, v in run.train.items()},
            "evals": {s: {k: v.tolist() for k, v in d.items()} for s, d in run.evals.items()},
            "reference": {k: np.asarray(v).tolist() for k, v in run.reference.items()},
            "schedule": run.schedule, "info": run.info}
    with adcache.atomic_path(_run_dir(key)) as tmp:
        tmp.mkdir()
        (tmp / "run.json").write_text(json.dumps(meta))
        save_file(trained, str(tmp / "trained.safetensors"))


def _load_run(key: str, policy: Policy, settings: TrainSettings) -> DPORun | None:
    import json

    import torch
    from safetensors.torch import load_file

    folder = _run_dir(key)
    if not (folder / "run.json").exists() or not (folder / "trained.safetensors").exists():
        return None
    meta = json.loads((folder / "run.json").read_text())
    trained = load_file(str(folder / "trained.safetensors"))
    params = dict(policy.module.named_parameters())
    if set(trained) != {n for n, p in params.items() if p.requires_grad}:
        return None
    with torch.no_grad():
        for n, t in trained.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    return DPORun(policy=policy, settings=settings,
                  train={k: np.asarray(v) for k, v in meta["train"].items()},
                  evals={s: {k: np.asarray(v) for k, v in d.items()} for s, d in meta["evals"].items()},
                  reference={k: np.asarray(v) for k, v in meta["reference"].items()},
                  schedule=meta["schedule"], info={**meta["info"], "from_cache": True})



# ---------------------------------------------------------------------------------------------------
# The same training with TRL's DPOTrainer, for comparison
# ---------------------------------------------------------------------------------------------------

def trl_comparison(model, tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
                   steps: int = 2, lr: float = 1e-5, beta: float = 0.01, seed: int = 1234,
                   method: str = "lora") -> dict[str, Any]:
    """Train the same whole-model DPO with TRL's ``DPOTrainer`` and with :func:`train_dpo`; compare.

    One batch holds every pair (``len(prompts)``), for ``steps`` steps: AdamW, constant ``lr``, β,
    gradient clipping at 1, dropout off (TRL's default), LoRA r 8, α 32 on ``q_proj``/``v_proj`` (or
    ``method="full"``). TRL seeds torch's global generator with ``seed`` before it adds the adapter, and
    :func:`make_policy` does the same inside a forked generator, so both start from the same LoRA
    weights and the two loss trajectories should agree to float32 rounding. Returns, per
    implementation, the losses and mean chosen log-probs at each step and the wall time per step
    (TRL's includes its reference forward pass at every step; ours its one-off reference pass).
    """
    import io
    import logging
    import shutil
    import time
    import warnings

    import torch

    from . import cache as adcache

    if method not in METHODS:
        raise FinetuneError(f"method must be one of {list(METHODS)}, got {method!r}")
    n = len(prompts)
    if n < 2 or not (len(chosen) == len(rejected) == n):
        raise FinetuneError(f"need at least 2 pairs with as many chosen and rejected answers, got {n}, "
                            f"{len(chosen)}, {len(rejected)}")
    from datasets import Dataset, disable_progress_bars
    from peft import LoraConfig
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    disable_progress_bars()
    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    out_dir = adcache.scratch_dir("ad-trl-")
    trl_model = copy.deepcopy(model)
    if hasattr(trl_model.config, "quantization_config"):
        del trl_model.config.quantization_config
    trl_model.set_attn_implementation("eager")
    args = DPOConfig(output_dir=str(out_dir), per_device_train_batch_size=n, max_steps=steps, logging_steps=1,
                     learning_rate=lr, lr_scheduler_type="constant", beta=beta, report_to=[], save_strategy="no",
                     use_cpu=next(model.parameters()).device.type == "cpu", seed=seed, dataloader_num_workers=0,
                     disable_tqdm=True, max_grad_norm=1.0,
                     bf16=False)  # TRL's default is bf16 autocast; ours is float32 throughout
    peft_config = (LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], bias="none",
                              task_type="CAUSAL_LM") if method == "lora" else None)
    ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)])
    try:
        with warnings.catch_warnings(), torch.random.fork_rng():
            warnings.simplefilter("ignore")
            ref = None
            if method == "full":
                ref = copy.deepcopy(trl_model).eval()
                for p in ref.parameters():
                    p.requires_grad_(False)
            trainer = DPOTrainer(model=trl_model, ref_model=ref, args=args, train_dataset=ds,
                                 processing_class=tokenizer, peft_config=peft_config)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its log lines
                trainer.train()
            trl_s = (time.perf_counter() - t0) / steps
        logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    pairs = tokenize_pairs(tokenizer, prompts, chosen, rejected)
    t0 = time.perf_counter()
    run = train_dpo(make_policy(model, method=method, seed=seed), pairs,
                    TrainSettings(beta=beta, lr=lr, batch_size=n, steps=steps, micro_batch=max(2, n)),
                    seed=seed, progress=False)
    ours_s = (time.perf_counter() - t0) / steps
    return {
        "trl_loss": np.array([h["loss"] for h in logs]), "ours_loss": run.train["loss"],
        "trl_logps_chosen": np.array([h["logps/chosen"] for h in logs]), "ours_logps_chosen": run.train["logps/chosen"],
        "trl_s_per_step": trl_s, "ours_s_per_step": ours_s, "pairs": n, "steps": steps, "method": method,
    }
