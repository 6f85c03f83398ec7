"""OpenCV VideoCapture backends: USB cameras and network streams (live), and video files (finite)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from device.errors import SourceError
from device.frame import Frame
from device.sources.base import LatestFrameReader, Source

log = logging.getLogger(__name__)


def _rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CaptureSource(Source):
    """A USB camera (index or /dev/videoN) or an rtsp:// / http:// stream, read by a latest-frame thread."""

    live = True

    def __init__(self, target: int | str, fps: float, width: int | None = None, height: int | None = None,
                 read_timeout: float = 5.0) -> None:
        super().__init__(str(target))
        self.target = target
        self.fps = fps
        self.width, self.height = width, height
        self.read_timeout = read_timeout
        self._cap: cv2.VideoCapture | None = None
        self._reader: LatestFrameReader | None = None
        self._index = 0

    def _is_device(self) -> bool:
        return isinstance(self.target, int) or str(self.target).startswith("/dev/")

    def open(self) -> None:
        if self._is_device():
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:  # bounded waits: FFmpeg's default is to hang ~30 s on a dead RTSP host
            timeout_ms = int(self.read_timeout * 1000)
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        if not cap.isOpened():
            cap.release()
            what = "camera" if self._is_device() else "stream"
            hint = ("check the cable and that the user is in the 'video' group" if self._is_device()
                    else "check the URL, credentials and network")
            raise SourceError(f"cannot open {what} {self.name}; {hint}")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self._is_device():
            # Ask the camera for no more frames than we score: every frame delivered costs a decode.
            cap.set(cv2.CAP_PROP_FPS, float(self.fps))
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap = cap
        self._reader = LatestFrameReader(self._grab, self.name)
        self._reader.start()
        log.info("opened %s", self.name)

    def _grab(self) -> np.ndarray | None:
        # The reader thread keeps the newest BGR frame; colour conversion waits until a frame is scored.
        assert self._cap is not None
        ok, bgr = self._cap.read()
        return bgr if ok and bgr is not None else None

    def read(self) -> Frame:
        if self._reader is None:
            raise SourceError(f"{self.name}: read before open")
        frame = self._reader.read(self._index, self.read_timeout)
        self._index += 1
        return Frame(_rgb(frame.image), frame.t, frame.index)

    def close(self) -> None:
        stopped = self._reader.stop() if self._reader else True
        if self._cap is not None:
            if stopped:
                self._cap.release()
            else:  # releasing under a thread blocked in read() can crash the process; let exit reclaim it
                log.warning("%s: reader thread still blocked in the driver; not releasing", self.name)
        self._cap, self._reader = None, None


class VideoFileSource(Source):
    """A video file replayed as fast as it decodes, on its own timeline t = index / video fps."""

    live = False

    def __init__(self, path: str | Path, fallback_fps: float) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        self.fallback_fps = fallback_fps
        self.fps = fallback_fps
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file {self.path}; is it a video OpenCV can decode?")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else self.fallback_fps
        self._cap, self._index = cap, 0
        log.info("replaying %s at %.2f fps timeline", self.path, self.fps)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        frame = Frame(image=_rgb(bgr), t=self._index / self.fps, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
