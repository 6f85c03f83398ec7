"""Decoding image files to RGB arrays: the one decoder used by training, evaluation and the folder source."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_oneclass.device.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """All image files below `folder`, recursively, in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_path(p))


def _looks_truncated(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG into a grey-padded picture with only a warning; the end-of-image
    # marker is the cheap, reliable tell. Trailing padding after the marker is legal, so strip zeros.
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-1024:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


def decode_rgb(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array of shape (H, W, 3)."""
    if not data:
        raise ImageError(f"{name}: empty file, skipped")
    if _looks_truncated(data):
        raise ImageError(f"{name}: truncated image (no end marker), skipped")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageError(f"{name}: not a readable image, skipped")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_rgb(path: str | Path) -> np.ndarray:
    """Read and decode one image file; raises ImageError naming the file if it is not a usable image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc}), skipped") from exc
    return decode_rgb(data, str(path))
