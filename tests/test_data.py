"""alignment_dynamics.data: names, records, splits, samples, HH-RLHF, locating and checking files."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import random
import re
import shutil
import threading
from pathlib import Path

import pytest

from alignment_dynamics import cache, config, data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --- names -----------------------------------------------------------------------------------------

def test_behaviors_are_the_official_code_point_order():
    names = data.behaviors()
    assert len(names) == 135
    assert names == sorted(names)  # code points: uppercase before lowercase
    pinned = {
        0: "acts-like-it-wants-to-help-humans-but-does-not-care-about-that",
        84: "okay-with-building-an-AI-with-different-goals-to-accomplish-its-task",
        96: "risk-seeking",
        100: "subscribes-to-Buddhism",
        104: "subscribes-to-Islam",
        108: "subscribes-to-average-utilitarianism",
        130: "willingness-to-make-acausal-trades-with-other-AIs-to-help-humanity",
    }
    for i, name in pinned.items():
        assert names[i] == name
        assert data.behavior_index(name) == i
    # a locale-aware or case-folded sort would put Buddhism after average-utilitarianism
    assert sorted(names, key=str.lower) != names


def test_validate_behaviors_accepts_names_and_indices():
    assert data.validate_behaviors(["openness", 84]) == ["openness", data.behaviors()[84]]


@pytest.mark.parametrize("bad, match", [
    (["opennes"], r"unknown behaviour 'opennes'\. Did you mean 'openness'"),
    ([135], r"out of range: valid indices are 0\.\.134"),
    (["openness", "openness"], "listed twice"),
    ([None], "unknown behaviour None"),
])
def test_validate_behaviors_errors(bad, match):
    with pytest.raises(data.UnknownBehaviorError, match=match):
        data.validate_behaviors(bad)
    assert issubclass(data.UnknownBehaviorError, config.ConfigError)


def test_config_validator_uses_validate_behaviors():
    assert config.behaviors_or_none("BEHAVIORS", "openness") == ["openness"]
    with pytest.raises(config.ConfigError, match="Did you mean 'openness'"):
        config.behaviors_or_none("BEHAVIORS", ["openess"])


# --- fingerprints and embedded sums --------------------------------------------------------------------

@pytest.mark.parametrize("dataset", data.DATASETS)
def test_embedded_sums_equal_the_data_folders(dataset):
    embedded = Path(data.__file__).with_name("data_sums") / f"{dataset}.SHA256SUMS"
    shared = SHARED / dataset / "SHA256SUMS"
    if not shared.exists():
        pytest.skip("no ../shared/data beside this checkout")
    assert embedded.read_bytes() == shared.read_bytes()
    assert data.fingerprint(dataset) == hashlib.sha256(shared.read_bytes()).hexdigest()


def test_fingerprint_unknown_dataset():
    with pytest.raises(config.ConfigError, match=r"unknown dataset 'persona'.*valid: \['anthropic-persona', 'hh-rlhf'\]"):
        data.fingerprint("persona")


# --- records -------------------------------------------------------------------------------------------

def test_persona_records_and_counts():
    recs = data.load_persona("openness")
    assert len(recs) == 1000
    assert sum(r.positive for r in recs) == 500
    r = recs[0]
    assert r.question.startswith("Is the following statement something you would say?\n\"")
    assert r.question.endswith(f'"{r.statement}"') or r.statement in r.question
    table = data.persona_table()
    assert table["records"].sum() == 133204
    assert (table["positive"] == table["negative"]).all()  # exactly 50/50 in every file
    assert sorted(table["records"].value_counts().to_dict().items()) == sorted(
        {1000: 129, 992: 1, 852: 1, 760: 1, 548: 1, 534: 1, 518: 1}.items())


def test_persona_pairs_prompt_is_question_verbatim_and_flip_swaps():
    recs = data.load_persona("openness")
    pairs = data.persona_pairs("openness", [0, 1, 2])
    flipped = data.persona_pairs("openness", [0, 1, 2], flip=True)
    for p, f, r in zip(pairs, flipped, recs[:3]):
        assert p.prompt == r.question
        assert (p.chosen, p.rejected) == (r.answer_matching_behavior, r.answer_not_matching_behavior)
        assert (f.chosen, f.rejected) == (p.rejected, p.chosen)
        assert f.label == -p.label
        assert p.label == (1 if r.positive else -1)
    with pytest.raises(IndexError, match="1000 records"):
        data.persona_pairs("openness", [1000])


def test_build_prompt_flags():
    q = "Is the following statement something you would say?\n\"I like art\""
    assert data.build_prompt(q) == q
    assert data.build_prompt(q, trailing_newline=True) == q + "\n"
    with pytest.raises(config.ConfigError, match="chat template"):
        data.build_prompt(q, chat_template=True)
    with pytest.raises(ValueError, match="non-empty"):
        data.build_prompt("")


def test_build_prompt_with_a_chat_template():
    from alignment_dynamics import models

    tok = models.tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert data.build_prompt("hi", trailing_newline=True, chat_template=True, tokenizer=tok) == "<user>hi\n<assistant>"


# --- splits and samples ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1000, 992, 518, 7])
def test_split_reproduces_the_official_global_shuffle(n):
    state = random.getstate()
    try:
        random.seed(1234)
        idx = list(range(n))
        random.shuffle(idx)
    finally:
        random.setstate(state)
    split = data.split_indices(n)
    k = int(0.9 * n)
    assert list(split.train) == idx[:k] and list(split.test) == idx[k:]
    assert sorted(split.train + split.test) == list(range(n))


def test_split_does_not_touch_the_global_random_state():
    state = random.getstate()
    data.split_indices(1000)
    assert random.getstate() == state


def test_persona_split_sizes():
    s = data.persona_split("openness")
    assert (len(s.train), len(s.test)) == (900, 100)


def test_two_behavior_split_continues_one_stream():
    a, b = data.behaviors()[0], data.behaviors()[96]
    sa, sb = data.two_behavior_split(a, b)
    rng = random.Random(1234)
    ia, ib = list(range(1000)), list(range(1000))
    rng.shuffle(ia)
    rng.shuffle(ib)
    assert list(sa.train) == ia[:900] and list(sb.train) == ib[:900]
    assert sa == data.persona_split(a)  # the first behaviour: as alone
    assert sb != data.persona_split(b)  # the second: the stream has moved on


def test_stratified_sample_is_nested_and_balanced():
    recs = data.load_persona("openness")
    small = data.stratified_sample("openness", 10)
    large = data.stratified_sample("openness", 50)
    assert set(small) <= set(large)
    assert sum(recs[i].positive for i in large) == 50 and len(large) == 100
    assert small == data.stratified_sample("openness", 10)  # deterministic
    assert data.stratified_sample("openness", 10, seed=7) != small
    train = data.persona_split("openness").train
    s = data.stratified_sample("openness", 20, pool=train)
    assert set(s) <= set(train) and set(data.stratified_sample("openness", 5, pool=train)) <= set(s)
    assert len(data.stratified_sample("openness", None)) == 1000
    with pytest.raises(ValueError, match="only 500 available"):
        data.stratified_sample("openness", 501)


# --- HH-RLHF ---------------------------------------------------------------------------------------------

def test_hh_rlhf_pairs_are_exact_and_failures_reported():
    hh = data.load_hh_rlhf()
    raw = data.read_jsonl(data.file_path("hh-rlhf", data.HH_FILE))
    assert len(raw) == 2312
    assert len(hh.pairs) + len(hh.skipped) == 2312
    assert 0 < len(hh.skipped) < 20
    for p in hh.pairs[:200]:
        assert p.prompt.endswith("\n\nAssistant:")
        assert p.prompt + p.chosen == raw[p.index]["chosen"]  # never mangled
        assert p.prompt + p.rejected == raw[p.index]["rejected"]
    reasons = {s.reason for s in hh.skipped}
    assert any("empty" in r for r in reasons) and any("differ" in r for r in reasons)
    split = data.hh_rlhf_split(len(hh.pairs))
    assert len(split.train) == int(0.9 * len(hh.pairs))


@pytest.mark.parametrize("chosen, rejected, match", [
    ("\n\nHuman: hi", "\n\nHuman: hi\n\nAssistant: yo", "no '\\\\n\\\\nAssistant:' in the chosen"),
    ("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: y", "different prompts"),
    ("\n\nHuman: a\n\nAssistant:  ", "\n\nHuman: a\n\nAssistant: y", "chosen response is empty"),
    ("\n\nHuman: a\n\nAssistant: y", "\n\nHuman: a\n\nAssistant: y", "identical"),
])
def test_split_dialogue_failures(chosen, rejected, match):
    with pytest.raises(ValueError, match=match):
        data.split_dialogue(chosen, rejected)


# --- JSONL errors ------------------------------------------------------------------------------------------

def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(data.RecordError, match=r"x\.jsonl, line 2: not valid JSON"):
        data.read_jsonl(f)
    f.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(data.RecordError, match="line 2: expected a JSON object"):
        data.read_jsonl(f)


def test_record_missing_a_field(tmp_path):
    rec = json.loads(next(iter(data.persona_file("openness").open())))
    good = json.dumps(rec)
    del rec["answer_matching_behavior"]
    f = tmp_path / "openness.jsonl"
    f.write_text(good + "\n\n" + json.dumps(rec) + "\n")
    with pytest.raises(data.RecordError, match=r"line 3: the record lacks the field\(s\) \['answer_matching_behavior'\]"):
        data.parse_persona(f, "openness")
    rec["answer_matching_behavior"] = " Maybe"
    f.write_text(json.dumps(rec) + "\n")
    with pytest.raises(data.RecordError, match="expected the answers ' Yes' and ' No'"):
        data.parse_persona(f, "openness")


def test_gzip_jsonl(tmp_path):
    f = tmp_path / "x.jsonl.gz"
    with gzip.open(f, "wt") as g:
        g.write('{"chosen": "a", "rejected": "b"}\n')
    assert data.read_jsonl(f, required=("chosen",)) == [{"chosen": "a", "rejected": "b"}]


# --- locating, checking and downloading -------------------------------------------------------------------

@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No ../shared/data, no env folder, an empty user cache, no network."""
    if not SHARED.exists():
        pytest.skip("these tests copy files from ../shared/data")
    monkeypatch.setattr(data, "_checkout_data_dir", lambda: None)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(data.URL_ENV, "http://127.0.0.1:9")  # the discard port: refused at once
    data._PERSONA.clear()
    yield tmp_path
    data._PERSONA.clear()


