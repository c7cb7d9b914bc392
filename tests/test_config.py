"""Profiles and parameters: one place resolves them, and bad input is a clear error."""

from __future__ import annotations

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
    ({"beta": -1.0}, "BETA must be > 0"),
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


def test_a_chapter_can_check_its_parameters_together():
    ok = config.resolve("misalignment", "smoke", model="smollm2-135m-instruct", compare_model="gemma-3-270m")
    assert ok.model != ok.compare_model
    with pytest.raises(ConfigError, match="MODEL and COMPARE_MODEL must be two different models"):
        config.resolve("misalignment", "fast", compare_model="smollm2-135m-instruct")
    with pytest.raises(ConfigError, match="MODEL and COMPARE_MODEL must be two different models"):
        config.resolve("misalignment", "smoke", compare_model="tiny-random-llama")
