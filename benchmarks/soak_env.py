"""What benchmarks/soak.py runs the daemon against: the live camera, the broker, the small disk, the daemon process.

- `LiveCamera`: the shared clips (dog and no-dog alternating, looped) as 640x480 JPEGs at 5 fps, served as an
  MJPEG HTTP stream on 127.0.0.1 by `benchmarks.device`'s MjpegServer/MjpegHandler, except that the frame sent is
  the one the wall clock points at (a camera keeps filming while nobody watches), and the server can go away and
  come back on the same port.
- `Broker`: a real Mosquitto on 127.0.0.1 with persistence, so the recorder's own session survives a restart.
- `Tmpfs`: a small tmpfs for the snapshot and feedback folders, and a filler to make it full.
- `DaemonProcess`: `.venv-device/bin/edge-device run` in its own process, as systemd runs it; its stderr is
  followed line by line (decisions, stats, warnings), and it can be SIGKILLed and started again (each start is a
  new "segment" with its own log file), optionally under libfaketime.
- `Sampler`: RSS, threads, open files and the folders' sizes of the daemon over time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import signal
import socket
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from benchmarks.device import HEIGHT, WIDTH, MjpegHandler, MjpegServer, cpu_seconds, vm_kb

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}") from None
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


# -- the camera -----------------------------------------------------------------------------------------------

@dataclass
class Segment:
    clip: str           # "dog/01.mp4"
    label: str          # "dog" / "nodog"
    start: int          # first frame index in the loop
    frames: int


def clip_order(video_root: Path) -> list[Path]:
    """dog/01, nodog/01, dog/02, nodog/02, …: a dog comes and goes all along."""
    dogs, nodogs = sorted((video_root / "dog").glob("*.mp4")), sorted((video_root / "nodog").glob("*.mp4"))
    order: list[Path] = []
    for i in range(max(len(dogs), len(nodogs))):
        order += [p for p in (dogs[i] if i < len(dogs) else None, nodogs[i] if i < len(nodogs) else None) if p]
    return order


def letterbox(rgb: np.ndarray) -> np.ndarray:
    """The clip's frame scaled into a WIDTHxHEIGHT black frame (BGR, for JPEG): one camera, one size."""
    h, w = rgb.shape[:2]
    scale = min(WIDTH / w, HEIGHT / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x, y = (WIDTH - nw) // 2, (HEIGHT - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return out


def camera_frames(video_root: Path, fps: float, cache_dir: Path) -> tuple[list[bytes], list[Segment]]:
    """Every clip as a camera at `fps` sees it (the device's own VideoFileSource picks the frames), letterboxed
    and JPEG-encoded; cached by clip content."""
    from edge_oneclass.device.sources import make_source

    clips = clip_order(video_root)
    key = hashlib.sha256(repr((fps, WIDTH, HEIGHT, [(str(c), c.stat().st_size) for c in clips])).encode())
    cache = cache_dir / f"soak-frames-{key.hexdigest()[:16]}.pkl"
    if cache.is_file():
        with cache.open("rb") as f:
            return pickle.load(f)
    jpegs: list[bytes] = []
    segments: list[Segment] = []
    for clip in clips:
        source = make_source(str(clip), fps)
        source.open()
        start = len(jpegs)
        try:
            while (frame := source.read()) is not None:
                jpegs.append(cv2.imencode(".jpg", letterbox(frame.image), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        finally:
            source.close()
        segments.append(Segment(f"{clip.parent.name}/{clip.name}", clip.parent.name, start, len(jpegs) - start))
    cache_dir.mkdir(parents=True, exist_ok=True)
    with cache.open("wb") as f:
        pickle.dump((jpegs, segments), f)
    return jpegs, segments


class LiveHandler(MjpegHandler):
    """MjpegHandler's multipart stream, but each part is the frame the camera's clock is at now."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        server: LiveServer = self.server  # type: ignore[assignment]
        camera = server.camera
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        last = -1
        try:
            while not server.stopped.is_set():
                i = camera.position()
                if i != last:
                    jpeg = camera.jpegs[i % len(camera.jpegs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                    self.wfile.write(jpeg + b"\r\n")
                    server.sent += 1
                    last = i
                server.stopped.wait(max(0.001, camera.due(i + 1) - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            pass


class LiveServer(MjpegServer):
    allow_reuse_address = True     # the camera comes back on the same port

    def __init__(self, camera: LiveCamera) -> None:
        # not MjpegServer.__init__, which binds port 0: the camera keeps its port across outages
        socketserver.ThreadingTCPServer.__init__(self, ("127.0.0.1", camera.port), LiveHandler)
        self.camera, self.jpegs, self.fps, self.sent = camera, camera.jpegs, camera.fps, 0
        self.stopped = threading.Event()


class LiveCamera:
    """An IP camera on 127.0.0.1 filming the clips in a loop; `down()` takes it off the network, `up()` back."""

    def __init__(self, jpegs: list[bytes], segments: list[Segment], fps: float) -> None:
        self.jpegs, self.segments, self.fps = jpegs, segments, fps
        self.port = free_port()
        self.t0 = time.monotonic()
        self._server: LiveServer | None = None
        self._thread: threading.Thread | None = None
        self.outages = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def position(self) -> int:
        return int((time.monotonic() - self.t0) * self.fps)

    def due(self, i: int) -> float:
        return self.t0 + i / self.fps

    def showing(self, i: int | None = None) -> Segment:
        i = (self.position() if i is None else i) % len(self.jpegs)
        for s in self.segments:
            if s.start <= i < s.start + s.frames:
                return s
        return self.segments[-1]

    @property
    def loop_seconds(self) -> float:
        return len(self.jpegs) / self.fps

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> None:
        if self._server is not None:
            return
        self._server = LiveServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="camera", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Close the listening socket and every open stream (the handlers see `stopped` within a frame)."""
        server, self._server = self._server, None
        if server is None:
            return
        self.outages += 1
        server.stopped.set()
        server.shutdown()
        server.server_close()


# -- the broker -----------------------------------------------------------------------------------------------

class Broker:
    """Mosquitto on 127.0.0.1 with persistence: the recorder's session (and its queued messages) and the retained
    messages survive a stop/start, as with a Home Assistant broker."""

    def __init__(self, work: Path, exe: str = "/usr/sbin/mosquitto") -> None:
        self.exe, self.work = exe, work
        self.host, self.port = "127.0.0.1", free_port()
        self.conf = work / "mosquitto.conf"
        self.log = work / "mosquitto.log"
        (work / "mosquitto-db").mkdir(parents=True, exist_ok=True)
        # as root, mosquitto drops to the `mosquitto` user, which cannot write the database into our folder
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {work / 'mosquitto-db'}/\nqueue_qos0_messages true\n"
                             f"max_queued_messages 100000\n{user}")
        self.proc: subprocess.Popen | None = None
        self.stops = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 10.0, self.proc)

    def persistence_errors(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return [ln for ln in text.splitlines() if "Error saving" in ln or "Error: " in ln]

    def stop(self) -> None:
        """SIGTERM: mosquitto closes every connection and saves its database."""
        if self.proc is not None and self.proc.poll() is None:
            self.stops += 1
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# -- the small disk -------------------------------------------------------------------------------------------

class Tmpfs:
    """A tmpfs of `mb` MB at `path` (root); `fill()` takes every free byte, `free()` gives them back."""

    def __init__(self, path: Path, mb: int) -> None:
        self.path, self.mb = path, mb
        self.mounted = False
        self.error: str | None = None
        self.filler = path / ".soak-filler"

    def mount(self) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.mb}m,mode=0755", "tmpfs", str(self.path)],
                              capture_output=True, text=True)
        self.mounted = proc.returncode == 0
        if not self.mounted:
            self.error = (proc.stderr or proc.stdout).strip() or f"mount exited {proc.returncode}"
        return self.mounted

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False

    def usage(self) -> tuple[int, int]:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write zeros until ENOSPC (unbuffered, so nothing is left to fail at close); returns the bytes taken."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 64 << 10, 4096, 1):
                chunk = b"\0" * size
                with contextlib.suppress(OSError):
                    while True:
                        written += os.write(fd, chunk)
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


