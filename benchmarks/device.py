"""How fast, how big and how hungry is the `edge-device` daemon? Per-frame cost, loop overhead, memory and CPU.

What is measured, and why (all daemon runs use the default `[detect]` config: the whole view plus up to two
crops per frame (motion regions, the sweep, follow-ups of crop hits), and `[model] threads = 1`, so one core's
worth of work is visible). This script never imports TensorFlow (it checks, and records it in the JSON):
1. Per-frame time split, replaying a 640x480 MJPG video written from real dev photos (blocks of no-dog and dog
   frames, so presence events fire): read/decode (`VideoFileSource.read`, BGR->RGB included), scoring
   (`FrameScorer.score`: motion, crop choice, preprocessing and the model runs of every view), of which
   inference (the interpreter's invoke time summed over the frame's views), and decision/publish
   (`Decider.update` + `StdoutSink` into an in-memory stream). Median and p95 per stage, in ms, and the model
   invocations per frame.
2. Loop overhead over a bare interpreter: (a) `set_tensor` + `invoke` + `get_tensor` on one fixed preprocessed
   input, median ms, times the invocations per frame the daemon made; (b) `Daemon(cfg).run()` on the replay,
   timed from its READY notification to STOPPING (a Notifier subclass records both), in ms/frame. (b) is
   measured twice: on the video file (includes decoding a 640x480 frame, which a camera source does too) and on
   the same frames pre-decoded in memory (excludes it). Overhead = (b - a) / a; target <= 15 %. Each is the
   median of `--rounds` interleaved runs. The pre-decoded figure still includes motion detection and
   preprocessing (a 640x480 -> model-size resize per view); subtracting row 1's non-inference scoring time
   leaves the loop's own bookkeeping (Decider, stats, watchdog, snapshot JPEG at event starts, sink).
3. Resident memory: `python -m edge_oneclass.device.cli run` from the device-only install (`--device-python`, default
   `.venv-device/bin/python`; no TensorFlow, as on the Pi; this repository's code via PYTHONPATH) replays the
   video in a subprocess; peak RSS is the highest VmHWM sampled from /proc/PID/status every 50 ms
   (not `ru_maxrss`, which a vfork'd child inherits from this process). Target < 150 MB. The same run gives
   READY->STOPPING ms/frame, and CPU seconds per frame from /proc/PID/stat utime+stime (at READY) and the child's
   rusage (at exit).
4. CPU at 5 fps, for real: the video's frames are served as an MJPEG HTTP stream at 5 fps (like a camera set to
   `fps`), and the device-only daemon reads it as a live `http://` source paced at `[camera] fps = 5`. CPU % of
   one core = utime+stime delta / wall time over `--live-seconds` after READY. Its own `stats` log line (every
   60 s) gives the achieved fps and dropped frames. A derived figure (CPU s/frame of the replay x 5) is shown too,
   labelled as such. A second live run serves the stream at 30 fps (a camera left at its default rate).
5. int8 inference ms with 1 and 2 interpreter threads (median of 100 `Runner.infer` calls), and model size.

Usage (from the repository root; trains a model with `train-edge` first unless --model is given, a few min):
    .venv/bin/python -m benchmarks.device [--model /tmp/std/model-v3] [--frames 300]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import io
import os
import re
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from benchmarks.common import (
    DATA,
    REPO,
    RESULTS,
    command_line,
    dev_split,
    fmt,
    load_json,
    markdown_table,
    median_invoke_ms,
    model_file,
    publish,
    symlink_folder,
    today,
    write_json,
)
from edge_oneclass.device.config import DetectConfig, load_config
from edge_oneclass.device.detect.debounce import Decider
from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.frame import Frame
from edge_oneclass.device.model.preprocess import preprocess
from edge_oneclass.device.model.runner import Runner, _interpreter_class
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.stdout import StdoutSink
from edge_oneclass.device.sources import make_source
from edge_oneclass.device.sources.base import Source

TRAIN_EDGE = [sys.executable, "-m", "edge_oneclass.export.workflow"]   # `train-edge` of this checkout
DEVICE_PYTHON = Path(os.environ.get("EDGE_DEVICE_PYTHON", REPO / ".venv-device" / "bin" / "python"))
WIDTH, HEIGHT = 640, 480
VIDEO_FPS = 10.0
BLOCK = 30               # frames per no-dog / dog block of the video
LIVE_FPS = 5.0
FAST_CAMERA_FPS = 30.0   # a USB/IP camera left at its default rate while the daemon scores 5 fps
OVERHEAD_TARGET = 0.15
RSS_TARGET_MB = 150.0
DEFAULT_MODEL_DIR = Path("/tmp/bench-dog-model")
STAGES = ("read_decode", "scoring", "decide_publish")   # and "inference", the model's share of "scoring"


# -- inputs: model, video, config ------------------------------------------------------------------------------

def train_model(out: Path = DEFAULT_MODEL_DIR) -> Path:
    """`train-edge` on the 398 training dogs of the standard split (a /tmp folder of symlinks, no copies)."""
    images = symlink_folder(dev_split().train, Path(tempfile.mkdtemp(prefix="bench-dog-train-")) / "dog")
    log = images.parent / "train-edge.log"
    print(f"  training: train-edge {images} --out {out}  (log: {log})", flush=True)
    with log.open("w") as f:
        proc = subprocess.run([*TRAIN_EDGE, str(images), "--out", str(out)], stdout=f, stderr=subprocess.STDOUT,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"train-edge failed (exit {proc.returncode}); see {log}")
    print(f"  trained {out}/model.tflite; pass --model to reuse it", flush=True)
    return out / "model.tflite"


def video_photos(n: int) -> list[Path]:
    """Alternating blocks of BLOCK no-dog and BLOCK held-out dog photos (never the training ones), n in all."""
    split = dev_split(DATA / "dev")
    dogs, nodogs = split.test_pos, split.test_neg
    photos: list[Path] = []
    for i in range(n):
        pool = dogs if (i // BLOCK) % 2 else nodogs
        photos.append(pool[(i // (2 * BLOCK) * BLOCK + i % BLOCK) % len(pool)])
    return photos


def write_video(path: Path, n: int) -> list[bytes]:
    """An MJPG AVI of n 640x480 frames at VIDEO_FPS; returns the frames as JPEG bytes (for the live stream)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path}")
    jpegs = []
    for photo in video_photos(n):
        bgr = cv2.resize(cv2.imread(str(photo)), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        writer.write(bgr)
        jpegs.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    writer.release()
    return jpegs


def write_config(path: Path, source: str, model: Path, fps: float) -> Path:
    """A daemon config: the default [detect], one interpreter thread, stdout JSON output."""
    path.write_text(f'[camera]\nsource = "{source}"\nfps = {fps}\n\n[model]\npath = "{model}"\nthreads = 1\n\n'
                    f'[feedback]\ndir = "{path.parent / "feedback"}"\n\n'   # its own bank, never the host's
                    "[log]\nlevel = \"INFO\"\n")
    return path


# -- 1. per-stage split -----------------------------------------------------------------------------------------

def summary(ms: list[float]) -> dict[str, float]:
    return {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def stage_split(video: Path, model: Path) -> dict[str, dict[str, float]]:
    """Time each stage of every frame of the replay with the daemon's own classes and default [detect] settings,
    one interpreter thread."""
    cfg = DetectConfig()
    running = RunningModel.load(model, threads=1)
    runner = running.runner
    scorer = FrameScorer(cfg)
    decider = Decider(running.label, cfg.on_frames, cfg.window, cfg.off_delay)
    sink = StdoutSink(running.info, stream=io.StringIO())
    source = make_source(str(video), VIDEO_FPS)
    source.open()
    times: dict[str, list[float]] = {s: [] for s in (*STAGES, "inference")}
    invocations: list[int] = []
    events = 0
    try:
        for _ in range(5):  # warm the interpreter up, as the daemon's first frame does
            runner.infer(np.zeros((runner.input_size, runner.input_size, 3), np.uint8))
        while True:
            t0 = time.perf_counter()
            frame = source.read()
            t1 = time.perf_counter()
            if frame is None:
                break
            scored = scorer.score(frame.image, running)
            t2 = time.perf_counter()
            change = decider.update(scored.margin, frame.t, scored.score)
            if change is not None:
                sink.state_changed(change)
                events += 1
            t3 = time.perf_counter()
            for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3)), strict=True):
                times[stage].append((b - a) * 1000.0)
            times["inference"].append(scored.inference_ms)
            invocations.append(scored.invocations)
    finally:
        source.close()
    result = {stage: summary(ms) for stage, ms in times.items()}
    result["scoring_without_inference"] = summary([a - b for a, b in zip(times["scoring"], times["inference"],
                                                                          strict=True)])
    result["total"] = summary([sum(parts) for parts in zip(*(times[s] for s in STAGES), strict=True)])
    result["frames"] = len(times["inference"])  # type: ignore[assignment]
    result["events"] = events  # type: ignore[assignment]
    result["invocations_per_frame"] = round(float(np.mean(invocations)), 3)  # type: ignore[assignment]
    return result


