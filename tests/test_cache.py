"""Content addressing and atomic writes, including a writer killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alignment_dynamics import cache


def test_digest_is_length_prefixed_and_order_sensitive():
    assert cache.digest("ab", "c") != cache.digest("a", "bc")
    assert cache.digest({"a": 1, "b": 2}) == cache.digest({"b": 2, "a": 1})
    assert cache.digest(np.float64(1.5)) == cache.digest(1.5)
    assert len(cache.digest("x")) == 64


def test_digest_refuses_what_it_cannot_key():
    with pytest.raises(TypeError, match="cannot put object into a cache key"):
        cache.digest(object())


def test_tree_digest_sees_content_and_names(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"junk")
    d0 = cache.tree_digest(tmp_path)
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"other junk")
    assert cache.tree_digest(tmp_path) == d0, "bytecode must not change the key"
    (tmp_path / "a.py").write_text("x = 2\n")
    d1 = cache.tree_digest(tmp_path)
    assert d1 != d0
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    assert cache.tree_digest(tmp_path) != d1


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "x.json"
    cache.write_json_atomic(target, {"a": 1})
    cache.write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with cache.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_replaces_a_folder(tmp_path):
    target = tmp_path / "html"
    target.mkdir()
    (target / "old.html").write_text("old")
    with cache.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.html").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["html"]


_WRITER = r"""
import sys
from alignment_dynamics import cache
target = sys.argv[1]
i = 0
while True:
    i += 1
    cache.write_bytes_atomic(target, (str(i) * 200_000).encode()[:4_000_000] + b"END")
"""


def test_a_writer_killed_with_sigkill_never_leaves_a_half_written_file(tmp_path):
    target = tmp_path / "entry.bin"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "lib")}
    for delay in (0.3, 0.6, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], env=env)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if target.exists():
            data = target.read_bytes()
            assert data.endswith(b"END"), "a reader saw a half-written file"
    # whatever temporaries the killed writer left are recognisable and swept
    left = [p for p in tmp_path.iterdir() if cache.is_temporary(p)]
    removed = cache.sweep_temporaries(tmp_path)
    assert removed == len(left)
    assert not [p for p in tmp_path.iterdir() if cache.is_temporary(p)]


def test_file_sha256_cached_notices_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    f = tmp_path / "model.bin"
    f.write_bytes(b"abc")
    h1 = cache.file_sha256_cached(f)
    assert h1 == cache.file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    time.sleep(0.01)
    f.write_bytes(b"abd")
    assert cache.file_sha256_cached(f) == cache.file_sha256(f) != h1


def test_user_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.user_cache_dir("models") == tmp_path / "c" / "models"
    assert (tmp_path / "c" / "models").is_dir()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG folders are Linux's")
def test_user_cache_dir_default_is_the_xdg_cache_on_linux(tmp_path, monkeypatch):
    """platformdirs gives the folder this library always used: $XDG_CACHE_HOME or ~/.cache, then
    alignment_dynamics; $ALIGNMENT_DYNAMICS_CACHE still wins over both."""
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.user_cache_dir("x") == tmp_path / "home" / ".cache" / "alignment_dynamics" / "x"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.user_cache_dir() == tmp_path / "xdg" / "alignment_dynamics"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.user_cache_dir("x") == tmp_path / "mine" / "x"


def _hold_lock(path, log, held, may_release):
    with cache.file_lock(path):
        _log(log, "A acquired")
        held.set()
        may_release.wait(30)
        time.sleep(0.3)  # B is blocked in file_lock by now
        _log(log, "A releasing")


def _wait_for_lock(path, log, held, may_release):
    held.wait(30)
    _log(log, "B trying")
    may_release.set()
    with cache.file_lock(path):
        _log(log, "B acquired")


def _log(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


def test_file_lock_serialises_two_processes(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    lock, log = tmp_path / "sub" / "entry.lock", tmp_path / "log.txt"
    held, may_release = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=f, args=(lock, log, held, may_release)) for f in (_hold_lock, _wait_for_lock)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().splitlines() == ["A acquired", "B trying", "A releasing", "B acquired"]
    with cache.file_lock(lock):  # free again once both have left
        pass


def test_sha256_memo_overwritten_with_zeros_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    f = tmp_path / "model.gguf"
    f.write_bytes(b"abc")
    good = cache.file_sha256_cached(f)
    (memo,) = (tmp_path / "cache" / "sha256").iterdir()
    obj = json.loads(memo.read_text())
    obj["sha256"] = "0" * 64
    memo.write_text(json.dumps(obj))
    assert cache.file_sha256_cached(f) == good
    memo.write_text("0" * 64)  # the old memo format, or any junk
    assert cache.file_sha256_cached(f) == good


def test_sha256_memo_sees_a_rewrite_with_the_mtime_restored(tmp_path, monkeypatch):
    """The memo key has the inode and ctime: restoring the mtime (os.utime) does not hide a change."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    f = tmp_path / "model.gguf"
    f.write_bytes(b"x" * 4096)
    st = f.stat()
    h1 = cache.file_sha256_cached(f)
    with open(f, "r+b") as fh:  # corrupt in place, same size
        fh.seek(100)
        fh.write(b"y" * 10)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert cache.file_sha256_cached(f) == cache.file_sha256(f) != h1
    f2 = tmp_path / "copy"
    f2.write_bytes(f.read_bytes())
    os.replace(f2, f)  # a new inode at the same path
    assert cache.file_sha256_cached(f) == cache.file_sha256(f)


def test_verify_file_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert cache.verify_file(f, cache.file_sha256(f)) is None
    assert "differs from the recorded" in cache.verify_file(f, "0" * 64)
    assert "cannot read it" in cache.verify_file(tmp_path / "nope", "0" * 64)


def test_a_full_or_read_only_disk_is_one_line_naming_the_path(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "sub" / "report.json"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(cache.DiskError) as info:
        with cache.atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            full()
    msg = str(info.value)
    assert msg == f"cannot write {target}: No space left on device (free some space or use another folder)"
    assert "\n" not in msg and not list(target.parent.iterdir())
    ro = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "x"))
    assert str(cache.disk_error(ro)) == f"cannot write {tmp_path / 'x'}: Read-only file system (make it writable or use another folder)"
    assert cache.disk_error(ValueError("no")) is None


def test_json_files_never_hold_infinity(tmp_path):
    with pytest.raises(ValueError):
        cache.write_json_atomic(tmp_path / "r.json", {"beta": float("inf")})
    assert not (tmp_path / "r.json").exists()


def test_exclusive_lock_names_its_holder(tmp_path):
    lock = tmp_path / ".build.lock"
    code = ("import sys, time; from alignment_dynamics import cache\n"
            f"with cache.exclusive_lock({str(lock)!r}, 'x'):\n    print('HELD', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "lib")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "HELD"
        with pytest.raises(cache.LockedError, match=rf"the folder is in use by another build: pid {proc.pid} on .*started"):
            with cache.exclusive_lock(lock, "the folder"):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 releases it
        proc.wait()
    with cache.exclusive_lock(lock, "the folder"):
        pass
