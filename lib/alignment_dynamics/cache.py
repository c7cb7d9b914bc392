"""Content addressing and atomic files: the two rules every cache of the book follows.

* A cache entry is addressed by the SHA-256 of everything it depends on (:func:`digest`), so a changed
  input can never return a stale entry.
* Every file is written atomically (:func:`atomic_path`): to a temporary name in the same folder,
  flushed to disk, then renamed over the target. A process killed at any moment (``kill -9``) leaves
  either the old file or the new one, never half of one; left-over temporary files are ignored and
  swept by :func:`sweep_temporaries`.

The user cache (converted models, embeddings) lives in ``$ALIGNMENT_DYNAMICS_CACHE`` or else the
platform's user cache folder (``platformdirs``: ``~/.cache/alignment_dynamics`` on Linux); it is never
inside the repository. Writers of one entry serialise on a ``filelock.FileLock`` (:func:`file_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

CACHE_ENV = "ALIGNMENT_DYNAMICS_CACHE"
APP_NAME = "alignment_dynamics"  # the folder platformdirs names in the user cache
_TMP_MARK = ".tmp-"


def user_cache_dir(*parts: str) -> Path:
    """The user cache folder (created), optionally a sub-folder of it.

    ``$ALIGNMENT_DYNAMICS_CACHE`` wins; otherwise ``platformdirs.user_cache_dir("alignment_dynamics")``:
    on Linux ``$XDG_CACHE_HOME/alignment_dynamics`` or ``~/.cache/alignment_dynamics`` (an
    ``$XDG_CACHE_HOME`` that is not an absolute path is ignored, as the XDG specification says), on
    macOS ``~/Library/Caches/alignment_dynamics``.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir(APP_NAME))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte form that digests are taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_jsonable)


def _jsonable(obj: Any):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key")


def digest(*parts: Any) -> str:
    """SHA-256 hex digest of a sequence of parts (bytes, str or JSON-able objects).

    Each part is length-prefixed, so ``digest("ab", "c") != digest("a", "bc")``.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            b = part
        elif isinstance(part, str):
            b = part.encode("utf-8")
        else:
            b = canonical_json(part).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def stat_key(path: str | os.PathLike) -> list:
    """What identifies one version of a file without reading it: absolute path, device, inode, size,
    mtime and ctime (ns). ``ctime`` cannot be set back by a program (``os.utime`` restoring an mtime
    sets it to now), so a file rewritten in place with its mtime restored gets another key."""
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_sha256_cached(path: str | os.PathLike) -> str:
    """:func:`file_sha256`, remembered in the user cache by :func:`stat_key` (path, inode, size,
    mtime, ctime).

    Hashing a 250 MB model file takes about a second; builds ask for it on every run. The memo holds
    its own key and a digest of (key, value): a memo edited by hand (zeros written into it) or left
    by another version of the file is ignored and the file hashed again. A memo is only ever a
    shortcut to hashing this very file: where a checksum is pinned, the caller compares the value
    with the pinned one (:func:`verify_file`), never the memo's presence.
    """
    p = Path(path).resolve()
    key = stat_key(p)
    name = digest("sha256-memo-v2", key)
    memo = user_cache_dir("sha256") / f"{name}.json"
    try:
        obj = json.loads(memo.read_text())
        value = obj["sha256"]
        if obj["key"] == key and obj["check"] == digest(name, key, value) and len(value) == 64:
            return value
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = file_sha256(p)
    if stat_key(p) == key:  # not changed while we read it
        try:
            write_json_atomic(memo, {"key": key, "sha256": value, "check": digest(name, key, value)})
        except OSError:  # a read-only cache: the memo is only a shortcut
            pass
    return value


def verify_file(path: str | os.PathLike, expected: str) -> str | None:
    """``None`` when the file's SHA-256 is ``expected``, else a one-line reason."""
    try:
        got = file_sha256_cached(path)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    return None if got == expected else f"SHA-256 {got[:16]}... differs from the recorded {expected[:16]}..."


def report_corrupt(what: str, path: str | os.PathLike, reason: str, action: str = "rebuilding it") -> None:
    """Say in one line (on stderr) that a cache entry is corrupt and what is done about it."""
    print(f"cache: {what} {path} is corrupt ({reason}); {action}", file=sys.stderr, flush=True)


