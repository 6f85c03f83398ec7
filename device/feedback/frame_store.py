"""Bounded folders of JPEGs the feedback keeps for the next retraining: flagged frames and missed ones."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edge_oneclass.device.state_files import atomic_write, remove_oldest

FRAMES_DIR = "frames"      # negatives' JPEGs: `train-edge --background DIR/frames` uses them at the next retrain
MISSED_DIR = "missed"      # positives' JPEGs: add them to the label's photos at the next retrain


class FrameStore:
    """A bounded folder of JPEGs (oldest removed): the flagged frames, for `train-edge --background`."""

    def __init__(self, directory: str | Path, max_files: int) -> None:
        self.dir = Path(directory)
        self.max_files = int(max_files)
        self._n = 0

    def add(self, jpeg: bytes, prefix: str, t: float | None = None) -> Path | None:
        if self.max_files <= 0:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        t = time.time() if t is None else t
        self._n += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t))
        path = self.dir / f"{stamp}-{int((t % 1) * 1000):03d}-{os.getpid()}-{self._n:04d}-{prefix}.jpg"
        atomic_write(path, jpeg)
        self.prune()
        return path

    def prune(self) -> None:
        remove_oldest(sorted(self.dir.glob("*.jpg")), self.max_files)
