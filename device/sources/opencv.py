"""OpenCV VideoCapture backends: USB cameras and network streams (live), and video files (finite)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from edge_oneclass.device.errors import SourceError
from edge_oneclass.device.frame import Frame
from edge_oneclass.device.sources.base import LatestFrameReader, ReplayClock, Source

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
    """A video file scored like a camera paced at `fps`, so `[detect]` counts frames the same as live.

    On the video's timeline t = index / video_fps, read() returns the first frame at or after each tick k / fps,
    each frame at most once (never more than the video's own rate). Frames in between are grab()bed but never
    retrieve()d, so they cost no colour conversion. Frame.t is the video timeline (wall-clock anchored and paced
    with `realtime`, see ReplayClock) and Frame.index the video's frame index.
    """

    live = False
    _EPS = 1e-6     # in ticks: a frame exactly on a tick (30 fps video, 5 fps) must not lose it to rounding

    def __init__(self, path: str | Path, fps: float, realtime: bool = False) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        self.fps = fps              # the camera rate frames are picked at
        self.video_fps = fps        # the file's own rate, read at open(); `fps` when the file does not say
        self._clock = ReplayClock(realtime)
        self._cap: cv2.VideoCapture | None = None
        self._index = 0             # video index of the next frame grab() returns
        self._tick = 0              # the next camera tick k (at k / fps) still waiting for a frame

    def open(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file {self.path}; is it a video OpenCV can decode?")
        video_fps = cap.get(cv2.CAP_PROP_FPS)
        self.video_fps = float(video_fps) if video_fps and 0 < video_fps < 1000 else self.fps
        self._cap, self._index, self._tick = cap, 0, 0
        self._clock.reset()
        log.info("replaying %s: a %.2f fps video scored at %.2f fps%s", self.path, self.video_fps,
                 min(self.fps, self.video_fps), " in real time" if self._clock.realtime else ", as fast as possible")

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        while self._cap.grab():
            index = self._index
            self._index += 1
            position = index * self.fps / self.video_fps       # where this frame falls, in camera ticks
            if position + self._EPS < self._tick:
                continue                                         # no tick since the last frame returned
            ok, bgr = self._cap.retrieve()
            if not ok or bgr is None:
                return None
            self._tick = math.floor(position + self._EPS) + 1
            return Frame(image=_rgb(bgr), t=self._clock.stamp(index / self.video_fps), index=index)
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
