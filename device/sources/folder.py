"""A folder of still images replayed in sorted order: the cheapest way to test a model on real pictures."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_oneclass.device.errors import ImageError, SourceError
from edge_oneclass.device.frame import Frame
from edge_oneclass.device.image_io import list_images, load_rgb
from edge_oneclass.device.sources.base import ReplayClock, Source

log = logging.getLogger(__name__)


class FolderSource(Source):
    """Images below a folder, sorted by path, one per frame at `fps`: stamped t = index / fps (wall-clock anchored
    and paced with `realtime`, see ReplayClock); unreadable files are logged and skipped."""

    live = False

    def __init__(self, folder: str | Path, fps: float, realtime: bool = False) -> None:
        super().__init__(str(folder))
        self.folder = Path(folder)
        self.fps = fps
        self._clock = ReplayClock(realtime)
        self._paths: list[Path] = []
        self._pos = 0
        self._index = 0
        self.skipped: list[Path] = []

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} not found; set [camera] source to an existing folder")
        self._paths = list_images(self.folder)
        if not self._paths:
            raise SourceError(f"image folder {self.folder} has no images (.jpg, .png, .bmp, .webp)")
        self._pos, self._index, self.skipped = 0, 0, []
        self._clock.reset()
        log.info("replaying %d images from %s at %.2f fps%s", len(self._paths), self.folder, self.fps,
                 " in real time" if self._clock.realtime else " timeline, as fast as possible")

    def read(self) -> Frame | None:
        while self._pos < len(self._paths):
            path = self._paths[self._pos]
            self._pos += 1
            try:
                image = load_rgb(path)
            except ImageError as exc:
                log.warning("%s", exc)
                self.skipped.append(path)
                continue
            frame = Frame(image=image, t=self._clock.stamp(self._index / self.fps), index=self._index)
            self._index += 1
            return frame
        return None

    def close(self) -> None:
        self._paths = []
