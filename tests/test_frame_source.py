"""Frame sources against real files (OpenCV-written videos, image folders) and the live latest-frame reader.

The only fake is a `picamera2` module injected into sys.modules at the import boundary.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import sys
import threading
import time
import types
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_oneclass.device.errors import EX_CONFIG, SourceError, SourceSetupError
from edge_oneclass.device.sources import LatestFrameReader, make_source, open_source
from edge_oneclass.device.sources.base import ReplayClock
from edge_oneclass.device.sources.folder import FolderSource
from edge_oneclass.device.sources.opencv import CaptureSource, VideoFileSource
from edge_oneclass.device.sources.picamera2 import Picamera2Source, import_error_message, system_numpy_version

W, H = 64, 48


def write_video(path: Path, levels: list[int], fps: float, fourcc: str) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for level in levels:
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[..., 2] = level          # red channel in OpenCV's BGR order
        writer.write(bgr)
    writer.release()
    return path


@pytest.mark.parametrize("name, fourcc", [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_file_at_its_own_rate_replays_every_frame_on_its_own_timeline(tmp_path: Path, name: str,
                                                                             fourcc: str) -> None:
    levels = [40 + 10 * i for i in range(20)]
    path = write_video(tmp_path / name, levels, fps=10.0, fourcc=fourcc)
    source = open_source(str(path), fps=10.0)
    assert isinstance(source, VideoFileSource) and not source.live
    assert source.video_fps == pytest.approx(10.0) and source.fps == 10.0
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert len(frames) == len(levels)
    assert [f.index for f in frames] == list(range(len(levels)))
    assert [f.t for f in frames] == pytest.approx([i / 10.0 for i in range(len(levels))])
    first = frames[0].image
    assert first.shape == (H, W, 3) and first.dtype == np.uint8
    # RGB order: the red level is in channel 0, within codec error
    reds = [float(f.image[..., 0].mean()) for f in frames]
    assert reds == pytest.approx(levels, abs=6)
    assert float(first[..., 2].mean()) < 8


def test_video_replay_is_deterministic(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.avi", [100, 150, 200], fps=4.0, fourcc="MJPG")

    def run() -> list[tuple[float, float]]:
        with make_source(str(path), fps=5.0) as src:
            out = []
            while (f := src.read()) is not None:
                out.append((f.t, float(f.image.mean())))
            return out

    assert run() == run()


BITS = 8     # a frame's index as 8 vertical stripes, black = 0 and white = 1: survives any codec


def write_numbered_video(path: Path, frames: int, fps: float, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    stripe = W // BITS
    for i in range(frames):
        bgr = np.zeros((H, W, 3), np.uint8)
        for bit in range(BITS):
            if i >> bit & 1:
                bgr[:, bit * stripe:(bit + 1) * stripe] = 255
        writer.write(bgr)
    writer.release()
    return path


def frame_number(image: np.ndarray) -> int:
    stripe = W // BITS
    return sum(1 << bit for bit in range(BITS) if image[:, bit * stripe + 2:(bit + 1) * stripe - 2].mean() > 128)


def camera_picks(frames: int, video_fps: int, fps: int) -> list[int]:
    """The oracle, in exact fractions: for each tick k / fps, the first frame i with i / video_fps >= k / fps."""
    picks: list[int] = []
    k = 0
    while Fraction(k, fps) <= Fraction(frames - 1, video_fps):
        first = next(i for i in range(frames) if Fraction(i, video_fps) >= Fraction(k, fps))
        if not picks or picks[-1] != first:
            picks.append(first)
        k += 1
    return picks


@pytest.mark.parametrize("fps, fourcc", [(5, "MJPG"), (5, "mp4v"), (7, "MJPG"), (30, "MJPG"), (60, "MJPG")])
def test_video_replay_scores_the_frames_a_camera_at_fps_would(tmp_path: Path, fps: int, fourcc: str) -> None:
    """A 30 fps, 3 s video: at fps 5 frames 0, 6, 12 … (as live, where [detect] counts frames at `fps`); at
    30 or 60 every frame once (never more than the video's rate); the pixels are those of the frame named."""
    path = write_numbered_video(tmp_path / ("clip.avi" if fourcc == "MJPG" else "clip.mp4"), 90, 30.0, fourcc)
    with open_source(str(path), fps=float(fps)) as source:
        assert isinstance(source, VideoFileSource) and source.video_fps == pytest.approx(30.0)
        frames = []
        while (f := source.read()) is not None:
            frames.append(f)
    expected = {5: list(range(0, 90, 6)), 7: camera_picks(90, 30, 7), 30: list(range(90)), 60: list(range(90))}[fps]
    assert [f.index for f in frames] == expected
    assert [frame_number(f.image) for f in frames] == expected       # retrieve() gave the frame grab() reached
    assert [f.t for f in frames] == pytest.approx([i / 30.0 for i in expected])
    if fps == 7:
        assert expected[:5] == [0, 5, 9, 13, 18]      # ticks at 0, 1/7, 2/7 … s: the first frame at or after each


def test_realtime_replay_takes_about_its_duration_and_stamps_wall_clock(tmp_path: Path) -> None:
    path = write_numbered_video(tmp_path / "clip.avi", 60, 30.0)       # 2 s
    with open_source(str(path), fps=5.0) as source:
        fast = [(f.index, f.t) for f in iter(source.read, None)]
    before = time.time()
    t0 = time.monotonic()
    with open_source(str(path), fps=5.0, realtime=True) as source:
        slow = list(iter(source.read, None))
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.8 * 2.0                                    # a lower bound only: the machine is shared
    assert [f.index for f in slow] == [i for i, _ in fast] == list(range(0, 60, 6))
    assert abs(slow[0].t - before) < 5                             # wall-clock time, not 1970
    # spaced exactly like the timeline (no sleep jitter), so debouncing matches the fast replay
    assert [f.t - slow[0].t for f in slow] == pytest.approx([t for _, t in fast], abs=1e-6)


def test_realtime_folder_replay_is_paced_at_fps(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "frames")          # 4 readable images at 4 fps: the last at 0.75 s
    t0 = time.monotonic()
    with open_source(str(folder), fps=4.0, realtime=True) as source:
        frames = list(iter(source.read, None))
    assert time.monotonic() - t0 >= 0.8 * 0.75
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.t - frames[0].t for f in frames] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_replay_clock_waits_for_each_frame_and_never_to_catch_up() -> None:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    clock = ReplayClock(True, monotonic=lambda: now[0], wall=lambda: 5000.0 + now[0], sleep=sleep)
    assert clock.stamp(0.0) == 5100.0 and sleeps == []               # the first frame: at once
    now[0] += 0.05                                                    # 50 ms of work on it
    assert clock.stamp(0.2) == pytest.approx(5100.2) and sleeps == [pytest.approx(0.15)]
    now[0] += 0.5                                                     # a slow frame: behind schedule
    assert clock.stamp(0.4) == pytest.approx(5100.4) and len(sleeps) == 1
    clock.reset()
    assert clock.stamp(3.0) == pytest.approx(now[0] + 5000.0)         # reopened: anchored anew
    assert ReplayClock(False).stamp(1.25) == 1.25                     # as fast as possible: the timeline itself


