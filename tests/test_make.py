"""The Makefile and CI run what the README says: ``make`` against a fake venv whose ``python`` only
records its arguments, and ``.ci/run`` with a fake ``make``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

# records one call per line, its arguments separated by \x1f, and succeeds
RECORDER = '#!/bin/sh\n{ for a in "$@"; do printf "%s\\037" "$a"; done; echo; } >> "{log}"\nexit 0\n'


def _recorder(path, log):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECORDER.replace("{log}", str(log)))
    path.chmod(0o755)


def _calls(log) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]


@pytest.fixture
def fake_venv(tmp_path):
    venv = tmp_path / "venv"
    _recorder(venv / "bin" / "python", tmp_path / "python.log")
    return venv


def _make(root, venv, *targets):
    proc = subprocess.run(["make", "-C", str(root), *targets, f"VENV={venv}", "PYTHON=false"], text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_venv_installs_the_package_and_the_model_packages_and_records_its_checkout(root, fake_venv, tmp_path):
    _make(root, fake_venv, "venv")
    calls = _calls(tmp_path / "python.log")
    assert ["-m", "pip", "install", "--quiet", "-e", ".[book,test]"] in calls
    assert ["-m", "alignment_dynamics.packages", "--install"] in calls  # the pins' one list
    assert (fake_venv / ".checkout").read_text().strip() == str(root)
    _make(root, fake_venv, "venv")  # up to date: runs nothing
    assert _calls(tmp_path / "python.log") == calls


@pytest.mark.parametrize("target, args", [("test", ["-m", "pytest", "tests"]),
                                          ("test-fast", ["-m", "pytest", "-m", "not book", "tests"]),
                                          ("model-packages", ["-m", "alignment_dynamics.packages", "--install"])])
def test_make_targets_run_their_command(root, fake_venv, tmp_path, target, args):
    _make(root, fake_venv, "venv")
    before = len(_calls(tmp_path / "python.log"))
    _make(root, fake_venv, target)
    assert _calls(tmp_path / "python.log")[before:] == [args]


def test_ci_runs_make_test(root, tmp_path):
    bin_dir = tmp_path / "bin"
    for tool in ("make", "chromium", "chromedriver"):
        _recorder(bin_dir / tool, tmp_path / f"{tool}.log")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _calls(tmp_path / "make.log") == [["test"]]
