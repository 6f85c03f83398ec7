"""Scoring folders of still images with the device's own scorer: what eval-edge and the benchmarks measure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.errors import DataError, ImageError
from edge_oneclass.device.image_io import list_images, load_rgb
from edge_oneclass.device.model.running import RunningModel

log = logging.getLogger(__name__)


@dataclass
class ScoredFolder:
    paths: list[Path]
    scores: np.ndarray
    skipped: list[str]


def score_folder(scorer: FrameScorer, model: RunningModel, folder: str | Path, desc: str = "scoring",
                 paths: list[Path] | None = None,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> ScoredFolder:
    """Score every image under `folder` (or the given `paths`) as the daemon scores a still scene
    (`FrameScorer.score_still`): the frame's score is on the whole view's scale, >= threshold = detected.
    `transform` changes each decoded RGB image first: a benchmark's camera condition (e.g. greyscale night vision)."""
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
        scores.append(scorer.score_still(frame if transform is None else transform(frame), model).score)
    return ScoredFolder(kept, np.asarray(scores, dtype=np.float64), skipped)
