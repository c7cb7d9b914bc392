"""The full-data reference: computed rows match a direct computation; the artefact's checksums and
format are enforced when it is read; bad values are never written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from alignment_dynamics import data
from alignment_dynamics import lastlayer as dy
from alignment_dynamics import fullref
from alignment_dynamics import artifacts

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
    with pytest.raises(fullref.ReferenceError, match="no manifest"):
        fullref.load(TINY[0], tmp_path)
    bad = json.loads(json.dumps(result))
    bad[TINY[1]]["rows"]["openness"]["first_step"] = math.nan
    with pytest.raises(fullref.ReferenceError, match="non-finite"):
        fullref.write(bad, tmp_path, command="test", seconds=1.0)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_proxy_must_be_among_the_models_or_in_the_reference(tmp_path):
    # an empty reference folder: the proxy is neither computed now nor stored
    with pytest.raises(fullref.ReferenceError, match="proxy .* compute it first"):
        fullref.compute(TINY, behaviors=BEHAVIORS, proxy="smollm2-135m-instruct", progress=False,
                        directory=tmp_path)


def _synthetic_reference(n: int, seed: int = 0) -> fullref.Reference:
    rng = np.random.default_rng(seed)
    rows = {f"b{i}": {c: float(v) for c, v in zip(fullref.COLUMNS, rng.uniform(1, 2, len(fullref.COLUMNS)))}
            for i in range(n)}
    for r in rows.values():
        r["n_train"] = 900.0
    return fullref.Reference(model="m", rows=rows, manifest={"date_utc": "2026-12-02T00:00:00Z",
                                                             "machine": {"cpu": "X", "auto_dtype": "float32"}})


def test_agreement_ranks_a_faithful_sample_high_and_a_reversed_one_low():
    ref = _synthetic_reference(30)
    truth = {b: r["distinguishability"] for b, r in ref.rows.items()}
    rng = np.random.default_rng(1)
    noisy = {b: v + rng.normal(0, 0.01) for b, v in truth.items()}
    a = fullref.agreement(noisy, "m", "distinguishability", statements=64, reference=ref, n_boot=200)
    assert (a.n, a.statements_sample, a.statements_reference) == (30, 64.0, 900.0)
    assert a.rho > 0.95 and a.lo <= a.rho <= a.hi
    # mutation: a reversed sample must disagree, and a shuffled one must not look like agreement
    rev = fullref.agreement({b: -v for b, v in truth.items()}, "m", "distinguishability", statements=64,
                            reference=ref, n_boot=200)
    assert rev.rho == pytest.approx(-1.0) and rev.hi < 0
    shuffled = dict(zip(truth, rng.permutation(list(truth.values()))))
    sh = fullref.agreement(shuffled, "m", "distinguishability", statements=64, reference=ref, n_boot=200)
    assert sh.lo < 0.5


def test_agreement_rejects_unknown_behaviours_nan_and_the_wrong_model():
    ref = _synthetic_reference(6)
    ok = {b: r["trace"] for b, r in ref.rows.items()}
    with pytest.raises(fullref.ReferenceError, match="no row"):
        fullref.agreement({**ok, "zz": 1.0}, "m", "trace", statements=8, reference=ref)
    with pytest.raises(fullref.ReferenceError, match="non-finite"):
        fullref.agreement({**ok, "b0": math.nan}, "m", "trace", statements=8, reference=ref)
    with pytest.raises(fullref.ReferenceError, match="not 'other'"):
        fullref.agreement(ok, "other", "trace", statements=8, reference=ref)
    with pytest.raises(fullref.ReferenceError, match="at least 4"):
        fullref.agreement(dict(list(ok.items())[:3]), "m", "trace", statements=8, reference=ref)


def test_compare_tables_agreements_and_names_models_without_a_reference(result, tmp_path):
    import pandas as pd

    fullref.write({TINY[0]: result[TINY[0]]}, tmp_path, command="test", seconds=1.0)
    rows = result[TINY[0]]["rows"]
    extra = {f"x{i}": dict(rows["openness"]) for i in range(3)}  # 5 behaviours (>= 4 for a rank)
    for i, r in enumerate(extra.values()):
        r["trace"] = r["trace"] * (1.1 + i)
        r["distinguishability"] = r["distinguishability"] * (1.2 + i)
    ref_path = tmp_path / f"{TINY[0]}.json"
    body = json.loads(ref_path.read_text())
    body["rows"].update(extra)
    ref_path.write_text(json.dumps(body))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"][ref_path.name]["sha256"] = artifacts.sha256(ref_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    table = pd.DataFrame({b: {"trace": r["trace"], "distinguishability": r["distinguishability"]}
                          for b, r in body["rows"].items()}).T
    cmp = fullref.compare({TINY[0]: table, TINY[1]: table}, ["distinguishability", "trace"], statements=10,
                          directory=tmp_path, n_boot=100)
    assert cmp.missing == (TINY[1],) and "no full-data reference" in cmp.text
    assert set(cmp.agreements) == {(TINY[0], "distinguishability"), (TINY[0], "trace")}
    assert cmp.agreements[(TINY[0], "trace")].rho == pytest.approx(1.0)
    assert list(cmp.table["quantity"]) == ["distinguishability", "trace"] and (cmp.table["behaviours"] == 5).all()
    assert fullref.covers(TINY[0], tmp_path) and not fullref.covers(TINY[1], tmp_path)


def test_full_data_test_reads_the_verdict_from_the_interval(tmp_path):
    rng = np.random.default_rng(3)
    n = 40
    d = rng.uniform(1, 2, n)

    def write(outcome):
        rows = {f"b{i}": {c: 1.0 for c in fullref.COLUMNS} for i in range(n)}
        for i, r in enumerate(rows.values()):
            r["distinguishability"], r["loss_drop_test"] = float(d[i]), float(outcome[i])
        fullref.write({"m": {"rows": rows, "lr": 0.1, "beta": 0.5, "q_official": 1.0}}, tmp_path, command="t", seconds=0.0)
        return fullref.full_data_test("m", directory=tmp_path, n_boot=300)

    up = write(d ** 2 + rng.normal(0, 0.05, n))
    assert up.verdict.verdict == "agrees" and up.disjoint and up.n == n and up.lo > 0 and "held-out" in up.sentence
    assert "held-out DPO loss" in up.claim and f"over {n} behaviours" in up.measured
    down = write(-d)  # mutation: the reversed outcome must differ
    assert down.verdict.verdict == "differs" and down.hi < 0 and "differs" in down.sentence
    noise = write(rng.normal(size=n))  # no association: the interval contains 0 (not resolvable)
    assert noise.lo < 0 < noise.hi and noise.verdict.verdict == "not resolvable at this sample size"
    claims = fullref.full_data_claims(["m", "other"], ["loss_drop_test"], directory=tmp_path, n_boot=100)
    assert claims.missing == ("other",) and [t.outcome for t in claims.for_model("m")] == ["loss_drop_test"]
    assert len(claims.table) == 1 and "no full-data reference for other" in claims.text
    with pytest.raises(fullref.ReferenceError, match="unknown outcome"):
        fullref.full_data_test("m", outcome="n_test", directory=tmp_path)
    with pytest.raises(Exception, match="constant"):  # loss_drop_train is 1.0 everywhere here
        fullref.full_data_test("m", outcome="loss_drop_train", directory=tmp_path, n_boot=50)
    # the predictor on held-out statements and the outcome on the training ones is not the disjoint form
    assert not fullref.full_data_test("m", "loss_drop_test", "distinguishability", directory=tmp_path,
                                      n_boot=50).disjoint


def test_compare_maps_a_sample_column_to_a_reference_column_and_rejects_unknown_ones(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(5)
    rows = {f"b{i}": {c: float(v) for c, v in zip(fullref.COLUMNS, rng.uniform(1, 2, len(fullref.COLUMNS)))}
            for i in range(8)}
    fullref.write({"m": {"rows": rows, "lr": 0.1, "beta": 0.5, "q_official": 1.0}}, tmp_path, command="t", seconds=0.0)
    table = pd.DataFrame({"my_drop": {b: r["loss_drop_train"] for b, r in rows.items()}})
    cmp = fullref.compare({"m": table}, [("my_drop", "loss_drop_train")], statements=4, directory=tmp_path,
                          n_boot=50)
    assert cmp.agreements[("m", "my_drop")].rho == pytest.approx(1.0)
    assert "my_drop vs loss_drop_train" in cmp.text
    with pytest.raises(fullref.ReferenceError, match="reference columns"):
        fullref.compare({"m": table}, [("my_drop", "speed")], statements=4, directory=tmp_path)
    with pytest.raises(fullref.ReferenceError, match="no column 'trace'"):
        fullref.compare({"m": table}, ["trace"], statements=4, directory=tmp_path)


def test_a_model_computed_alone_against_the_stored_proxy_matches_the_joint_run(result, tmp_path, monkeypatch):
    fullref.write({TINY[0]: result[TINY[0]]}, tmp_path, command="first", seconds=1.0)
    with pytest.raises(fullref.ReferenceError, match="compute it first"):
        fullref.compute([TINY[1]], behaviors=BEHAVIORS, proxy="tiny-random-llama-c", directory=tmp_path,
                        progress=False)
    monkeypatch.setenv("ALIGNMENT_DYNAMICS_CACHE", str(tmp_path / "cache"))
    alone = fullref.compute([TINY[1]], behaviors=BEHAVIORS, proxy=TINY[0], dtype="float32", progress=False,
                            directory=tmp_path)
    assert alone[TINY[1]]["lr"] == pytest.approx(result[TINY[1]]["lr"], rel=1e-12)
    for b in BEHAVIORS:
        for c in fullref.COLUMNS:
            assert alone[TINY[1]]["rows"][b][c] == pytest.approx(result[TINY[1]]["rows"][b][c], rel=1e-9, abs=1e-12)
    fullref.write(alone, tmp_path, command="second", seconds=1.0)  # the manifest keeps the first model's entry
    assert fullref.load(TINY[0], tmp_path).manifest["command"] == "first"
    assert fullref.load(TINY[1], tmp_path).manifest["command"] == "second"


def test_full_data_panels_carry_the_reference_values_and_the_grid_draws_them(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from alignment_dynamics import plotting

    rng = np.random.default_rng(7)
    rows = {f"b{i}": {c: float(v) for c, v in zip(fullref.COLUMNS, rng.uniform(1, 2, len(fullref.COLUMNS)))}
            for i in range(12)}
    fullref.write({"m": {"rows": rows, "lr": 0.1, "beta": 0.5, "q_official": 1.0}}, tmp_path, command="t", seconds=0.0)
    claims = fullref.full_data_claims(["m"], ["loss_drop_test", "first_step"], directory=tmp_path, n_boot=50)
    panels = claims.panels({"m": "M"})
    assert [p["title"] for p in panels] == ["M", "M"] and "(held-out)" in panels[0]["ylabel"]
    names = sorted(rows)
    np.testing.assert_allclose(panels[0]["x"], [rows[b]["distinguishability"] for b in names])
    np.testing.assert_allclose(panels[1]["y"], [rows[b]["first_step"] for b in names])
    fig = plotting.full_data_grid(panels)
    drawn = [ax for ax in fig.axes if ax.collections]
    assert len(drawn) == 2 and all(len(ax.collections[0].get_offsets()) == 12 for ax in drawn)
    empty = plotting.full_data_grid([], empty_text="no reference here")
    assert any("no reference here" in t.get_text() for ax in empty.axes for t in ax.texts)


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_the_committed_reference_loads_with_every_behaviour(model):
    ref = fullref.load(model)  # checksum and format verified
    assert sorted(ref.rows) == sorted(data.behaviors())
    for c in fullref.COLUMNS:
        assert np.all(np.isfinite(ref.column(c, sorted(ref.rows))))
    assert all(r["n_train"] + r["n_test"] == len(data.load_persona(b)) for b, r in ref.rows.items())
    assert ref.manifest["dtype"] in ("float32", "bfloat16") and ref.manifest["machine"]["cpu"]
