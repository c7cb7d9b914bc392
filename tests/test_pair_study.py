"""Figure 5 on the whole model (wholemodel.pair_study): rows, disjoint parts, the artefact, the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignment_dynamics import data, models
from alignment_dynamics.wholemodel import MisalignError, pair_study as ps

NAMES = data.behaviors()


def _settings(n_random=3, seeds=(0,), **kw):
    named = ((NAMES[0], NAMES[1]),)
    rand = tuple((NAMES[2 + 2 * i], NAMES[3 + 2 * i]) for i in range(n_random))
    base = dict(n_predict=8, n_train=8, n_test=6, batch_size=4, micro_batch=4, k=2, top_blocks=1)
    base.update(kw)
    return ps.PairStudySettings(named=named, random=rand, seeds=seeds, **base)


@pytest.fixture(scope="module")
def tiny():
    return models.tiny(0, layers=3)


@pytest.fixture(scope="module")
def tiny_rows(tiny):
    s = _settings(n_random=2)
    return s, ps.run_study(tiny.model, tiny.tokenizer, s, progress=False)


def test_rows_cover_every_pair_and_seed_with_finite_measures(tiny_rows):
    s, rows = tiny_rows
    assert [(r["a"], r["b"]) for r in rows] == list(s.pairs)
    for r in rows:
        assert all(np.isfinite(r[m]) for m in ps.MEASURES)
        assert r["dist_a"] > 0 and r["dist_b"] > 0
        assert (r["margin_a_k"], r["margin_b_k"]) != (0.0, 0.0)  # the top block trained


def test_the_gap_is_antisymmetric_and_comes_from_the_base_model(tiny, tiny_rows):
    s, rows = tiny_rows
    a, b = s.random[0]
    swapped = ps.run_pair(tiny.model, tiny.tokenizer, (b, a), 0, s)
    row = next(r for r in rows if (r["a"], r["b"]) == (a, b))
    assert swapped["gap"] == pytest.approx(-row["gap"], rel=1e-9, abs=1e-12)
    assert (swapped["dist_a"], swapped["dist_b"]) == pytest.approx((row["dist_b"], row["dist_a"]))


def test_predictor_training_and_test_statements_are_disjoint(tiny):
    from alignment_dynamics.wholemodel.pairsets import predictor_sets

    pred, sets = predictor_sets(tiny.tokenizer, NAMES[0], seed=0, n_predict=8, n_train=8, n_test=6)
    assert len(pred.train) == 8 and len(sets.train) == 8 and len(sets.test) == 6
    assert sorted(pred.labels_train) == [-1] * 4 + [1] * 4  # both classes, balanced
    p, t, h = set(pred.index_train), set(sets.index_train), set(sets.index_test)
    assert len(p) == 8 and len(t) == 8 and not p & t and not (p | t) & h
    assert list(pred.index_test) == list(sets.index_test)
    other, _ = predictor_sets(tiny.tokenizer, NAMES[0], seed=1, n_predict=8, n_train=8, n_test=6)
    assert set(other.index_train) != p
    with pytest.raises(MisalignError, match="even"):
        predictor_sets(tiny.tokenizer, NAMES[0], seed=0, n_predict=7, n_train=8, n_test=6)
    with pytest.raises(MisalignError, match="n_train"):
        predictor_sets(tiny.tokenizer, NAMES[0], seed=0, n_predict=8, n_train=10_000, n_test=6)


def test_artefact_round_trip_and_a_corrupted_or_incomplete_one_is_refused(tiny_rows, tmp_path):
    s, rows = tiny_rows
    ps.write("tiny", rows, s, tmp_path, command="t", seconds=1.0, dtype="float32")
    st = ps.load("tiny", tmp_path)
    assert st.settings == s and st.rows == rows and ps.covered(tmp_path) == ["tiny"]
    path = tmp_path / "tiny.json"
    body = json.loads(path.read_text())
    body["rows"][0]["gap"] = 0.5
    path.write_text(json.dumps(body))
    with pytest.raises(MisalignError, match="checksum"):
        ps.load("tiny", tmp_path)
    with pytest.raises(MisalignError, match="exactly once"):
        ps.write("tiny", rows[:-1], s, tmp_path / "x", command="t", seconds=1.0, dtype="float32")
    bad = [dict(r) for r in rows]
    bad[1]["margin_b_end"] = float("nan")
    with pytest.raises(MisalignError, match="non-finite"):
        ps.write("tiny", bad, s, tmp_path / "y", command="t", seconds=1.0, dtype="float32")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _synthetic(slope: float, noise: float, n_random: int = 24, seeds=(0, 1, 2), seed: int = 0) -> ps.PairStudy:
    s = _settings(n_random=n_random, seeds=seeds)
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in s.pairs:
        gap = float(rng.normal())
        for sd in seeds:
            d = slope * gap + noise * float(rng.normal())
            rows.append({"a": a, "b": b, "seed": sd, "gap": gap, "margin_a_k": 0.1 + d / 2, "margin_b_k": 0.1 - d / 2,
                         "margin_a_end": 0.3 + d, "margin_b_end": 0.3 - d, "dist_a": 1.0, "dist_b": 1.0})
    return ps.PairStudy("synthetic", rows, s)


def test_a_planted_prediction_agrees_a_reversed_one_differs_and_noise_is_not_resolvable():
    planted = ps.summarize(_synthetic(1.0, 0.05), n_boot=500)
    assert planted.share > 0.9 and planted.verdict.verdict == "agrees" and planted.rho > 0.9
    assert planted.rho_verdict.verdict == "agrees"
    reversed_ = ps.summarize(_synthetic(-1.0, 0.05), n_boot=500)
    assert reversed_.share < 0.1 and reversed_.verdict.verdict == "differs"
    null = ps.summarize(_synthetic(0.0, 1.0, seed=3), n_boot=500)
    assert null.verdict.verdict == "not resolvable at this sample size"
    assert null.n_pairs == 24 and null.n_seeds == 3
    assert "24 random pairs" in planted.sentence("M") and planted.verdict.phrase() in planted.sentence("M")


def test_named_pairs_are_reported_apart_and_a_zero_gap_is_never_right():
    st = _synthetic(1.0, 0.0)
    (named,) = ps.summarize(st, n_boot=200).named
    assert (named.a, named.b) == st.settings.named[0] and named.seeds == 3 and named.right == 3
    for r in st.rows:
        r["gap"] = 0.0
    flat = ps.summarize(st, n_boot=200)
    assert flat.share == 0.0 and flat.rho_verdict.verdict == "not testable here"


@pytest.mark.parametrize("change, match", [
    (dict(named=((NAMES[0], NAMES[0]),)), "two different behaviours"),
    (dict(random=((NAMES[1], NAMES[0]),)), "all be different pairs"),
    (dict(random=(("no-such-behaviour", NAMES[0]),)), "no-such-behaviour"),
    (dict(seeds=(0, 0)), "distinct"),
    (dict(k=99), "k must be in"),
    (dict(n_predict=2), "n_predict"),
    (dict(n_predict=7), "even"),
    (dict(n_predict=80, n_train=8), None),
])
def test_bad_settings_are_refused(change, match):
    kw = dict(named=((NAMES[0], NAMES[1]),), random=((NAMES[2], NAMES[3]),), seeds=(0,), batch_size=4, n_train=8)
    kw.update(change)
    if match is None:  # valid settings
        assert ps.PairStudySettings(**kw).n_predict == kw["n_predict"]
        return
    error = data.UnknownBehaviorError if "no-such" in match else MisalignError
    with pytest.raises(error, match=match):
        ps.PairStudySettings(**kw)


def test_a_study_without_random_pairs_cannot_be_summarized():
    st = ps.PairStudy("x", [], _settings(n_random=0))
    with pytest.raises(MisalignError, match="no random pairs"):
        ps.summarize(st)


def test_report_reads_stored_studies_names_the_missing_and_feeds_the_figure(tmp_path):
    from alignment_dynamics.plotting.dynamics import whole_model_pairs

    st = _synthetic(1.0, 0.05, n_random=6, seeds=(0, 1))
    ps.write("m1", st.rows, st.settings, tmp_path, command="t", seconds=60.0, dtype="float32")
    rep = ps.report(["m1", "m2"], directory=tmp_path, n_boot=200)
    assert list(rep.summaries) == ["m1"] and rep.missing == ("m2",) and rep.source == "stored artefact"
    text = rep.text({"m1": "Model One"})
    assert "Model One" in text and rep.summaries["m1"].verdict.phrase() in text and "m2" in text
    assert "6 random pairs" in rep.design().replace("6 random pairs × 2 seeds", "6 random pairs")
    assert "float32" in rep.provenance and "1 min" in rep.provenance
    (panel,) = rep.panels()
    assert len(panel["points"]) == 7 and sum(q["named"] for q in panel["points"]) == 1
    assert [q["label"] for q in panel["points"] if q["named"]] == ["Figure 5(a)"]
    fig = whole_model_pairs(rep.panels())
    ax = fig.axes[0]
    xs = np.concatenate([ln.get_xdata() for ln in ax.lines if ln.get_marker() in ("o", "D")])
    assert sorted(xs) == pytest.approx(sorted(q["gap"] for q in panel["points"]))
    assert rep.verdict().verdict == rep.summaries["m1"].verdict.verdict
    empty = ps.report(["m2"], directory=tmp_path)
    assert empty.verdict().verdict == "not testable here" and "make one with" in empty.text()
    assert rep.k == st.settings.k and empty.k == ps.PairStudySettings.k


def test_report_runs_a_live_tiny_study():
    from alignment_dynamics.chapters.common import TINY

    rand = ((NAMES[2], NAMES[3]), (NAMES[4], NAMES[5]), (NAMES[6], NAMES[7]))
    live = dict(named=((NAMES[0], NAMES[1]),), random=rand, seeds=(0,), n_predict=8, n_train=8, n_test=6,
                batch_size=4, micro_batch=4, k=2, top_blocks=1)
    rep = ps.report([TINY], live=live, n_boot=100, progress=False)
    assert rep.source == "run in this build" and rep.summaries[TINY].n_pairs == 3
    assert "smoke" in rep.provenance


def test_linked_components_and_the_component_interval():
    from alignment_dynamics import stats

    members = [("a", "b"), ("c", "d"), ("b", "e"), ("f", "g"), ("e", "h")]
    assert stats.linked_components(members) == [0, 1, 0, 2, 0]
    agree = np.array([1, 0, 1, 1, 0], dtype=float)
    p, lo, hi, k = stats.pair_share_by_component(agree, members, n_boot=500)
    assert (p, k) == (0.6, 3) and lo <= p <= hi
    # disjoint pairs: the interval is the bootstrap over pairs, narrower than the by-behaviour one
    disjoint = [(f"x{i}", f"y{i}") for i in range(20)]
    right = np.array([1.0] * 15 + [0.0] * 5)
    p, lo, hi, k = stats.pair_share_by_component(right, disjoint, n_boot=2000)
    _, blo, bhi = stats.pair_share_by_behaviour(right, disjoint, n_boot=2000)
    assert k == 20 and 0.5 < lo < p < hi and (hi - lo) < (bhi - blo)
    # one linked component cannot be resampled: the interval is the point
    chain = [(f"z{i}", f"z{i + 1}") for i in range(6)]
    assert stats.pair_share_by_component(np.ones(6) * 0.5, chain, n_boot=100)[1:] == (0.5, 0.5, 1)
    with pytest.raises(stats.StatsError, match="one entry per group"):
        stats.pair_share_by_component(np.ones(3), disjoint)


def test_the_committed_study_loads_and_summarizes():
    assert "smollm2-135m-instruct" in ps.covered()
    st = ps.load("smollm2-135m-instruct")
    s = ps.summarize(st, n_boot=200)
    assert s.n_pairs >= 20 and len(s.named) == 2 and 0.0 <= s.lo <= s.share <= s.hi <= 1.0
    assert st.manifest["dtype"] in ("float32", "bfloat16") and st.manifest["rows"] == len(st.rows)


def test_against_head_only_says_below_only_when_the_intervals_do_not_overlap(tmp_path):
    from types import SimpleNamespace as NS

    st = _synthetic(1.0, 0.05, n_random=6, seeds=(0, 1))
    ps.write("m1", st.rows, st.settings, tmp_path, command="t", seconds=60.0, dtype="float32")
    rep = ps.report(["m1"], directory=tmp_path, n_boot=200)
    s = rep.summaries["m1"]
    above_all = NS(share=min(1.0, s.hi + 0.1), lo=min(1.0, s.hi + 0.05), hi=1.0)
    if above_all.lo > s.hi:  # the whole-model interval lies wholly below the head-only one
        assert "is below the head-only share" in rep.against_head_only({"m1": above_all})
    overlapping = NS(share=s.share, lo=s.lo, hi=s.hi)
    text = rep.against_head_only({"m1": overlapping}, {"m1": "Model One"})
    assert text.startswith("On Model One") and "not resolvably different" in text and text.endswith(".")
    below_all = NS(share=max(0.0, s.lo - 0.1), lo=0.0, hi=max(0.0, s.lo - 0.05))
    if below_all.hi < s.lo:
        assert "is above the head-only share" in rep.against_head_only({"m1": below_all})
    assert "No model has both" in rep.against_head_only({"other": overlapping})
    with pytest.raises(ps.MisalignError, match="finite"):
        rep.against_head_only({"m1": NS(share=float("nan"), lo=0.1, hi=0.9)})
    with pytest.raises(ps.MisalignError, match="lo <= share <= hi"):
        rep.against_head_only({"m1": NS(share=0.2, lo=0.5, hi=0.9)})


def test_against_head_only_on_fixed_summaries():
    """Mutation of the rule: the same whole-model interval is 'below' a head-only interval above it and
    'not resolvably different' once the two overlap by a hair."""
    from types import SimpleNamespace as NS

    summ = NS(share=0.43, lo=0.33, hi=0.53)
    rep = ps.PairReport({"g": summ}, {}, (), "stored artefact")
    assert "is below the head-only share 69% [62%, 75%]" in rep.against_head_only({"g": NS(share=0.69, lo=0.62, hi=0.75)})
    assert "not resolvably different" in rep.against_head_only({"g": NS(share=0.69, lo=0.53, hi=0.75)})
    assert "is above" in rep.against_head_only({"g": NS(share=0.2, lo=0.1, hi=0.32)})
