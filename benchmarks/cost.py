"""What does each frame cost the daemon, in units of one model run? Measured side by side in one run.

Every figure is one interpreter thread (`threads = 1`), on this machine, in one process run, so ratios are fair
even though the machine is shared and noisy:

1. The unit: a bare invoke of the model, `Runner.infer` on already preprocessed images (the centre square of the
   first frame of every clip and of the empty scene), warm, median of `--invokes` calls, as CPU time of the
   calling thread (`time.thread_time`), CPU time of the process (`time.process_time`) and wall time. Measured
   three times (before, between and after the per-frame passes); the unit is the median over all calls.
2. Per-frame compute of the daemon's per-frame path: `FrameScorer.score(frame, model, t)` then
   `Decider.update(margin, t, score)`, on frames decoded BEFORE timing (a Pi camera delivers decoded frames;
   decoding is reported apart, as information). Mean CPU ms per frame (thread and process time) and model runs
   per frame, for three `[detect]` configurations, each with a fresh scorer and decider per sequence:
     default       the default: the whole view, an unchanged scene carries the last score, re-checked every
                   `stationary_interval` = 10 s
     every frame   the default with `stationary_interval = 0`: every frame scored (the cost before the gate)
     wide          the wide-view crops: `regions = true`, `sweep = true`, `crop_recall = 0.75`
   The configurations run in lockstep on the same decoded frame (their order rotating frame by frame), over:
     a. all 24 shared clips (../shared/data/video/{dog,nodog}) at 5 fps, frames picked as the daemon's replay
        picks them (`VideoFileSource`: the first frame at or after each 1/fps tick), t = frame number / 5;
     b. a 10-minute replay (3000 frames at 5 fps) of an empty scene with sensor noise: a dev photo of an empty
        scene (`--scene`) at 640x360 plus independent uniform integer noise in [-3, +3] grey levels per pixel and
        channel, drawn afresh for every frame (seeded; generated on the fly).
   Each mean is reported as a ratio to the unit. Where the CPU goes besides the model is measured by wrapping
   the pipeline's stages during the same pass (`model` = RunningModel.infer: set_tensor, invoke, outputs,
   class-prior term; `preprocess`; `scene change` = SceneChange.changed + accept; `motion` = MotionDetector;
   `decider`; `rest` = what is left: crop choice, hit tracking, Python glue, the wrappers themselves).
   OpenCV runs some of its functions on worker threads (cv2.getNumThreads()), which `thread_time` does not
   see and `process_time` does: both are reported; the daemon pays process time.
3. CPU % of one core at fps = 5, live: the device-only install (`.venv-device`, no TensorFlow) runs
   `edge-device run` (default [detect], `threads = 1`) in a subprocess on an MJPEG HTTP stream served at 5 fps
   (benchmarks/device.py's stream server and sampling), for `--live-seconds` each on (i) the shared clips'
   frames (an equal slice from the start of each of the 24 clips, in order, letterboxed to 640x360, JPEG q90)
   and (ii) the noisy empty scene. CPU = /proc utime+stime over wall time (the whole process: the grab thread's
   JPEG decode, the loop, the model). The same served frames are also run in-process (default config, JPEG
   decode + per-frame path) as a prediction to compare with.
4. A Raspberry Pi 4 and Pi Zero 2 W ESTIMATE (nothing measured on a Pi here): the published int8 CPU
   latencies of EfficientNet-Lite0/1/2 (tensorflow/tpu README: Pixel 4, 4 threads), scaled to a Pi by published
   latencies of EfficientDet-Lite0/1/2 (EfficientNet-Lite backbones) on both devices; the Zero 2 W from a Pi 3 B
   (same Cortex-A53 cores) by clock. Times the default's measured model runs per frame at 5 fps = % of one
   core. Sources and the arithmetic are in the JSON (`pi_estimate`).

Usage (from the repository root; ~6 min):
    .venv/bin/python -m benchmarks.cost --model /tmp/std/base-model [--json benchmarks/results/cost.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from benchmarks import device as device_bench
from benchmarks.common import (
    DATA,
    REPO,
    RESULTS,
    command_line,
    fmt,
    load_json,
    markdown_table,
    model_file,
    publish,
    today,
    write_json,
)
from edge_oneclass.device.config import DetectConfig
from edge_oneclass.device.detect import scoring as scoring_module
from edge_oneclass.device.detect.debounce import Decider
from edge_oneclass.device.detect.motion import MotionDetector
from edge_oneclass.device.detect.scene_change import SceneChange
from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.preprocess import centre_square, preprocess
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.sources.opencv import VideoFileSource

VIDEO = DATA / "video"
SCENE = DATA / "dev" / "nodog" / "000006.jpg"   # Houses dataset: the front of a house, nobody in it
FPS = 5.0
WIDTH, HEIGHT = 640, 360
NOISE = 3                    # +- grey levels, uniform integers, per pixel and channel
NOISY_FRAMES = 3000          # 10 minutes at 5 fps
JPEG_QUALITY = 90
WIDE_CROP_RECALL = 0.75
TARGETS = {"clips": 1.5, "noisy": 0.25}   # the ceilings for the default, in bare invokes per frame
PARTS = ("model", "preprocess", "scene_change", "motion", "decider")


@dataclass(frozen=True)
class Configuration:
    name: str
    detect: DetectConfig
    crop_recall: float | None = None


CONFIGS = (
    Configuration("default", DetectConfig()),
    Configuration("every frame", DetectConfig(stationary_interval=0.0)),
    Configuration("wide", DetectConfig(regions=True, sweep=True, crop_recall=WIDE_CROP_RECALL), WIDE_CROP_RECALL),
)


# -- timing ---------------------------------------------------------------------------------------------------

class Meter:
    """Accumulates thread and process CPU seconds per pipeline stage while `current` names a bucket."""

    def __init__(self) -> None:
        self.current: dict[str, list[float]] | None = None

    def wrap(self, name: str, fn: Callable) -> Callable:
        meter = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            bucket = meter.current
            if bucket is None:
                return fn(*args, **kwargs)
            t0, p0 = time.thread_time(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc = bucket.setdefault(name, [0.0, 0.0])
                acc[0] += time.thread_time() - t0
                acc[1] += time.process_time() - p0

        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[Meter]:
        """Wrap the stages of the per-frame path (none of them calls another, so nothing is counted twice)."""
        with contextlib.ExitStack() as stack:
            for owner, attr, name in ((scoring_module, "preprocess", "preprocess"),
                                      (SceneChange, "changed", "scene_change"),
                                      (SceneChange, "accept", "scene_change"),
                                      (MotionDetector, "__call__", "motion"),
                                      (RunningModel, "infer", "model")):
                stack.enter_context(mock.patch.object(owner, attr, self.wrap(name, getattr(owner, attr))))
            yield self


def wrapper_overhead_us(meter: Meter, n: int = 20000) -> float:
    """CPU microseconds one wrapped call adds (four clock reads), to judge the `rest` column."""
    noop = meter.wrap("noop", lambda: None)
    meter.current = {}
    t0 = time.process_time()
    for _ in range(n):
        noop()
    wrapped = time.process_time() - t0
    meter.current = None
    t0 = time.process_time()
    for _ in range(n):
        noop()
    bare = time.process_time() - t0
    return round(1e6 * (wrapped - bare) / n, 3)


def bare_invokes(runner, inputs: list[np.ndarray], n: int, warmup: int = 20) -> dict[str, list[float]]:
    """Per-call thread CPU, process CPU and wall ms of `runner.infer` on preprocessed images, after a warm-up."""
    for i in range(warmup):
        runner.infer(inputs[i % len(inputs)])
    out: dict[str, list[float]] = {"thread": [], "process": [], "wall": []}
    for i in range(n):
        image = inputs[i % len(inputs)]
        w0, t0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        runner.infer(image)
        t1, p1, w1 = time.thread_time(), time.process_time(), time.perf_counter()
        out["thread"].append(1e3 * (t1 - t0))
        out["process"].append(1e3 * (p1 - p0))
        out["wall"].append(1e3 * (w1 - w0))
    return out


def unit_summary(rounds: list[dict[str, list[float]]]) -> dict:
    every = {k: [x for r in rounds for x in r[k]] for k in ("thread", "process", "wall")}
    return {
        "thread_ms": round(statistics.median(every["thread"]), 4),
        "process_ms": round(statistics.median(every["process"]), 4),
        "wall_ms": round(statistics.median(every["wall"]), 4),
        "thread_ms_mean": round(statistics.fmean(every["thread"]), 4),
        "process_ms_mean": round(statistics.fmean(every["process"]), 4),
        "calls": len(every["thread"]),
        "rounds": [{"thread_ms": round(statistics.median(r["thread"]), 4),
                    "process_ms": round(statistics.median(r["process"]), 4),
                    "wall_ms": round(statistics.median(r["wall"]), 4)} for r in rounds],
    }


# -- one configuration over one sequence ----------------------------------------------------------------------

@dataclass
class Tally:
    """Per-frame sums of one configuration over one or more sequences."""

    frames: int = 0
    invocations: int = 0
    thread_s: float = 0.0
    process_s: float = 0.0
    wall_s: float = 0.0
    parts: dict[str, list[float]] = field(default_factory=dict)   # stage -> [thread s, process s]

    def merge(self, other: Tally) -> None:
        self.frames += other.frames
        self.invocations += other.invocations
        self.thread_s += other.thread_s
        self.process_s += other.process_s
        self.wall_s += other.wall_s
        for k, (t, p) in other.parts.items():
            acc = self.parts.setdefault(k, [0.0, 0.0])
            acc[0] += t
            acc[1] += p

    def summary(self, unit: dict | None = None) -> dict:
        n = max(self.frames, 1)
        thread_ms, process_ms = 1e3 * self.thread_s / n, 1e3 * self.process_s / n
        parts = {k: {"thread_ms": round(1e3 * t / n, 4), "process_ms": round(1e3 * p / n, 4)}
                 for k, (t, p) in sorted(self.parts.items())}
        known_t = sum(1e3 * t / n for t, _ in self.parts.values())
        known_p = sum(1e3 * p / n for _, p in self.parts.values())
        parts["rest"] = {"thread_ms": round(thread_ms - known_t, 4), "process_ms": round(process_ms - known_p, 4)}
        out = {
            "frames": self.frames,
            "runs_per_frame": round(self.invocations / n, 4),
            "thread_ms_per_frame": round(thread_ms, 4),
            "process_ms_per_frame": round(process_ms, 4),
            "wall_ms_per_frame": round(1e3 * self.wall_s / n, 4),
            "parts_ms_per_frame": parts,
        }
        if unit:
            out["ratio_thread"] = round(thread_ms / unit["thread_ms"], 4)
            out["ratio_process"] = round(process_ms / unit["process_ms"], 4)
        return out


class Lane:
    """One configuration's scorer and decider over one sequence (fresh per clip, as a restarted daemon)."""

    def __init__(self, config: Configuration, model: RunningModel, meter: Meter) -> None:
        self.config, self.model, self.meter = config, model, meter
        self.scorer = FrameScorer(config.detect)
        d = config.detect
        self.decider = Decider(model.label, d.on_frames, d.window, d.off_delay)
        self.tally = Tally()

    def step(self, image: np.ndarray, t: float) -> None:
        parts = self.tally.parts
        self.meter.current = parts
        w0, t0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        scored = self.scorer.score(image, self.model, t)
        t1, p1 = time.thread_time(), time.process_time()
        self.decider.update(scored.margin, t, scored.score)
        t2, p2, w2 = time.thread_time(), time.process_time(), time.perf_counter()
        self.meter.current = None
        acc = parts.setdefault("decider", [0.0, 0.0])
        acc[0] += t2 - t1
        acc[1] += p2 - p1
        self.tally.frames += 1
        self.tally.invocations += scored.invocations
        self.tally.thread_s += t2 - t0
        self.tally.process_s += p2 - p0
        self.tally.wall_s += w2 - w0