def tree_digest(root: str | os.PathLike, *, exclude_dirs: tuple[str, ...] = ("__pycache__",),
                exclude_suffixes: tuple[str, ...] = (".pyc",)) -> str:
    """SHA-256 over the sorted (relative path, bytes) pairs of every file under ``root``."""
    root = Path(root)
    h = hashlib.sha256()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs and not d.startswith("."))
        for name in filenames:
            if name.endswith(exclude_suffixes) or _TMP_MARK in name:
                continue
            files.append(Path(dirpath) / name)
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        rel = f.relative_to(root).as_posix().encode()
        data = f.read_bytes()
        h.update(len(rel).to_bytes(8, "little") + rel)
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    Works for files and for folders (for a folder, the old one is moved aside and removed after the
    rename). On an exception the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    tmp = target.parent / f"{target.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"atomic_path: nothing was written to {tmp}")
            _fsync(tmp)
            if tmp.is_dir() and target.exists():
                old = target.parent / f"{target.name}{_TMP_MARK}old-{uuid.uuid4().hex[:12]}"
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            if exc.errno in DISK_ERRNOS:
                raise DiskError(target, exc) from exc
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


#: errno values that mean "this place cannot be written": read-only, no permission, full, over quota.
DISK_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


class DiskError(OSError):
    """A file that cannot be written because its folder is read-only, not ours, or full.

    ``str()`` is one line naming the path and the cause.
    """

    def __init__(self, path: str | os.PathLike, cause: OSError):
        super().__init__(cause.errno, cause.strerror, str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        hint = {errno.ENOSPC: "free some space or use another folder",
                errno.EDQUOT: "free some space or use another folder"}.get(self.errno,
                                                                          "make it writable or use another folder")
        return f"cannot write {self.path}: {self.strerror} ({hint})"


def disk_error(exc: BaseException) -> "DiskError | None":
    """``exc`` (or an exception it was raised from) as a :class:`DiskError`, if it is one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskError):
            return exc
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return DiskError(exc.filename or "(unknown path)", exc)
        exc = exc.__cause__ or exc.__context__
    return None


def _fsync(path: Path) -> None:
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        _fsync_dir(path)
    else:
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys) to ``target`` atomically."""
    text = json.dumps(obj, sort_keys=True, indent=indent, default=_jsonable, allow_nan=False)
    return write_text_atomic(target, text + "\n")


def sweep_temporaries(root: str | os.PathLike) -> int:
    """Remove temporaries left by killed writers under ``root``; return how many were removed."""
    root = Path(root)
    if not root.exists():
        return 0
    n = 0
    for p in sorted(root.rglob(f"*{_TMP_MARK}*"), key=lambda q: len(q.parts), reverse=True):
        if not p.exists():
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary of :func:`atomic_path`."""
    return _TMP_MARK in Path(path).name


def scratch_dir(prefix: str = "ad-") -> Path:
    """A fresh temporary folder (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# ---------------------------------------------------------------------------------------------------
# data / models / embeddings: a file lock for writers that must not run twice at once
# ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``filelock.FileLock`` on ``path`` (created, with its folder) for the ``with``
    block; a second holder waits.

    Serialises expensive writers of one entry (a model conversion, an embedding store) across
    processes. On Unix it is an ``flock``, which the kernel releases when its holder dies, even by
    ``kill -9``, so a killed writer never blocks the next run.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def sweep_temporaries_of(target: str | os.PathLike) -> int:
    """Remove the temporaries :func:`atomic_path` left beside ``target`` (call it holding the target's lock)."""
    target = Path(target)
    if not target.parent.exists():
        return 0
    n = 0
    for p in target.parent.glob(f"{target.name}{_TMP_MARK}*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


class LockedError(RuntimeError):
    """Another process holds the lock (the message names it)."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` for the ``with`` block, with the holder
    (pid, host, start time, command) written into the file; if another process holds it, raise
    :class:`LockedError` naming that holder. A holder killed even by ``kill -9`` releases it.
    """
    import fcntl
    import platform
    import time

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise DiskError(path, exc) from exc
        raise
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "(a process that has not written its name yet)"
            raise LockedError(f"{what} is in use by another build: {holder}. Wait for it to finish, stop it, "
                              f"or use another build folder (--build-dir / BUILD_DIR=...)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {platform.node()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{' '.join(sys.argv)[:300]}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()
