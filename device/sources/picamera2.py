"""The Raspberry Pi camera through picamera2 (imported only when this source opens, so other hosts need not
have it)."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_oneclass.device.errors import SourceError, SourceSetupError
from edge_oneclass.device.frame import Frame
from edge_oneclass.device.sources.base import LatestFrameReader, Source

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)
# Where Debian / Raspberry Pi OS keep apt's Python packages (python3-numpy, python3-picamera2).
SYSTEM_SITE_PACKAGES = Path("/usr/lib/python3/dist-packages")


def system_numpy_version(site: Path = SYSTEM_SITE_PACKAGES) -> str | None:
    """The version of apt's numpy (the one apt's picamera2 was built against), or None if there is none."""
    for dist in importlib.metadata.distributions(name="numpy", path=[str(site)]):
        return dist.version
    return None


def import_error_message(exc: BaseException, site: Path = SYSTEM_SITE_PACKAGES) -> str:
    """One line: why `from picamera2 import Picamera2` failed and what fixes it."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == "picamera2":
        return ("picamera2 is not installed; on Raspberry Pi OS: apt install python3-picamera2 and create the venv "
                "with --system-site-packages, or set [camera] source")
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())   # numpy's messages span lines; keep one
    if len(cause) > 240:
        cause = cause[:239] + "…"
    if "numpy" not in cause.lower():
        return (f"picamera2 is installed but fails to import ({cause}); reinstall it with "
                "apt install --reinstall python3-picamera2, or set [camera] source")
    system = system_numpy_version(site)
    if system == np.__version__:
        return (f"picamera2 fails to import ({cause}) although the venv and the system share numpy {system}: "
                "apt's compiled packages disagree; run sudo apt full-upgrade, then edge-device check")
    if system is None:
        versions = (f"the venv's numpy {np.__version__} is not the system numpy apt's picamera2 was built against "
                    "(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)' shows it)")
        pin = "numpy==<system version>"
    else:
        versions = (f"the venv's numpy {np.__version__} differs from the system numpy {system} "
                    "apt's picamera2 was built against")
        pin = f"numpy=={system}"
    return (f"picamera2 fails to import ({cause}): {versions}; reinstall with scripts/install-pi.sh (it constrains "
            f"numpy to the system's) or run pip install '{pin}' in the venv")


def bgr_memory_to_rgb(array: np.ndarray) -> np.ndarray:
    """picamera2's "RGB888" (and "XRGB8888") arrays hold B, G, R in memory order; return true RGB."""
    return np.ascontiguousarray(array[..., 2::-1])


class Picamera2Source(Source):
    live = True

    def __init__(self, fps: float, width: int | None = None, height: int | None = None, camera_num: int = 0,
                 read_timeout: float = 5.0) -> None:
        super().__init__("picamera2")
        self.fps = fps
        self.size = (width, height) if width and height else DEFAULT_SIZE
        self.camera_num = camera_num
        self.read_timeout = read_timeout
        self._cam: Any = None
        self._reader: LatestFrameReader | None = None
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # lazy: only Raspberry Pi OS ships it
        except Exception as exc:  # noqa: BLE001 - e.g. ValueError from a numpy ABI mismatch: any failure is setup
            raise SourceSetupError(import_error_message(exc)) from exc
        try:
            cam = Picamera2(self.camera_num)
            config = cam.create_video_configuration(main={"size": tuple(self.size), "format": "RGB888"},
                                                    controls={"FrameRate": float(self.fps)})
            cam.configure(config)
            cam.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises many types; all mean "no camera"
            raise SourceError(f"cannot open picamera2 camera {self.camera_num} ({exc}); check the ribbon cable "
                              "and that no other process uses the camera") from exc
        self._cam = cam
        self._reader = LatestFrameReader(self._grab, self.name)
        self._reader.start()
        log.info("opened picamera2 camera %d at %dx%d", self.camera_num, *self.size)

    def _grab(self) -> np.ndarray | None:
        array = self._cam.capture_array("main")
        return None if array is None else bgr_memory_to_rgb(array)

    def read(self) -> Frame:
        if self._reader is None:
            raise SourceError("picamera2: read before open")
        frame = self._reader.read(self._index, self.read_timeout)
        self._index += 1
        return frame

    def close(self) -> None:
        stopped = self._reader.stop() if self._reader else True
        if self._cam is not None and stopped:
            for step in ("stop", "close"):
                try:
                    getattr(self._cam, step)()
                except Exception as exc:  # noqa: BLE001 - closing must not raise during shutdown
                    log.warning("picamera2 %s failed: %s", step, exc)
        self._cam, self._reader = None, None
