"""The pinned environment: pyproject.toml's exact pins and environment.yml agree."""

from __future__ import annotations

import re
import tomllib

import yaml


def _pyproject_pins(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pins = {}
    for extra in ("book", "test"):
        for req in project["optional-dependencies"][extra]:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", req)
            assert m, f"the {extra} extra must pin exactly (==), got {req!r}"
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _conda_pins(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for req in pip_section:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", req)
        assert m, f"environment.yml pip entries must pin exactly, got {req!r}"
        pins[m.group(1).lower()] = m.group(2)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    return pins, python


def test_environment_yml_has_the_same_pins_as_pyproject(root):
    pins = _pyproject_pins(root)
    conda, _ = _conda_pins(root)
    assert conda == pins, {
        "only in pyproject": sorted(set(pins) - set(conda)),
        "only in environment.yml": sorted(set(conda) - set(pins)),
        "different": sorted(k for k in set(pins) & set(conda) if pins[k] != conda[k]),
    }


def test_environment_yml_python_is_allowed_by_pyproject(root):
    _, python = _conda_pins(root)
    version = python.split("=")[-1]
    requires = tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"]
    lo, hi = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", requires).groups()
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(lo) <= as_tuple(version) < as_tuple(hi)


def test_the_book_pins_the_versions_the_issue_names(root):
    pins = _pyproject_pins(root)
    for name, version in {"torch": "2.13.0", "jupyter-book": "1.0.4.post1", "jupytext": "1.19.6",
                          "papermill": "2.7.0", "nbval": "0.11.0", "sphinx-proof": "0.4.0",
                          "sphinx-exercise": "1.2.1", "umap-learn": "0.5.12"}.items():
        assert pins[name] == version, name
    assert pins["jupyter-book"].startswith("1."), "Jupyter Book 2.x cannot build offline"
