"""The build's record as result objects: the intro's scorecard counts and the reproducibility page's
environment, machine and execution report."""

import pytest

from alignment_dynamics import build_record as br
from alignment_dynamics.validate import ConfigError


def _claim(chapter, verdict):
    return {"chapter": chapter, "claim": "c", "source": "paper summary", "measured": "m", "verdict": verdict}


def test_scorecard_counts_each_verdict_and_chapter():
    claims = [_claim("a", "agrees"), _claim("a", "differs"), _claim("b", "agrees"),
              _claim("c", "not resolvable at this sample size"), _claim("c", "not testable here"),
              _claim("c", "partly agrees")]
    card = br.scorecard(claims)
    assert (card.n_claims, card.n_chapters) == (6, 3)
    assert (card.n_agrees, card.n_partly, card.n_differs, card.n_unresolved, card.n_untestable) == (2, 1, 1, 1, 1)
    assert len(card.table.data) == 6


def test_scorecard_of_no_claims_is_all_zero():
    card = br.scorecard([])
    assert (card.n_claims, card.n_chapters, card.n_agrees) == (0, 0, 0)


def test_scorecard_rejects_an_unknown_verdict_and_a_missing_field():
    with pytest.raises(ConfigError, match="valid verdicts"):
        br.scorecard([_claim("a", "sort of")])
    with pytest.raises(ConfigError, match="verdict"):
        br.scorecard([{"chapter": "a"}])


def test_environment_counts_mismatches_ignoring_local_suffixes():
    rows = [{"package": "torch", "extra": "book", "pinned": "2.5.1", "installed": "2.5.1+cpu"},
            {"package": "numpy", "extra": "book", "pinned": "2.1.0", "installed": "2.1.3"},
            {"package": "pytest", "extra": "test", "pinned": "8.0", "installed": "absent"}]
    env = br.environment(rows)
    assert (env.n_pins, env.n_mismatch) == (3, 2)
    assert list(env.pins["package"]) == ["torch", "numpy", "pytest"]


def test_environment_reads_the_project_pins():
    env = br.environment()
    assert env.n_pins == len(env.pins) > 0 and 0 <= env.n_mismatch <= env.n_pins


_MACHINE = {"cpu": "Test CPU", "torch_threads": 3, "auto_dtype": "float32", "native_bf16_reason": "no AMX"}


def test_machine_prefers_the_reports_record():
    m = br.machine({"machine": _MACHINE, "chapters": []})
    assert (m.cpu, m.threads, m.dtype, m.bf16_reason) == ("Test CPU", 3, "float32", "no AMX")


@pytest.mark.parametrize("report", [None, {"chapters": []}, {"machine": None}])
def test_machine_falls_back_to_this_machine(report):
    from alignment_dynamics import hardware

    m = br.machine(report)
    assert m.cpu == hardware.cpu_model() and m.dtype in ("float32", "bfloat16")


def test_execution_report_sums_the_chapters():
    report = {"chapters": [{"name": "a", "cached": True, "wall_s": 1.5, "status": "ok", "key": "k" * 16},
                           {"name": "b", "cached": False, "wall_s": 2.25, "status": "ok", "key": "j" * 16}]}
    r = br.execution_report(report)
    assert (r.n_chapters, r.n_cached, r.total_s) == (2, 1, 3.75)
    assert list(r.table["chapter"]) == ["a", "b"]
    assert (br.execution_report(None).n_chapters, br.execution_report(None).total_s) == (0, 0)


def test_execution_report_rejects_a_row_without_its_time():
    with pytest.raises(ConfigError, match="wall_s"):
        br.execution_report({"chapters": [{"name": "a", "cached": True}]})


def test_scorecard_sentence_agrees_with_each_count():
    """"1 is not testable", "2 are"; "1 agrees", "2 agree": the counts sentence follows the numbers."""
    claims = [_claim("a", "agrees"), _claim("a", "differs"), _claim("b", "agrees"),
              _claim("c", "not resolvable at this sample size"), _claim("c", "not testable here"),
              _claim("c", "partly agrees")]
    text = br.scorecard(claims).counts_text
    assert text == ("2 agree with the paper, 1 partly agrees, 1 differs, 1 cannot be resolved at the sample size "
                    "of this build, and 1 is not testable here")
    more = br.scorecard(claims + [_claim("d", "not testable here"), _claim("d", "differs")]).counts_text
    assert "2 are not testable here" in more and "2 differ," in more
    assert br.scorecard([]).counts_text.startswith("0 agree with the paper")


def test_count_phrase():
    from alignment_dynamics import book

    assert book.count_phrase(1, "epoch") == "1 epoch" and book.count_phrase(3, "epoch") == "3 epochs"
    assert book.count_phrase(0, "is", "are") == "0 are"
    for bad in (-1, 1.5, True):
        with pytest.raises(book.GlueError, match="int >= 0"):
            book.count_phrase(bad, "seed")
