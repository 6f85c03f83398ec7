"""Compute follows the scene: a frame in which nothing changed carries the last score (no model run), the whole view
is re-scored when the scene changes and at least every `stationary_interval` seconds.

Frames are made from real photos (a dev house front; one of the session model's training dogs, which the model
surely knows: this checks where compute goes, not how well the model generalises) with sensor noise added.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_oneclass.device.detect.debounce import Decider
from edge_oneclass.device.detect.scene_change import SceneChange
from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.detect.settings import ScoringSettings
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.running import RunningModel

ROOT = Path(__file__).resolve().parents[1]
FPS = 5.0
WIDTH, HEIGHT = 640, 360
SCENE = "nodog/000006.jpg"     # a house front
DOG = "dog/000005.jpg"         # one of the session model's training photos (dog/000000-000079)


def scene(dev: Path) -> np.ndarray:
    return cv2.resize(load_rgb(dev / SCENE), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def with_dog(background: np.ndarray, dev: Path, width_fraction: float, x: int | None = None) -> np.ndarray:
    """The dog pasted at `width_fraction` of the frame width, standing on the bottom edge (centred by default)."""
    photo = load_rgb(dev / DOG)
    w = int(width_fraction * WIDTH)
    h = min(HEIGHT, int(photo.shape[0] * w / photo.shape[1]))
    dog = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    frame = background.copy()
    x = (WIDTH - w) // 2 if x is None else x
    visible = min(w, WIDTH - x)                      # walking in from the right: only part of it in view
    frame[HEIGHT - h:, x:x + visible] = dog[:, :visible]
    return frame


def noisy(frame: np.ndarray, rng: np.random.Generator, level: int = 3) -> np.ndarray:
    """+-`level` grey levels of independent noise per pixel and channel: a camera sensor on a still scene."""
    return np.clip(frame.astype(np.int16) + rng.integers(-level, level + 1, frame.shape), 0, 255).astype(np.uint8)


# -- what counts as a change ----------------------------------------------------------------------------------

def test_sensor_noise_and_slow_light_changes_are_not_a_change_a_small_dog_and_the_lights_are(dev_data: Path) -> None:
    rng = np.random.default_rng(0)
    base = scene(dev_data)
    gate = SceneChange()
    changed, small = gate.changed(noisy(base, rng))
    assert changed                                   # nothing to compare with yet: score it
    gate.accept(small)
    for i in range(60):                              # 12 s of noise while the light drifts by 15 grey levels
        drift = np.clip(base.astype(np.int16) + i // 4, 0, 255).astype(np.uint8)
        assert not gate.changed(noisy(drift, rng))[0], i
    assert gate.changed(noisy(with_dog(base, dev_data, 0.05), rng))[0]      # a dog at 5 % of the width
    brighter = np.clip(base.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    assert gate.changed(noisy(brighter, rng))[0]                              # the lights went on


# -- the scorer and the debouncer, frame by frame ----------------------------------------------------------------

@pytest.fixture(scope="module")
def model(trained_model: Path) -> RunningModel:
    return RunningModel.load(trained_model / "model.tflite", threads=1)


def run_frames(model: RunningModel, frames, settings: ScoringSettings) -> tuple[list[bool], int, list[float]]:
    """The daemon's per-frame path: FrameScorer.score then Decider.update; (present per frame, model runs, starts)."""
    scorer = FrameScorer(settings)
    decider = Decider(model.label, on_frames=6, window=8, off_delay=30.0)
    present, runs, starts = [], 0, []
    for i, frame in enumerate(frames):
        t = i / FPS
        scored = scorer.score(frame, model, t)
        runs += scored.invocations
        change = decider.update(scored.margin, t, scored.score)
        if change is not None and change.present:
            starts.append(t)
        present.append(decider.present)
    return present, runs, starts


def test_a_still_dog_stays_present_for_minutes_at_a_model_run_every_interval(model: RunningModel,
                                                                              dev_data: Path) -> None:
    rng = np.random.default_rng(1)
    still = with_dog(scene(dev_data), dev_data, 0.6)
    minutes = 3
    n = int(minutes * 60 * FPS)
    frames = (noisy(still, rng) for _ in range(n))
    settings = ScoringSettings()                 # the default: whole view, stationary_interval 10 s
    present, runs, starts = run_frames(model, frames, settings)
    onset = present.index(True)
    assert onset == 5 and all(present[onset:]), "the dog must stay present for the whole time"
    assert starts == [onset / FPS]
    expected = 1 + int(n / FPS // settings.stationary_interval)             # the first look and one per interval
    assert runs <= expected + 1, (runs, expected)


def test_a_dog_walking_into_a_still_scene_starts_an_event_as_fast_as_without_the_gate(model: RunningModel,
                                                                                        dev_data: Path) -> None:
    rng = np.random.default_rng(2)
    background = scene(dev_data)
    empty = [noisy(background, rng) for _ in range(int(6 * FPS))]            # 6 s of the empty scene
    steps = int(4 * FPS)
    walk_w = int(0.6 * WIDTH)
    walking = [noisy(with_dog(background, dev_data, 0.6, x=int(WIDTH - walk_w * (i + 1) / steps)), rng)
               for i in range(steps)]                                        # it walks in from the right
    frames = empty + walking + [walking[-1]] * int(4 * FPS)                   # and stands
    gated, runs_gated, starts_gated = run_frames(model, frames, ScoringSettings())
    every, runs_every, starts_every = run_frames(model, frames, ScoringSettings(stationary_interval=0))
    assert starts_every and starts_gated == starts_every, (starts_gated, starts_every)
    assert gated == every
    assert runs_every == len(frames) and runs_gated < runs_every / 2         # the empty seconds cost one look


def test_the_daemon_reports_runs_and_cpu_per_frame(tmp_path: Path, trained_model: Path, dev_data: Path) -> None:
    """On a real video it writes: the stats line says how much of the scene the model looked at."""
    rng = np.random.default_rng(3)
    video = tmp_path / "still.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    frame_bgr = cv2.cvtColor(scene(dev_data), cv2.COLOR_RGB2BGR)
    for _ in range(int(30 * FPS)):                                           # 30 s of an empty scene
        writer.write(noisy(frame_bgr, rng))
    writer.release()
    config = tmp_path / "config.toml"
    config.write_text(f'[camera]\nsource = "{video}"\nfps = {FPS}\n[model]\npath = "{trained_model / "model.tflite"}"\n'
                      f'threads = 1\n[snapshot]\nenabled = false\n[feedback]\nenabled = false\n')
    import textwrap

    code = textwrap.dedent(f"""
        import io, json, sys
        from edge_oneclass.device.config import load_config
        from edge_oneclass.device.daemon import Daemon
        from edge_oneclass.device.notify import Notifier
        from edge_oneclass.device.sinks.stdout import StdoutSink
        from edge_oneclass.device.model.running import RunningModel
        cfg = load_config({str(config)!r})
        sink = StdoutSink(RunningModel.load(cfg.model.path, 1).info, stream=sys.stdout)
        Daemon(cfg, sinks=[sink], notifier=Notifier(env={{}}), stats_every=10.0).run()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    stats = [json.loads(line) for line in proc.stdout.splitlines() if '"kind":"stats"' in line]
    assert stats, proc.stdout
    last = stats[-1]
    assert last["invocations_per_frame"] <= 0.1 and last["scored_frames_share"] <= 0.1, last
    assert last["cpu_ms_per_frame"] > 0
