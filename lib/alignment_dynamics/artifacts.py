"""Stored results (``artifacts/``): JSON files written atomically beside a ``manifest.json`` that records,
per file, its checksum and how, when and where it was made; read back with the checksum verified.

The full-data reference (:mod:`.fullref`) and the controlled misalignment study
(:mod:`.wholemodel.study`) are written and read through these functions. ``artifacts/MANIFEST.json`` lists
every committed file (``tests/test_artifacts.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from .validate import InputError


class ArtifactError(InputError):
    """A stored result that is missing, corrupted or of another format."""


def root() -> Path:
    """``artifacts/`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "artifacts"


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def commit() -> str:
    """The checkout's commit, with ``+dirty lib`` when the library has uncommitted changes."""
    try:
        top = Path(__file__).resolve().parents[2]
        c = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(top), "status", "--porcelain", "lib"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return c.stdout.strip() + ("+dirty lib" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(out_dir: str | Path, bodies: Mapping[str, dict], *, fmt: int, command: str, seconds: float,
          commit_id: str | None = None, extra: Mapping[str, dict] | None = None) -> list[Path]:
    """Write each ``bodies[name]`` as ``out_dir/name`` (JSON, NaN refused) and record it in
    ``out_dir/manifest.json`` (format ``fmt``; entries of other files already there are kept).

    Each entry: sha256, command, commit (``commit_id``: the code's commit when the computation started),
    UTC date, seconds per file, the machine (``hardware.summary()``), Python, and ``extra[name]``. Every
    file is written atomically, then the manifest, so a half-written artefact never replaces a good one.
    """
    from . import cache, hardware

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mpath = out_dir / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {"format": fmt, "files": {}}
    if manifest.get("format") != fmt:
        raise ArtifactError(f"{mpath} has format {manifest.get('format')}, this library writes {fmt}")
    texts = {name: json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n" for name, body in bodies.items()}
    entry = {"command": command, "commit": commit_id or commit(),
             "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "seconds": round(seconds / max(len(bodies), 1), 1), "machine": hardware.summary(),
             "python": platform.python_version()}
    written = []
    for name, text in texts.items():
        path = out_dir / name
        with cache.atomic_path(path) as tmp:
            Path(tmp).write_text(text)
        manifest["files"][name] = {"sha256": sha256(path), **entry, **dict((extra or {}).get(name, {}))}
        written.append(path)
    with cache.atomic_path(mpath) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    return written + [mpath]


def listed(directory: str | Path) -> list[str]:
    """The file names the manifest in ``directory`` lists ([] without one)."""
    mpath = Path(directory) / "manifest.json"
    if not mpath.exists():
        return []
    return sorted(json.loads(mpath.read_text()).get("files", {}))


def load(directory: str | Path, name: str, *, fmt: int, make: str) -> tuple[dict, dict[str, Any]]:
    """``(body, manifest entry)`` of ``directory/name``, its checksum checked against the manifest and its
    format against ``fmt``. ``make`` is the command that makes it (said in the errors)."""
    d = Path(directory)
    mpath, path = d / "manifest.json", d / name
    if not mpath.exists():
        raise ArtifactError(f"no manifest at {mpath}; make the artefact with `{make}`")
    entry = json.loads(mpath.read_text()).get("files", {}).get(name)
    if entry is None or not path.exists():
        raise ArtifactError(f"no {name} in {d}; the manifest lists {listed(d)} (make it with `{make}`)")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ArtifactError(f"{path}: checksum {digest[:12]}... does not match the manifest's "
                            f"{entry['sha256'][:12]}...: the file was changed or corrupted")
    body = json.loads(path.read_text())
    if body.get("format") != fmt:
        raise ArtifactError(f"{path}: format {body.get('format')} differs from this library's ({fmt}); "
                            f"make it again with `{make}`")
    _log_read(path)
    return body, entry


def describe(entries: Mapping[str, dict]) -> str:
    """Where stored numbers come from, in words: per file (``entries``: name -> manifest entry), the
    machine's CPU and threads, the dtype, minutes, date and commit."""
    if not entries:
        return "nothing stored"
    parts = []
    for name, e in entries.items():
        machine = e.get("machine", {})
        parts.append(f"{name}: {machine.get('cpu', 'unknown CPU')}, {machine.get('torch_threads', '?')} threads, "
                     f"{e.get('dtype', '?')}, {float(e.get('seconds', float('nan'))) / 60:.0f} min, "
                     f"{str(e.get('date_utc', '?'))[:10]}, commit {str(e.get('commit', '?'))[:7]}")
    return "; ".join(parts)


def stems(directory: str | Path) -> list[str]:
    """The names of the JSON files the manifest in ``directory`` lists, without ``.json`` (e.g. the
    models a study covers)."""
    return [n[:-5] for n in listed(directory) if n.endswith(".json")]


def read(directory: str | Path, name: str, *, fmt: int, make: str, error: type[Exception], what: str):
    """:func:`load`, with an :class:`ArtifactError` raised again as ``error`` saying ``no usable <what>``
    (the caller's own error type, so a chapter reports it in its own words)."""
    try:
        return load(directory, name, fmt=fmt, make=make)
    except ArtifactError as e:
        raise error(f"no usable {what}: {e}") from None


#: The environment variable naming the file where :func:`load` records each artefact it reads; the
#: build sets it per chapter to check that a chapter reading artefacts declares it (its cache key then
#: includes ``artifacts/MANIFEST.json``, so a changed artefact re-runs the chapter).
READ_LOG_ENV = "ALIGNMENT_DYNAMICS_ARTIFACT_LOG"


def _log_read(path: Path) -> None:
    log = os.environ.get(READ_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{path}\n")


def reads_logged(log: str | Path) -> list[str]:
    """The artefact files recorded in ``log`` (in order, without repeats; [] without a log)."""
    p = Path(log)
    if not p.exists():
        return []
    return list(dict.fromkeys(line for line in p.read_text(encoding="utf-8").splitlines() if line))
