"""The data: Anthropic persona evaluations and the HH-RLHF harmless-base test split.

Where the data comes from (:func:`locate`), in this order:

1. ``$ALIGNMENT_DYNAMICS_DATA``: a folder holding ``anthropic-persona/`` and ``hh-rlhf/``;
2. ``../shared/data/`` beside the checkout;
3. the user cache (``<cache>/data/<dataset>/``), into which the pinned upstream files are downloaded
   (from ``$ALIGNMENT_DYNAMICS_DATA_URL/<dataset>/<file>`` when that is set; tests use it).

Every file, found or downloaded, is checked against the SHA-256 sums embedded in the package
(``data_sums/<dataset>.SHA256SUMS``, copied from the data's own ``SHA256SUMS``). Nothing is downloaded
without a checksum, and a missing dataset is an error naming the three ways to provide it.

Persona records keep the official code's conventions [official code]: the prompt is the record's
``question`` verbatim; the preferred answer is ``answer_matching_behavior`` (``" Yes"`` or ``" No"``)
and the rejected one the other (``flip=True`` swaps them); the behaviour names sort by code point
(``sorted()``; uppercase before lowercase), as the official code's 0-indexed list does. The official
90/10 split shuffles ``list(range(n))`` with ``random.seed(1234)`` and takes the first ``int(0.9 n)``
indices for training (:func:`split_indices`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from . import cache
from .validate import ConfigError, suggest

DATASETS: tuple[str, ...] = ("anthropic-persona", "hh-rlhf")
DATA_ENV = "ALIGNMENT_DYNAMICS_DATA"
URL_ENV = "ALIGNMENT_DYNAMICS_DATA_URL"
OFFLINE_ENV = "ALIGNMENT_DYNAMICS_OFFLINE"

#: Pinned upstream commits and the URL of each file (``{rel}`` is the file's path in the dataset).
UPSTREAM: dict[str, str] = {
    "anthropic-persona": "https://raw.githubusercontent.com/anthropics/evals/"
                         "84fcc677e52e1902d696c32cd1a6b663e70d3993/persona/{rel}",
    "hh-rlhf": "https://media.githubusercontent.com/media/anthropics/hh-rlhf/"
               "354e5c3cb8960630860dd5774a6ac2a58313bf4d/{rel}",
}

OFFICIAL_SEED = 1234
TRAIN_FRACTION = 0.9
PERSONA_FIELDS = ("question", "statement", "label_confidence", "answer_matching_behavior",
                  "answer_not_matching_behavior")
YES, NO = " Yes", " No"
ASSISTANT = "\n\nAssistant:"


class DataError(RuntimeError):
    """A data file that is missing, corrupt or malformed."""


class DataMissingError(DataError, FileNotFoundError):
    """A dataset (or one of its files) that cannot be found or downloaded."""


class ChecksumError(DataError):
    """A file whose SHA-256 differs from the pinned one."""


class RecordError(DataError):
    """A malformed JSONL line or record (the message names the file and line)."""


class UnknownBehaviorError(ConfigError):
    """A persona behaviour name that does not exist."""


# ---------------------------------------------------------------------------------------------------
# Checksums, fingerprints and where the files are
# ---------------------------------------------------------------------------------------------------

def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; valid: {list(DATASETS)}.{suggest(dataset, DATASETS)}")
    return dataset


def _sums_path(dataset: str) -> Path:
    return Path(__file__).with_name("data_sums") / f"{_check_dataset(dataset)}.SHA256SUMS"


@functools.lru_cache(maxsize=None)
def expected_sums(dataset: str) -> dict[str, str]:
    """The pinned SHA-256 of every file of ``dataset`` (relative path -> hex), embedded in the package."""
    out: dict[str, str] = {}
    for line in _sums_path(dataset).read_text().splitlines():
        if line.strip():
            sha, rel = line.split(None, 1)
            out[rel.strip().lstrip("*")] = sha
    return out


def fingerprint(dataset: str) -> str:
    """The SHA-256 of the dataset's embedded ``SHA256SUMS`` file (equal to ``sha256sum SHA256SUMS``).

    Cheap: it reads one small file of the package. The build keys every chapter that reads the data
    with it.
    """
    return hashlib.sha256(_sums_path(dataset).read_bytes()).hexdigest()


def _checkout_data_dir() -> Path | None:
    """``<checkout>/../shared/data`` when this package runs from a checkout of the book."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "_toc.yml").exists():
        checkout = Path(__file__).parents[2]  # a worktree reached through a symlink
        if not (checkout / "_toc.yml").exists():
            return None
    return checkout.parent / "shared" / "data"