def write_folder(folder: Path) -> Path:
    folder.mkdir()
    for i, level in enumerate([10, 60, 110, 160]):
        rgb = np.full((H, W, 3), level, np.uint8)
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    good = cv2.imencode(".jpg", np.full((H, W, 3), 200, np.uint8))[1].tobytes()
    (folder / "img_01b.jpg").write_bytes(good[: len(good) // 2])     # truncated JPEG
    (folder / "img_02b.png").write_bytes(b"not an image at all")     # garbage with an image name
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_folder_replays_sorted_images_and_skips_unreadable_ones(tmp_path: Path, caplog) -> None:
    folder = write_folder(tmp_path / "frames")
    source = open_source(str(folder), fps=4.0)
    assert isinstance(source, FolderSource) and not source.live
    frames = []
    with caplog.at_level("WARNING"):
        while (f := source.read()) is not None:
            frames.append(f)
    source.close()
    assert [int(f.image.mean()) for f in frames] == [10, 60, 110, 160]
    assert [f.t for f in frames] == [0.0, 0.25, 0.5, 0.75]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert sorted(p.name for p in source.skipped) == ["img_01b.jpg", "img_02b.png"]
    logged = caplog.text
    assert "img_01b.jpg" in logged and "img_02b.png" in logged


def test_empty_folder_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty.*no images"):
        open_source(str(tmp_path / "empty"), fps=5.0)


def test_missing_path_is_a_source_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nothing-here"):
        open_source(str(tmp_path / "nothing-here.mp4"), fps=5.0)


def test_not_a_video_is_a_source_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="broken.mp4"):
        open_source(str(bad), fps=5.0)


def test_camera_that_does_not_exist_is_a_source_error_naming_it() -> None:
    with pytest.raises(SourceError, match="/dev/video97"):
        open_source("/dev/video97", fps=5.0)
    source = make_source("97", fps=5.0)
    assert isinstance(source, CaptureSource) and source.live and source.target == 97
    with pytest.raises(SourceError, match="camera 97"):
        source.open()


def test_unreachable_stream_is_a_source_error_naming_the_url() -> None:
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    with pytest.raises(SourceError, match=f"stream {url}"):
        open_source(url, fps=5.0)


class MjpegHandler(http.server.BaseHTTPRequestHandler):
    """A real HTTP MJPEG camera stream (like an ESP32-CAM or motion's stream): red frames, counter in green."""

    stop = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        n = 0
        try:
            while not self.stop.is_set():
                bgr = np.zeros((H, W, 3), np.uint8)
                bgr[..., 2], bgr[..., 1] = 200, (n * 2) % 256
                jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
                n += 1
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def mjpeg_url():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), MjpegHandler)
    server.daemon_threads = True
    MjpegHandler.stop.clear()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    MjpegHandler.stop.set()
    server.shutdown()
    server.server_close()


