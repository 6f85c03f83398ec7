"""The two calibrated thresholds a frame is judged with: the whole view's and the crops'."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    whole: float
    crop: float

    def shifted(self, whole: float | None) -> Thresholds:
        """A `[model] threshold` override moves both thresholds by the same amount (their gap is calibrated)."""
        if whole is None:
            return self
        return Thresholds(float(whole), self.crop + (float(whole) - self.whole))
