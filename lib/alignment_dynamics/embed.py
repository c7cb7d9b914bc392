"""Embeddings h(x): the final-layer hidden state at the last prompt token, fast and cached.

h(x) is what the theory and the last-layer DPO experiments work on. ``norm="model"`` (the default and
the book's choice) takes the transformer's output, which is already after the final norm, so
``h @ W_U.T`` equals the model's next-token logits. ``norm="double"`` applies the final norm a second
time, as the official code does (quirk 2 of the reproduction notes) [official code].

:func:`embed` batches prompts by length (longest first), pads on the right and reads each row at its
own last token. Under the causal mask a token never sees the padding after it, so each row equals the
unpadded single-prompt result (tested). A token prefix shared by all prompts (persona prompts share
about 40 % of their tokens) runs once and its keys and values are reused by every batch. It runs the
transformer without its LM head (no logits over the vocabulary) and under ``torch.inference_mode``.

The cache (``<cache>/embeddings/<key>/<group>.safetensors``) is content-addressed: ``key`` digests the
model fingerprint, the dtype, ``norm`` and the prompt options; inside, each row is keyed by the
SHA-256 of its prompt text. A request computes only the rows it lacks, then rewrites the group's file
atomically with the union, so chapters asking for overlapping samples of a behaviour share rows.
Nothing is pickled (safetensors), and a changed model, dtype, option or prompt can never return a
stale row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import cache, data, models
from .validate import ConfigError, suggest

NORMS = ("model", "double")
EMBED_VERSION = 2  # 2: every store file records the SHA-256 of its tensors (checked when read)
#: Padded tokens per forward batch and the most rows per batch, on the CPU and on a GPU. On a 2-core
#: Intel Xeon, 160 persona prompts on SmolLM2 in float32 took 0.76x the CPU time (whole process, model
#: load included; median of 3 A/B pairs) with batches of 2048 tokens / 256 rows than with 512 / 64
#: (fewer copies of the shared prefix's keys and values), and the same with 8192 / 1024
#: [project, measured]. A GPU wants larger ones.
BATCH_LIMITS = {"cpu": (2048, 256), "cuda": (16384, 256)}
#: How far embeddings computed in bfloat16 may be from float32 ones, per prompt: the relative error
#: ||h_bf16 - h_fp32|| / ||h_fp32|| at most DTYPE_REL_TOL and the cosine at least DTYPE_COS_MIN.
#: Measured on 16 persona prompts [project, measured, Intel Xeon with AVX512-BF16]: SmolLM2 max 0.018
#: (median 0.012), cosine >= 0.99984; Gemma 3 max 0.022 (median 0.015), cosine >= 0.99975.
DTYPE_REL_TOL = 0.05
DTYPE_COS_MIN = 0.999


def batch_limits(device) -> tuple[int, int]:
    """(max padded tokens, max rows) per forward batch on ``device``."""
    return BATCH_LIMITS["cuda" if str(device).startswith("cuda") else "cpu"]


class EmbedError(ValueError):
    """A request the embedding code cannot serve (an empty prompt list, an empty prompt)."""


def check_norm(norm: str) -> str:
    """``"model"`` or ``"double"``; anything else is a :class:`ConfigError`."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; valid: {list(NORMS)} ('model': the model's own final "
                          f"norm, once; 'double': once more, as the official code).{suggest(norm, NORMS)}")
    return norm


def _check_prompts(prompts: Sequence[str], what: str = "prompt") -> list[str]:
    if isinstance(prompts, str):
        raise EmbedError(f"expected a list of {what}s, got a single string")
    prompts = list(prompts)
    if not prompts:
        raise EmbedError(f"the {what} list is empty: nothing to embed")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p]
    if bad:
        raise EmbedError(f"{what}s must be non-empty strings; entries {bad[:5]} are not")
    return prompts


