"""Scoring folders with the device's own runner: what eval-edge and the benchmarks measure."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.errors import DataError, ImageError
from device.image_io import list_images, load_rgb
from device.runner import Runner

log = logging.getLogger(__name__)


@dataclass
class ScoredFolder:
    paths: list[Path]
    scores: np.ndarray
    skipped: list[str]


def score_folder(runner: Runner, folder: str | Path, tiles: bool = False, desc: str = "scoring",
                 paths: list[Path] | None = None) -> ScoredFolder:
    """Score every image under `folder` (or the given `paths`) exactly as the daemon scores a frame."""
    folder = Path(folder)
    if paths is None:
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found")
        paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no images (jpg, jpeg, png, bmp, webp) found")
    kept, scores, skipped = [], [], []
    for p in tqdm(paths, desc=desc, unit="img", dynamic_ncols=True, leave=False):
        try:
            frame = load_rgb(p)
        except ImageError as exc:
            log.warning("%s", exc)
            skipped.append(str(p))
            continue
        kept.append(p)
        scores.append(runner.score_frame(frame, tiles=tiles))
    return ScoredFolder(kept, np.asarray(scores, dtype=np.float64), skipped)