def _root(dataset: str) -> tuple[Path, str]:
    """The folder that provides ``dataset`` and how it was found ("env", "checkout" or "cache").

    ``$ALIGNMENT_DYNAMICS_DATA``, when set, is the only place looked at: a missing folder, an empty
    one or one without ``<dataset>/`` is an error (never a silent fall-back to another copy).
    """
    _check_dataset(dataset)
    env = os.environ.get(DATA_ENV)
    if env is not None and env.strip() == "":
        raise DataMissingError(f"{DATA_ENV} is set but empty; unset it, or set it to a folder holding "
                               f"{' and '.join(repr(d + '/') for d in DATASETS)}")
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise DataMissingError(f"{DATA_ENV}={env} is not a folder ({'it is a file' if folder.exists() else 'it does not exist'}); "
                                   f"set it to a folder holding {' and '.join(repr(d + '/') for d in DATASETS)}, or "
                                   f"unset it to use ../shared/data or the download cache")
        if not (folder / dataset).is_dir():
            held = sorted(p.name for p in folder.iterdir())[:8]
            raise DataMissingError(f"{DATA_ENV}={env} has no {dataset + '/'} folder (it holds {held or 'nothing'}); "
                                   f"add it there, or unset {DATA_ENV} to use ../shared/data or the download cache")
        if not any((folder / dataset).iterdir()):
            raise DataMissingError(f"{DATA_ENV}={env}: the folder {folder / dataset} is empty; put the "
                                   f"{dataset!r} files there, or unset {DATA_ENV}")
        return folder / dataset, "env"
    shared = _checkout_data_dir()
    if shared is not None and (shared / dataset).is_dir():
        return shared / dataset, "checkout"
    return cache.user_cache_dir("data") / dataset, "cache"


def _how_to_provide(dataset: str) -> str:
    env = os.environ.get(DATA_ENV)
    shared = _checkout_data_dir()
    return (f"Provide the dataset {dataset!r} in one of three ways: (1) set {DATA_ENV} to a folder holding "
            f"'{dataset}/' (now: {env or 'unset'}); (2) put it at ../shared/data/{dataset}/ beside the "
            f"checkout ({shared / dataset if shared else 'no checkout found'}); (3) let the library download "
            f"the pinned upstream files into {cache.user_cache_dir('data') / dataset} (needs the internet"
            f"{'; ' + OFFLINE_ENV + ' is set' if os.environ.get(OFFLINE_ENV) else ''}).")


def locate(dataset: str) -> Path:
    """The folder holding ``dataset``: ``$ALIGNMENT_DYNAMICS_DATA``, then ``../shared/data/``, then
    the user cache, downloading the pinned files that are missing there (each checked).
    """
    root, how = _root(dataset)
    if how == "cache":
        missing = [rel for rel in expected_sums(dataset) if not (root / rel).exists()]
        if missing:
            _download(dataset, missing, root)
    return root


def file_path(dataset: str, rel: str) -> Path:
    """The checked local path of one file of ``dataset`` (downloaded into the user cache if needed).

    A corrupt file in the download cache is reported in one line, removed and downloaded again; a
    corrupt file in your own folder or the shared one is an error saying how to restore it (the
    library never deletes or writes there).
    """
    sums = expected_sums(dataset)
    if rel not in sums:
        raise DataMissingError(f"{rel!r} is not a file of the dataset {dataset!r} (not in its SHA256SUMS)")
    root, how = _root(dataset)
    path = root / rel
    if not path.exists():
        if how != "cache":
            raise DataMissingError(f"{path} is missing from the {dataset!r} folder found via "
                                   f"{'$' + DATA_ENV if how == 'env' else '../shared/data'} ({root}). "
                                   + _how_to_provide(dataset))
        _download(dataset, [rel], root)
    try:
        verify(path, sums[rel], dataset=dataset, source=how)
    except ChecksumError as exc:
        if how != "cache":
            raise
        cache.report_corrupt("downloaded data file", path, str(exc).split(": ", 1)[-1].split(". ")[0],
                             "downloading it again")
        path.unlink(missing_ok=True)
        _download(dataset, [rel], root)
        verify(path, sums[rel], dataset=dataset, source=how)
    return path