#: A batch may hold at most this share of padding beyond its real tokens (a new batch starts first).
#: Padding is computed and thrown away: persona suffixes run from a few to ~60 tokens, and one batch of
#: the longest 2048 tokens' worth padded them to 1.6x their real tokens [project, measured, 2026-12-04].
#: Smaller batches cost little: a (m x 576) @ (576 x 1536) product ran at the same rate from m = 128 to
#: 4096 on a 2-core Zen 4 in both dtypes. Measured there (`bench embed`, SmolLM2, 256 prompts): without
#: this bound 41 prompts/s in bfloat16 and 20 in float32; with 0.125, 64 and 35; 0.05 was slower (48, 26:
#: too many small batches), 0.25 the same as 0.125.
PAD_SLACK = 0.125


def _batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Positions grouped into batches, longest first, each within ``max_tokens`` padded tokens,
    ``max_rows`` rows, and padding of at most :data:`PAD_SLACK` of its real tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * width > max_tokens or len(cur) >= max_rows
                    or (len(cur) + 1) * width > (1 + PAD_SLACK) * (real + lengths[i])):
            out.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += lengths[i]
    if cur:
        out.append(cur)
    return out


def _pad_right(seqs: list[list[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids


def _pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0  # pragma: no cover


def _finish(lm: models.LoadedModel, h, norm: str):
    """Apply the second norm for ``norm="double"``; return float32 numpy rows."""
    import torch

    if norm == "double":
        h = lm.final_norm(h)
    return h.to(torch.float32).cpu().numpy()


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all sequences, leaving each at least one token."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    k = 0
    while k < n and all(s[k] == first[k] for s in seqs):
        k += 1
    return k


MIN_SHARED_PREFIX = 4


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """How many leading tokens :func:`embed` runs once for all of these token lists (0: none shared)."""
    k = common_prefix(ids) if len(ids) > 1 else 0
    return k if k >= MIN_SHARED_PREFIX else 0


def _cache_kwarg(base) -> str:
    """The name of the key/value cache argument (``cache`` in recent transformers, else ``past_key_values``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def embed(lm: models.LoadedModel, prompts: Sequence[str], *, norm: str = "model",
          max_batch_tokens: int | None = None, max_batch_rows: int | None = None,
          share_prefix: bool = True, progress: bool = True) -> np.ndarray:
    """h(x) for each prompt, as float32 rows (n, d_model), in the order given.

    Prompts are tokenised as the official code does (the tokenizer's default special tokens, no
    template). ``norm`` is ``"model"`` (default) or ``"double"``. The computation runs in the model's
    dtype (load it with ``dtype="bfloat16"`` for bf16); the result is stored as float32.

    With ``share_prefix`` (default), a token prefix common to all prompts (persona prompts share
    "Is the following statement something you would say?" and more: about 40 % of their tokens) runs
    once; its keys and values are repeated for every batch, and only the rest of each prompt runs.
    Under the causal mask the prefix's states do not depend on what follows, so the result is the same.
    """
    import copy

    import torch
    from tqdm import tqdm

    check_norm(norm)
    prompts = _check_prompts(prompts)
    tokens_cap, rows_cap = batch_limits(lm.device)
    max_batch_tokens, max_batch_rows = max_batch_tokens or tokens_cap, max_batch_rows or rows_cap
    ids = lm.tokenizer(prompts)["input_ids"]
    k = shared_prefix_length(ids) if share_prefix else 0
    lengths = [len(s) - k for s in ids]
    out = np.empty((len(prompts), lm.d_model), dtype=np.float32)
    pad = _pad_id(lm.tokenizer)
    base, device = lm.base, lm.device
    with torch.inference_mode(), _threads_for(lm), \
            tqdm(total=len(prompts), desc=f"embedding ({lm.name})", unit="prompt",
                 disable=not progress or len(prompts) < 64, leave=False) as bar:
        prefix_cache = None
        if k:
            from transformers import DynamicCache

            prefix_cache = DynamicCache(config=lm.model.config)
            base(input_ids=torch.tensor([ids[0][:k]], device=device), use_cache=True,
                 **{_cache_kwarg(base): prefix_cache})
        for batch in _batches(lengths, max_batch_tokens, max_batch_rows):
            x = _pad_right([ids[i][k:] for i in batch], pad).to(device)
            if prefix_cache is None:
                hidden = base(input_ids=x, use_cache=False).last_hidden_state
            else:
                past = copy.deepcopy(prefix_cache)
                past.batch_repeat_interleave(len(batch))
                hidden = base(input_ids=x, use_cache=True, **{_cache_kwarg(base): past}).last_hidden_state
            last = torch.tensor([lengths[i] - 1 for i in batch], device=device)
            h = hidden[torch.arange(len(batch), device=device), last]
            out[batch] = _finish(lm, h, norm)
            bar.update(len(batch))
    return out


#: Below this width a forward pass runs on one CPU thread (see :func:`_threads_for`).
SMALL_MODEL_D = 128


def _threads_for(lm: models.LoadedModel):
    """One CPU thread for a tiny model (d_model < :data:`SMALL_MODEL_D`, e.g. the smoke profile's random
    Llamas), else no change: their matrix products take microseconds, and on a busy two-core machine a
    thread pool makes each of them wait for the other thread (measured: a tiny model's forward passes
    10-20x slower on two threads than on one while other work shared the cores). Results do not depend
    on it beyond float rounding of the reductions, and every run of the same model makes the same choice.
    """
    import contextlib

    import torch

    if lm.device.type != "cpu" or lm.d_model >= SMALL_MODEL_D:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def one_thread():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return one_thread()


def dtype_agreement(h_ref: np.ndarray, h_other: np.ndarray) -> dict[str, float]:
    """How close two embeddings of the same prompts are (e.g. float32 and bfloat16): the largest and
    median relative error per row, the smallest cosine, and whether both are within
    :data:`DTYPE_REL_TOL` and :data:`DTYPE_COS_MIN`.
    """
    a, b = np.asarray(h_ref, dtype=np.float64), np.asarray(h_other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or not len(a):
        raise EmbedError(f"need two (n, d) arrays of the same shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EmbedError("embeddings contain NaN or infinity")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if (na == 0).any() or (nb == 0).any():
        raise EmbedError("an embedding row is zero: its relative error and cosine are undefined")
    rel = np.linalg.norm(a - b, axis=1) / na
    cos = (a * b).sum(1) / (na * nb)
    out = {"rel_max": float(rel.max()), "rel_median": float(np.median(rel)), "cos_min": float(cos.min()),
           "n": int(len(a))}
    out["within"] = bool(out["rel_max"] <= DTYPE_REL_TOL and out["cos_min"] >= DTYPE_COS_MIN)
    return out


def logit_gap(lm: models.LoadedModel, prompts: Sequence[str], *,
              norms: Sequence[str] = NORMS) -> dict[str, np.ndarray]:
    """Per norm and prompt, max |h @ W_U^T - logits|: our h against the model's own next-token logits
    from the official one-prompt forward (with its LM head). About 1e-5 of logits of size ~20 in
    float32 for ``norm="model"``; large for ``"double"``, whose features are not the logits' features.
    """
    import torch

    prompts = _check_prompts(prompts)
    H = {n: torch.from_numpy(embed(lm, prompts, norm=check_norm(n), progress=False)) for n in norms}
    W = lm.W_U.cpu()
    out: dict[str, list[float]] = {n: [] for n in norms}
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = lm.tokenizer(p, return_tensors="pt").to(lm.device)
            logits = lm.model(**ids).logits[0, -1].float().cpu()
            for n in norms:
                out[n].append(float((H[n][i] @ W.T - logits).abs().max()))
    return {n: np.asarray(v) for n, v in out.items()}


# ---------------------------------------------------------------------------------------------------
# The content-addressed store
# ---------------------------------------------------------------------------------------------------

def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def store_key(model_name: str, *, dtype: Any = "auto", norm: str = "model",
              options: dict[str, Any] | None = None) -> str:
    """The digest naming an embedding store: model fingerprint, dtype, norm and prompt options."""
    return cache.digest("embeddings", EMBED_VERSION, models.fingerprint(model_name), models.dtype_name(dtype),
                        check_norm(norm), options or {})


def store_dir(model_name: str, *, dtype: Any = "auto", norm: str = "model",
              options: dict[str, Any] | None = None) -> Path:
    """The folder of an embedding store in the user cache."""
    return cache.user_cache_dir("embeddings") / store_key(model_name, dtype=dtype, norm=norm, options=options)[:32]


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (sorted by name): the digest a
    cache file of arrays records at creation and is checked against whenever it is read (a few ms per
    MB; a behaviour's store is well under a MB).
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_checked(path: Path, what: str) -> dict[str, np.ndarray] | None:
    """The tensors of a cache file if its recorded digest matches; else None, reported in one line."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not path.exists():
        return None
    try:
        t = load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            recorded = (f.metadata() or {}).get("sha256")
    except Exception as exc:  # an unreadable file (a foreign or truncated one) is recomputed, never trusted
        cache.report_corrupt(what, path, f"unreadable: {type(exc).__name__}", "computing it again")
        return None
    if recorded != tensors_digest(t):
        cache.report_corrupt(what, path, "its data does not match the digest recorded when it was written"
                             if recorded else "it records no digest", "computing it again")
        return None
    return t


def _read_store(path: Path) -> dict[bytes, np.ndarray]:
    t = _load_checked(path, "embedding store")
    if t is None or "prompt_sha256" not in t or "h" not in t:
        return {}
    return {bytes(k): row for k, row in zip(t["prompt_sha256"], t["h"])}


def _write_store(path: Path, rows: dict[bytes, np.ndarray], meta: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    keys = sorted(rows)
    tensors = {"prompt_sha256": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32),
               "h": np.stack([rows[k] for k in keys]).astype(np.float32)}
    with cache.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta, sort_keys=True),
                                               "sha256": tensors_digest(tensors)})


