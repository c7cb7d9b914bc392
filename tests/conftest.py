"""Shared fixtures of the test suite.

The book tier: ``run_build`` (run the build like ``make book``) and ``smoke_build`` (one smoke build of
the whole book per session). A test that uses either, directly or through another fixture, is marked
``book`` here automatically, so ``pytest -m "not book"`` (``make test-fast``) never builds the book.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_BUILD = ROOT / "_build" / "test-smoke"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# The fixtures that build the book: a test using any of them belongs to the book tier.
BOOK_FIXTURES = frozenset({"run_build", "smoke_build"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BOOK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.book)


def _run_build(*args: str, build_dir: Path, timeout: float = 3600, env: dict | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m alignment_dynamics.build`` like ``make book`` does, from the repo root."""
    cmd = [sys.executable, "-m", "alignment_dynamics.build", "--build-dir", str(build_dir), *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"build failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def run_build():
    """``run_build(*args, build_dir=..., timeout=3600, env=None, check=False)``: run
    ``python -m alignment_dynamics.build`` from the repo root; returns the CompletedProcess."""
    return _run_build


@pytest.fixture(scope="session")
def smoke_build(run_build) -> Path:
    """The whole book built with PROFILE=smoke through the real pipeline (``-n -W``), from an empty
    build folder. Returns the build folder; the build's own exit status is asserted in test_build.py.
    """
    if SMOKE_BUILD.exists() and not os.environ.get("AD_TEST_KEEP_BUILD"):
        shutil.rmtree(SMOKE_BUILD)
    proc = run_build("--profile", "smoke", build_dir=SMOKE_BUILD)
    (SMOKE_BUILD / "build.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    (SMOKE_BUILD / "build.rc").write_text(str(proc.returncode))
    return SMOKE_BUILD
