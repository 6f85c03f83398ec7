"""The one interface every frame source implements, and the latest-frame reader that live sources share."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from edge_oneclass.device.errors import SourceError
from edge_oneclass.device.frame import Frame

log = logging.getLogger(__name__)


class Source(ABC):
    """open() / read() / close(). `read()` returns None only at the end of a finite source.

    Live sources (cameras, streams) return the newest frame stamped with wall-clock capture time and never a
    queue of stale ones; finite sources (video files, folders) return the frames a camera at `fps` would have
    scored, on their own timeline, as fast as they decode (or at the timeline's pace with `realtime`).
    """

    live: bool = False

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raises SourceError naming it if that is impossible."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame (finite) or the newest frame (live); raises SourceError if the source broke."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice or after a failed open."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class LatestFrameReader:
    """A thread that keeps grabbing from a camera and keeps only the newest frame.

    Camera drivers and RTSP clients buffer frames; a loop slower than the camera would otherwise score
    ever older pictures. `grab()` returns an RGB array or None on a failed read.
    """

    def __init__(self, grab: Callable[[], np.ndarray | None], name: str, clock: Callable[[], float] = time.time,
                 max_failures: int = 10) -> None:
        self._grab = grab
        self._name = name
        self._clock = clock
        self._max_failures = max_failures
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float] | None = None
        self._seq = 0            # frames grabbed so far
        self._delivered = 0      # seq of the last frame handed out
        self.skipped = 0         # frames overwritten before anyone read them
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"grab-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                image = self._grab()
            except Exception as exc:  # noqa: BLE001 - any driver error ends this reader; the daemon reopens
                image, failures = None, self._max_failures
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = "read failed"
            if image is None:
                failures += 1
                if failures >= self._max_failures:
                    with self._cond:
                        self._error = f"{self._name}: {reason} ({failures} times in a row)"
                        self._cond.notify_all()
                    return
                self._stop.wait(0.05)
                continue
            failures = 0
            t = self._clock()
            with self._cond:
                if self._latest is not None and self._seq > self._delivered:
                    self.skipped += 1
                self._latest = (image, t)
                self._seq += 1
                self._cond.notify_all()

    def read(self, index: int, timeout: float) -> Frame:
        """Wait for a frame newer than the last one returned; raises SourceError if none comes in `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq <= self._delivered and self._error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SourceError(f"{self._name}: no frame for {timeout:.0f} s; check the camera and its cable")
                self._cond.wait(remaining)
            if self._error is not None:
                raise SourceError(self._error)
            assert self._latest is not None
            image, t = self._latest
            self._delivered = self._seq
        return Frame(image=image, t=t, index=index)

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to end; False if it is still stuck inside the driver after `timeout` seconds."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()


class ReplayClock:
    """`[camera] realtime` for finite sources: `stamp(t)` waits until timeline time `t` has come, then returns it
    as wall-clock time (the first frame's wall time + t's offset from the first frame).

    Why in the source's read() and not the daemon's loop: a camera's read() also blocks until its next frame
    exists, so a realtime replay looks to the daemon like a camera delivering exactly the timeline, and the daemon
    keeps treating finite sources as "no pacing, no dropped-frame accounting"; `capture` paces the same way.
    Stamps keep the timeline's exact spacing (no sleep jitter): debouncing gives the same events as a fast replay,
    only shifted to now, so MQTT events carry real times. A loop slower than the timeline falls behind rather than
    skipping frames, and a stop request waits for at most one frame interval.
    """

    def __init__(self, realtime: bool, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.realtime = realtime
        self._monotonic, self._wall, self._sleep = monotonic, wall, sleep
        self._origin: tuple[float, float, float] | None = None     # monotonic, wall clock, timeline t

    def reset(self) -> None:
        """Start over: the next frame stamped is delivered at once and anchors the timeline to now."""
        self._origin = None

    def stamp(self, t: float) -> float:
        """`t` unchanged (as fast as possible), or wait for it and return it as wall-clock time (realtime)."""
        if not self.realtime:
            return t
        if self._origin is None:
            self._origin = (self._monotonic(), self._wall(), t)
        mono0, wall0, t0 = self._origin
        delay = mono0 + (t - t0) - self._monotonic()
        if delay > 0:
            self._sleep(delay)
        return wall0 + (t - t0)