_VERIFIED: dict[tuple, str] = {}

#: What to do about a file whose checksum is wrong, by where it was found.
_REMEDY = {
    "env": "It is in your own data folder ({env}): restore it from the pinned upstream ({upstream}) or from a "
           "good copy; the library never changes that folder. Or unset {env} to use ../shared/data or the "
           "download cache.",
    "checkout": "It is in the shared data folder ../shared/data beside the checkout, which other checkouts use "
                "too: restore it there from the pinned upstream ({upstream}) or a good copy (do not just delete it), "
                "or set {env} to a folder of your own.",
    "cache": "It is in the download cache: delete it to have it downloaded again.",
    "": "Restore it from the pinned upstream ({upstream}).",
}


def verify(path: Path, expected: str, *, dataset: str = "", source: str = "") -> Path:
    """Check a file's SHA-256 against ``expected`` (remembered in this process per path, inode, size,
    mtime and ctime). ``source`` ("env", "checkout", "cache") chooses the advice of the error.
    """
    key = tuple(cache.stat_key(path))
    got = _VERIFIED.get(key)
    if got is None:
        got = cache.file_sha256(path)
        _VERIFIED[key] = got
    if got != expected:
        upstream = UPSTREAM.get(dataset, "").format(rel="") or "the dataset's upstream"
        remedy = _REMEDY.get(source, _REMEDY[""]).format(upstream=upstream, env=DATA_ENV)
        raise ChecksumError(
            f"{path}: SHA-256 {got} does not match the pinned {expected} "
            f"(data_sums/{dataset or '?'}.SHA256SUMS of the package). The file is corrupt or another version. "
            + remedy)
    return path


def _url(dataset: str, rel: str) -> str:
    base = os.environ.get(URL_ENV)
    if base:
        return f"{base.rstrip('/')}/{dataset}/{quote(rel)}"
    return UPSTREAM[dataset].format(rel=quote(rel))


def _download(dataset: str, rels: Sequence[str], root: Path) -> None:
    """Download ``rels`` into ``root``, each checked against its pinned SHA-256 before it is kept."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    if os.environ.get(OFFLINE_ENV):
        raise DataMissingError(f"the dataset {dataset!r} is not available locally and downloads are off. "
                               + _how_to_provide(dataset))
    sums = expected_sums(dataset)
    for rel in tqdm(list(rels), desc=f"downloading {dataset}", unit="file", disable=len(rels) < 3):
        target = root / rel
        url = _url(dataset, rel)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, cache.atomic_path(target) as tmp:
                h = hashlib.sha256()
                with open(tmp, "wb") as out:
                    while block := resp.read(1 << 20):
                        h.update(block)
                        out.write(block)
                if h.hexdigest() != sums[rel]:
                    raise ChecksumError(f"downloaded {url}: SHA-256 {h.hexdigest()} does not match the pinned "
                                        f"{sums[rel]}; nothing was kept")
        except (urllib.error.URLError, OSError) as exc:
            raise DataMissingError(f"could not download {url}: {exc}. " + _how_to_provide(dataset)) from exc


# ---------------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------------

def read_jsonl(path: str | os.PathLike, *, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The records of a JSONL file (``.gz`` too), each a dict with the ``required`` fields.

    A line that is not a JSON object, or lacks a field, is a :class:`RecordError` naming the file and
    the line number. Blank lines are skipped.
    """
    return [obj for _, obj in iter_jsonl(path, required=required)]