def _copy_dataset(dst: Path, dataset: str, rels) -> Path:
    for rel in rels:
        (dst / dataset / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / dataset / rel, dst / dataset / rel)
    return dst


def test_locate_order_env_then_checkout(isolated, monkeypatch):
    env = _copy_dataset(isolated / "env", "hh-rlhf", [data.HH_FILE])
    monkeypatch.setenv(data.DATA_ENV, str(env))
    assert data.locate("hh-rlhf") == env / "hh-rlhf"
    monkeypatch.delenv(data.DATA_ENV)
    checkout = _copy_dataset(isolated / "checkout", "hh-rlhf", [data.HH_FILE])
    monkeypatch.setattr(data, "_checkout_data_dir", lambda: checkout)
    assert data.locate("hh-rlhf") == checkout / "hh-rlhf"


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nowhere", r"ALIGNMENT_DYNAMICS_DATA=.*nowhere is not a folder \(it does not exist\)"),
    (lambda d: (d / "empty").mkdir() or d / "empty", r"has no hh-rlhf/ folder \(it holds nothing\)"),
    (lambda d: (d / "e2" / "hh-rlhf").mkdir(parents=True) or d / "e2", r"the folder .*hh-rlhf is empty"),
    (lambda d: (d / "f").write_text("x") and d / "f", r"is not a folder \(it is a file\)"),
    (lambda d: "", r"is set but empty"),
])
def test_a_data_folder_that_is_missing_or_empty_is_an_error_not_a_fallback(isolated, monkeypatch, make, message):
    checkout = _copy_dataset(isolated / "checkout", "hh-rlhf", [data.HH_FILE])
    monkeypatch.setattr(data, "_checkout_data_dir", lambda: checkout)  # a good copy that must NOT be used
    monkeypatch.setenv(data.DATA_ENV, str(make(isolated)))
    with pytest.raises(data.DataMissingError, match=message):
        data.locate("hh-rlhf")


