"""Finding, validating, de-duplicating and splitting the user's image folder, and streaming it in batches.

Images are decoded and preprocessed by the device's own code (`device.image_io`, `device.model.preprocess`),
so training sees frames exactly as the Pi will. Nothing holds the whole folder in memory.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_oneclass.device.errors import DataError, ImageError
from edge_oneclass.device.image_io import list_images, load_rgb
from edge_oneclass.device.model.preprocess import preprocess

log = logging.getLogger(__name__)

MIN_IMAGES = 20


@dataclass
class ImageSet:
    """The usable images of one folder, plus what was dropped and why."""

    root: Path
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)


def scan_folder(root: str | Path, min_images: int = MIN_IMAGES, what: str = "images") -> ImageSet:
    """List, validate and de-duplicate the images under `root`.

    Every file is decoded once here, so a corrupt file is named now and not halfway through training.
    Exact duplicates (same decoded pixels) are dropped: they would inflate the memory bank and leak
    between the training and validation splits.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: folder not found; pass the folder that holds your {what}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass the folder that holds your {what}")
    candidates = list_images(root)
    seen: dict[str, Path] = {}
    result = ImageSet(root=root, paths=[])
    for path in tqdm(candidates, desc=f"checking {what}", unit="img", leave=False, disable=len(candidates) < 50):
        try:
            rgb = load_rgb(path)
        except ImageError as exc:
            result.skipped.append((path, str(exc)))
            continue
        digest = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        if digest in seen:
            result.duplicates.append(path)
            continue
        seen[digest] = path
        result.paths.append(path)
    for path, why in result.skipped:
        log.warning("skipped %s", why if str(path) in why else f"{path}: {why}")
    if result.skipped:
        log.warning("skipped %d unreadable file(s) in %s", len(result.skipped), root)
    if result.duplicates:
        log.info("dropped %d duplicate image(s) in %s", len(result.duplicates), root)
    if len(result.paths) < min_images:
        raise DataError(f"{root}: only {len(result.paths)} usable {what} found (need at least {min_images}); "
                        "add more jpg/jpeg/png/bmp/webp files")
    return result


def split(paths: Sequence[Path], val_fraction: float, seed: int, min_val: int = 10,
          groups: Sequence[int] | None = None) -> tuple[list[Path], list[Path]]:
    """Seeded shuffle, then hold out `val_fraction` (at least `min_val`) for validation.

    With `groups` (one id per path), whole groups go to one side: near-duplicates (bursts, video frames)
    split across train and validation would make validation look easier than new photos are, and the
    threshold calibrated on it too strict.
    """
    n_val = max(min_val, int(round(len(paths) * val_fraction)))
    n_val = min(n_val, len(paths) - min_val)
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(len(paths))
        val_idx = set(order[:n_val].tolist())
    else:
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(int(g), []).append(i)
        val_idx = set()
        for g in rng.permutation(sorted(members)):
            if len(val_idx) >= n_val:
                break
            if len(val_idx) + len(members[int(g)]) <= n_val + max(1, n_val // 10):
                val_idx.update(members[int(g)])
        if len(val_idx) < min_val:
            # One near-duplicate group holds most of the folder (all the same scene): no honest split by group
            # exists, so split by file and say what that means for the threshold.
            log.warning("most photos are near-duplicates of each other; validation will look easier than new "
                        "photos, so the calibrated threshold may be too strict: add photos from other days/places")
            val_idx = set(rng.permutation(len(paths))[:n_val].tolist())
    val = [p for i, p in enumerate(paths) if i in val_idx]
    train = [p for i, p in enumerate(paths) if i not in val_idx]
    return train, val


def iter_batches(paths: Sequence[Path], size: int, batch_size: int = 32,
                 view: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Yield (n, size, size, 3) uint8 batches through the device's preprocessing, of `view(image)` if given
    (see training/views.py)."""
    batch: list[np.ndarray] = []
    for path in paths:
        img = load_rgb(path)
        batch.append(preprocess(view(img) if view is not None else img, size))
        if len(batch) >= batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)