def test_http_stream_is_live_rgb_and_always_the_newest_frame(mjpeg_url: str) -> None:
    source = open_source(mjpeg_url, fps=5.0)
    assert isinstance(source, CaptureSource) and source.live
    try:
        first = source.read()
        time.sleep(0.3)                       # ~30 frames arrive meanwhile
        second = source.read()
    finally:
        source.close()
    assert first.image.shape == (H, W, 3)
    assert first.image[..., 0].mean() > 180 and first.image[..., 2].mean() < 20     # red is channel 0
    assert abs(second.t - time.time()) < 5 and second.index == first.index + 1
    jump = (int(second.image[5, 5, 1]) - int(first.image[5, 5, 1])) % 256
    assert jump > 20                          # skipped ahead ~30 frames (2 levels each), not the next one


# -- the live latest-frame reader -------------------------------------------------------------------------


class Counter:
    """A camera that produces frames numbered 0, 1, 2 … as fast as it is asked (pixel value = number)."""

    def __init__(self, delay: float = 0.002, fail_after: int | None = None) -> None:
        self.n = 0
        self.delay = delay
        self.fail_after = fail_after

    def __call__(self) -> np.ndarray | None:
        time.sleep(self.delay)
        if self.fail_after is not None and self.n >= self.fail_after:
            return None
        image = np.full((2, 2, 3), self.n % 256, np.uint8)
        image[0, 0, 0] = self.n // 256
        self.n += 1
        return image


def number(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) * 256 + int(image[1, 1, 0])


def test_reader_returns_the_newest_frame_not_a_queue_of_stale_ones() -> None:
    camera = Counter()
    reader = LatestFrameReader(camera, "counter")
    reader.start()
    try:
        first = reader.read(0, timeout=2.0)
        time.sleep(0.2)                       # the loop is slow; the camera produced ~100 frames meanwhile
        produced = camera.n
        second = reader.read(1, timeout=2.0)
        assert number(second.image) >= produced - 2 > number(first.image) + 10
        assert reader.skipped >= 10
        assert second.t >= first.t and abs(second.t - time.time()) < 5   # wall-clock capture time
        third = reader.read(2, timeout=2.0)   # never the same frame twice
        assert number(third.image) > number(second.image)
    finally:
        assert reader.stop()


def test_reader_times_out_when_the_camera_stalls() -> None:
    stall = threading.Event()

    def grab() -> np.ndarray:
        stall.wait(5)
        return np.zeros((2, 2, 3), np.uint8)

    reader = LatestFrameReader(grab, "stalled-cam")
    reader.start()
    try:
        with pytest.raises(SourceError, match="stalled-cam: no frame"):
            reader.read(0, timeout=0.2)
    finally:
        stall.set()
        reader.stop()


def test_reader_reports_a_camera_that_fails_repeatedly() -> None:
    reader = LatestFrameReader(Counter(fail_after=2), "flaky-cam", max_failures=3)
    reader.start()
    try:
        reader.read(0, timeout=2.0)
        with pytest.raises(SourceError, match="flaky-cam: read failed"):
            for i in range(5):
                reader.read(i + 1, timeout=2.0)
    finally:
        reader.stop()


def test_reader_reports_a_driver_exception() -> None:
    def grab() -> np.ndarray:
        raise OSError("device unplugged")

    reader = LatestFrameReader(grab, "usb-cam")
    reader.start()
    with pytest.raises(SourceError, match="usb-cam: OSError: device unplugged"):
        reader.read(0, timeout=2.0)
    reader.stop()


# -- picamera2 (fake module at the import boundary) --------------------------------------------------------


