"""The ONE preprocessing function. Training, export calibration, evaluation and the daemon all call it,
so a frame looks the same to the model everywhere.

The model takes RGB uint8 pixels at (size, size); any normalisation happens inside the model graph.
The whole frame (or region of interest) is squeezed to a square without cropping, so a subject at the
edge of the view is never cut away.

Resizing is a box filter by whole-number factors (OpenCV's fast INTER_AREA path) down to less than twice
the target, then bilinear: within one grey level of a plain INTER_AREA resize, and 3-4x faster on camera
frames (0.4 ms instead of 1.7 ms for 640x480 -> 224 on one core), which keeps the loop's overhead over
inference small.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PREPROCESSING_ID = "rgb-uint8-squash-box-int-then-linear-v2"


@dataclass(frozen=True)
class Roi:
    """Region of interest as fractions of the frame: left, top, width, height in [0, 1]."""

    x: float = 0.0
    y: float = 0.0
    w: float = 1.0
    h: float = 1.0

    def __post_init__(self) -> None:
        for name in ("x", "y", "w", "h"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"roi.{name} must be between 0 and 1, got {v}")
        if self.w <= 0 or self.h <= 0 or self.x + self.w > 1.0 + 1e-9 or self.y + self.h > 1.0 + 1e-9:
            raise ValueError(f"roi {self} does not fit inside the frame")


def crop_fraction(frame: np.ndarray, roi: Roi) -> np.ndarray:
    h, w = frame.shape[:2]
    x0, y0 = int(round(roi.x * w)), int(round(roi.y * h))
    x1, y1 = max(x0 + 1, int(round((roi.x + roi.w) * w))), max(y0 + 1, int(round((roi.y + roi.h) * h)))
    return frame[y0:y1, x0:x1]


def preprocess(frame: np.ndarray, size: int, roi: Roi | None = None) -> np.ndarray:
    """RGB uint8 frame (H, W, 3) -> model input (size, size, 3) RGB uint8."""
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frame.dtype}")
    if roi is not None:
        frame = crop_fraction(frame, roi)
    h, w = frame.shape[:2]
    fx, fy = max(1, w // size), max(1, h // size)
    if fx > 1 or fy > 1:
        frame = cv2.resize(frame, (w // fx, h // fy), interpolation=cv2.INTER_AREA)
    out = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)


# Whole frame plus a 2x2 grid: lets a subject that is small in a wide view fill one tile.
TILES: tuple[Roi, ...] = (
    Roi(0.0, 0.0, 1.0, 1.0),
    Roi(0.0, 0.0, 0.5, 0.5),
    Roi(0.5, 0.0, 0.5, 0.5),
    Roi(0.0, 0.5, 0.5, 0.5),
    Roi(0.5, 0.5, 0.5, 0.5),
)


def preprocess_tiles(frame: np.ndarray, size: int, roi: Roi | None = None) -> list[np.ndarray]:
    """The frame (or ROI) whole and as a 2x2 grid, each preprocessed; the caller keeps the best score."""
    if roi is not None:
        frame = crop_fraction(frame, roi)
    return [preprocess(crop_fraction(frame, t), size) for t in TILES]
