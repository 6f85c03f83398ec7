"""Has the scene changed since the last frame the model scored? If not, that frame's score still holds.

On a fixed camera most frames are the same empty scene as the one before (or the same dog lying still). Scoring
them again costs a model run and learns nothing, so the scorer carries the last score forward and re-scores only
when the scene changed, and at the latest every `stationary_interval` seconds (a re-check, as Frigate re-checks a
stationary object every `stationary.interval` frames).

What counts as a change, on a small grey copy of the frame (`rows` high, area-averaged: averaging 5x5 pixels
divides independent sensor noise by 5, so +-3 grey levels of noise become well under 1):
- the difference to the last *scored* frame (not to the previous one: a dog creeping in a little per frame still
  adds up to a change), after subtracting its median (a small uniform brightness drift, auto-exposure or the
  light of a passing cloud, is not a change; a shift of more than `global_threshold` grey levels is: the lights
  went on, the camera switched to IR);
- pixels that differ by more than `threshold` grey levels, after an opening that drops isolated pixels;
- a change when they cover at least `min_fraction` of the small frame (0.1 %: about 9 pixels of 128x72, a dog at
  4 % of a 640-pixel-wide frame covers 20 or more), or when the frame's size changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_OPEN = np.ones((2, 2), np.uint8)


@dataclass(frozen=True)
class SceneChangeSettings:
    rows: int = 72                # rows of the small grey copy
    threshold: float = 12.0       # grey levels (0..255) a pixel must move, after removing the median shift
    min_fraction: float = 0.001   # share of the small frame's pixels that must move
    global_threshold: float = 20.0  # a uniform brightness shift larger than this is a new scene


class SceneChange:
    """Feed frames in order: `changed(frame)` says whether it differs from the last frame `accept`ed."""

    def __init__(self, settings: SceneChangeSettings | None = None) -> None:
        self.settings = settings or SceneChangeSettings()
        self._reference: np.ndarray | None = None

    def reset(self) -> None:
        self._reference = None

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        rows = min(self.settings.rows, h)
        cols = max(1, round(rows * w / h))
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (cols, rows), interpolation=cv2.INTER_AREA).astype(np.float32)

    def changed(self, rgb: np.ndarray) -> tuple[bool, np.ndarray]:
        """(whether the scene changed since the accepted reference, the small copy to `accept` if it is scored)."""
        small = self._small(rgb)
        ref = self._reference
        if ref is None or ref.shape != small.shape:
            return True, small
        diff = small - ref
        shift = float(np.median(diff))
        if abs(shift) > self.settings.global_threshold:
            return True, small
        diff -= shift
        moved = cv2.morphologyEx((np.abs(diff) > self.settings.threshold).astype(np.uint8), cv2.MORPH_OPEN, _OPEN)
        return bool(np.count_nonzero(moved) >= self.settings.min_fraction * moved.size), small

    def accept(self, small: np.ndarray) -> None:
        """The frame `small` came from was scored: later frames are compared with it."""
        self._reference = small