def run_lockstep(frames: Iterator[np.ndarray], models: dict[str, RunningModel], meter: Meter,
                 fps: float = FPS) -> dict[str, Tally]:
    """Every configuration on every frame, in an order that rotates frame by frame (no one always goes first
    with a cold frame); t = frame number / fps."""
    lanes = [Lane(c, models[c.name], meter) for c in CONFIGS]
    for i, image in enumerate(frames):
        k = i % len(lanes)
        for lane in lanes[k:] + lanes[:k]:
            lane.step(image, i / fps)
    return {lane.config.name: lane.tally for lane in lanes}


# -- frames ---------------------------------------------------------------------------------------------------

def clip_paths(video: Path, only: list[str] | None = None) -> list[Path]:
    clips = sorted(video.glob("dog/*.mp4")) + sorted(video.glob("nodog/*.mp4"))
    if only:
        clips = [c for c in clips if f"{c.parent.name}/{c.stem}" in only]
    if not clips:
        raise SystemExit(f"no clips under {video}")
    return clips


@dataclass
class DecodeTally:
    frames: int = 0
    thread_s: float = 0.0
    process_s: float = 0.0

    def summary(self) -> dict:
        n = max(self.frames, 1)
        return {"frames": self.frames, "thread_ms_per_frame": round(1e3 * self.thread_s / n, 4),
                "process_ms_per_frame": round(1e3 * self.process_s / n, 4)}