def iter_jsonl(path: str | os.PathLike, *, required: Sequence[str] = ()):
    """``(line number, record)`` of each non-blank line of a JSONL file (``.gz`` too); every problem
    (not gzip, not UTF-8, truncated, not JSON, not an object, a missing field) is a
    :class:`RecordError` naming the file and the line.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as raw:
            for lineno, bline in enumerate(raw, 1):
                try:
                    line = bline.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RecordError(f"{path}, line {lineno}: not UTF-8 text (byte {bline[exc.start:exc.start + 1]!r} "
                                      f"at column {exc.start + 1})") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"{path}, line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}): "
                                      f"{line[:80]!r}") from None
                if not isinstance(obj, dict):
                    raise RecordError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
                missing = [k for k in required if k not in obj]
                if missing:
                    raise RecordError(f"{path}, line {lineno}: the record lacks the field(s) {missing}; "
                                      f"each record needs {list(required)}")
                yield lineno, obj
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        where = f"line {lineno + 1}" if lineno else "its start"
        raise RecordError(f"{path}: not a complete gzip file ({type(exc).__name__}: {exc}) at {where}; "
                          f"a .gz file must be gzip-compressed JSONL") from None


# ---------------------------------------------------------------------------------------------------
# Persona behaviours
# ---------------------------------------------------------------------------------------------------

def behaviors() -> list[str]:
    """The 135 persona behaviours in code-point order (``sorted()``: uppercase before lowercase).

    This is the official code's 0-indexed list: ``behaviors()[84]`` is
    ``okay-with-building-an-AI-with-different-goals-to-accomplish-its-task``.
    """
    return sorted(rel[: -len(".jsonl")] for rel in expected_sums("anthropic-persona") if rel.endswith(".jsonl"))


def behavior_index(name: str) -> int:
    """The official 0-based index of a behaviour."""
    return behaviors().index(validate_behaviors([name])[0])


def validate_behaviors(names: Iterable[str | int]) -> list[str]:
    """Behaviour names (or official indices) checked and returned as names.

    An unknown name is an :class:`UnknownBehaviorError` suggesting the closest valid names; an index
    outside 0–134 or a repeated behaviour is an error too.
    """
    valid = behaviors()
    known = set(valid)
    out: list[str] = []
    for name in names:
        if isinstance(name, int) and not isinstance(name, bool):
            if not 0 <= name < len(valid):
                raise UnknownBehaviorError(f"behaviour index {name} is out of range: valid indices are "
                                           f"0..{len(valid) - 1}")
            name = valid[name]
        if not isinstance(name, str) or name not in known:
            raise UnknownBehaviorError(
                f"unknown behaviour {name!r}.{suggest(name, valid)} There are {len(valid)} behaviours; "
                f"list them with alignment_dynamics.data.behaviors().")
        if name in out:
            raise UnknownBehaviorError(f"behaviour {name!r} is listed twice")
        out.append(name)
    return out


@dataclass(frozen=True)
class PersonaRecord:
    """One persona statement (one JSONL line); ``index`` is its 0-based line number in the file."""

    behavior: str
    index: int
    question: str
    statement: str
    label_confidence: float
    answer_matching_behavior: str
    answer_not_matching_behavior: str

    @property
    def positive(self) -> bool:
        """A positive statement: the persona would say it (its matching answer is " Yes")."""
        return self.answer_matching_behavior == YES


def persona_file(behavior: str) -> Path:
    """The checked local path of a behaviour's JSONL file."""
    return file_path("anthropic-persona", f"{validate_behaviors([behavior])[0]}.jsonl")


def parse_persona(path: str | os.PathLike, behavior: str) -> tuple[PersonaRecord, ...]:
    """Parse a persona JSONL file; the answers must be " Yes" and " No" (either way round)."""
    out = []
    for i, (lineno, obj) in enumerate(iter_jsonl(path, required=PERSONA_FIELDS)):
        where = f"{path}, line {lineno}"
        m, n = obj["answer_matching_behavior"], obj["answer_not_matching_behavior"]
        if {m, n} != {YES, NO}:
            raise RecordError(f"{where}: expected the answers ' Yes' and ' No' (one each), got {m!r} / {n!r}")
        for fld in ("question", "statement"):
            if not isinstance(obj[fld], str) or not obj[fld].strip():
                raise RecordError(f"{where}: {fld!r} must be a non-empty string, got {obj[fld]!r:.60}")
        conf = obj["label_confidence"]
        if (isinstance(conf, bool) or not isinstance(conf, (int, float)) or not math.isfinite(conf)
                or not 0.0 <= conf <= 1.0):
            raise RecordError(f"{where}: 'label_confidence' must be a number in [0, 1], got {conf!r}")
        out.append(PersonaRecord(behavior, i, obj["question"], obj["statement"], float(conf), m, n))
    return tuple(out)


