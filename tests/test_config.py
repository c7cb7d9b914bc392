"""Profiles and parameters: one place resolves them, and bad input is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment_dynamics import config
from alignment_dynamics.config import ChapterSpec, ConfigError, Param


@pytest.fixture
def toy_chapter():
    spec = ChapterSpec(
        slug="toy_chapter_for_tests",
        params=(
            Param("BETA", {"smoke": 0.1, "fast": 0.01, "full": 0.01}, "DPO beta", config.positive_float),
            Param("STEPS", {"smoke": 3, "fast": 100, "full": 100}, "steps", config.positive_int),
            Param("LOSS", {"smoke": "sigmoid", "fast": "sigmoid", "full": "sigmoid"}, "loss",
                  config.one_of("sigmoid", "ipo")),
        ),
        settings={"n_per_class": {"smoke": 4, "fast": 40, "full": None}},
    )
    config.register(spec)
    yield spec
    del config.CHAPTERS[spec.slug]


def test_resolve_takes_the_profile_values_and_settings(toy_chapter):
    cfg = config.resolve(toy_chapter.slug, "smoke")
    assert (cfg.beta, cfg.steps, cfg.loss, cfg.n_per_class, cfg.profile) == (0.1, 3, "sigmoid", 4, "smoke")
    cfg = config.resolve(toy_chapter.slug, "fast", beta=0.05)
    assert cfg.beta == 0.05 and cfg.steps == 100 and cfg["n_per_class"] == 40
    assert "beta" in repr(cfg) and "fast" in repr(cfg)


def test_int_is_accepted_for_a_float_parameter(toy_chapter):
    assert config.resolve(toy_chapter.slug, "fast", beta=1).beta == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -1.0}, r"BETA must be float > 0.0, got -1.0"),
    ({"beta": float("inf")}, r"BETA must be a finite number .*got inf"),
    ({"beta": float("-inf")}, r"BETA must be a finite number"),
    ({"beta": "x"}, "BETA must be float"),
    ({"beta": float("nan")}, "NaN"),
    ({"steps": 2.5}, "STEPS must be int"),
    ({"steps": True}, "STEPS must be int"),
    ({"loss": "sigmoidd"}, "Did you mean 'sigmoid'"),
    ({"betaa": 0.1}, "has no parameter 'BETAA'"),
])
def test_bad_values_are_clear_errors(toy_chapter, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve(toy_chapter.slug, "fast", **kwargs)


def test_unknown_profile_and_chapter_list_what_is_valid(toy_chapter):
    with pytest.raises(ConfigError, match=r"valid profiles: \['smoke', 'fast', 'full'\]"):
        config.resolve(toy_chapter.slug, "fats")
    with pytest.raises(ConfigError, match="Did you mean 'fast'"):
        config.check_profile("fats")
    with pytest.raises(ConfigError, match="unknown chapter 'intr'.*Did you mean 'intro'"):
        config.chapter("intr")


def test_profile_params_inject_every_parameter(toy_chapter):
    assert config.profile_params(toy_chapter.slug, "smoke") == {
        "PROFILE": "smoke", "BETA": 0.1, "STEPS": 3, "LOSS": "sigmoid"}
    assert config.fast_defaults(toy_chapter.slug)["STEPS"] == 100


def test_config_is_read_only(toy_chapter):
    cfg = config.resolve(toy_chapter.slug, "fast")
    with pytest.raises(AttributeError):
        cfg.beta = 3
    with pytest.raises(AttributeError, match="has no 'nope'"):
        cfg.nope


def test_a_param_needs_every_profile():
    with pytest.raises(ConfigError, match="no value for profile"):
        Param("X", {"fast": 1}, "x")
    with pytest.raises(ConfigError, match="UPPER_CASE"):
        Param("x", {p: 1 for p in config.PROFILES}, "x")


def test_parse_value_reads_cli_values_like_papermill():
    assert config.parse_value("0.05") == 0.05
    assert config.parse_value("12") == 12
    assert config.parse_value("gemma-3-270m") == "gemma-3-270m"
    assert config.parse_value("[a, b]") == ["a", "b"]
    assert config.parse_value("null") is None


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("1e-5", 1e-5), ("1E3", 1000.0), (".5", 0.5), ("-2", -2),  # floats as float() reads them
    ("010", 10), ("007", 7), ("1_000", 1000),  # a leading zero is decimal, never octal
    ("0x10", "0x10"), (".inf", ".inf"), ("0o17", "0o17"),  # not numbers for papermill: strings (the check refuses)
    ("True", True), ("False", False), ("None", None), ("true", True),
    ("[gemma-3-270m, smollm2-135m-instruct]", ["gemma-3-270m", "smollm2-135m-instruct"]),
    ("[1e-3, 010]", [1e-3, 10]), ("'0.5'", "0.5"),
])
def test_parse_value_is_papermills(text, value):
    got = config.parse_value(text)
    assert got == value and type(got) is type(value)
    import papermill.cli as pm

    if not text.startswith(("[", "'")) and text != "true":  # papermill's own -p parser agrees
        assert pm._resolve_type(text) == value


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "NaN", "Infinity", "[0.1, inf]"])
def test_parse_value_refuses_non_finite_numbers(text):
    with pytest.raises(ConfigError, match="not a finite number"):
        config.parse_value(text)


def test_parse_value_bad_list_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot parse parameter value .* as a list"):
        config.parse_value("[a, b")


@pytest.mark.parametrize("slug, params, message", [
    ("update_rate", {"N": 65}, r"N must be an even integer in \[4, 1000000\] \(two equal classes\), got 65; use 64 or 66"),
    ("priority", {"N_PER": 201}, r"N_PER must be an even integer .* got 201"),
    ("update_rate", {"N": 200_000_000}, r"N must be an even integer in \[4, 1000000\], got 200000000 \(the upper limit"),
    ("update_rate", {"N": 1_000_000, "D": 4096}, r"N \* D \* REPEATS is too large: .* GiB\); the limit is"),
    ("dpo_last_layer", {"N": 100_000, "V": 262_144}, r"N \* V is too large"),
    ("dpo_last_layer", {"STEPS": 0}, r"STEPS must be int in \[1, 100000\], got 0"),
    ("dpo_last_layer", {"BETA": float("inf")}, r"BETA must be a finite number"),
    ("dpo_last_layer", {"BETA": ".inf"}, r"BETA must be float > 0.0, got '.inf' \(str\)"),
    ("dpo_last_layer", {"STEPS": "0x10"}, r"STEPS must be int in \[1, 100000\], got '0x10' \(str\)"),
    ("misalignment", {"MODEL": "smollm2-135m-instruct", "COMPARE_MODEL": "smollm2-135m-instruct"},
     "MODEL and COMPARE_MODEL must be two different"),
    ("persona_data", {"MODELS": ["smollm2-135m-instruct", "smollm2-135m-instruct"]},
     r"MODELS lists the same model more than once: \['smollm2-135m-instruct'\]"),
    ("misalignment", {"N_SEEDS": 10_000}, r"N_SEEDS must be int in \[1, 100\]"),
])
def test_parameters_are_checked_together_before_any_kernel(slug, params, message):
    """validate_params (what the build calls before executing) applies ranges, parity, upper limits,
    duplicates and the rules between parameters."""
    merged = {**config.profile_params(slug, "smoke"), **params}
    with pytest.raises(ConfigError, match=message):
        config.validate_params(slug, merged)


def test_every_size_parameter_has_an_upper_limit():
    """No int parameter of a chapter (but SEED) accepts an absurd size."""
    for slug, spec in config.CHAPTERS.items():
        for p in spec.params:
            v = p.values["smoke"]
            if p.name == "SEED" or not isinstance(v, int) or isinstance(v, bool) or p.check is None:
                continue
            with pytest.raises(ConfigError, match="must be"):
                p.check(p.name, 10 ** 12)


def test_a_chapter_can_check_its_parameters_together():
    ok = config.resolve("misalignment", "smoke", model="smollm2-135m-instruct", compare_model="gemma-3-270m")
    assert ok.model != ok.compare_model
    with pytest.raises(ConfigError, match="MODEL and COMPARE_MODEL must be two different models"):
        config.resolve("misalignment", "fast", compare_model="smollm2-135m-instruct")
    with pytest.raises(ConfigError, match="MODEL and COMPARE_MODEL must be two different models"):
        config.resolve("misalignment", "smoke", compare_model="tiny-random-llama")


def test_the_registry_fills_on_first_use_in_a_fresh_process():
    """``config`` alone registers every chapter when the registry is first used (chapters/<slug>.py),
    one per page of _toc.yml, and ``chapters`` imported first registers them once."""
    import subprocess
    import sys

    code = ("import sys, yaml\nfrom pathlib import Path\nimport alignment_dynamics.config as c\n"
            "assert 'alignment_dynamics.chapters' not in sys.modules\n"
            "toc = yaml.safe_load(Path(sys.argv[1]).read_text())\n"
            "pages = {toc['root'].split('/')[-1]} | {ch['file'].split('/')[-1] for part in toc['parts'] "
            "for ch in part['chapters']}\n"
            "assert set(c.CHAPTERS) == pages - {'references'}, sorted(c.CHAPTERS)\n"
            "assert c.resolve('intro', 'smoke').slug == 'intro'\n")
    toc = str(Path(__file__).resolve().parents[1] / "_toc.yml")
    proc = subprocess.run([sys.executable, "-c", code, toc], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    code_first = "import alignment_dynamics.chapters\nfrom alignment_dynamics import config\nprint(len(config.CHAPTERS))"
    proc = subprocess.run([sys.executable, "-c", code_first], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == [str(len(config.CHAPTERS))], proc.stderr


@pytest.mark.parametrize("profile", config.PROFILES)
def test_the_sweep_chapters_share_distinguishability_s_sample(profile):
    """training_dynamics and prioritization sweep the sample distinguishability embeds (one cache)."""
    dist = config.resolve("distinguishability", profile)
    for slug in ("training_dynamics", "prioritization"):
        cfg = config.resolve(slug, profile)
        assert (cfg.sweep_per_class, cfg.sweep_behaviors) == (dist.per_class, dist.behaviors), slug