def fake_picamera2_module(calls: list) -> types.ModuleType:
    """Just enough of picamera2: "RGB888" capture arrays are B, G, R in memory, like the real one."""

    class Picamera2:
        def __init__(self, camera_num: int = 0) -> None:
            calls.append(("init", camera_num))
            self.n = 0

        def create_video_configuration(self, main: dict | None = None, **kw) -> dict:
            return {"main": dict(main or {}), **kw}

        def configure(self, config: dict) -> None:
            calls.append(("configure", config))
            self.size = config["main"]["size"]

        def start(self) -> None:
            calls.append(("start",))

        def capture_array(self, name: str = "main") -> np.ndarray:
            time.sleep(0.002)
            w, h = self.size
            array = np.empty((h, w, 3), np.uint8)
            array[..., 0], array[..., 1], array[..., 2] = 10, 20, 200     # B, G, R
            array[0, 0, 1] = self.n % 256                                  # frame number in green
            self.n += 1
            return array

        def stop(self) -> None:
            calls.append(("stop",))

        def close(self) -> None:
            calls.append(("close",))

    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2
    return module


def test_picamera2_source_configures_rgb888_and_returns_rgb(monkeypatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2_module(calls))
    source = make_source("picamera2", fps=5.0, width=320, height=240)
    assert isinstance(source, Picamera2Source) and source.live
    source.open()
    try:
        configure = next(c for c in calls if c[0] == "configure")[1]
        assert configure["main"] == {"size": (320, 240), "format": "RGB888"}
        assert configure["controls"]["FrameRate"] == 5.0
        first = source.read()
        assert first.image.shape == (240, 320, 3) and first.image.dtype == np.uint8
        assert first.image[5, 5].tolist() == [200, 20, 10]     # converted to R, G, B
        assert first.image.flags.c_contiguous
        time.sleep(0.1)
        second = source.read()
        assert (int(second.image[0, 0, 1]) - int(first.image[0, 0, 1])) % 256 > 5   # newest, not next
        assert second.index == 1 and second.t >= first.t
    finally:
        source.close()
    assert ("stop",) in calls and ("close",) in calls


def test_picamera2_default_size_is_640x480(monkeypatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2_module(calls))
    with make_source("picamera2", fps=2.0) as source:
        assert source.read().size == (640, 480)


def test_picamera2_missing_is_a_source_error_saying_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)     # import picamera2 -> ImportError
    with pytest.raises(SourceError, match="picamera2 is not installed.*python3-picamera2") as info:
        open_source("picamera2", fps=5.0)
    assert info.value.exit_code == EX_CONFIG                 # installing is not something a restart does


def fake_system_site(tmp_path: Path, numpy_version: str, layout: str = "egg-info") -> Path:
    """apt's dist-packages with only numpy's metadata (Debian ships egg-info folders, pip dist-info)."""
    site = tmp_path / "dist-packages"
    if layout == "egg-info":
        meta = site / f"numpy-{numpy_version}.egg-info"
        meta.mkdir(parents=True)
        (meta / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: numpy\nVersion: {numpy_version}\n")
    else:
        meta = site / f"numpy-{numpy_version}.dist-info"
        meta.mkdir(parents=True)
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: numpy\nVersion: {numpy_version}\n")
    return site


ABI = ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C header, "
                 "got 88 from PyObject")


@pytest.mark.parametrize("layout", ["egg-info", "dist-info"])
def test_picamera2_numpy_mismatch_names_both_versions_and_the_fix(tmp_path: Path, layout: str) -> None:
    site = fake_system_site(tmp_path, "1.24.2", layout)
    assert system_numpy_version(site) == "1.24.2"
    message = import_error_message(ABI, site)
    assert "\n" not in message
    assert "ValueError: numpy.dtype size changed, may indicate binary incompatibility" in message
    assert f"the venv's numpy {np.__version__} differs from the system numpy 1.24.2" in message
    assert "scripts/install-pi.sh" in message and "pip install 'numpy==1.24.2' in the venv" in message


def test_picamera2_import_failures_are_one_line_whatever_the_cause(tmp_path: Path) -> None:
    empty = tmp_path / "no-apt"
    empty.mkdir()
    assert system_numpy_version(empty) is None
    unknown = import_error_message(ABI, empty)
    assert "numpy==<system version>" in unknown and "/usr/bin/python3 -c" in unknown
    same = import_error_message(ABI, fake_system_site(tmp_path, np.__version__))
    assert "share numpy" in same and "apt full-upgrade" in same and "pip install" not in same
    multi = import_error_message(ImportError("numpy.core.multiarray failed to import\n\nsee above"), empty)
    assert "\n" not in multi and "ImportError: numpy.core.multiarray failed to import see above" in multi
    other = import_error_message(OSError("libcamera.so.0.3: cannot open shared object file"), empty)
    assert "OSError: libcamera.so.0.3" in other and "apt install --reinstall python3-picamera2" in other


def test_picamera2_that_raises_at_import_is_a_setup_error(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "stand_in" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise ValueError({str(ABI)!r})\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(SourceSetupError, match="picamera2 fails to import \\(ValueError: numpy.dtype size") as info:
        open_source("picamera2", fps=5.0)
    assert info.value.exit_code == EX_CONFIG
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