def cached_embeddings(model_name: str, prompts: Sequence[str], *, group: str, dtype: Any = "auto",
                      norm: str = "model", options: dict[str, Any] | None = None, device: Any = None,
                      progress: bool = True) -> tuple[np.ndarray, int]:
    """h(x) for ``prompts`` from the store ``group`` (e.g. a behaviour), computing only missing rows.

    Returns the rows (float32, in the order given) and how many were computed now. The model is
    loaded (``models.shared``) only when rows are missing. ``options`` names the prompt options that
    made the prompts (they enter the store's key).
    """
    prompts = _check_prompts(prompts)
    dtype = models.dtype_name(dtype, device)
    if not group or "/" in group or group.startswith("."):
        raise ConfigError(f"group must be a plain file name, got {group!r}")
    folder = store_dir(model_name, dtype=dtype, norm=norm, options=options)
    path = folder / f"{group}.safetensors"
    shas = [_sha(p) for p in prompts]
    rows = _read_store(path)
    missing = sorted({s: p for s, p in zip(shas, prompts) if s not in rows}.items())
    if missing:
        lm = models.shared(model_name, dtype=dtype, device=device)
        new = embed(lm, [p for _, p in missing], norm=norm, progress=progress)
        meta = {"model": lm.fingerprint, "dtype": models.dtype_name(dtype), "norm": norm,
                "options": options or {}, "group": group, "version": EMBED_VERSION}
        with cache.file_lock(folder / f".{group}.lock"):
            rows = _read_store(path)  # another process may have added rows meanwhile
            rows.update({s: h for (s, _), h in zip(missing, new)})
            _write_store(path, rows, meta)
            if not (folder / "meta.json").exists():
                cache.write_json_atomic(folder / "meta.json", {k: v for k, v in meta.items() if k != "group"})
    return np.stack([rows[s] for s in shas]).astype(np.float32, copy=False), len(missing)