# -- 2. loop overhead -------------------------------------------------------------------------------------------

def bare_invoke_ms(model: Path, image: np.ndarray, n: int, warmup: int = 10) -> list[float]:
    """set_tensor + invoke + get_tensor on one fixed input, through the same interpreter class, one thread."""
    cls, _ = _interpreter_class()
    interp = cls(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    x = np.ascontiguousarray(image[None, ...])
    times = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        interp.set_tensor(inp, x)
        interp.invoke()
        interp.get_tensor(out)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


class TimingNotifier(Notifier):
    """No socket; records when the daemon says READY (first frame read, model loaded) and STOPPING."""

    def __init__(self) -> None:
        super().__init__(env={})
        self.ready_at = self.stopping_at = 0.0

    def ready(self, status: str | None = None) -> bool:
        self.ready_at = time.perf_counter()
        return False

    def stopping(self) -> bool:
        self.stopping_at = time.perf_counter()
        return False


class MemorySource(Source):
    """Already-decoded RGB frames, replayed like a video file: the daemon loop without the decode."""

    live = False

    def __init__(self, images: list[np.ndarray], fps: float) -> None:
        super().__init__("memory")
        self.images, self.fps, self._i = images, fps, 0

    def open(self) -> None:
        self._i = 0

    def read(self) -> Frame | None:
        if self._i >= len(self.images):
            return None
        self._i += 1
        return Frame(image=self.images[self._i - 1], t=(self._i - 1) / self.fps, index=self._i - 1)

    def close(self) -> None:
        pass


def daemon_ms_per_frame(config: Path, images: list[np.ndarray] | None = None) -> tuple[float, float]:
    """`Daemon(cfg).run()` in this process: READY -> STOPPING wall time per frame (ms) and model invocations per
    frame (counted by the daemon's observer hook); `images` replaces the video."""
    from edge_oneclass.device import daemon

    cfg = load_config(config)
    notifier = TimingNotifier()
    sink = StdoutSink(RunningModel.load(cfg.model.path, 1).info, stream=io.StringIO())
    counts = [0, 0]

    def observe(_frame, scored, _present) -> None:
        counts[0] += 1
        counts[1] += scored.invocations

    d = daemon.Daemon(cfg, sinks=[sink], notifier=notifier, observer=observe)
    if images is None:
        d.run()
    else:
        with mock.patch.object(daemon, "make_source", lambda *_a, **_k: MemorySource(images, VIDEO_FPS)):
            d.run()
    frames = max(counts[0], 1)
    return (notifier.stopping_at - notifier.ready_at) * 1000.0 / frames, counts[1] / frames


def decode_all(video: Path) -> list[np.ndarray]:
    source = make_source(str(video), VIDEO_FPS)
    source.open()
    images = []
    while (frame := source.read()) is not None:
        images.append(frame.image)
    source.close()
    return images


def loop_overhead(video: Path, config: Path, model: Path, rounds: int) -> dict:
    """Bare invoke vs the full daemon loop (with and without decode), interleaved `rounds` times."""
    images = decode_all(video)
    n = len(images)
    fixed = preprocess(images[0], Runner(model, threads=1).input_size)
    bare: list[float] = []
    with_decode, without_decode = [], []
    per_frame: list[float] = []
    for _ in range(rounds):
        bare += bare_invoke_ms(model, fixed, n)
        ms, calls = daemon_ms_per_frame(config)
        with_decode.append(ms)
        per_frame.append(calls)
        ms, calls = daemon_ms_per_frame(config, images)
        without_decode.append(ms)
        per_frame.append(calls)
    invocations = statistics.fmean(per_frame)
    a = statistics.median(bare) * invocations   # the bare interpreter doing the daemon's model runs per frame
    b_dec, b_mem = statistics.median(with_decode), statistics.median(without_decode)
    return {
        "frames": n, "rounds": rounds, "bare_invoke_median_ms": round(statistics.median(bare), 3),
        "bare_invoke_mean_ms": round(statistics.fmean(bare), 3), "invocations_per_frame": round(invocations, 3),
        "bare_ms_per_frame": round(a, 3),
        "daemon_ms_per_frame_with_decode": round(b_dec, 3), "daemon_ms_per_frame_predecoded": round(b_mem, 3),
        "overhead_with_decode": round((b_dec - a) / a, 4), "overhead_excluding_decode": round((b_mem - a) / a, 4),
        "daemon_runs_with_decode_ms": [round(x, 3) for x in with_decode],
        "daemon_runs_predecoded_ms": [round(x, 3) for x in without_decode],
    }


# -- 3./4. the device-only daemon in a subprocess ---------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_kb(pid: int, key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


@dataclass
class DaemonProcess:
    """`edge-device run` from the device-only venv, with a NOTIFY_SOCKET we own and an RSS sampler."""

    config: Path
    work: Path
    ready_at: float = 0.0
    stopping_at: float = 0.0
    cpu_at_ready: float = 0.0
    rss_samples_kb: list[int] = field(default_factory=list)
    peak_kb: int = 0
    anon_kb: int = 0
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr_path = self.work / f"{self.config.stem}.stderr"
        sock_path = self.work / f"{self.config.stem}.notify"
        sock_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self._sock.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        with self.stderr_path.open("w") as err:
            env["PYTHONPATH"] = str(REPO)   # this checkout's code on the device-only install's packages
            self.proc = subprocess.Popen([str(DEVICE_PYTHON), "-m", "edge_oneclass.device.cli", "run",
                                          "--config", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO)
        self._done = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._listen, self._sample)]
        for t in self._threads:
            t.start()

    def _listen(self) -> None:
        while not self._done.is_set():
            try:
                msg = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            now = time.perf_counter()
            if "READY=1" in msg:
                self.ready_at = now
                self.cpu_at_ready = cpu_seconds(self.proc.pid)
            if "STOPPING=1" in msg:
                self.stopping_at = now

    def _sample(self) -> None:
        while not self._done.is_set():
            kb, hwm, anon = (vm_kb(self.proc.pid, key) for key in ("VmRSS", "VmHWM", "RssAnon"))
            if kb and hwm and anon:
                self.rss_samples_kb.append(kb)
                self.peak_kb, self.anon_kb = max(self.peak_kb, hwm), max(self.anon_kb, anon)
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_at:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"edge-device never became ready; see {self.stderr_path}")
            time.sleep(0.02)

    def wait(self) -> tuple[int, float]:
        """Reap the child: (exit status, total CPU seconds from its rusage).

        Peak memory comes from sampling VmHWM, not ru_maxrss: with vfork the child's ru_maxrss starts from the
        parent's high-water mark (this benchmark process), which is not the daemon's memory.
        """
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        time.sleep(0.3)  # let the listener take the last datagram
        self._done.set()
        for t in self._threads:
            t.join()
        self._sock.close()
        return self.proc.returncode, usage.ru_utime + usage.ru_stime

    def stats_line(self) -> dict[str, str]:
        """The daemon's last periodic `stats:` log line as key -> value."""
        lines = [ln for ln in self.stderr_path.read_text().splitlines() if " stats: " in ln]
        return dict(kv.split("=", 1) for kv in lines[-1].split(" stats: ", 1)[1].split()) if lines else {}