_PERSONA: dict[tuple, tuple[PersonaRecord, ...]] = {}


def load_persona(behavior: str) -> tuple[PersonaRecord, ...]:
    """All records of one behaviour, in file order (checked against the pinned SHA-256)."""
    path = persona_file(behavior)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _PERSONA:
        _PERSONA[key] = parse_persona(path, path.stem)
    return _PERSONA[key]


def build_prompt(question: str, *, trailing_newline: bool = False, chat_template: bool = False,
                 tokenizer: Any = None) -> str:
    """The model's input for a persona question.

    Default (the book's, and the official last-layer code's): the ``question`` verbatim.
    ``trailing_newline`` appends ``"\\n"`` (the official TRL runs do). ``chat_template`` wraps it as one
    user turn with the tokenizer's chat template and the generation prompt (SmolLM2's template adds
    its default system prompt); it needs ``tokenizer``.
    """
    if not isinstance(question, str) or not question:
        raise ValueError(f"a prompt needs a non-empty question string, got {question!r}")
    text = question + ("\n" if trailing_newline else "")
    if chat_template:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("chat_template=True needs a tokenizer that has a chat template "
                              f"(got {type(tokenizer).__name__ if tokenizer is not None else None})")
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


@dataclass(frozen=True)
class PersonaPair:
    """A preference pair: the prompt, the preferred (``chosen``) and the rejected answer."""

    behavior: str
    index: int
    prompt: str
    chosen: str
    rejected: str

    @property
    def label(self) -> int:
        """+1 when the preferred answer is " Yes", -1 when it is " No" (the ``s`` of the theory)."""
        return 1 if self.chosen == YES else -1


def _indices(n: int, indices: Sequence[int] | None, what: str) -> list[int]:
    if indices is None:
        return list(range(n))
    out = [int(i) for i in indices]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise IndexError(f"{what} has {n} records; indices {bad[:5]} are out of range")
    return out


def persona_pairs(behavior: str, indices: Sequence[int] | None = None, *, flip: bool = False,
                  trailing_newline: bool = False, chat_template: bool = False,
                  tokenizer: Any = None) -> list[PersonaPair]:
    """Preference pairs of a behaviour (all records, or those at ``indices``, in that order).

    Chosen = ``answer_matching_behavior``, rejected = the other; ``flip=True`` swaps them (the
    misalignment direction). The prompt comes from :func:`build_prompt`.
    """
    recs = load_persona(behavior)
    out = []
    for i in _indices(len(recs), indices, behavior):
        r = recs[i]
        chosen, rejected = r.answer_matching_behavior, r.answer_not_matching_behavior
        if flip:
            chosen, rejected = rejected, chosen
        prompt = build_prompt(r.question, trailing_newline=trailing_newline, chat_template=chat_template,
                              tokenizer=tokenizer)
        out.append(PersonaPair(r.behavior, r.index, prompt, chosen, rejected))
    return out


# ---------------------------------------------------------------------------------------------------
# Splits and samples
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Record indices of a train/test split (in the shuffled order)."""

    train: tuple[int, ...]
    test: tuple[int, ...]


def split_indices(n: int, *, seed: int = OFFICIAL_SEED, rng: random.Random | None = None,
                  train_fraction: float = TRAIN_FRACTION) -> Split:
    """The official split: shuffle ``list(range(n))`` with ``random.Random(seed)``; the first
    ``int(0.9 * n)`` indices are for training, the rest for testing.

    This is what ``random.seed(1234); random.shuffle(idx)`` does in the official code, without touching
    the global random state. Pass ``rng`` to continue an existing stream (:func:`two_behavior_split`).
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"a split needs at least 2 records, got n={n!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    rng = random.Random(seed) if rng is None else rng
    idx = list(range(n))
    rng.shuffle(idx)
    k = int(train_fraction * n)
    return Split(tuple(idx[:k]), tuple(idx[k:]))


