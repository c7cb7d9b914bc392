"""The misalignment chapter's sections as result objects (wholemodel.sections), on a tiny model with the
smoke profile's settings: what each section computes, its generated readings and its figures."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from alignment_dynamics import book, config, models, verdicts
from alignment_dynamics import wholemodel as wm
from alignment_dynamics.plotting import misalignment as mplot
from alignment_dynamics.wholemodel import sections

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The smoke profile's protocol on a tiny model (with its own user cache): the model, the settings,
    the sets and the runs."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNMENT_DYNAMICS_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("TQDM_DISABLE", "1")
    yield _live()
    mp.undo()


def _live():
    cfg = config.resolve("misalignment", "smoke")
    lm = models.tiny(0, layers=3)
    settings = wm.TrainSettings(beta=cfg.beta, lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                micro_batch=cfg.micro_batch)
    seeds = sections.seed_list(cfg.seed, cfg.n_seeds)
    sets = wm.persona_sets(lm.tokenizer, cfg.behavior, n_train=cfg.n_train, n_test=cfg.n_test)
    res = wm.run_misalignment(lm.model, sets, seeds=seeds, method=cfg.method, top_blocks=cfg.top_blocks,
                              align=settings, flip=settings, micro_batch=cfg.micro_batch)
    return cfg, lm, seeds, sets, res


def test_seed_list():
    assert sections.seed_list(1234, 3) == [1234, 1235, 1236]
    with pytest.raises(wm.MisalignError, match="positive int"):
        sections.seed_list(0, 0)


def test_trl_sentence_follows_the_tolerance():
    assert sections._trl_sentence(2e-8, 2).startswith("The two loss trajectories agree to 2.0e-08")
    assert "does not compute what TRL computes" in sections._trl_sentence(10 * sections.TRL_TOL, 2)
    assert sections._trl_summary(2e-8, 2) == "computes what TRL's DPOTrainer computes (the same losses to 2e-08)"
    assert sections._trl_summary(10 * sections.TRL_TOL, 2).startswith("does not reproduce")


def test_trl_check_agrees_with_trl(live):
    cfg, lm, _, sets, _ = live
    trl = sections.trl_check(lm, cfg, sets)
    assert (trl.trl_pairs, trl.trl_steps) == (cfg.trl_pairs, cfg.trl_steps) and len(trl.table) == cfg.trl_steps
    assert trl.trl_gap == float(np.abs(trl.table["TRL loss"] - trl.table["our loss"]).max()) <= sections.TRL_TOL
    assert trl.verdict.verdict == "agrees" and "agree" in trl.trl_sentence


def test_top_block_check_is_the_identity_and_refuses_a_difference(live, monkeypatch):
    cfg, lm, *_ = live
    check = sections.top_block_check(lm, cfg)
    assert check.identity_gap == 0.0 and check.identity_reading == "the identity holds bit for bit"
    assert check.top_blocks == cfg.top_blocks and len(check.modes) == 3 and set(check.runs) == set(check.modes)
    fig = mplot.modes_curves(check)
    assert len(fig.axes[0].get_lines()) >= 3

    def off(model, sets, settings, modes, seed):
        runs = dict(check.runs)
        a = runs[check.modes[0]]
        runs[check.modes[1]] = dataclasses.replace(a, train={k: v + 1e-3 for k, v in a.train.items()}) \
            if dataclasses.is_dataclass(a) else a
        return runs

    monkeypatch.setattr(wm.misalignment, "compare_modes", off)
    with pytest.raises(wm.MisalignError, match="must be one computation"):
        sections.top_block_check(lm, cfg)
    assert sections.top_block_check(lm, cfg, require_identity=False).identity_reading.startswith("the identity fails")


def test_align_and_official_readings():
    class R:
        align_acc_start, align_acc_end, steps, n_seeds = 0.5, 0.75, 8, 3
    assert sections.align_sentence(R()) == ("Alignment works: the test accuracy goes from 0.50 (the model's own "
                                            "agreement with the behaviour) to 0.75 after 8 steps (mean over 3 seeds).")
    R.align_acc_end = 0.5
    assert sections.align_sentence(R()).startswith("Alignment does not raise the test accuracy here")
    assert "barely moves" in sections.official_reading(math.log(2) + sections.OFFICIAL_MOVED / 2)
    assert "moves" in sections.official_reading(math.log(2) - 2 * sections.OFFICIAL_MOVED)
    assert "barely" not in sections.official_reading(math.log(2) - 2 * sections.OFFICIAL_MOVED)


def test_head_only_check_holds_on_the_real_protocol(live):
    cfg, lm, _, sets, res = live
    head = sections.head_only_check(lm, cfg, sets, res)
    assert head.head_gap < 1e-10 and head.verdict.verdict == "agrees" and head.vocab == lm.vocab_size
    assert head.n_train == len(sets.train) and len(head.curves["base_test_loss"]) == cfg.head_steps + 1
    np.testing.assert_array_equal(head.curves["base_test_loss"], head.curves["aligned_test_loss"])
    fig = mplot.head_only_curves(head, batch_size=cfg.batch_size)
    assert len(fig.axes) >= 2
    assert dataclasses.replace(head, head_gap=1e-6).verdict.verdict == "differs"


def test_held_out_geometry_and_maps(live):
    cfg, lm, _, sets, res = live
    geo = sections.held_out_geometry(lm, cfg, sets, res)
    assert geo.before["distinguishability"] > 0 and geo.before != geo.after
    assert list(geo.table.index)[0] == "distinguishability" and len(geo.maps) == 2
    assert geo.maps[0].shape == (len(sets.test), 2) and geo.positive.sum() == (np.asarray(sets.labels_test) > 0).sum()
    assert len(mplot.held_out_maps(geo).axes) >= 2


def test_hh_protocol_and_head_only(live):
    cfg, lm, seeds, *_ = live
    hh = sections.hh_protocol(lm, cfg, seeds)
    assert hh.hh_n_train == len(hh.sets.train) <= cfg.hh_n_train and hh.hh_max_tokens == cfg.hh_max_tokens
    assert hh.settings.batch_size == min(cfg.batch_size, hh.hh_n_train // 4) and hh.reading.n_seeds == cfg.hh_seeds
    head = sections.hh_head_only(lm, cfg, hh)
    r = head.runs
    assert head.hh_head_gap == float(np.abs(r["base"]["train"]["loss"] - r["aligned"]["train"]["loss"]).max()) > 0
    assert len(mplot.hh_curves(hh, head).axes) >= 6


def test_record_claims_uses_the_results(live):
    cfg, lm, seeds, sets, res = live

    class Study:
        def claim_text(self, a, b, measure, labels):
            return f"{a} − {b} {measure}"

        def verdict(self, measure="speed_k"):
            return verdicts.not_testable(f"stub {measure}")

    head = sections.HeadOnlyCheck(vocab=10, head_steps=2, head_gap=0.0, head_acc0_base=0.5, head_acc0_aligned=0.5,
                                  n_train=4, curves={"base_test_loss": np.zeros(3)})
    reading = wm.protocol_reading(res, k=1)
    hh = sections.HHProtocol(hh_n_train=8, hh_n_test=4, hh_max_tokens=96, sets=None, settings=None, res=res,
                             reading=reading)
    book.begin("misalignment")
    rows = sections.record_claims(Study(), head, hh, {})
    assert [r["verdict"] for r in rows[:3]] == ["not testable here", "not testable here", "agrees"]
    assert rows[2]["measured"] == "largest loss difference Base vs Aligned: 0.0e+00"
    assert rows[3]["verdict"] == reading.speed.verdict and "8 short dialogues" in rows[3]["measured"]
