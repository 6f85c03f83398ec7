"""One camera frame: the pixels and when they were taken, the unit every source hands the daemon."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """RGB uint8 pixels (H, W, 3) and a timestamp.

    `t` is capture time in seconds since the epoch for live sources, and the source's own timeline
    (index / fps) for files and folders, so replays give the same events every time.
    """

    image: np.ndarray
    t: float
    index: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order cameras and OpenCV's size arguments use."""
        return int(self.image.shape[1]), int(self.image.shape[0])
