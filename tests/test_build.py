"""The staged build: the whole book in the smoke profile through the real pipeline, its report, its
glue, nbval on the executed notebooks, re-execution of one chapter, bad requests, and kill -9."""

from __future__ import annotations

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

CHAPTERS = [p for p in build.read_toc(ROOT) if p.notebook]


def _log(build_dir: Path) -> str:
    return (build_dir / "build.log").read_text()


def test_smoke_build_of_the_whole_book_succeeds(smoke_build):
    rc = int((smoke_build / "build.rc").read_text())
    assert rc == 0, _log(smoke_build)[-8000:]
    report = json.loads((smoke_build / "report.json").read_text())
    assert report["status"] == "ok" and report["profile"] == "smoke"
    assert [c["name"] for c in report["chapters"]] and all(c["status"] == "ok" for c in report["chapters"])
    assert sorted(c["name"] for c in report["chapters"]) == sorted(p.slug for p in CHAPTERS)
    assert report["render"]["status"] == "ok"
    for c in report["chapters"]:
        assert c["cached"] is False, "the test build starts from an empty folder"
        assert c["wall_s"] > 0 and len(c["key"]) == 64
    # aggregators run last: intro (claims), then reproducibility (report)
    assert [c["name"] for c in report["chapters"]][-2:] == ["intro", "reproducibility"]


def test_render_was_strict_and_every_page_exists(smoke_build):
    # the whole book renders strictly (what strict means is tested in test_render.py)
    assert json.loads((smoke_build / "report.json").read_text())["render"]["strict"] is True
    for page in build.read_toc(ROOT):
        assert (smoke_build / "html" / f"{page.file}.html").exists(), page.file
    assert not list((smoke_build / "html").rglob("*.tmp-*"))


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.slug)
def test_every_glue_key_used_in_prose_exists_in_the_executed_notebook(smoke_build, page):
    nb = nbformat.read(smoke_build / "executed" / "smoke" / f"{page.slug}.ipynb", as_version=4)
    have = book.glue_keys_in_notebook(nb)
    used = set(re.findall(r"\{glue(?::[a-z]+)?\}`([^`:]+)", page.path.read_text()))
    assert used, f"{page.slug} glues no number into its prose"
    assert used <= have, f"{page.slug}: glued in prose but never computed: {sorted(used - have)}"
    meta = nb.metadata["alignment_dynamics"]
    assert meta["profile"] == "smoke" and meta["parameters"]["PROFILE"] == "smoke"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "hide-cell" in injected[0].metadata["tags"]


def test_claims_are_collected_for_the_scorecard(smoke_build):
    claims = json.loads((smoke_build / "claims.json").read_text())["claims"]
    assert all({"chapter", "claim", "source", "measured", "verdict"} <= set(c) for c in claims)
    assert all(set(c) <= {"chapter", "claim", "source", "measured", "verdict", "estimate", "interval", "n", "rule"}
               for c in claims)
    assert all(c["verdict"] in book.VERDICTS for c in claims)


#: The chapters nbval re-executes (the whole book was executed once by the smoke build already):
#: ``intro``, the aggregator (it reads the claims every chapter wrote); ``priority``, a theory chapter
#: (seeded NumPy/torch sweeps, theorem checks); ``distinguishability``, a model chapter (model loading,
#: the embedding cache read back warm, bootstraps with seeded generators, every glue kind). Together they
#: exercise every source of non-determinism the book has (generators, thread pools, caches, dict and set
#: order under PYTHONHASHSEED); the other model chapters share their library paths.
NBVAL_SUBSET = ("intro", "priority", "distinguishability")


def _nbval(notebooks, smoke_build: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "ALIGNMENT_DYNAMICS_BUILD_DIR": str(smoke_build),
           "ALIGNMENT_DYNAMICS_ROOT": str(ROOT), "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
         "--nbval-cell-timeout", "1800", "-q", "-c", os.devnull, "--rootdir", str(smoke_build),
         *map(str, notebooks)],
        cwd=smoke_build, env=env, text=True, capture_output=True, timeout=3600)


def test_nbval_reexecution_gives_identical_checked_outputs(smoke_build):
    """nbval re-runs a representative subset of the executed smoke notebooks (:data:`NBVAL_SUBSET`: the
    aggregator, one theory chapter, one model chapter; re-executing all of them doubled the smoke build's
    time for little more coverage). Their cells marked NBVAL_CHECK_OUTPUT print every non-volatile glued
    number, so this checks that two executions give bit-identical numbers."""
    notebooks = [smoke_build / "executed" / "smoke" / f"{slug}.ipynb" for slug in NBVAL_SUBSET]
    assert all(nb.exists() for nb in notebooks), notebooks
    assert set(NBVAL_SUBSET) <= {p.slug for p in CHAPTERS}
    proc = _nbval(notebooks, smoke_build)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    assert re.search(rf"{len(notebooks)} passed|\d+ passed", proc.stdout)