def persona_split(behavior: str, *, seed: int = OFFICIAL_SEED) -> Split:
    """The official 90/10 split of one behaviour (indices into :func:`load_persona`)."""
    return split_indices(len(load_persona(behavior)), seed=seed)


def two_behavior_split(first: str, second: str, *, seed: int = OFFICIAL_SEED) -> tuple[Split, Split]:
    """The splits of the official two-behaviour script: one ``random`` stream seeded once, shuffling
    the first behaviour's indices and then, continuing the same stream, the second's.

    So the first behaviour's split equals its single-behaviour split, and the second's does not.
    """
    first, second = validate_behaviors([first, second])
    rng = random.Random(seed)
    a = split_indices(len(load_persona(first)), rng=rng)
    b = split_indices(len(load_persona(second)), rng=rng)
    return a, b


def stratified_sample(behavior: str, k_per_class: int | None, *, seed: int = OFFICIAL_SEED,
                      pool: Iterable[int] | None = None) -> list[int]:
    """``k_per_class`` positive and ``k_per_class`` negative statements of a behaviour, NESTED.

    Each class has one fixed permutation (seeded by ``seed``, the behaviour and the class); the sample
    is the first ``k`` of each class's permutation (restricted to ``pool`` when given, e.g. a split's
    training indices). So a larger sample contains every smaller one, and cached embeddings are
    reused across chapters. Returns sorted record indices; ``None`` takes every statement.
    """
    import numpy as np

    recs = load_persona(behavior)
    allowed = None if pool is None else set(_indices(len(recs), list(pool), behavior))
    out: list[int] = []
    for cls in (True, False):
        members = [r.index for r in recs if r.positive == cls]
        gen = np.random.default_rng([seed, zlib.crc32(behavior.encode()), int(cls)])
        ordered = [members[i] for i in gen.permutation(len(members))]
        if allowed is not None:
            ordered = [i for i in ordered if i in allowed]
        if k_per_class is None:
            out.extend(ordered)
            continue
        if not isinstance(k_per_class, int) or k_per_class < 1:
            raise ValueError(f"k_per_class must be a positive int or None, got {k_per_class!r}")
        if k_per_class > len(ordered):
            raise ValueError(f"{behavior}: asked for {k_per_class} {'positive' if cls else 'negative'} statements, "
                             f"only {len(ordered)} available")
        out.extend(ordered[:k_per_class])
    return sorted(out)


# ---------------------------------------------------------------------------------------------------
# HH-RLHF harmless-base (test split)
# ---------------------------------------------------------------------------------------------------

HH_FILE = "harmless-base/test.jsonl.gz"


@dataclass(frozen=True)
class HHPair:
    """One HH-RLHF preference pair: the shared prompt and the two continuations (verbatim)."""

    index: int  # 0-based line of the file
    prompt: str  # up to and including the last "\n\nAssistant:"
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Skipped:
    """A record that could not be split into prompt and responses, and why."""

    line: int  # 1-based line of the file
    reason: str


@dataclass(frozen=True)
class HHData:
    """The usable pairs and the records that were skipped (reported, never mangled)."""

    pairs: tuple[HHPair, ...]
    skipped: tuple[Skipped, ...]


