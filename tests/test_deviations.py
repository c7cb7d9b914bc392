"""The deviations table reads this build's values from the chapter registry."""

import pytest

from alignment_dynamics import config, deviations


def test_deviations_name_the_quantisation_and_follow_the_registry():
    rows = {r["what"]: r for r in deviations.deviations("fast")}
    assert "Q4_1" in rows["model"]["this book"] and "Q4_K_M" in rows["model"]["this book"]
    assert str(config.chapter("training_dynamics").settings["sweep_batch"]["fast"]) in rows["last-layer batch (sweeps)"]["this book"]
    assert "top" in rows["whole-model training"]["this book"] and "LoRA" in rows["whole-model training"]["official"]
    with pytest.raises(config.ConfigError):
        deviations.deviations("quick")


def test_deviations_table_shows_every_row():
    table = deviations.deviations_table("smoke")
    assert list(table.data["what"]) == [r["what"] for r in deviations.deviations("smoke")]
