"""Frame sources: one module per backend behind `Source` (see base.py), chosen by `open_source`.

`[camera] source` picks the backend:
  "picamera2"              the Raspberry Pi camera (live)
  0, "0", "/dev/video0"    a USB camera through OpenCV (live)
  "rtsp://…", "http://…"   a network stream through OpenCV (live)
  a directory              its images, sorted (finite replay, one image per frame at `fps`)
  a file                   a video file (finite replay of the frames a camera at `fps` would score)

Finite replays run as fast as they decode, or at their timeline's own pace with `realtime` (ignored by live
sources, which are real time anyway).
"""

from __future__ import annotations

from pathlib import Path

from edge_oneclass.device.errors import SourceError
from edge_oneclass.device.sources.base import LatestFrameReader, Source

__all__ = ["LatestFrameReader", "Source", "make_source", "open_source"]


def make_source(spec: str | int, fps: float, width: int | None = None, height: int | None = None,
                realtime: bool = False) -> Source:
    """Build (but do not open) the source `spec` names; raises SourceError if it names nothing usable."""
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        from edge_oneclass.device.sources.opencv import CaptureSource

        return CaptureSource(spec, fps, width, height)
    if spec == "picamera2":
        from edge_oneclass.device.sources.picamera2 import Picamera2Source

        return Picamera2Source(fps, width, height)
    if "://" in spec or spec.startswith("/dev/"):
        from edge_oneclass.device.sources.opencv import CaptureSource

        return CaptureSource(spec, fps, width, height)
    path = Path(spec).expanduser()
    if path.is_dir():
        from edge_oneclass.device.sources.folder import FolderSource

        return FolderSource(path, fps, realtime)
    if path.is_file():
        from edge_oneclass.device.sources.opencv import VideoFileSource

        return VideoFileSource(path, fps, realtime)
    raise SourceError(f"camera source {spec!r} not found; set [camera] source to picamera2, a camera index, "
                      "/dev/videoN, a URL, a video file or an image folder")


def open_source(spec: str | int, fps: float, width: int | None = None, height: int | None = None,
                realtime: bool = False) -> Source:
    """Build and open the source `spec` names; raises SourceError naming it if it cannot be opened."""
    source = make_source(spec, fps, width, height, realtime)
    source.open()
    return source