def split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of two HH-RLHF dialogues.

    The prompt is the text up to and including the last ``"\\n\\nAssistant:"``, which must be the same
    in both; the responses are what follows. Raises ``ValueError`` saying why when that fails (no
    assistant turn, different prompts, an empty or identical response).
    """
    i, j = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if i < 0 or j < 0:
        raise ValueError(f"no {ASSISTANT!r} in the {'chosen' if i < 0 else 'rejected'} dialogue")
    p, q = chosen[: i + len(ASSISTANT)], rejected[: j + len(ASSISTANT)]
    if p != q:
        raise ValueError("the dialogues differ before their last assistant turn (different prompts)")
    a, b = chosen[i + len(ASSISTANT):], rejected[j + len(ASSISTANT):]
    if not a.strip() or not b.strip():
        raise ValueError(f"the {'chosen' if not a.strip() else 'rejected'} response is empty")
    if a == b:
        raise ValueError("the chosen and rejected responses are identical")
    return p, a, b


def load_hh_rlhf() -> HHData:
    """The HH-RLHF harmless-base test split as prompt / chosen / rejected, with skipped records."""
    path = file_path("hh-rlhf", HH_FILE)
    pairs, skipped = [], []
    for k, (lineno, obj) in enumerate(iter_jsonl(path, required=("chosen", "rejected"))):
        for fld in ("chosen", "rejected"):
            if not isinstance(obj[fld], str):
                raise RecordError(f"{path}, line {lineno}: {fld!r} must be a string, got {type(obj[fld]).__name__}")
        try:
            p, a, b = split_dialogue(obj["chosen"], obj["rejected"])
        except ValueError as exc:
            skipped.append(Skipped(k + 1, str(exc)))
            continue
        pairs.append(HHPair(k, p, a, b))
    return HHData(tuple(pairs), tuple(skipped))


def hh_rlhf_split(n: int, *, seed: int = OFFICIAL_SEED, train_fraction: float = TRAIN_FRACTION) -> Split:
    """A seeded train/test split of ``n`` HH-RLHF pairs (positions in ``load_hh_rlhf().pairs``).

    The same procedure as the persona split (:func:`split_indices`); the upstream test file is the
    only HH-RLHF data here, so we split it ourselves [project].
    """
    return split_indices(n, seed=seed, train_fraction=train_fraction)


# ---------------------------------------------------------------------------------------------------
# Summaries for the book
# ---------------------------------------------------------------------------------------------------

def fingerprint_table():
    """The fingerprint of each dataset, one (dataset, field) row each: the SHA-256 of its
    ``SHA256SUMS``, its number of files, where this machine finds it (``$ALIGNMENT_DYNAMICS_DATA``,
    ``../shared/data`` or the user cache) and its pinned upstream.
    """
    import pandas as pd

    how = {"env": f"${DATA_ENV}", "checkout": "../shared/data", "cache": "user cache (downloaded)"}
    rows = []
    for name in DATASETS:
        _, found = _root(name)
        fields = {"fingerprint (SHA-256 of SHA256SUMS)": fingerprint(name), "files": str(len(expected_sums(name))),
                  "found in": how[found], "upstream": UPSTREAM[name].format(rel="")}
        rows += [{"dataset": name, "field": k, "value": v} for k, v in fields.items()]
    return pd.DataFrame(rows).set_index(["dataset", "field"])


def label_confidence_by_class(names: Sequence[str] | None = None):
    """The label confidences of all positive and of all negative statements (two float arrays) of
    ``names`` (default: every behaviour).
    """
    import numpy as np

    pos, neg = [], []
    for name in validate_behaviors(names) if names is not None else behaviors():
        for r in load_persona(name):
            (pos if r.positive else neg).append(r.label_confidence)
    return np.asarray(pos), np.asarray(neg)


def example_statements(behavior: str, k: int, *, seed: int = OFFICIAL_SEED) -> tuple[list[str], list[str]]:
    """``k`` positive and ``k`` negative statements of a behaviour (the nested sample of
    :func:`stratified_sample`, in file order).
    """
    recs = load_persona(behavior)
    idx = stratified_sample(behavior, k, seed=seed)
    return ([recs[i].statement for i in idx if recs[i].positive],
            [recs[i].statement for i in idx if not recs[i].positive])


def persona_table():
    """One row per behaviour: official index, records, positive / negative counts, split sizes and
    the mean label confidence (a pandas DataFrame).
    """
    import pandas as pd

    rows = []
    for i, name in enumerate(behaviors()):
        recs = load_persona(name)
        pos = sum(r.positive for r in recs)
        split = split_indices(len(recs))
        rows.append({"index": i, "behavior": name, "records": len(recs), "positive": pos,
                     "negative": len(recs) - pos, "train": len(split.train), "test": len(split.test),
                     "mean_label_confidence": sum(r.label_confidence for r in recs) / len(recs)})
    return pd.DataFrame(rows)