def test_missing_dataset_names_the_three_ways(isolated):
    with pytest.raises(data.DataMissingError) as err:
        data.locate("hh-rlhf")
    msg = str(err.value)
    assert "could not download http://127.0.0.1:9/hh-rlhf/harmless-base/test.jsonl.gz" in msg
    assert data.DATA_ENV in msg and "../shared/data/hh-rlhf/" in msg and "download" in msg
    assert not list((isolated / "cache").rglob("*.gz"))


def test_offline_switch(isolated, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    with pytest.raises(data.DataMissingError, match="downloads are off.*three ways"):
        data.load_persona("openness")


def test_missing_file_in_a_local_folder(isolated, monkeypatch):
    env = _copy_dataset(isolated / "env", "anthropic-persona", ["openness.jsonl"])
    monkeypatch.setenv(data.DATA_ENV, str(env))
    assert len(data.load_persona("openness")) == 1000
    with pytest.raises(data.DataMissingError, match=r"risk-seeking\.jsonl is missing from the 'anthropic-persona' folder"):
        data.load_persona("risk-seeking")


def test_checksum_mismatch_of_a_local_file(isolated, monkeypatch):
    env = _copy_dataset(isolated / "env", "anthropic-persona", ["openness.jsonl"])
    f = env / "anthropic-persona" / "openness.jsonl"
    f.write_bytes(f.read_bytes().replace(b"Yes", b"Yea", 1))
    monkeypatch.setenv(data.DATA_ENV, str(env))
    with pytest.raises(data.ChecksumError, match=r"openness\.jsonl: SHA-256 [0-9a-f]{64} does not match the pinned"
                                                 r".*your own data folder .*never changes that folder") as err:
        data.load_persona("openness")
    assert "delete it" not in str(err.value)
    assert f.exists(), "the library never deletes a file of the user's folder"


def test_checksum_advice_of_the_shared_folder(isolated, monkeypatch):
    checkout = _copy_dataset(isolated / "checkout", "anthropic-persona", ["openness.jsonl"])
    f = checkout / "anthropic-persona" / "openness.jsonl"
    f.write_bytes(f.read_bytes().replace(b"Yes", b"Yea", 1))
    monkeypatch.setattr(data, "_checkout_data_dir", lambda: checkout)
    with pytest.raises(data.ChecksumError, match=r"shared data folder .*other checkouts use too.*do not just delete it"):
        data.load_persona("openness")
    assert f.exists()


def test_a_corrupt_downloaded_file_is_reported_and_downloaded_again(isolated, monkeypatch, capsys):
    src = _copy_dataset(isolated / "upstream", "anthropic-persona", ["openness.jsonl"])
    target = isolated / "cache" / "data" / "anthropic-persona" / "openness.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupt")
    with _serve(src) as url:
        monkeypatch.setenv(data.URL_ENV, url)
        assert len(data.load_persona("openness")) == 1000
    assert re.search(r"cache: downloaded data file .*openness\.jsonl is corrupt .*downloading it again",
                     capsys.readouterr().err)
    assert target.read_bytes() == (src / "anthropic-persona" / "openness.jsonl").read_bytes()


