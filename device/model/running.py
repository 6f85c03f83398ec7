"""The running model: one immutable object for everything the device decides with.

The runner (interpreter, class prior), its card, the thresholds in use (the card's, moved by `[detect]
crop_recall` and a `[model] threshold` override) and the path it was loaded from travel together. The daemon holds
exactly one reference to it and hands it to every frame; a model pushed over MQTT is loaded and checked as a new
RunningModel and swapped in by replacing that reference between two frames (`Daemon.swap_model`). Nothing else
keeps a copy of a threshold: the Decider works on margins (score minus threshold), the sinks learn of a new model
through `Sink.model_changed(info)`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.model.calibration import CalibrationUnavailable, read_calibration
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.class_prior import ClassPrior
from edge_oneclass.device.model.confidence import confidence, confidence_scale
from edge_oneclass.device.model.info import ModelInfo
from edge_oneclass.device.model.runner import Inference, Runner
from edge_oneclass.device.model.thresholds import Thresholds, threshold_for_recall


def crop_threshold(card: ModelCard, model_path: str | Path, crop_recall: float) -> float:
    """The crop threshold at another recall of the label photos' out-of-fold crop-view scores (calibration.npz
    beside the model), never below the floor the model's `--background` crops set at export."""
    cal = card.calibration or {}
    hint = "copy it from the same export as the model, or remove [detect] crop_recall"
    try:
        arrays = read_calibration(model_path, card.calibration, required=("oof_crop",))
    except CalibrationUnavailable as exc:
        if exc.reason == "missing":
            raise ModelError(f"{exc.path} not found: [detect] crop_recall needs the model's calibration file; "
                             f"{hint}") from None
        if exc.reason == "mismatch":
            raise ModelError(f"{exc.path} does not match the sha256 in model.json; {hint}") from None
        raise ModelError(f"{exc.path}: no out-of-fold crop scores ({exc.detail}); {hint}") from None
    floor = (cal.get("crop") or {}).get("from_background")
    t = threshold_for_recall(np.asarray(arrays["oof_crop"], np.float64), crop_recall)
    return max(t, float(floor)) if floor is not None else t


def decision_thresholds(card: ModelCard, model_path: str | Path, override: float | None = None,
                        crop_recall: float | None = None) -> Thresholds:
    """What the daemon decides with: the card's two thresholds, the crops' moved to `[detect] crop_recall` if
    set, then both shifted by a `[model] threshold` override."""
    base = card.thresholds()
    if crop_recall is not None:
        base = Thresholds(base.whole, crop_threshold(card, model_path, crop_recall))
    return base.shifted(override)


@dataclass(frozen=True, eq=False)
class RunningModel:
    runner: Runner
    card: ModelCard
    thresholds: Thresholds
    path: Path

    @classmethod
    def load(cls, path: str | Path, threads: int = 2, override: float | None = None,
             crop_recall: float | None = None) -> RunningModel:
        """Load and verify model.tflite + model.json at `path` (ModelError naming the file on any problem)."""
        runner = Runner(path, threads=threads)
        return cls.of(runner, decision_thresholds(_card(runner), path, override, crop_recall))

    @classmethod
    def of(cls, runner: Runner, thresholds: Thresholds | None = None) -> RunningModel:
        """A verified runner with the given thresholds (default: its card's)."""
        card = _card(runner)
        return cls(runner, card, thresholds if thresholds is not None else card.thresholds(), Path(runner.model_path))

    @property
    def label(self) -> str:
        return self.card.label

    @property
    def sha256(self) -> str:
        return self.card.sha256

    @property
    def prior(self) -> ClassPrior | None:
        return self.runner.prior

    @property
    def input_size(self) -> int:
        return self.runner.input_size

    @property
    def embedding_dim(self) -> int:
        return self.runner.embedding_dim

    @functools.cached_property
    def info(self) -> ModelInfo:
        """What the sinks and the MQTT `model` status say about this model."""
        return ModelInfo.from_card(self.card, self.thresholds.whole, self.thresholds.crop)

    def infer(self, image: np.ndarray, crop: bool = False) -> Inference:
        return self.runner.infer(image, crop=crop)

    def confidence(self, score: float) -> float:
        """A whole-view-scale score as 0..1 (0.5 at the threshold in use)."""
        return confidence(score, self.thresholds.whole, confidence_scale(self.card))


def _card(runner: Runner) -> ModelCard:
    if runner.card is None:
        raise ModelError(f"{runner.model_path}: loaded without its model.json; a running model needs the card")
    return runner.card
