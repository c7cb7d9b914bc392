"""Bad requests and faults around the build: every failure a clear error, no stale or corrupt result
served (issue 15). Cheap: one chapter (dpo_last_layer, smoke) into temporary build folders."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from alignment_dynamics import book, build, cache

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.book

CHEAP = "dpo_last_layer"
OFFLINE = {"HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("args, message", [
    (["--chapter", "update_rate", "-p", "N", "65"], r"N must be an even integer .* got 65; use 64 or 66"),
    (["--chapter", "priority", "-p", "N_PER", "201"], r"N_PER must be an even integer .* got 201"),
    (["--chapter", "update_rate", "-p", "N", "200000000"], r"upper limit"),
    (["--chapter", CHEAP, "-p", "BETA", ".inf"], r"BETA must be float > 0.0, got '.inf' \(str\)"),
    (["--chapter", CHEAP, "-p", "BETA", "inf"], r"'inf' is not a finite number"),
    (["--chapter", CHEAP, "-p", "BETA", "nan"], r"'nan' is not a finite number"),
    (["--chapter", CHEAP, "-p", "STEPS", "0x10"], r"STEPS must be int in \[1, 100000\], got '0x10'"),
    (["--chapter", CHEAP, "-p", "STEPS", "10", "-p", "STEPS", "11"], r"-p STEPS is given twice"),
    (["--chapter", CHEAP, "-p", "N", "100000", "-p", "V", "262144"], r"N \* V is too large"),
    (["--chapter", "misalignment", "-p", "MODEL", "smollm2-135m-instruct", "-p", "COMPARE_MODEL",
      "smollm2-135m-instruct"],
     r"MODEL and COMPARE_MODEL must be two different models"),
    (["--chapter", "persona_data", "-p", "MODELS", "[smollm2-135m-instruct, smollm2-135m-instruct]"],
     r"MODELS lists the same model more than once"),
    (["--chapter", "persona_data", "-p", "MODELS", "[gpt2]"],
     r"'gpt2' \(revision 'main'\) is not in the local Hugging Face cache and the Hub cannot be used: HF_HUB_OFFLINE"),
    (["--chapter", "persona_data", "-p", "MODELS", "[smollm2]"], r"unknown model 'smollm2'. Did you mean"),
])
def test_bad_parameters_stop_before_any_kernel_with_rc_2(run_build, tmp_path, args, message):
    t0 = time.perf_counter()
    proc = run_build("--profile", "smoke", *args, build_dir=tmp_path / "b", env=OFFLINE)
    assert proc.returncode == 2, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and "executing" not in proc.stdout
    assert time.perf_counter() - t0 < 30, "an offline Hub id must fail fast"


def test_a_local_folder_that_is_not_a_model_says_so(run_build, tmp_path):
    folder = tmp_path / "org" / "name"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not a model")
    proc = run_build("--profile", "smoke", "--chapter", "persona_data", "-p", "MODELS", f"[{folder}]",
                     build_dir=tmp_path / "b")
    assert proc.returncode == 2 and "is a folder but not a model: it has no config.json" in proc.stderr, proc.stderr


def test_a_second_build_into_the_same_folder_names_the_holder(run_build, tmp_path):
    bd = tmp_path / "b"
    with cache.exclusive_lock(bd / ".build.lock", "x"):
        proc = run_build("--profile", "smoke", "--chapter", CHEAP, build_dir=bd)
    assert proc.returncode == 2, proc.stderr
    assert re.search(rf"the build folder {re.escape(str(bd))} is in use by another build: pid {os.getpid()} on ",
                     proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_read_only_and_full_disks_are_one_line_errors(tmp_path, monkeypatch, capsys):
    bd = tmp_path / "b"

    def read_only(self):
        raise PermissionError(errno.EROFS, "Read-only file system", str(bd / "cache"))

    monkeypatch.setattr(build.Build, "__post_init__", read_only)
    assert build.main(["--profile", "smoke", "--chapter", CHEAP, "--build-dir", str(bd)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot write {bd / 'cache'}: Read-only file system (make it writable or use another folder)"
    monkeypatch.undo()

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "_fsync", full)
    assert build.main(["--profile", "smoke", "--chapter", CHEAP, "--build-dir", str(bd)]) == 1
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: cannot write {re.escape(str(bd))}/\S+: No space left on device \(free some space.*\)", err), err


# --- cache entries --------------------------------------------------------------------------------------

def _notebook(key: str | None, slug: str = CHEAP):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("1"))
    if key is not None:
        nb.metadata["alignment_dynamics"] = {"key": key, "chapter": slug}
    return nb


@pytest.mark.parametrize("content, reason", [
    ("{}", "not a notebook"),
    ("\x00\xff garbage", "not a notebook"),
    ('{"cells": 3, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "not a"),
    ('{"cells": [{"cell_type": "bogus", "source": "", "metadata": {}}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "not a valid notebook"),
    (nbformat.writes(_notebook(None)), "carries no build key"),
    (nbformat.writes(_notebook("f" * 64)), "its key ffffffffffff is not"),
    (nbformat.writes(_notebook("a" * 64, slug="intro")), "it is chapter 'intro'"),
])
def test_entry_problem_rejects_what_is_not_this_chapters_notebook(tmp_path, content, reason):
    p = tmp_path / "e.ipynb"
    p.write_text(content)
    assert reason in (build.entry_problem(p, CHEAP, "a" * 64) or "valid")
    p.write_text(nbformat.writes(_notebook("a" * 64)))
    assert build.entry_problem(p, CHEAP, "a" * 64) is None


def test_a_failed_render_keeps_the_previous_pages(tmp_path):
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text("good")
    stage = tmp_path / "stage"
    stage.mkdir()  # no _config.yml / _toc.yml: jupyter-book fails
    ok, _, _ = build.render(stage, html, strict=False)
    assert not ok and (html / "index.html").read_text() == "good"


def test_mark_stale_puts_one_banner_on_a_page(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><body class='x'><p>old</p></body></html>")
    assert build.mark_stale(page, "first")
    assert build.mark_stale(page, "second <b>")
    text = page.read_text()
    assert text.count(build.STALE_MARK) == 1 and "STALE PAGE: second &lt;b&gt;" in text and "<p>old</p>" in text
    assert not build.mark_stale(tmp_path / "none.html", "x")


def test_aggregators_read_only_their_own_profiles_claims_and_report(tmp_path, monkeypatch):
    claims, report = tmp_path / "claims.json", tmp_path / "report.json"
    claims.write_text(json.dumps({"profile": "smoke", "claims": [{"chapter": "x"}]}))
    report.write_text(json.dumps({"profile": "smoke", "chapters": []}))
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_CLAIMS", str(claims))
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_REPORT", str(report))
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_PROFILE", "smoke")
    assert book.load_claims() == [{"chapter": "x"}] and book.load_report()["profile"] == "smoke"
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_PROFILE", "fast")
    assert book.load_claims() == [] and book.load_report() is None


# --- one chapter, built once, then faults ------------------------------------------------------------------

@pytest.fixture(scope="module")
def chapter_build(run_build, tmp_path_factory):
    bd = tmp_path_factory.mktemp("faults") / "b"
    proc = run_build("--profile", "smoke", "--chapter", CHEAP, build_dir=bd)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return bd


def _page(bd: Path) -> Path:
    return bd / "chapters" / CHEAP / "html" / "book" / f"{CHEAP}.html"


def _report(bd: Path) -> dict:
    return json.loads((bd / "chapters" / CHEAP / "report.json").read_text())


def _start(bd: Path, *args: str):
    cmd = [sys.executable, "-m", "alignment_dynamics.build", "--profile", "smoke", "--build-dir", str(bd),
           "--chapter", CHEAP, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if "executing with" in line:
            time.sleep(2.0)
            return proc
    raise AssertionError(proc.stderr.read())


def test_a_corrupt_cache_entry_is_reported_in_one_line_and_rebuilt(run_build, chapter_build):
    (entry,) = (chapter_build / "cache" / "chapters").glob(f"{CHEAP}-*.ipynb")
    entry.write_text("{}")
    proc = run_build("--profile", "smoke", "--chapter", CHEAP, build_dir=chapter_build)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(rf"{CHEAP}: cache entry .* is corrupt \(not a notebook.*\); executing again", proc.stdout)
    assert build.entry_problem(entry, CHEAP) is None
    assert _report(chapter_build)["status"] == "ok" and build.STALE_MARK not in _page(chapter_build).read_text()


def test_sigint_marks_the_run_interrupted_and_the_page_stale(chapter_build):
    proc = _start(chapter_build, "-p", "STEPS", "12")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the build and its kernel
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert re.search(rf"chapter {CHEAP} interrupted by SIGINT while executing; report marked 'interrupted'", err), err
    rep = _report(chapter_build)
    assert rep["status"] == "interrupted" and rep["overrides"] == {"STEPS": 12}
    assert "was interrupted (SIGINT)" in _page(chapter_build).read_text()


def test_a_killed_run_never_leaves_ok(run_build, chapter_build):
    proc = _start(chapter_build, "-p", "STEPS", "13")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rep = _report(chapter_build)
    assert rep["status"] == "running" and rep["overrides"] == {"STEPS": 13}  # never the old "ok"
    assert "has not finished; this page is from an earlier run" in _page(chapter_build).read_text()
    # the next build is not blocked by the killed one's lock, and a good run clears the mark
    proc = run_build("--profile", "smoke", "--chapter", CHEAP, build_dir=chapter_build)
    assert proc.returncode == 0 and _report(chapter_build)["status"] == "ok"
    assert build.STALE_MARK not in _page(chapter_build).read_text()


def test_make_refuses_to_rebind_a_venv_of_another_checkout(tmp_path):
    """The venv records its checkout (.checkout); `make` elsewhere stops before touching it. A fake venv
    and PYTHON=false: nothing can be installed even if the guard failed."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".checkout").write_text("/some/other/checkout\n")
    proc = subprocess.run(["make", "-C", str(ROOT), "venv", f"VENV={venv}", "PYTHON=false"], text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (f"the venv {venv} belongs to the checkout /some/other/checkout, not {ROOT}; refusing to rebind"
            in proc.stderr), proc.stderr
    assert sorted(p.name for p in venv.iterdir()) == [".checkout"]