def clip_frames(path: Path, decode: DecodeTally, limit: int | None = None) -> Iterator[np.ndarray]:
    """The frames the daemon's replay scores at FPS, decoded (timed into `decode`) before they are handed on.
    `VideoFileSource.read` grabs the frames between ticks without converting them: that is in the decode time."""
    source = VideoFileSource(path, FPS)
    source.open()
    try:
        while limit is None or decode.frames < limit:
            t0, p0 = time.thread_time(), time.process_time()
            frame = source.read()
            t1, p1 = time.thread_time(), time.process_time()
            if frame is None:
                return
            decode.frames += 1
            decode.thread_s += t1 - t0
            decode.process_s += p1 - p0
            yield frame.image
    finally:
        source.close()


def scene_base(path: Path) -> np.ndarray:
    """The empty scene at WIDTHxHEIGHT: the photo's centre cut to 16:9, resized."""
    rgb = load_rgb(path)
    h, w = rgb.shape[:2]
    if w * HEIGHT > h * WIDTH:            # wider than 16:9: cut the sides
        cw = round(h * WIDTH / HEIGHT)
        rgb = rgb[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = round(w * HEIGHT / WIDTH)
        rgb = rgb[(h - ch) // 2:(h - ch) // 2 + ch]
    return cv2.resize(np.ascontiguousarray(rgb), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)


def noisy_frames(base: np.ndarray, n: int, seed: int) -> Iterator[np.ndarray]:
    """`base` plus fresh uniform integer noise in [-NOISE, NOISE] per pixel and channel, frame after frame."""
    rng = np.random.default_rng(seed)
    base16 = base.astype(np.int16)
    for _ in range(n):
        noise = rng.integers(-NOISE, NOISE + 1, size=base.shape, dtype=np.int16)
        yield np.clip(base16 + noise, 0, 255).astype(np.uint8)


def letterbox(rgb: np.ndarray) -> np.ndarray:
    """Fit a frame into WIDTHxHEIGHT with black bars (one stream, one frame size, as a camera sends)."""
    h, w = rgb.shape[:2]
    if (w, h) == (WIDTH, HEIGHT):
        return rgb
    s = min(WIDTH / w, HEIGHT / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x, y = (WIDTH - nw) // 2, (HEIGHT - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise SystemExit("OpenCV cannot encode JPEG")
    return buf.tobytes()


# -- 1 + 2: in-process ----------------------------------------------------------------------------------------

def load_models(model: Path) -> dict[str, RunningModel]:
    """One interpreter (1 thread) per crop threshold: the default and `every frame` share one."""
    plain = RunningModel.load(model, threads=1)
    wide = RunningModel.load(model, threads=1, crop_recall=WIDE_CROP_RECALL)
    return {c.name: (wide if c.crop_recall is not None else plain) for c in CONFIGS}


def unit_inputs(clips: list[Path], base: np.ndarray, size: int) -> list[np.ndarray]:
    images = []
    for clip in clips:
        images += list(clip_frames(clip, DecodeTally(), limit=1))
    images.append(base)
    return [preprocess(img, size, centre_square(img.shape[1], img.shape[0])) for img in images]


def measure_clips(clips: list[Path], models: dict[str, RunningModel], meter: Meter) -> dict:
    totals = {c.name: Tally() for c in CONFIGS}
    decode = DecodeTally()
    per_clip = []
    for i, clip in enumerate(clips, 1):
        dec = DecodeTally()
        tallies = run_lockstep(clip_frames(clip, dec), models, meter)
        cap = cv2.VideoCapture(str(clip))
        video_fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                                      int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
        decode.frames += dec.frames
        decode.thread_s += dec.thread_s
        decode.process_s += dec.process_s
        for name, tally in tallies.items():
            totals[name].merge(tally)
        per_clip.append({"clip": f"{clip.parent.name}/{clip.stem}", "frames": dec.frames,
                         "video_fps": round(video_fps, 3), "size": list(size), "decode": dec.summary(),
                         "configs": {name: _brief(t.summary()) for name, t in tallies.items()}})
        d = tallies["default"]
        print(f"  [{i:2d}/{len(clips)}] {clip.parent.name}/{clip.stem}: {dec.frames} frames, default "
              f"{d.invocations / max(d.frames, 1):.2f} runs/frame, {1e3 * d.thread_s / max(d.frames, 1):.2f} "
              "ms/frame", flush=True)
    return {"totals": totals, "decode": decode.summary(), "clips": per_clip}


def _brief(s: dict) -> dict:
    return {k: s[k] for k in ("frames", "runs_per_frame", "thread_ms_per_frame", "process_ms_per_frame")}


def opencv_threads_check(base: np.ndarray, n: int = 300) -> dict:
    """The scene-change check on a 640x360 frame with OpenCV's default worker threads and with one: how much of
    its process CPU time is worker threads (which `thread_time` cannot see)."""
    out = {"cv2_threads_default": cv2.getNumThreads()}
    frames = list(noisy_frames(base, 8, 99))
    default = cv2.getNumThreads()
    try:
        for label, threads in (("default", default), ("one", 1)):
            cv2.setNumThreads(threads)
            scene = SceneChange()
            scene.accept(scene.changed(frames[0])[1])
            t0, p0 = time.thread_time(), time.process_time()
            for i in range(n):
                scene.changed(frames[i % len(frames)])
            out[f"scene_change_{label}_threads"] = {
                "thread_ms": round(1e3 * (time.thread_time() - t0) / n, 4),
                "process_ms": round(1e3 * (time.process_time() - p0) / n, 4)}
    finally:
        cv2.setNumThreads(default)
    return out


# -- 3: live --------------------------------------------------------------------------------------------------

def device_install_check(device_python: Path) -> dict:
    """Does the device-only install hold this working tree's device/ code? (`pip install .` copies it.)"""
    if not device_python.is_file():
        return {"python": str(device_python), "present": False, "matches_tree": False}
    env = {**os.environ, "PYTHONPATH": str(REPO)}   # as benchmarks.device.DaemonProcess runs it
    where = subprocess.run([str(device_python), "-c", "import edge_oneclass.device as d, os; "
                            "print(os.path.dirname(d.__file__))"], capture_output=True, text=True, env=env,
                           cwd=REPO)
    if where.returncode != 0:
        return {"python": str(device_python), "present": False, "matches_tree": False,
                "error": where.stderr.strip()[-300:]}
    installed = Path(where.stdout.strip())

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}

    tree, inst = digests(REPO / "device"), digests(installed)
    differ = sorted(k for k in set(tree) | set(inst) if tree.get(k) != inst.get(k))
    return {"python": str(device_python), "present": True, "installed_at": str(installed),
            "matches_tree": not differ, "differing_files": differ[:20]}


def stats_line(path: Path) -> dict[str, str]:
    """The daemon's last periodic `stats:` log line as key -> value (as DaemonProcess.stats_line)."""
    lines = [ln for ln in path.read_text().splitlines() if " stats: " in ln] if path.is_file() else []
    return dict(kv.split("=", 1) for kv in lines[-1].split(" stats: ", 1)[1].split()) if lines else {}


def predict_in_process(jpegs: list[bytes], model: RunningModel, meter: Meter) -> dict:
    """The default per-frame path on the served frames, JPEG decode included: what the live figure should be."""
    cfg = CONFIGS[0]
    lane = Lane(cfg, model, meter)
    dec = DecodeTally()
    for i, data in enumerate(jpegs):
        t0, p0 = time.thread_time(), time.process_time()
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        dec.frames += 1
        dec.thread_s += time.thread_time() - t0
        dec.process_s += time.process_time() - p0
        lane.step(rgb, i / FPS)
    s = lane.tally.summary()
    d = dec.summary()
    return {"frames": len(jpegs), "runs_per_frame": s["runs_per_frame"],
            "process_ms_per_frame": s["process_ms_per_frame"], "jpeg_decode": d,
            "predicted_cpu_pct_one_core": round((s["process_ms_per_frame"] + d["process_ms_per_frame"]) * FPS / 10, 2)}


def live_run(name: str, jpegs: list[bytes], model: Path, work: Path, seconds: float) -> dict:
    folder = work / name.replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    result = device_bench.device_live(jpegs, model, folder, seconds, device_bench.LIVE_FPS)
    stats = stats_line(folder / "live5.stderr")
    for key in ("invocations_per_frame", "scored_frames_share", "cpu_ms_per_frame"):
        result[key] = float(stats[key]) if stats.get(key) not in (None, "None") else None
    result["served_frames"] = len(jpegs)
    return result


# -- 4: the Pi estimate ---------------------------------------------------------------------------------------

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
SOURCES = {
    "efficientnet_lite": "https://github.com/tensorflow/tpu/blob/master/models/official/efficientnet/lite/README.md",
    "effdet_pixel4": "https://www.tensorflow.org/lite/models/modify/model_maker/object_detection (notebook: "
                     "https://github.com/tensorflow/tensorflow/blob/056b72f193cac6209138f3710954b238b0adf05b/"
                     "tensorflow/lite/g3doc/models/modify/model_maker/object_detection.ipynb)",
    "effdet_pi4_tflite218": "https://github.com/NobuoTsukamoto/benchmarks/blob/339f3bdd86c9dbde5f5b3f1c0844af25541a91bc/"
                            "tensorflow/lite/efficentdet/results/RasPi4_64bit/efficientdet_latency_v2.18.0.txt",
    "effdet_pi3_pi4_tflite25": "https://github.com/NobuoTsukamoto/benchmarks/blob/ace09a7dc29c0592a9d2af325961c06aba800763/"
                               "tensorflow/lite/efficentdet/efficientdet.md (raw: results/RasPi3_B_64bit/"
                               "efficientdet_latency_int8.txt at 44a97ae8b1e023a42bd5e7e9758a9cb13ca8a3f6)",
    "pi_zero_2_w": "https://www.raspberrypi.com/products/raspberry-pi-zero-2-w/ (RP3A0: BCM2710A1, 4x Cortex-A53 "
                   "@ 1 GHz, 512 MB LPDDR2)",
    "pi_3_model_b": "https://www.raspberrypi.com/products/raspberry-pi-3-model-b/ (BCM2837, 4x Cortex-A53 @ 1.2 GHz)",
}
CITED = {
    # tensorflow/tpu EfficientNet-Lite README: INT8 CPU latency, Pixel 4, batch 1, 4 CPU threads; MAdds
    "pixel4_int8_4threads_ms": {"efficientnet_lite0": 6.5, "efficientnet_lite1": 9.1, "efficientnet_lite2": 12.0},
    "madds": {"efficientnet_lite0": 407e6, "efficientnet_lite1": 631e6, "efficientnet_lite2": 899e6},
    # the same kind of model on both devices: EfficientDet-Lite0/1/2 (EfficientNet-Lite0/1/2 backbones, int8)
    "effdet": {"efficientnet_lite0": "EfficientDet-Lite0 (320x320)", "efficientnet_lite1": "EfficientDet-Lite1 "
               "(384x384)", "efficientnet_lite2": "EfficientDet-Lite2 (448x448)"},
    # TFLite Model Maker object-detection tutorial: integer-quantized, "Latency measured on Pixel 4 using 4 threads
    # on CPU"
    "effdet_pixel4_int8_4threads_ms": {"efficientnet_lite0": 37.0, "efficientnet_lite1": 49.0,
                                       "efficientnet_lite2": 69.0},
    # NobuoTsukamoto/benchmarks: Raspberry Pi 4 Model B (64-bit OS), TFLite 2.18 benchmark_model, XNNPACK, int8,
    # num_threads 1, "Inference (avg)"
    "effdet_pi4_int8_1thread_ms_tflite218": {"efficientnet_lite0": 197.751, "efficientnet_lite1": 372.260,
                                             "efficientnet_lite2": 601.720},
    # NobuoTsukamoto/benchmarks: int8, 1 thread, TFLite 2.5 (no delegate), 64-bit OS, latency_mean: Pi 3 Model B
    # V1.2 and Pi 4 measured the same way
    "effdet_pi3b_int8_1thread_ms_tflite25": {"efficientnet_lite0": 727.91, "efficientnet_lite1": 1399.45,
                                             "efficientnet_lite2": 2201.83},
    "effdet_pi4_int8_1thread_ms_tflite25": {"efficientnet_lite0": 344.03, "efficientnet_lite1": 546.90,
                                            "efficientnet_lite2": 857.87},
    "clock_ghz": {"pi_3_model_b": 1.2, "pi_zero_2_w": 1.0},
}


def pi_estimate(runs: dict[str, float], measured_backbone: str | None) -> dict:
    """ESTIMATED 1-thread model ms on a Pi 4 and a Pi Zero 2 W per backbone, and % of one core at 5 fps for the
    default's measured model runs per frame (`runs`: scene -> runs per frame). Model runs only."""
    rows = []
    c = CITED
    for b in BACKBONES:
        pixel = c["pixel4_int8_4threads_ms"][b]
        pi4_factor = c["effdet_pi4_int8_1thread_ms_tflite218"][b] / c["effdet_pixel4_int8_4threads_ms"][b]
        pi4_ms = pixel * pi4_factor
        pi3_over_pi4 = c["effdet_pi3b_int8_1thread_ms_tflite25"][b] / c["effdet_pi4_int8_1thread_ms_tflite25"][b]
        clock = c["clock_ghz"]["pi_3_model_b"] / c["clock_ghz"]["pi_zero_2_w"]
        zero_ms = pi4_ms * pi3_over_pi4 * clock
        row = {"backbone": b, "measured_here": b == measured_backbone, "via": c["effdet"][b],
               "pixel4_int8_4threads_ms": pixel, "madds": c["madds"][b],
               "pi4_factor": round(pi4_factor, 4), "pi4_1thread_ms": round(pi4_ms, 2),
               "pi3b_over_pi4": round(pi3_over_pi4, 4), "clock_factor_pi3b_to_zero2w": round(clock, 4),
               "zero2w_1thread_ms": round(zero_ms, 2), "cpu_pct_one_core": {}}
        for scene, r in runs.items():
            row["cpu_pct_one_core"][scene] = {"pi4": round(pi4_ms * r * FPS / 10, 2),
                                              "zero2w": round(zero_ms * r * FPS / 10, 2)}
        rows.append(row)
    return {
        "label": "ESTIMATE: nothing here ran on a Raspberry Pi",
        "method": ("Pi 4 1-thread ms = Pixel 4 int8 4-thread latency of EfficientNet-LiteN (tensorflow/tpu) x "
                   "[Pi 4 int8 1-thread latency / Pixel 4 int8 4-thread latency] of EfficientDet-LiteN, the detector "
                   "built on that backbone (Pixel 4: TFLite Model Maker tutorial; Pi 4: NobuoTsukamoto/benchmarks, "
                   "TFLite 2.18, XNNPACK). Zero 2 W: no published measurement of this kind of model found; it has "
                   "the Pi 3's BCM2710A1 (4x Cortex-A53) at 1.0 GHz instead of 1.2 GHz, so Zero 2 W ms = Pi 4 ms x "
                   "[Pi 3 Model B / Pi 4 int8 1-thread latency of EfficientDet-LiteN, same author, TFLite 2.5] x "
                   "1.2/1.0 (clock). % of one core = ms x the default's measured model runs per frame x 5 fps."),
        "caveats": [
            "model runs only: decode, the scene-change check and preprocessing are extra (measured here on x86)",
            "the factors come from a detector (bigger input, BiFPN, box head, NMS), not the classifier; they are "
            "ratios of like to like, but a detector's mix of layers is not the classifier's",
            "Pixel 4 figures use 4 threads, Pi figures 1 thread: the factor folds that in (the daemon runs 1)",
            "the Pi 3 / Pi 4 ratio is from TFLite 2.5 without XNNPACK for int8 (the Pi 4 factor's TFLite 2.18 "
            "uses it); the Zero 2 W can also throttle when hot and has half a Pi 3's RAM",
            "runs per frame were measured with this model's backbone; the view count does not depend on it",
        ],
        "sources": SOURCES,
        "cited": CITED,
        "runs_per_frame": runs,
        "rows": rows,
    }


# -- report ---------------------------------------------------------------------------------------------------

def table(r: dict) -> str:
    u = r["unit"]
    round_medians = ", ".join(f"{x['thread_ms']:.2f}" for x in u["rounds"])
    rows = [["bare invoke (the unit)", f"{u['thread_ms']:.2f} / {u['process_ms']:.2f}", "1.00 / 1.00", "1", "",
             f"runner.infer on preprocessed 224x224 images, median of {u['calls']} calls in 3 rounds "
             f"(round medians {round_medians} ms); wall "
             f"{u['wall_ms']:.2f} ms"]]
    for scene, label in (("clips", f"{r['clips']['frames']} frames of the {r['clips']['clip_count']} clips"),
                         ("noisy", f"noisy empty scene, {r['noisy']['frames']} frames")):
        for name, s in r[scene]["configs"].items():
            target = TARGETS[scene] if name == "default" else None
            verdict = ""
            if target is not None:
                verdict = f"<= {target}: " + ("yes" if s["ratio_thread"] <= target else "NO") + \
                          (" (process: " + ("yes" if s["ratio_process"] <= target else "NO") + ")")
            rows.append([f"{label}: {name}", f"{s['thread_ms_per_frame']:.2f} / {s['process_ms_per_frame']:.2f}",
                         f"**{s['ratio_thread']:.2f}** / {s['ratio_process']:.2f}", f"{s['runs_per_frame']:.3f}",
                         verdict, _parts_note(s)])
    d = r["clips"]["decode"]
    rows.append(["decode (information, not in the rows above)", f"{d['thread_ms_per_frame']:.2f} / "
                 f"{d['process_ms_per_frame']:.2f}", "", "", "",
                 "VideoFileSource.read per frame scored at 5 fps (H.264, the skipped frames' grab included)"])
    live = r.get("live") or {}
    for key, label in (("clips", "clips' frames"), ("noisy", "noisy empty scene")):
        x = live.get(key)
        if not x:
            continue
        p = x["in_process"]
        rows.append([f"live, fps 5, {label}", fmt(x.get("cpu_ms_per_frame"), 2), "",
                     fmt(x.get("invocations_per_frame"), 3), "",
                     f"**{x['cpu_pct_one_core']:.1f} % of one core** (device-only daemon, {x['seconds']:.0f} s; "
                     f"daemon fps {fmt(x.get('daemon_fps'))}, dropped {fmt(x.get('dropped_frames'))}); in-process "
                     f"prediction {p['predicted_cpu_pct_one_core']:.1f} % ({p['runs_per_frame']:.3f} runs/frame, "
                     f"JPEG decode {p['jpeg_decode']['process_ms_per_frame']:.2f} ms/frame)"])
    return markdown_table(["measure", "CPU ms/frame thread / process", "x bare invoke thread / process",
                           "model runs/frame", "target (default)", "split by stage (process ms/frame) / notes"], rows)


def _parts_note(s: dict) -> str:
    p = s["parts_ms_per_frame"]
    names = {"model": "model", "preprocess": "preprocess", "scene_change": "scene change", "motion": "motion",
             "decider": "decider", "rest": "rest"}
    return ", ".join(f"{names[k]} {p[k]['process_ms']:.3f}" for k in (*PARTS, "rest") if k in p)


def pi_table(r: dict) -> str:
    e = r["pi_estimate"]
    rows = []
    for row in e["rows"]:
        pct = row["cpu_pct_one_core"]
        rows.append([row["backbone"] + (" (this model)" if row["measured_here"] else ""),
                     f"{row['pixel4_int8_4threads_ms']:g}", f"x{row['pi4_factor']:.2f}",
                     f"{row['pi4_1thread_ms']:.0f}", f"{pct['clips']['pi4']:.1f} / {pct['noisy']['pi4']:.1f}",
                     f"x{row['pi3b_over_pi4'] * row['clock_factor_pi3b_to_zero2w']:.2f}",
                     f"{row['zero2w_1thread_ms']:.0f}", f"{pct['clips']['zero2w']:.1f} / {pct['noisy']['zero2w']:.1f}"])
    runs = e["runs_per_frame"]
    return markdown_table(
        ["backbone", "Pixel 4 int8 ms (4 threads, cited)", "-> Pi 4", "Pi 4 ms (1 thread, est.)",
         f"Pi 4 % of a core: clips / noisy ({runs['clips']:.3f} / {runs['noisy']:.3f} runs)", "Pi 4 -> Zero 2 W",
         "Zero 2 W ms (est.)", "Zero 2 W % of a core: clips / noisy"], rows)


def readme_block(r: dict) -> str:
    e = r["pi_estimate"]
    s = e["sources"]
    live = r.get("live") or {}
    install = live.get("device_install") or {}
    return (
        "Per-frame compute of the daemon's per-frame path (`FrameScorer.score` + `Decider.update`) on decoded frames, "
        "in units of one bare model invoke measured in the same run (1 interpreter thread, this x86 machine: "
        f"{r['machine']['cpu']}, {r['machine']['cores']} shared cores). Thread CPU (`time.thread_time`) misses "
        "OpenCV's worker threads; process CPU counts them (the daemon pays process CPU). Clips: all 24 shared clips "
        "at 5 fps, frames picked as the daemon's replay picks them, a fresh scorer and decider per clip. Noisy: "
        f"`{Path(r['noisy']['scene']).name}` at 640x360 + uniform +-{NOISE} grey-level noise per pixel and channel, "
        f"{r['noisy']['frames']} frames (10 min at 5 fps). `every frame` = the default with "
        "`stationary_interval = 0`; `wide` = `regions`, `sweep`, `crop_recall = 0.75`. Stage times come from "
        "wrapping the stages in the same pass (`rest`: crop choice, hit tracking, Python glue, and "
        f"{r['instrumentation_us_per_call']:.1f} us per wrapped call of instrumentation).\n\n"
        + table(r) + "\n\n"
        "Live rows: the device-only install (`.venv-device`"
        + ("" if install.get("matches_tree", True) else ", WHICH DID NOT MATCH THE WORKING TREE")
        + ") running `edge-device run` (default `[detect]`, `threads = 1`) on an MJPEG HTTP stream served at 5 fps "
        "(benchmarks/device.py's server), CPU = /proc utime+stime / wall time over the run, whole process (the grab "
        "thread decodes every JPEG); their CPU ms/frame and model runs/frame are the daemon's own `stats` line "
        "(its first 60 s). The clips' stream is an equal slice from the start of every clip, in order, letterboxed "
        "to 640x360; the in-process prediction runs the default per-frame path plus JPEG decode on the stream's "
        "first 60 s of frames.\n\n"
        "**Raspberry Pi: an ESTIMATE, nothing ran on a Pi.** " + e["method"] + " Model runs only (add decode, the "
        "scene-change check and preprocessing).\n\n" + pi_table(r) + "\n\n"
        f"Sources: EfficientNet-Lite latencies and MAdds {s['efficientnet_lite']}; EfficientDet-Lite on a Pixel 4 "
        f"{s['effdet_pixel4']}; on a Pi 4 {s['effdet_pi4_tflite218']}; Pi 3 Model B vs Pi 4 "
        f"{s['effdet_pi3_pi4_tflite25']}; clocks {s['pi_zero_2_w']}, {s['pi_3_model_b']}. Caveats: "
        + "; ".join(e["caveats"]) + ".\n\n"
        f"Produced by `{r['command']}` on {r['date']} in {r['wall_s']:.0f} s; figures from "
        "`benchmarks/results/cost.json`.")


# -- main -----------------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "opencv": cv2.__version__, "load_avg_start": [round(x, 2) for x in os.getloadavg()]}


def summarise(tallies: dict[str, Tally], unit: dict) -> dict:
    return {name: t.summary(unit) for name, t in tallies.items()}


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    model = model_file(args.model)
    clips = clip_paths(args.video, args.clips)
    base = scene_base(args.scene)
    meter = Meter()
    models = load_models(model)
    runner = models["default"].runner
    backbone = runner.card.backbone if runner.card is not None else None
    inputs = unit_inputs(clips, base, runner.input_size)
    info = machine()
    print(f"model {model} ({backbone}), {len(clips)} clips, 1 interpreter thread; cv2 threads "
          f"{cv2.getNumThreads()}", flush=True)

    rounds = []
    print(f"[1/5] bare invoke, round 1 ({args.invokes} calls)", flush=True)
    rounds.append(bare_invokes(runner, inputs, args.invokes))
    with meter.installed():
        print(f"[2/5] per-frame path on the clips at {FPS:g} fps (3 configurations in lockstep)", flush=True)
        clip_result = measure_clips(clips, models, meter)
        print(f"      bare invoke, round 2 ({args.invokes} calls)", flush=True)
        rounds.append(bare_invokes(runner, inputs, args.invokes))
        print(f"[3/5] per-frame path on the noisy empty scene ({args.noisy_frames} frames)", flush=True)
        noisy_tallies = run_lockstep(noisy_frames(base, args.noisy_frames, args.seed), models, meter)
        print(f"      bare invoke, round 3 ({args.invokes} calls)", flush=True)
        rounds.append(bare_invokes(runner, inputs, args.invokes))
        overhead = wrapper_overhead_us(meter)
    unit = unit_summary(rounds)
    clip_configs = summarise(clip_result["totals"], unit)
    noisy_configs = summarise(noisy_tallies, unit)
    for c in clip_result["clips"]:
        for s in c["configs"].values():
            s["ratio_thread"] = round(s["thread_ms_per_frame"] / unit["thread_ms"], 4)
            s["ratio_process"] = round(s["process_ms_per_frame"] / unit["process_ms"], 4)
    result = {
        "command": command_line(), "date": today(), "model": str(model), "backbone": backbone, "fps": FPS,
        "interpreter_threads": 1, "machine": info, "unit": unit, "instrumentation_us_per_call": overhead,
        "configs": {c.name: {"regions": c.detect.regions, "sweep": c.detect.sweep,
                             "stationary_interval": c.detect.stationary_interval, "crop_recall": c.crop_recall,
                             "max_crops": c.detect.max_crops, "on_frames": c.detect.on_frames,
                             "window": c.detect.window} for c in CONFIGS},
        "targets": {"default_clips_max_ratio": TARGETS["clips"], "default_noisy_max_ratio": TARGETS["noisy"]},
        "clips": {"frames": clip_result["totals"]["default"].frames, "clip_count": len(clips),
                  "decode": clip_result["decode"], "configs": clip_configs, "per_clip": clip_result["clips"]},
        "noisy": {"scene": str(args.scene), "size": [WIDTH, HEIGHT], "noise_grey_levels": NOISE,
                  "seed": args.seed, "frames": args.noisy_frames, "configs": noisy_configs},
        "opencv_threads": opencv_threads_check(base),
    }
    runs = {"clips": clip_configs["default"]["runs_per_frame"], "noisy": noisy_configs["default"]["runs_per_frame"]}
    result["pi_estimate"] = pi_estimate(runs, backbone)

    if not args.no_live:
        result["live"] = live(args, clips, base, models["default"], meter, model)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def live(args: argparse.Namespace, clips: list[Path], base: np.ndarray, model: RunningModel, meter: Meter,
         model_path: Path) -> dict:
    device_bench.DEVICE_PYTHON = args.device_python
    install = device_install_check(args.device_python)
    out: dict = {"device_install": install}
    if not install["present"]:
        print(f"[4/5] SKIPPED live runs: no device-only install at {args.device_python}", flush=True)
        return out
    if not install["matches_tree"]:
        print("      WARNING: the device-only install differs from the working tree's device/ "
              f"({', '.join(install['differing_files'][:5])}...); rebuild it: "
              ".venv-device/bin/pip install --no-deps --force-reinstall .", flush=True)
    per_clip = math.ceil((args.live_seconds + 8.0) * FPS / len(clips))
    clip_jpegs = [jpeg(letterbox(img)) for clip in clips for img in clip_frames(clip, DecodeTally(), per_clip)]
    noisy_jpegs = [jpeg(img) for img in noisy_frames(base, round((args.live_seconds + 8.0) * FPS), args.seed + 1)]
    work = Path(tempfile.mkdtemp(prefix="edge-bench-cost-"))
    try:
        for key, label, jpegs in (("clips", "the clips' frames", clip_jpegs),
                                  ("noisy", "the noisy empty scene", noisy_jpegs)):
            print(f"[4/5] live: device-only daemon, fps 5, on a 5 fps MJPEG stream of {label} "
                  f"({len(jpegs)} frames) for {args.live_seconds:.0f} s", flush=True)
            x = live_run(key, jpegs, model_path, work, args.live_seconds)
            with meter.installed():   # the frames the daemon's 60 s stats window saw: the stream's first minute
                x["in_process"] = predict_in_process(jpegs[:round(min(args.live_seconds, 60.0) * FPS)], model,
                                                     meter)
            if key == "clips":
                x["frames_per_clip"] = per_clip
            out[key] = x
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model folder (model.tflite + model.json) or .tflite")
    p.add_argument("--video", type=Path, default=VIDEO, help=f"clips folder (default {VIDEO})")
    p.add_argument("--clips", nargs="+", metavar="LABEL/NN", help="only these clips (a quick run), e.g. dog/01")
    p.add_argument("--scene", type=Path, default=SCENE, help=f"empty-scene photo (default {SCENE})")
    p.add_argument("--noisy-frames", type=int, default=NOISY_FRAMES, help="frames of the noisy scene (default 3000)")
    p.add_argument("--seed", type=int, default=15, help="noise seed (default 15)")
    p.add_argument("--invokes", type=int, default=300, help="bare invokes per round, 3 rounds (default 300)")
    p.add_argument("--live-seconds", type=float, default=62.0,
                   help="seconds of each live run (default 62: the daemon logs stats every 60 s)")
    p.add_argument("--no-live", action="store_true", help="skip the live device-only runs")
    p.add_argument("--device-python", type=Path, default=device_bench.DEVICE_PYTHON,
                   help="python of the device-only install (default $EDGE_DEVICE_PYTHON or .venv-device/bin/python)")
    p.add_argument("--json", type=Path, default=RESULTS / "cost.json")
    p.add_argument("--no-readme", action="store_true", help="do not publish the README block")
    p.add_argument("--readme-only", action="store_true", help="only publish the README block from --json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.readme_only:
        print(f"wrote {publish('cost', readme_block(load_json(args.json)))}")
        return 0
    result = run(args)
    write_json(args.json, result)
    print("[5/5] report\n")
    print(table(result))
    print()
    print(pi_table(result))
    print(f"\nrun time {result['wall_s']:.0f} s")
    if not args.no_readme:
        print(f"wrote {args.json} and {publish('cost', readme_block(load_json(args.json)))}")
    else:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
