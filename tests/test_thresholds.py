"""`[detect] crop_recall`: the crops' threshold moved along the label photos' out-of-fold crop scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_oneclass.device.config import parse_config
from edge_oneclass.device.errors import ConfigError, ModelError
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.running import decision_thresholds
from edge_oneclass.device.model.thresholds import threshold_for_recall

COLOUR = Path(__file__).resolve().parent / "fixtures" / "colour" / "model.tflite"


def test_threshold_for_recall_keeps_that_share_of_positives() -> None:
    pos = np.arange(100, dtype=float)
    for recall in (0.5, 0.9, 0.95):
        t = threshold_for_recall(pos, recall)
        assert np.mean(pos >= t) >= recall and np.mean(pos >= t + 1) < recall


def test_crop_recall_moves_only_the_crop_threshold(tmp_path: Path) -> None:
    card = ModelCard.load(COLOUR.with_name("model.json"))
    oof_crop = np.load(COLOUR.with_name("calibration.npz"))["oof_crop"]
    assert decision_thresholds(card, COLOUR) == card.thresholds()
    t = decision_thresholds(card, COLOUR, crop_recall=0.9)
    assert t.whole == card.threshold and t.crop == threshold_for_recall(oof_crop, 0.9)
    assert np.mean(oof_crop >= t.crop) >= 0.9
    # a [model] threshold override moves both, keeping their gap
    shifted = decision_thresholds(card, COLOUR, override=card.threshold + 1.0, crop_recall=0.9)
    assert shifted.crop == pytest.approx(t.crop + 1.0)


def test_crop_recall_without_the_calibration_file_names_it(tmp_path: Path) -> None:
    for name in ("model.tflite", "model.json"):
        shutil.copy(COLOUR.with_name(name), tmp_path / name)
    card = ModelCard.load(tmp_path / "model.json")
    with pytest.raises(ModelError, match=r"calibration.npz not found: \[detect\] crop_recall needs"):
        decision_thresholds(card, tmp_path / "model.tflite", crop_recall=0.9)
    (tmp_path / "calibration.npz").write_bytes(b"not the export's")
    with pytest.raises(ModelError, match="does not match the sha256 in model.json"):
        decision_thresholds(card, tmp_path / "model.tflite", crop_recall=0.9)
    assert decision_thresholds(card, tmp_path / "model.tflite") == card.thresholds()   # not needed without the key


def test_crop_recall_config_key(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path / "c.toml").detect.crop_recall is None
    assert parse_config({"detect": {"crop_recall": 0.9}}, tmp_path / "c.toml").detect.crop_recall == 0.9
    with pytest.raises(ConfigError, match="detect.crop_recall"):
        parse_config({"detect": {"crop_recall": 1.5}}, tmp_path / "c.toml")


def test_the_card_floor_from_background_holds(tmp_path: Path) -> None:
    for name in ("model.tflite", "calibration.npz"):
        shutil.copy(COLOUR.with_name(name), tmp_path / name)
    card = json.loads(COLOUR.with_name("model.json").read_text())
    card["calibration"]["crop"] = {"from_background": 5.0}
    (tmp_path / "model.json").write_text(json.dumps(card))
    moved = decision_thresholds(ModelCard.load(tmp_path / "model.json"), tmp_path / "model.tflite", crop_recall=0.9)
    assert moved.crop == 5.0