def device_replay(config: Path, work: Path, frames: int) -> dict:
    """The device-only daemon replaying the video: peak RSS, ms/frame and CPU s/frame between READY and exit."""
    p = DaemonProcess(config, work)
    p.wait_ready()
    code, cpu_total = p.wait()
    if code != 0:
        raise SystemExit(f"edge-device run exited {code}; see {p.stderr_path}")
    cpu_per_frame = (cpu_total - p.cpu_at_ready) / frames
    peak_mb = p.peak_kb / 1024
    return {
        "peak_rss_mb": round(peak_mb, 1), "under_150mb": peak_mb < RSS_TARGET_MB,
        "peak_anon_rss_mb": round(p.anon_kb / 1024, 1),
        "median_sampled_rss_mb": round(statistics.median(p.rss_samples_kb) / 1024, 1) if p.rss_samples_kb else None,
        "ms_per_frame": round((p.stopping_at - p.ready_at) * 1000.0 / frames, 3),
        "cpu_s_per_frame": round(cpu_per_frame, 5), "startup_cpu_s": round(p.cpu_at_ready, 2),
        "derived_cpu_pct_at_5fps": round(cpu_per_frame * LIVE_FPS * 100.0, 1),
    }


class MjpegHandler(http.server.BaseHTTPRequestHandler):
    """multipart/x-mixed-replace JPEG stream (what IP cameras serve), paced at the server's fps, looping."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        server: MjpegServer = self.server  # type: ignore[assignment]
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        due, i = time.monotonic(), 0
        try:
            while not server.stopped.is_set():
                jpeg = server.jpegs[i % len(server.jpegs)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                self.wfile.write(jpeg + b"\r\n")
                i += 1
                server.sent = i
                due += 1.0 / server.fps
                time.sleep(max(0.0, due - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


class MjpegServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, jpegs: list[bytes], fps: float) -> None:
        super().__init__(("127.0.0.1", 0), MjpegHandler)
        self.jpegs, self.fps, self.sent = jpegs, fps, 0
        self.stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stream.mjpg"


@contextlib.contextmanager
def mjpeg_stream(jpegs: list[bytes], fps: float) -> Iterator[MjpegServer]:
    server = MjpegServer(jpegs, fps)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopped.set()
        server.shutdown()
        server.server_close()


def device_live(jpegs: list[bytes], model: Path, work: Path, seconds: float, stream_fps: float) -> dict:
    """The device-only daemon at `fps = 5` on a live MJPEG stream sent at `stream_fps`: CPU % of one core."""
    with mjpeg_stream(jpegs, stream_fps) as server:
        config = write_config(work / f"live{stream_fps:.0f}.toml", server.url, model, LIVE_FPS)
        p = DaemonProcess(config, work)
        p.wait_ready()
        time.sleep(2.0)  # settle: the first frames and the grab thread's start
        cpu0, t0, sent0 = cpu_seconds(p.proc.pid), time.monotonic(), server.sent
        time.sleep(seconds)
        cpu1, t1, sent1 = cpu_seconds(p.proc.pid), time.monotonic(), server.sent
        p.proc.send_signal(signal.SIGTERM)
        code, _ = p.wait()
    stats = p.stats_line()
    return {
        "seconds": round(t1 - t0, 1), "cpu_pct_one_core": round((cpu1 - cpu0) / (t1 - t0) * 100.0, 1),
        "stream_fps": round((sent1 - sent0) / (t1 - t0), 2), "exit_code": code,
        "peak_rss_mb": round(p.peak_kb / 1024, 1),
        "daemon_fps": float(stats["fps"]) if "fps" in stats else None,
        "dropped_frames": int(stats["dropped_frames"]) if "dropped_frames" in stats else None,
        "inference_ms_p50": float(stats["inference_ms_p50"]) if "inference_ms_p50" in stats else None,
    }


# -- 5. threads and size ----------------------------------------------------------------------------------------

def thread_timings(model: Path, images: list[np.ndarray]) -> dict:
    size = Runner(model, threads=1).input_size
    inputs = [preprocess(img, size) for img in images[:100]]
    return {
        "int8_ms_1thread": round(median_invoke_ms(Runner(model, threads=1), inputs, 100), 3),
        "int8_ms_2threads": round(median_invoke_ms(Runner(model, threads=2), inputs, 100), 3),
        "model_mb": round(model.stat().st_size / 1e6, 3),
    }


# -- report -----------------------------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f} %"


def table(r: dict) -> str:
    s, o, rep, live, fast = r["stages"], r["overhead"], r["replay"], r["live"], r["live_fast_camera"]
    rows = [[f"1. {name}", f"{s[key]['median_ms']:.2f}", f"{s[key]['p95_ms']:.2f}", note]
            for name, key, note in (
                ("read/decode (VideoFileSource.read)", "read_decode", "640x480 MJPG decode + BGR->RGB"),
                ("scoring (FrameScorer.score)", "scoring",
                 f"{s['invocations_per_frame']:.2f} model runs per frame (default [detect])"),
                ("... of which inference (1 thread)", "inference", "interpreter invoke time summed over the views"),
                ("... of which the rest", "scoring_without_inference", "motion, crop choice, preprocessing"),
                ("decide/publish (Decider + StdoutSink)", "decide_publish", f"{s['events']} events"),
                ("sum of stages", "total", f"{s['frames']} frames"))]
    rows += [
        ["2a. bare set_tensor+invoke+get_tensor", f"{o['bare_invoke_median_ms']:.2f}", "",
         f"median of {o['rounds']} x {o['frames']}; x {o['invocations_per_frame']:.2f} runs per frame = "
         f"{o['bare_ms_per_frame']:.2f} ms/frame"],
        ["2b. Daemon.run(), video file", f"{o['daemon_ms_per_frame_with_decode']:.2f}", "",
         f"overhead {pct(o['overhead_with_decode'])} (includes decode)"],
        ["2b. Daemon.run(), pre-decoded frames", f"{o['daemon_ms_per_frame_predecoded']:.2f}", "",
         f"overhead {pct(o['overhead_excluding_decode'])} (target <= +15 %; includes motion + preprocessing)"],
        ["2b. ... minus motion + preprocessing (row 1)",
         f"{o['daemon_ms_per_frame_predecoded'] - s['scoring_without_inference']['median_ms']:.2f}", "",
         f"overhead {pct(o['overhead_excluding_decode_and_preprocess'])}: the loop's own bookkeeping"],
        ["3. device-only daemon replay", f"{rep['ms_per_frame']:.2f}", "",
         f"peak RSS {rep['peak_rss_mb']:.0f} MB (target < 150; anonymous {rep['peak_anon_rss_mb']:.0f} MB), "
         f"CPU {1000 * rep['cpu_s_per_frame']:.1f} ms/frame"],
        ["4. CPU at fps = 5, 5 fps live stream", "", "",
         f"**{live['cpu_pct_one_core']:.1f} % of one core** (measured; daemon fps {fmt(live['daemon_fps'])}, "
         f"dropped {fmt(live['dropped_frames'])}, peak RSS {live['peak_rss_mb']:.0f} MB)"],
        ["4. CPU at fps = 5, 30 fps live stream", "", "",
         f"{fast['cpu_pct_one_core']:.1f} % of one core (measured; the grab thread decodes every frame sent)"],
        ["4. CPU at fps = 5, derived", "", "",
         f"{rep['derived_cpu_pct_at_5fps']:.1f} % of one core (DERIVED: replay CPU s/frame x 5 fps)"],
        ["5. int8 inference, 1 / 2 threads", f"{r['threads']['int8_ms_1thread']:.2f} / "
         f"{r['threads']['int8_ms_2threads']:.2f}", "", f"model.tflite {r['threads']['model_mb']:.2f} MB"],
    ]
    return markdown_table(["measure", "median ms", "p95 ms", "notes"], rows)


def readme_block(r: dict) -> str:
    return (table(r) + "\n\nDevice: `edge-device` on this machine (x86, 2 shared cores; a Raspberry Pi is slower), "
            f"`threads = 1`, the default `[detect]` config, replaying a {r['overhead']['frames']}-frame 640x480 MJPG "
            "video of held-out dev photos. 2b is `Daemon(cfg).run()` timed from READY to STOPPING over the frames "
            "(score every view, debounce, snapshot JPEG at each event start, stdout sink); 2a is the bare interpreter "
            "doing the same number of model runs per frame; overhead = (2b - 2a) / 2a; the last 2b row subtracts "
            "row 1's non-inference scoring median (motion, crop choice, preprocessing). Row 3 is the device-only "
            "install (`.venv-device`, no TensorFlow) in a subprocess, peak "
            "RSS = highest sampled VmHWM (most of it is shared-library pages: OpenCV with FFmpeg, LiteRT). Row 4 "
            "serves the same frames as an MJPEG HTTP stream at 5 fps (and at 30 fps), read by the daemon as a live "
            "`http://` source paced at `fps = 5`; CPU = /proc utime+stime over the run / wall time. "
            f"Produced by `{r['command']}` on {r['date']}; figures from `benchmarks/results/device.json`.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model folder or model.tflite (with model.json beside it); "
                   "default: train one")
    p.add_argument("--device-python", type=Path, default=DEVICE_PYTHON,
                   help="python of the device-only install (no TensorFlow) for rows 3 and 4 "
                        "(default $EDGE_DEVICE_PYTHON or .venv-device/bin/python)")
    p.add_argument("--frames", type=int, default=300, help="frames in the replay video (default 300)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved bare/daemon rounds for 2. (default 5)")
    p.add_argument("--live-seconds", type=float, default=62.0,
                   help="seconds of the live 5 fps run (default 62: the daemon logs stats every 60 s)")
    p.add_argument("--fast-seconds", type=float, default=15.0,
                   help=f"seconds of the live run on a {FAST_CAMERA_FPS:.0f} fps stream (default 15)")
    p.add_argument("--json", type=Path, default=RESULTS / "device.json")
    p.add_argument("--no-readme", action="store_true", help="do not regenerate the block in benchmarks/README.md")
    p.add_argument("--readme-only", action="store_true",
                   help="only regenerate the block in benchmarks/README.md from --json")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary folder)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, work: Path) -> dict:
    global DEVICE_PYTHON
    DEVICE_PYTHON = args.device_python
    model = model_file(args.model) if args.model else train_model()
    video = work / "replay.avi"
    print(f"[0/5] writing {video}: {args.frames} frames, {WIDTH}x{HEIGHT} MJPG", flush=True)
    jpegs = write_video(video, args.frames)
    # fps = the video's rate, so the replay scores every frame (at fps 5 it would score every other one)
    replay_cfg = write_config(work / "replay.toml", str(video), model, VIDEO_FPS)
    print("[1/5] per-stage split", flush=True)
    stages = stage_split(video, model)
    print(f"[2/5] bare invoke vs Daemon.run() ({args.rounds} rounds)", flush=True)
    overhead = loop_overhead(video, replay_cfg, model, args.rounds)
    loop_only = overhead["daemon_ms_per_frame_predecoded"] - stages["scoring_without_inference"]["median_ms"]
    overhead["overhead_excluding_decode_and_preprocess"] = round(
        (loop_only - overhead["bare_ms_per_frame"]) / overhead["bare_ms_per_frame"], 4)
    print("[3/5] device-only daemon replay in a subprocess", flush=True)
    replay = device_replay(replay_cfg, work, stages["frames"])
    print(f"[4/5] live: fps = 5 on a 5 fps MJPEG stream for {args.live_seconds:.0f} s, then on a "
          f"{FAST_CAMERA_FPS:.0f} fps one for {args.fast_seconds:.0f} s", flush=True)
    live = device_live(jpegs, model, work, args.live_seconds, LIVE_FPS)
    live_fast = device_live(jpegs, model, work, args.fast_seconds, FAST_CAMERA_FPS)
    print("[5/5] int8 inference with 1 and 2 threads", flush=True)
    threads = thread_timings(model, decode_all(video))
    return {"command": command_line(), "date": today(), "model": str(model), "stages": stages,
            "overhead": overhead, "replay": replay, "live": live, "live_fast_camera": live_fast, "threads": threads,
            "tensorflow_imported": "tensorflow" in sys.modules}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        print(f"wrote {publish('device', readme_block(load_json(args.json)))}")
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="edge-bench-device-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, result)
    print()
    print(table(result))
    if not args.no_readme:
        print(f"\nwrote {args.json} and {publish('device', readme_block(load_json(args.json)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
