"""The full-data reference: computed rows match a direct computation; the artefact's checksums and
format are enforced when it is read; bad values are never written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from alignment_dynamics import data
from alignment_dynamics import dynamics as dy
from alignment_dynamics import fullref

TINY = ["tiny-random-llama", "tiny-random-llama-b"]
BEHAVIORS = ["openness", "narcissism"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNMENT_DYNAMICS_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield fullref.compute(TINY, behaviors=BEHAVIORS, proxy=TINY[0], dtype="float32", progress=False)
    finally:
        mp.undo()


def test_rows_match_a_direct_computation_on_all_statements(result):
    for m in TINY:
        rows = result[m]["rows"]
        assert sorted(rows) == sorted(BEHAVIORS)
        for b in BEHAVIORS:
            bs = dy.behavior_set(m, b, None, dtype="float32")
            r = rows[b]
            assert (r["n_train"], r["n_test"]) == (bs.n_train, bs.h_test.shape[0])
            assert r["n_train"] + r["n_test"] == len(data.load_persona(b))  # every statement
            direct = np.linalg.norm(bs.h_train[bs.s_train > 0].mean(0) - bs.h_train[bs.s_train < 0].mean(0))
            assert r["distinguishability"] == pytest.approx(direct, rel=1e-9)
            assert 0 < r["first_step"] < r["change_100"]
            assert 0.0 <= r["acc_test"] <= 1.0


def test_written_reference_loads_and_a_corrupted_one_does_not(result, tmp_path):
    paths = fullref.write(result, tmp_path, command="test", seconds=1.0)
    assert {p.name for p in paths} == {f"{m}.json" for m in TINY} | {"manifest.json"}
    ref = fullref.load(TINY[0], tmp_path)
    np.testing.assert_allclose(ref.column("distinguishability", BEHAVIORS),
                               [result[TINY[0]]["rows"][b]["distinguishability"] for b in BEHAVIORS])
    with pytest.raises(fullref.ReferenceError, match="no row"):
        ref.column("trace", ["openness", "not-a-behaviour"])
    with pytest.raises(fullref.ReferenceError, match="unknown reference column"):
        ref.column("speed", BEHAVIORS)
    with pytest.raises(fullref.ReferenceError, match="covers"):
        fullref.load("gemma-3-270m", tmp_path)
    # mutation: change one value in the file; the checksum catches it
    p = tmp_path / f"{TINY[0]}.json"
    body = json.loads(p.read_text())
    body["rows"]["openness"]["trace"] *= 1.01
    p.write_text(json.dumps(body))
    with pytest.raises(fullref.ReferenceError, match="checksum"):
        fullref.load(TINY[0], tmp_path)


def test_missing_manifest_and_nan_rows_are_errors(result, tmp_path):
    with pytest.raises(fullref.ReferenceError, match="no reference manifest"):
        fullref.load(TINY[0], tmp_path)
    bad = json.loads(json.dumps(result))
    bad[TINY[1]]["rows"]["openness"]["first_step"] = math.nan
    with pytest.raises(fullref.ReferenceError, match="non-finite"):
        fullref.write(bad, tmp_path, command="test", seconds=1.0)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_proxy_must_be_one_of_the_models():
    with pytest.raises(fullref.ReferenceError, match="proxy"):
        fullref.compute(TINY, behaviors=BEHAVIORS, proxy="smollm2-135m-instruct", progress=False)