def folder_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under `path`, the filler excluded."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            if n == ".soak-filler":
                continue
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, n)).st_size
                files += 1
    return total, files


# -- the daemon -----------------------------------------------------------------------------------------------

DECISION = re.compile(r"(?P<label>\S+) (?P<kind>present|absent) at (?P<at>\S+): score (?P<score>\S+), "
                      r"max (?P<max>\S+), (?P<frames>\d+) positive frames")


@dataclass
class LogLine:
    mono: float        # harness monotonic time the line was read
    segment: int
    level: str
    logger: str
    text: str


@dataclass
class Decision:
    mono: float
    segment: int
    kind: str          # "start" / "end"
    at: str
    score: str
    max_score: str
    frames: int

    def key(self) -> tuple:
        return self.kind, self.score, self.max_score, self.frames


class DaemonProcess:
    """`edge-device run --config CONFIG` from the device-only venv; one stderr file per start (segment)."""

    def __init__(self, exe: Path, config: Path, work: Path) -> None:
        self.exe, self.config, self.work = exe, config, work
        self.proc: subprocess.Popen | None = None
        self.segment = 0
        self.lines: list[LogLine] = []
        self.decisions: list[Decision] = []
        self.stats: list[tuple[float, int, dict[str, str]]] = []
        self.present = False
        self.ready_at: float | None = None
        self.started_at: float = 0.0
        self.faketime_file: Path | None = None
        self.exits: list[dict] = []
        self._lock = threading.Lock()
        self._follower: threading.Thread | None = None
        self._stop_follow = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def log_path(self, segment: int | None = None) -> Path:
        return self.work / f"daemon-{segment or self.segment}.log"

    def start(self, faketime_file: Path | None = None) -> None:
        self.segment += 1
        self.present, self.ready_at = False, None
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "PYTHONPATH")}
        if faketime_file is not None:
            env.update({"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(faketime_file),
                        "FAKETIME_NO_CACHE": "1", "DONT_FAKE_MONOTONIC": "1"})
        self.faketime_file = faketime_file
        path = self.log_path()
        with path.open("wb") as err:
            self.proc = subprocess.Popen([str(self.exe), "run", "--config", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=self.work,
                                         start_new_session=True)
        self.started_at = time.monotonic()
        self._stop_follow.clear()
        self._follower = threading.Thread(target=self._follow, args=(path, self.segment, self.proc), daemon=True)
        self._follower.start()

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while self.ready_at is None:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"edge-device never became ready; see {self.log_path()}")
            time.sleep(0.05)
        return self.ready_at - self.started_at

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        code = self.proc.wait(30)
        self._end_follow()
        self.exits.append({"segment": self.segment, "signal": signal.Signals(sig).name, "code": code})
        return code

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, as systemd stops it; the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._end_follow()
        self.exits.append({"segment": self.segment, "signal": "SIGTERM", "code": code})
        return code

    def _end_follow(self) -> None:
        time.sleep(0.3)
        self._stop_follow.set()
        if self._follower is not None:
            self._follower.join(5)

    def _follow(self, path: Path, segment: int, proc: subprocess.Popen) -> None:
        with path.open("r", errors="replace") as f:
            buf = ""
            while True:
                chunk = f.readline()
                if chunk:
                    buf += chunk
                    if buf.endswith("\n"):
                        self._parse(buf.rstrip("\n"), segment)
                        buf = ""
                    continue
                if self._stop_follow.is_set() or (proc.poll() is not None and not chunk):
                    if self._stop_follow.is_set() or proc.poll() is not None:
                        rest = f.read()
                        for line in (buf + rest).splitlines():
                            self._parse(line, segment)
                        return
                time.sleep(0.02)

    def _parse(self, line: str, segment: int) -> None:
        now = time.monotonic()
        # "<date> <time>,ms LEVEL logger: message" (asctime added when not under the journal)
        m = re.match(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$", line)
        level, logger, text = (m.group(1), m.group(2), m.group(3)) if m else ("", "", line)
        with self._lock:
            self.lines.append(LogLine(now, segment, level, logger, text))
            d = DECISION.match(text)
            if d:
                kind = "start" if d["kind"] == "present" else "end"
                self.decisions.append(Decision(now, segment, kind, d["at"], d["score"], d["max"], int(d["frames"])))
                self.present = kind == "start"
            elif text.startswith("stats: "):
                self.stats.append((now, segment, dict(kv.split("=", 1) for kv in text[7:].split() if "=" in kv)))
            elif text.startswith("ready: "):
                self.ready_at = now

    # -- queries --------------------------------------------------------------------------------------------

    def since(self, mono: float, pattern: str | None = None, level: str | None = None) -> list[LogLine]:
        with self._lock:
            lines = [ln for ln in self.lines if ln.mono >= mono]
        if level:
            lines = [ln for ln in lines if ln.level == level]
        if pattern:
            rx = re.compile(pattern)
            lines = [ln for ln in lines if rx.search(ln.text)]
        return lines

    def wait_line(self, pattern: str, after: float, timeout: float) -> LogLine | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.since(after, pattern)
            if found:
                return found[0]
            time.sleep(0.05)
        return None

    def last_decision_mono(self) -> float:
        with self._lock:
            return self.decisions[-1].mono if self.decisions else self.started_at


# -- sampling -------------------------------------------------------------------------------------------------

def _status_int(pid: int, key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Sampler:
    """Every `every` s (or `fast` s while `burst` is set): the daemon's RSS, threads, open files, CPU, and the
    snapshot and feedback folders' sizes."""

    daemon: DaemonProcess
    folders: dict[str, Path]
    every: float
    t0: float
    fast: float = 0.2
    samples: list[dict] = field(default_factory=list)
    burst: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(10)

    def sample(self) -> dict | None:
        pid = self.daemon.pid
        if pid is None:
            return None
        rss = vm_kb(pid, "VmRSS")
        row: dict = {"t": round(time.monotonic() - self.t0, 2), "segment": self.daemon.segment, "pid": pid,
                     "rss_mb": round(rss / 1024, 1) if rss else None, "threads": _status_int(pid, "Threads"),
                     "fds": open_files(pid)}
        with contextlib.suppress(OSError, IndexError, ValueError):
            row["cpu_s"] = round(cpu_seconds(pid), 2)
        for name, path in self.folders.items():
            row[f"{name}_bytes"], row[f"{name}_files"] = folder_size(path)
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.fast if self.burst.is_set() else self.every)