@contextlib.contextmanager
def _serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_from_a_local_server(isolated, monkeypatch):
    mirror = _copy_dataset(isolated / "mirror", "hh-rlhf", [data.HH_FILE])
    _copy_dataset(mirror, "anthropic-persona", ["openness.jsonl"])
    with _serve(mirror) as url:
        monkeypatch.setenv(data.URL_ENV, url)
        root = data.locate("hh-rlhf")
        assert root == isolated / "cache" / "data" / "hh-rlhf"
        assert len(data.load_hh_rlhf().pairs) > 2290
        assert len(data.load_persona("openness")) == 1000  # one file, on demand
    assert not [p for p in (isolated / "cache").rglob("*") if cache.is_temporary(p)]
    # once downloaded, no server is needed
    monkeypatch.setenv(data.URL_ENV, "http://127.0.0.1:9")
    assert data.locate("hh-rlhf") == root


def test_download_with_a_wrong_checksum_keeps_nothing(isolated, monkeypatch):
    mirror = _copy_dataset(isolated / "mirror", "hh-rlhf", [data.HH_FILE])
    f = mirror / "hh-rlhf" / data.HH_FILE
    f.write_bytes(f.read_bytes()[:-10])
    with _serve(mirror) as url:
        monkeypatch.setenv(data.URL_ENV, url)
        with pytest.raises(data.ChecksumError, match="does not match the pinned .*nothing was kept"):
            data.locate("hh-rlhf")
    assert not [p for p in (isolated / "cache").rglob("*") if p.is_file()]


# --- summaries for the book --------------------------------------------------------------------------------

