"""Cheap motion detection on a downscaled frame: where did something move since the scene's running average?

The detector only proposes where to look (Frigate's approach): a small, distant subject fills the model's
input once its moving area is cropped out. It never decides presence by itself.

Per frame: grey at `height` rows, contrast stretched by the recent 4th/96th percentiles (auto-exposure
drift is not motion), a light blur, then the absolute difference to a running average, thresholded. The
running average keeps a trail of where a subject has been (a second or so), which would make the region
around a walking dog several times its size; so only pixels that also changed since the previous frame count
(the subject where it is now), then the mask is dilated and split into contours. A frame where most of the
picture changes (lights on, IR switch, camera moved) resets the average instead of reporting motion everywhere.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

# (x0, y0, x1, y1) in full-frame pixels
MotionBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class MotionSettings:
    height: int = 100            # rows of the downscaled grey frame
    threshold: int = 30          # grey levels (after contrast stretch) that count as a change
    min_area: float = 10.0       # contour area in downscaled pixels
    alpha: float = 0.2           # running-average weight of each new frame (at 5 fps: ~1 s memory)
    reset_fraction: float = 0.8  # more changed area than this resets the average (lighting change)
    contrast_history: int = 50   # frames of percentiles averaged for the contrast stretch


class MotionDetector:
    """Feed frames in order; each call returns the moving areas of that frame (empty on the first)."""

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self._avg: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._contrast: deque[tuple[float, float]] = deque(maxlen=self.settings.contrast_history)

    def reset(self) -> None:
        self._avg, self._prev, self._shape = None, None, None
        self._contrast.clear()

    def _grey(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        small_h = min(self.settings.height, h)
        small_w = max(1, round(small_h * w / h))
        grey = cv2.cvtColor(cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        lo, hi = np.percentile(grey, (4, 96))
        self._contrast.append((float(lo), float(hi)))
        lo, hi = np.mean(self._contrast, axis=0)
        if hi > lo:
            grey = np.clip((grey.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(grey, (3, 3), 1.0)

    def __call__(self, rgb: np.ndarray) -> list[MotionBox]:
        h, w = rgb.shape[:2]
        if self._shape != (h, w):   # first frame, or the camera changed resolution
            self.reset()
            self._shape = (h, w)
        grey = self._grey(rgb)
        if self._avg is None or self._prev is None:
            self._avg, self._prev = grey.astype(np.float32), grey
            return []
        s = self.settings
        changed_since_avg = cv2.absdiff(grey, cv2.convertScaleAbs(self._avg)) > s.threshold
        changed_since_prev = cv2.absdiff(grey, self._prev) > s.threshold // 2
        self._prev = grey
        mask = cv2.dilate((changed_since_avg & changed_since_prev).astype(np.uint8) * 255, None, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        scale = h / grey.shape[0]
        boxes: list[MotionBox] = []
        changed = 0.0
        for c in contours:
            area = cv2.contourArea(c)
            changed += area
            if area > s.min_area:
                x, y, bw, bh = cv2.boundingRect(c)
                boxes.append((int(x * scale), int(y * scale), min(w, int((x + bw) * scale)),
                              min(h, int((y + bh) * scale))))
        if changed > s.reset_fraction * grey.size:
            self._avg = grey.astype(np.float32)
            return []
        cv2.accumulateWeighted(grey, self._avg, s.alpha)
        return boxes