def test_nbval_fails_on_a_glued_value_that_changes(smoke_build, tmp_path):
    """The check above can fail: in a copy of the executed intro, the printed glued values of the
    NBVAL_CHECK_OUTPUT cell get one number that the re-execution will not reproduce (as a
    non-deterministic glued value would); nbval must report the mismatch."""
    nb = nbformat.read(smoke_build / "executed" / "smoke" / "intro.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source)
    out = next(o for o in cell.outputs if o.get("name") == "stdout")
    lines = out.text.splitlines()
    k = next(i for i, line in enumerate(lines) if re.search(r"= -?\d", line))
    lines[k] = re.sub(r"= (-?)(\d)", lambda m: f"= {m.group(1)}{(int(m.group(2)) + 1) % 10}", lines[k], count=1)
    out.text = "\n".join(lines) + "\n"
    mutated = tmp_path / "intro_mutated.ipynb"
    nbformat.write(nb, mutated)
    proc = _nbval([mutated], smoke_build)
    assert proc.returncode != 0, "nbval accepted a changed glued value:\n" + proc.stdout[-4000:]
    assert "failed" in proc.stdout


def test_warm_rebuild_takes_every_chapter_from_the_cache(run_build, smoke_build, tmp_path):
    """Same inputs: nothing executes again; the report says so."""
    proc = run_build("--profile", "smoke", "--no-render", build_dir=smoke_build)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads((smoke_build / "report.json").read_text())
    assert all(c["cached"] for c in report["chapters"]), report["chapters"]


def test_cache_key_changes_with_parameters_and_library(tmp_path):
    b = build.Build(root=ROOT, build_dir=tmp_path / "b", profile="smoke")
    page = next(p for p in CHAPTERS if p.slug == "intro")
    nb = build.load_notebook(page.path)
    params = b.params_for(page, nb)
    k = b.key_for(page, nb, params)
    assert k == b.key_for(page, nb, dict(params))
    assert k != b.key_for(page, nb, {**params, "PROFILE": "fast"})
    b._lib = "0" * 64
    assert k != b.key_for(page, nb, params)


def test_bad_requests_are_clear_errors(run_build, tmp_path):
    cases = [
        (["--chapter", "intr"], r"unknown chapter 'intr'; valid chapters: .*Did you mean 'intro'"),
        (["--profile", "fats"], r"unknown profile 'fats'; valid profiles: \['smoke', 'fast', 'full'\]"),
        (["--chapter", "intro", "-p", "BETA", "0.1"], r"chapter 'intro' has no parameter 'BETA'; its parameters are \['PROFILE'\]"),
        (["--chapter", "intro", "-p", "PROFILE", "smoke"], r"set the profile with --profile"),
        (["-p", "SEED", "1"], r"-p overrides apply to one chapter"),
        (["--only", "nosuch"], r"unknown chapter 'nosuch'"),
    ]
    for args, message in cases:
        proc = run_build(*args, build_dir=tmp_path / "b")
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert re.search(message, proc.stderr), (args, proc.stderr)


def _first_chapter_with_parameters():
    from alignment_dynamics import config

    for p in CHAPTERS:
        spec = config.chapter(p.slug)
        for param in spec.params:
            if isinstance(param.values["smoke"], int) and not isinstance(param.values["smoke"], bool):
                return p.slug, param.name, param.values["smoke"]
    return None


def test_one_chapter_reexecutes_with_an_override_into_its_own_folder(run_build, smoke_build):
    found = _first_chapter_with_parameters()
    assert found, "some chapter must have an integer parameter to override"
    slug, name, value = found
    before = (smoke_build / "report.json").read_bytes()
    proc = run_build("--profile", "smoke", "--chapter", slug, "-p", name, str(value + 1), build_dir=smoke_build)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    out = smoke_build / "chapters" / slug
    nb = nbformat.read(out / f"{slug}.ipynb", as_version=4)
    assert nb.metadata["alignment_dynamics"]["parameters"][name] == value + 1
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert f"{name} = {value + 1}" in injected.source
    assert (out / "html" / "book" / f"{slug}.html").exists()
    assert json.loads((out / "report.json").read_text())["overrides"] == {name: value + 1}
    assert (smoke_build / "report.json").read_bytes() == before, "the default build must stay intact"


def test_killing_the_build_at_any_moment_then_rebuilding_gives_a_correct_book(run_build, tmp_path):
    build_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "alignment_dynamics.build", "--profile", "smoke", "--build-dir", str(build_dir),
           "--only", "intro,reproducibility"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    for delay in (1.0, 3.0, 6.0, 9.0):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its kernels, like kill -9 of `make book`
        proc.wait()
        for f in (build_dir / "cache" / "chapters").glob("*.ipynb") if build_dir.exists() else []:
            nbformat.read(f, as_version=4)  # every cache entry is a whole notebook
    proc = run_build("--profile", "smoke", "--only", "intro,reproducibility", build_dir=build_dir)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    report = json.loads((build_dir / "report.json").read_text())
    assert report["status"] == "ok" and {c["name"] for c in report["chapters"]} == {"intro", "reproducibility"}
    assert (build_dir / "html" / "book" / "intro.html").exists()
    assert not [p for p in build_dir.rglob("*") if cache.is_temporary(p)]
