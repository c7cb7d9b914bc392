"""The repository's ruff configuration (pyproject.toml, [tool.ruff]) holds for the library and the tests."""

from __future__ import annotations

import subprocess
import sys


def _ruff(root, *paths):
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *paths], cwd=root, text=True,
                          capture_output=True, timeout=120)


def test_ruff_finds_nothing_in_lib_and_tests(root):
    proc = _ruff(root, "lib", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_reports_an_undefined_name(root, tmp_path):
    # the configuration in use is the repository's: an undefined name (F821) is an error there
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return undefined_name\n")
    proc = _ruff(root, "--config", str(root / "pyproject.toml"), str(bad))
    assert proc.returncode == 1 and "F821" in proc.stdout, proc.stdout + proc.stderr
