"""artifacts/: every stored result is listed in MANIFEST.json with how, when and where it was made, and its
checksum matches; a file changed, added or removed without the manifest is caught."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "artifacts"
FIELDS = ("commit", "date", "device", "made_by", "sha256")


def manifest_problems(root: Path) -> list[str]:
    manifest = json.loads((root / "MANIFEST.json").read_text())["files"]
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json"}
    problems = [f"{f}: not in MANIFEST.json" for f in sorted(on_disk - set(manifest))]
    problems += [f"{f}: listed but missing" for f in sorted(set(manifest) - on_disk)]
    for name in sorted(on_disk & set(manifest)):
        entry = manifest[name]
        problems += [f"{name}: no {k!r}" for k in FIELDS if not entry.get(k)]
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        if entry.get("sha256") and digest != entry["sha256"]:
            problems.append(f"{name}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
    return problems


def test_every_artifact_is_listed_with_its_provenance_and_checksum():
    assert manifest_problems(ROOT) == []


def test_the_check_catches_a_changed_an_unlisted_and_a_missing_file(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    entry = {"commit": "x", "date": "2026-12-02", "device": "cpu", "made_by": "test",
             "sha256": hashlib.sha256(b"{}").hexdigest()}
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"files": {"a.json": entry}}))
    assert manifest_problems(tmp_path) == []
    (tmp_path / "a.json").write_text("{ }")  # changed
    (tmp_path / "b.json").write_text("{}")  # unlisted
    problems = manifest_problems(tmp_path)
    assert any("a.json: sha256" in p for p in problems) and any("b.json: not in" in p for p in problems)
    (tmp_path / "a.json").unlink()
    assert any("a.json: listed but missing" in p for p in manifest_problems(tmp_path))


@pytest.mark.parametrize("field", FIELDS)
def test_a_missing_provenance_field_is_caught(tmp_path, field):
    (tmp_path / "a.json").write_text("{}")
    entry = {"commit": "x", "date": "d", "device": "cpu", "made_by": "t", "sha256": hashlib.sha256(b"{}").hexdigest()}
    del entry[field]
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"files": {"a.json": entry}}))
    assert any(f"no {field!r}" in p for p in manifest_problems(tmp_path))


def test_reading_an_artefact_is_logged_and_a_chapter_that_reads_one_must_declare_it(tmp_path, monkeypatch):
    from alignment_dynamics import artifacts
    from alignment_dynamics.build import undeclared_artifacts

    artifacts.write(tmp_path / "a", {"x.json": {"format": 1, "v": 1}}, fmt=1, command="t", seconds=1.0, commit_id="c")
    log = tmp_path / "read.log"
    monkeypatch.delenv(artifacts.READ_LOG_ENV, raising=False)
    artifacts.load(tmp_path / "a", "x.json", fmt=1, make="t")
    assert not log.exists()  # no log without the variable
    monkeypatch.setenv(artifacts.READ_LOG_ENV, str(log))
    artifacts.load(tmp_path / "a", "x.json", fmt=1, make="t")
    artifacts.load(tmp_path / "a", "x.json", fmt=1, make="t")
    assert artifacts.reads_logged(log) == [str(tmp_path / "a" / "x.json")]
    # intro reads no artefact and does not declare it; misalignment reads one and declares it
    msg = undeclared_artifacts("intro", log)
    assert msg and "reads_artifacts=True" in msg and "x.json" in msg and "intro" in msg
    assert undeclared_artifacts("misalignment", log) is None
    assert undeclared_artifacts("intro", tmp_path / "none.log") is None


def test_the_chapters_that_read_stored_studies_declare_it():
    from alignment_dynamics import config

    for slug in ("misalignment", "prioritization", "training_dynamics", "distinguishability", "kernels"):
        assert config.chapter(slug).reads_artifacts, slug
