"""The two calibrated thresholds a frame is judged with: the whole view's and the crops'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from device.errors import ModelError

if TYPE_CHECKING:
    from device.model_card import ModelCard


@dataclass(frozen=True)
class Thresholds:
    whole: float
    crop: float

    def shifted(self, whole: float | None) -> Thresholds:
        """A `[model] threshold` override moves both thresholds by the same amount (their gap is calibrated)."""
        if whole is None:
            return self
        return Thresholds(float(whole), self.crop + (float(whole) - self.whole))


def threshold_for_recall(pos: np.ndarray, target_recall: float) -> float:
    """The highest threshold t with mean(pos >= t) >= target_recall: the fewest alarms at that recall."""
    pos = np.sort(np.asarray(pos, dtype=np.float64))
    k = int(np.floor((1.0 - target_recall) * len(pos) + 1e-9))  # positives we may lose
    return float(pos[min(k, len(pos) - 1)])


def crop_threshold(card: ModelCard, model_path: str | Path, crop_recall: float) -> float:
    """The crop threshold at another recall of the label photos' out-of-fold crop-view scores (calibration.npz
    beside the model), never below the floor the model's `--background` crops set at export."""
    from device.model_card import CalibrationUnavailable, read_calibration

    cal = card.calibration or {}
    hint = "copy it from the same export as the model, or remove [detect] crop_recall"
    try:
        oof_crop = np.asarray(read_calibration(model_path, card, required=("oof_crop",))["oof_crop"], np.float64)
    except CalibrationUnavailable as exc:
        if exc.reason == "missing":
            raise ModelError(f"{exc.path} not found: [detect] crop_recall needs the model's calibration file; "
                             f"{hint}") from None
        if exc.reason == "mismatch":
            raise ModelError(f"{exc.path} does not match the sha256 in model.json; {hint}") from None
        raise ModelError(f"{exc.path}: no out-of-fold crop scores ({exc.detail}); {hint}") from None
    floor = (cal.get("crop") or {}).get("from_background")
    t = threshold_for_recall(oof_crop, crop_recall)
    return max(t, float(floor)) if floor is not None else t


def decision_thresholds(card: ModelCard, model_path: str | Path, override: float | None = None,
                        crop_recall: float | None = None) -> Thresholds:
    """What the daemon decides with: the card's two thresholds, the crops' moved to `[detect] crop_recall` if
    set, then both shifted by a `[model] threshold` override."""
    base = card.thresholds()
    if crop_recall is not None:
        base = Thresholds(base.whole, crop_threshold(card, model_path, crop_recall))
    return base.shifted(override)
