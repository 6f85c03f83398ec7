"""JPEG snapshots of the frame that started an episode: encoded once, sent over MQTT and/or kept on disk."""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from edge_oneclass.device.state_files import atomic_write, remove_oldest

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
# what snapshot_name writes: only these files are ever pruned, never anything else in the folder
_NAME = re.compile(r"^[A-Za-z0-9_-]+_(\d{8}T\d{6}\.\d{3}Z)\.jpg$")


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """Frames are RGB (see ARCHITECTURE.md); OpenCV writes BGR, so swap before encoding."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_jpeg wants an HxWx3 uint8 RGB image, got shape {rgb.shape} {rgb.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality {quality} must be 1..100")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as JPEG")
    return buf.tobytes()


def snapshot_name(label: str, t: float) -> str:
    """`<label>_<ISO-8601 basic UTC>.jpg`, e.g. dog_20240501T120304.123Z.jpg: sortable, no ':' for SMB shares."""
    stamp = datetime.fromtimestamp(t, tz=UTC)
    slug = _SAFE.sub("_", label).strip("_") or "snapshot"
    return f"{slug}_{stamp.strftime('%Y%m%dT%H%M%S')}.{stamp.microsecond // 1000:03d}Z.jpg"


def save_snapshot(dir: str | os.PathLike[str], label: str, t: float, jpeg: bytes, keep: int = 0) -> Path | None:
    """Write the JPEG (atomically, via a temporary file) and keep only the newest `keep` snapshots in the folder
    (0: all), so months of episodes cannot fill the SD card; on a full or read-only disk log and return None,
    because a lost snapshot must never stop detection."""
    path = Path(dir) / snapshot_name(label, t)
    try:
        atomic_write(path, jpeg)
    except OSError as exc:
        log.warning("snapshot: cannot write %s (%s); check the snapshot directory and free space",
                    path, exc.strerror or exc)
        return None
    log.info("snapshot: saved %s", path)
    if keep > 0:
        prune_snapshots(path.parent, keep)
    return path


def prune_snapshots(dir: Path, keep: int) -> int:
    """Remove the oldest snapshots (by the time in their name, any label) beyond `keep`; other files stay."""
    try:
        names = [(m.group(1), p) for p in dir.iterdir() if (m := _NAME.match(p.name))]
    except OSError as exc:
        log.warning("snapshot: cannot list %s to remove old snapshots (%s)", dir, exc.strerror or exc)
        return 0
    return remove_oldest([p for _stamp, p in sorted(names)], keep)