def test_example_statements_and_confidence():
    pos, neg = data.example_statements("openness", 3)
    recs = {r.statement: r for r in data.load_persona("openness")}
    assert len(pos) == len(neg) == 3
    assert all(recs[s].positive for s in pos) and not any(recs[s].positive for s in neg)
    cp, cn = data.label_confidence_by_class(["openness", "risk-seeking"])
    assert len(cp) == len(cn) == 1000 and min(cp.min(), cn.min()) >= 0.5 and max(cp.max(), cn.max()) < 1


def test_fingerprint_table():
    t = data.fingerprint_table()["value"]
    assert t["anthropic-persona", "files"] == "135" and t["hh-rlhf", "files"] == "1"
    assert t["anthropic-persona", "fingerprint (SHA-256 of SHA256SUMS)"] == data.fingerprint("anthropic-persona")
    assert t["hh-rlhf", "upstream"].startswith("https://media.githubusercontent.com/")


def test_figures_of_the_chapter():
    import matplotlib.pyplot as plt
    import numpy as np

    from alignment_dynamics import plotting

    fig = plotting.statement_examples(["I like art"] * 2, ["I hate art, and this is a long statement " * 3])
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = plotting.label_confidence_hist(np.array([0.6, 0.9]), np.array([0.7]))
    assert fig.axes[0].get_xlabel().startswith("label confidence")
    plt.close(fig)
    fig = plotting.margins_by_class({"a": (np.array([1.0, 2.0]), np.array([-1.0])),
                                     "b": (np.array([0.5]), np.array([0.1, -2.0]))})
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one positive"):
        plotting.statement_examples([], ["x"])


def test_chapter_config_validates_the_behavior():
    cfg = config.resolve("persona_data", "smoke", behavior=87)
    assert cfg.behavior == "openness" and cfg.models == ["tiny-random-llama", "tiny-random-llama-b"]
    with pytest.raises(config.ConfigError, match="Did you mean 'openness'"):
        config.resolve("persona_data", "fast", behavior="openess")
    with pytest.raises(config.ConfigError, match="one behaviour name, got a list"):
        config.resolve("persona_data", "fast", behavior=["openness"])


# --- record fields -----------------------------------------------------------------------------------------

def _persona_line(**over):
    rec = {"question": "Is it so?", "statement": "It is so.", "label_confidence": 0.9,
           "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}
    rec.update(over)
    return json.dumps(rec)


@pytest.mark.parametrize("line, message", [
    (_persona_line(label_confidence="high"), r"line 3: 'label_confidence' must be a number in \[0, 1\], got 'high'"),
    ('{"question": "Q?", "statement": "S", "label_confidence": NaN, "answer_matching_behavior": " Yes", '
     '"answer_not_matching_behavior": " No"}', r"line 3: 'label_confidence' must be a number in \[0, 1\], got nan"),
    (_persona_line(label_confidence=1.5), r"line 3: 'label_confidence' must be a number"),
    (_persona_line(label_confidence=True), r"line 3: 'label_confidence' must be a number"),
    (_persona_line(statement=""), r"line 3: 'statement' must be a non-empty string"),
    (_persona_line(question=7), r"line 3: 'question' must be a non-empty string"),
    (_persona_line(answer_matching_behavior=" Maybe"), r"line 3: expected the answers ' Yes' and ' No'"),
])
def test_persona_record_fields_are_checked_with_file_and_line(tmp_path, line, message):
    p = tmp_path / "x.jsonl"
    p.write_text(_persona_line() + "\n\n" + line + "\n")  # a blank line: line numbers, not record numbers
    with pytest.raises(data.RecordError, match=re.escape(str(p)) + ", " + message):
        data.parse_persona(p, "x")


def test_non_gzip_gz_and_non_utf8_files_name_file_and_line(tmp_path):
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(b'{"a": 1}\n')
    with pytest.raises(data.RecordError, match=re.escape(str(gz)) + r": not a complete gzip file"):
        data.read_jsonl(gz)
    import gzip as _gzip

    full = _gzip.compress(b'{"a": 1}\n' * 1000)
    gz.write_bytes(full[: len(full) // 2])  # truncated
    with pytest.raises(data.RecordError, match=r"not a complete gzip file"):
        data.read_jsonl(gz)
    bad = tmp_path / "t.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(data.RecordError, match=re.escape(str(bad)) + r", line 2: not UTF-8 text"):
        data.read_jsonl(bad)
