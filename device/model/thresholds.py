"""The two calibrated thresholds a frame is judged with: the whole view's and the crops'."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
