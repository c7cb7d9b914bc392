"""The controlled misalignment study (wholemodel.study): rows, the artefact, the paired comparisons."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignment_dynamics import models, stats
from alignment_dynamics.chapters.common import FIG3_BEHAVIORS
from alignment_dynamics.wholemodel import study, Pairs, MisalignError

B3 = tuple(FIG3_BEHAVIORS[:3])


@pytest.fixture(scope="module")
def tiny_study():
    lm = models.tiny(0, layers=3)
    s = study.StudySettings(behaviors=B3, seeds=(0, 1), n_train=16, n_test=8, batch_size=4, k=2, top_blocks=1)
    return s, study.run_study(lm.model, lm.tokenizer, s, progress=False)


def test_rows_cover_every_cell_with_finite_start_independent_measures(tiny_study):
    s, rows = tiny_study
    assert len(rows) == len(B3) * 2 * len(study.CONDITIONS)
    for r in rows:
        assert all(np.isfinite(r[m]) for m in study.MEASURES)
        assert 0.0 <= r["acc0"] <= 1.0 and r["grad_norm0"] > 0 and r["dist_start"] > 0
        assert r["n_train"] == 16 and r["n_test"] == 8
    # the 'other' start is the next behaviour's aligned model
    others = {r["behavior"]: r["other"] for r in rows if r["condition"] == "other"}
    assert others == {B3[0]: B3[1], B3[1]: B3[2], B3[2]: B3[0]}
    # every start of one cell shares the base model's held-out statements: the base start's accuracy
    # is the base model's own, so it is the same for the base start of both seeds only by chance, but the
    # aligned start moved away from it in at least one cell
    by = {(r["behavior"], r["seed"], r["condition"]): r for r in rows}
    assert any(by[(b, sd, "aligned")]["acc0"] != by[(b, sd, "base")]["acc0"] for b in B3 for sd in (0, 1))


def test_seeds_draw_different_statements_and_test_statements_are_held_out():
    lm = models.tiny(0, layers=2)
    a = study.resampled_sets(lm.tokenizer, B3[0], seed=0, n_train=16, n_test=8)
    b = study.resampled_sets(lm.tokenizer, B3[0], seed=1, n_train=16, n_test=8)
    assert set(a.index_train) != set(b.index_train)
    assert not set(a.index_train) & set(a.index_test)
    again = study.resampled_sets(lm.tokenizer, B3[0], seed=0, n_train=16, n_test=8)
    assert list(again.index_train) == list(a.index_train)


def test_sham_pairs_shuffle_labels_and_keep_the_answer_shares():
    p = Pairs(tuple((1, i) for i in range(40)), tuple((5,) for _ in range(40)), tuple((7,) for _ in range(40)),
              tuple(bool(i % 3) for i in range(40)))
    s = study.sham_pairs(p, seed=3)
    assert sum(s.chosen_first) == sum(p.chosen_first) and s.chosen_first != p.chosen_first
    assert s.prompt == p.prompt and study.sham_pairs(p, seed=3) == s


def test_artefact_round_trip_and_a_corrupted_or_incomplete_one_is_refused(tiny_study, tmp_path):
    s, rows = tiny_study
    study.write({"tiny": {"rows": rows, "settings": s, "dtype": "float32"}}, tmp_path, command="t", seconds=1.0)
    st = study.load("tiny", tmp_path)
    assert st.settings == s and len(st.rows) == len(rows)
    assert study.covered(tmp_path) == ["tiny"]
    path = tmp_path / "tiny.json"
    body = json.loads(path.read_text())
    body["rows"][0]["speed_k"] = 1.0
    path.write_text(json.dumps(body))
    with pytest.raises(MisalignError, match="checksum"):
        study.load("tiny", tmp_path)
    with pytest.raises(MisalignError, match="exactly once"):
        study.write({"tiny": {"rows": rows[:-1], "settings": s}}, tmp_path / "x", command="t", seconds=1.0)
    bad = [dict(r) for r in rows]
    bad[3]["loss_k"] = float("nan")
    with pytest.raises(MisalignError, match="non-finite"):
        study.write({"tiny": {"rows": bad, "settings": s}}, tmp_path / "y", command="t", seconds=1.0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _synthetic(effect: float, noise: float = 0.01, n_b: int = 5, n_s: int = 5) -> study.Study:
    names = tuple(FIG3_BEHAVIORS[:n_b])
    s = study.StudySettings(behaviors=names, seeds=tuple(range(n_s)))
    rng = np.random.default_rng(0)
    rows = []
    for b in names:
        for sd in range(n_s):
            base = rng.normal(1.0, 0.2)
            for c in study.CONDITIONS:
                v = base + (effect if c == "aligned" else 0.0) + rng.normal(0, noise)
                rows.append({"behavior": b, "seed": sd, "condition": c, "other": "", "n_train": 128, "n_test": 48,
                             **{m: float(v) for m in study.MEASURES}})
    return study.Study("synthetic", rows, s)


def test_comparisons_find_a_planted_effect_and_no_effect_where_none_is_planted():
    up = study.summarize(_synthetic(+0.1), n_boot=500)
    c = up.get("aligned", "base", "speed_k")
    assert c.verdict.verdict == "agrees" and c.lo > 0 and c.positive_behaviors == 5 and c.n_cells == 25
    assert up.get("aligned", "base", "loss_k").verdict.verdict == "differs"  # loss should fall, it rose
    assert up.get("other", "base", "speed_k").sign() == "containing 0"
    down = study.summarize(_synthetic(-0.1), n_boot=500)
    assert down.get("aligned", "base", "speed_k").verdict.verdict == "differs"
    null = study.summarize(_synthetic(0.0), n_boot=500)
    assert null.get("aligned", "base", "speed_k").verdict.verdict == "not resolvable at this sample size"
    with pytest.raises(MisalignError, match="unknown start"):
        study.paired(_synthetic(0.0), "aligned", "nope", "speed_k")
    with pytest.raises(MisalignError, match="unknown measure"):
        study.paired(_synthetic(0.0), "aligned", "base", "speed")


def test_the_interval_counts_behaviours_not_cells():
    # one behaviour with a large effect and four with none: the cluster bootstrap is much wider than a
    # bootstrap over the 25 cells as if independent
    v = np.r_[np.full(5, 1.0), np.zeros(20)] + np.random.default_rng(1).normal(0, 0.01, 25)
    groups = [i // 5 for i in range(25)]
    _, lo, hi = stats.cluster_mean_ci(v, groups, n_boot=2000, seed=0)
    _, lo_c, hi_c = stats.mean_ci(v, n_boot=2000, seed=0)
    assert hi - lo > 1.5 * (hi_c - lo_c)
    with pytest.raises(stats.StatsError, match="one cluster label per value"):
        stats.cluster_mean_ci(v, groups[:-1])
    with pytest.raises(stats.StatsError, match="finite"):
        stats.cluster_mean_ci(np.r_[v[:-1], np.nan], groups)


def test_settings_refuse_bad_input():
    with pytest.raises(MisalignError, match="at least two different behaviours"):
        study.StudySettings(behaviors=(B3[0],), seeds=(0,))
    with pytest.raises(Exception, match="unknown behaviour"):
        study.StudySettings(behaviors=(B3[0], "not-a-behaviour"), seeds=(0,))
    with pytest.raises(MisalignError, match="seeds must be distinct"):
        study.StudySettings(behaviors=B3, seeds=(0, 0))
    with pytest.raises(MisalignError, match="k must be in"):
        study.StudySettings(behaviors=B3, seeds=(0,), k=99)


def test_the_committed_study_covers_both_models_and_loads_complete():
    assert study.covered() == ["gemma-3-270m", "smollm2-135m-instruct"]
    for m in study.covered():
        st = study.load(m)  # checksum, format and completeness checked
        assert len(st.rows) == len(st.settings.behaviors) * len(st.settings.seeds) * len(study.CONDITIONS)
        assert len(st.settings.seeds) >= 5 and len(st.settings.behaviors) >= 5


def test_the_report_keeps_each_models_study_as_a_field():
    rep = study.report(["smollm2-135m-instruct", "no-such-model"], n_boot=50, progress=False)
    assert set(rep.studies) == set(rep.summaries) == {"smollm2-135m-instruct"} and rep.missing == ["no-such-model"]
    assert rep.studies["smollm2-135m-instruct"].settings.behaviors and "behaviours ×" in rep.design()
    assert [len(p["rows"]) for p in rep.panels()] == [len(study.SPEED_ROWS)]