@dataclass(frozen=True)
class BehaviorEmbeddings:
    """Embeddings of a behaviour's statements with their labels.

    ``labels[k]`` is +1 when the preferred answer of record ``indices[k]`` is " Yes" and -1 when it is
    " No" (after ``flip``); ``positive[k]`` says whether the statement is positive (its matching
    answer is " Yes"), whatever the direction.
    """

    behavior: str
    model: str
    indices: np.ndarray
    h: np.ndarray
    labels: np.ndarray
    positive: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    computed: int = 0  # rows computed by this call (the rest came from the cache)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.indices)


def behavior_embeddings(model_name: str, behavior: str, indices: Sequence[int] | None = None, *,
                        norm: str = "model", dtype: Any = "auto", trailing_newline: bool = False,
                        chat_template: bool = False, flip: bool = False, device: Any = None,
                        progress: bool = True) -> BehaviorEmbeddings:
    """h(x) of a behaviour's statements (all, or those at ``indices``) with their labels, cached.

    Prompts come from ``data.persona_pairs`` (the ``question`` verbatim by default); ``flip`` changes
    the labels only. Use ``data.stratified_sample`` for nested samples that share cached rows.
    ``dtype="auto"`` (default) computes in ``hardware.auto_dtype()``: bfloat16 where the hardware runs
    it natively and faster (AMX: 3-4x; rows agree with float32 to about 2 %), else float32. The rows are
    float32 either way, and the dtype used is in ``options["dtype"]`` and in the cache key.
    """
    t0 = time.perf_counter()
    model_name = models.validate_name(model_name)
    behavior = data.validate_behaviors([behavior])[0]
    dtype = models.dtype_name(dtype, device)
    tokenizer = None
    if chat_template:
        tokenizer = models.shared(model_name, dtype=dtype, device=device).tokenizer
    pairs = data.persona_pairs(behavior, indices, flip=flip, trailing_newline=trailing_newline,
                               chat_template=chat_template, tokenizer=tokenizer)
    if not pairs:
        raise EmbedError(f"{behavior}: the index list is empty: nothing to embed")
    options = {"trailing_newline": trailing_newline, "chat_template": chat_template}
    h, computed = cached_embeddings(model_name, [p.prompt for p in pairs], group=behavior, dtype=dtype,
                                    norm=norm, options=options, device=device, progress=progress)
    recs = data.load_persona(behavior)
    return BehaviorEmbeddings(
        behavior=behavior, model=model_name,
        indices=np.array([p.index for p in pairs], dtype=np.int64), h=h,
        labels=np.array([p.label for p in pairs], dtype=np.int8),
        positive=np.array([recs[p.index].positive for p in pairs], dtype=bool),
        options={**options, "norm": norm, "dtype": models.dtype_name(dtype), "flip": flip},
        computed=computed, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------
# Per-position features of multi-token responses (HH-RLHF)
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResponseFeatures:
    """Features that predict each response token, packed over sequences.

    Rows ``offsets[k]:offsets[k+1]`` belong to sequence k: row t is the final-layer state (after the
    final norm) at the position just before response token t, and ``targets`` holds that token's id.
    So ``log pi(y|x) = sum_t log_softmax(W_U h_t)[y_t]`` over a sequence's rows.
    """

    h: np.ndarray  # (N, d) float32
    targets: np.ndarray  # (N,) int64
    offsets: np.ndarray  # (n + 1,) int64
    prompt_tokens: np.ndarray  # (n,) prompt length used (after truncation)
    truncated: np.ndarray  # (n,) bool: prompt or response was cut

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sequence(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[k], self.offsets[k + 1]
        return self.h[a:b], self.targets[a:b]


def _special_prefix(tokenizer) -> list[int]:
    """The tokens the tokenizer puts before a text by default (e.g. Gemma's <bos>)."""
    with_sp = tokenizer("x")["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    n = len(with_sp) - len(without)
    return list(with_sp[:n]) if n > 0 and with_sp[n:] == without else []


def response_features(lm: models.LoadedModel, prompts: Sequence[str], responses: Sequence[str], *,
                      norm: str = "model", append_eos: bool = True, max_prompt_tokens: int | None = None,
                      max_response_tokens: int | None = None, max_batch_tokens: int | None = None,
                      progress: bool = True) -> ResponseFeatures:
    """Per-position features of each response after its prompt (see :class:`ResponseFeatures`).

    Prompt and response are tokenised separately and concatenated, as TRL's DPO does: the prompt with
    the tokenizer's special prefix, the response without, plus EOS when ``append_eos``. A prompt
    longer than ``max_prompt_tokens`` keeps its last tokens; a response keeps its first
    ``max_response_tokens``.
    """
    import torch
    from tqdm import tqdm

    check_norm(norm)
    prompts = _check_prompts(prompts)
    responses = _check_prompts(responses, "response")
    if len(prompts) != len(responses):
        raise EmbedError(f"{len(prompts)} prompts but {len(responses)} responses")
    tok = lm.tokenizer
    prefix = _special_prefix(tok)
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tok(responses, add_special_tokens=False)["input_ids"]
    seqs, plen, rlen, cut = [], [], [], []
    for p, r in zip(p_ids, r_ids):
        c = False
        if max_prompt_tokens is not None and len(p) > max_prompt_tokens:
            p, c = p[-max_prompt_tokens:], True
        if append_eos and tok.eos_token_id is not None:
            r = list(r) + [tok.eos_token_id]
        if max_response_tokens is not None and len(r) > max_response_tokens:
            r, c = r[:max_response_tokens], True
        p = prefix + list(p)
        seqs.append(p + list(r))
        plen.append(len(p))
        rlen.append(len(r))
        cut.append(c)
    offsets = np.concatenate([[0], np.cumsum(rlen)]).astype(np.int64)
    h_out = np.empty((int(offsets[-1]), lm.d_model), dtype=np.float32)
    targets = np.concatenate([np.asarray(s[n:], dtype=np.int64) for s, n in zip(seqs, plen)])
    pad = _pad_id(tok)
    device = lm.device
    lengths = [len(s) for s in seqs]
    with torch.inference_mode(), tqdm(total=len(seqs), desc=f"response features ({lm.name})", unit="seq",
                                      disable=not progress or len(seqs) < 16, leave=False) as bar:
        tokens_cap, rows_cap = batch_limits(device)
        for batch in _batches(lengths, max_batch_tokens or tokens_cap, rows_cap):
            x = _pad_right([seqs[i] for i in batch], pad).to(device)
            hidden = lm.base(input_ids=x, use_cache=False).last_hidden_state
            for r, i in enumerate(batch):
                pos = torch.arange(plen[i] - 1, plen[i] - 1 + rlen[i], device=device)
                h_out[offsets[i]:offsets[i + 1]] = _finish(lm, hidden[r, pos], norm)
            bar.update(len(batch))
    return ResponseFeatures(h_out, targets, offsets, np.asarray(plen, dtype=np.int64), np.asarray(cut))


def cached_response_features(model_name: str, prompts: Sequence[str], responses: Sequence[str], *,
                             dtype: Any = "auto", norm: str = "model", append_eos: bool = True,
                             max_prompt_tokens: int | None = None, max_response_tokens: int | None = None,
                             device: Any = None, progress: bool = True) -> ResponseFeatures:
    """:func:`response_features` through a content-addressed file cache (one file per request).

    The key digests the model fingerprint, dtype, every option and each (prompt, response) text.
    """
    from safetensors.numpy import save_file

    prompts = _check_prompts(prompts)
    responses = _check_prompts(responses, "response")
    dtype = models.dtype_name(dtype, device)
    opts = {"norm": check_norm(norm), "append_eos": append_eos, "max_prompt_tokens": max_prompt_tokens,
            "max_response_tokens": max_response_tokens}
    key = cache.digest("response-features", EMBED_VERSION, models.fingerprint(model_name),
                       models.dtype_name(dtype), opts, [_sha(p).hex() for p in prompts],
                       [_sha(r).hex() for r in responses])
    path = cache.user_cache_dir("response_features") / f"{key[:40]}.safetensors"
    names = ("h", "targets", "offsets", "prompt_tokens", "truncated")
    t = _load_checked(path, "response-feature cache")
    if t is not None and all(n in t for n in names):
        return ResponseFeatures(*(t[n] for n in names))
    lm = models.shared(model_name, dtype=dtype, device=device)
    out = response_features(lm, prompts, responses, progress=progress, **opts)
    tensors = {n: np.ascontiguousarray(getattr(out, n)) for n in names}
    with cache.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"sha256": tensors_digest(tensors)})
    return out
