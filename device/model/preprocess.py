"""The ONE preprocessing function. Training, export calibration, evaluation and the daemon all call it,
so a frame looks the same to the model everywhere.

The model takes RGB uint8 pixels at (size, size); any normalisation happens inside the model graph.
`preprocess` crops a box of the frame and resizes it to the model's square input. Without a box it takes the
largest centred square (the "whole view"): squashing a 16:9 frame into a square changes what the backbone sees
(measured on a cat clip: 67 % of squashed frames had a dog breed as ImageNet's top class, 11 % of centre-cropped
ones), so shapes are kept and the sides the centre square leaves out are looked at by the daemon's crops
(`device/regions.py`). The daemon only ever asks for square boxes; a non-square box is squashed, which the
benchmarks use to measure the old pipeline against the new one.

Resizing is a box filter by whole-number factors (OpenCV's fast INTER_AREA path) down to less than twice
the target, then bilinear in fixed point (INTER_LINEAR_EXACT): within one grey level of a plain INTER_AREA
resize and 3-4x faster on camera frames, and bit-identical on x86 and arm64 (measured under emulation: plain
INTER_LINEAR differs by one grey level in 21 % of values between the two), so the workstation and the Pi
feed the model the same tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PREPROCESSING_ID = "rgb-uint8-centre-square-box-int-then-linear-exact-v3"


@dataclass(frozen=True)
class Box:
    """A rectangle of the frame in pixels: left, top, width, height (square for every crop the daemon scores)."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def square(cls, x: int, y: int, side: int) -> Box:
        return cls(int(x), int(y), int(side), int(side))

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0

    @property
    def side(self) -> int:
        return max(self.w, self.h)

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


def centre_square(width: int, height: int) -> Box:
    """The whole view: the largest centred square of a width x height frame."""
    side = min(width, height)
    return Box.square((width - side) // 2, (height - side) // 2, side)


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


def preprocess(frame: np.ndarray, size: int, box: Box | None = None) -> np.ndarray:
    """RGB uint8 frame (H, W, 3) -> model input (size, size, 3) RGB uint8 of `box` (default: the centre square)."""
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frame.dtype}")
    fh, fw = frame.shape[:2]
    if box is None:
        box = centre_square(fw, fh)
    x0, y0 = max(0, box.x), max(0, box.y)
    x1, y1 = min(fw, box.x + box.w), min(fh, box.y + box.h)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} lies outside the {fw}x{fh} frame")
    crop = frame[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    fx, fy = max(1, w // size), max(1, h // size)
    if fx > 1 or fy > 1:
        crop = cv2.resize(crop, (w // fx, h // fy), interpolation=cv2.INTER_AREA)
    out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR_EXACT)
    return np.ascontiguousarray(out)
