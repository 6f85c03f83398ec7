"""A small subject crossing a wide view, on real video the test writes from real photos, replayed by
`edge-device run`: the crops (motion regions, the sweep, confirmation over frames: the wide-view option, off by
default) find what the whole view is too small to see, and a same-size object that is not the label raises
nothing.

The dog is one of the photos the session model was trained on, so the model surely knows it: this checks the
pipeline (where the daemon looks and how crop hits count), not how well the model generalises to new dogs at
that size, which `benchmarks/ladder.py` measures on held-out dogs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FPS = 5.0
WIDTH = 640
SCENE = "nodog/000006.jpg"     # a house front (Houses dataset)
DOG = "dog/000005.jpg"         # one of the session model's 80 training photos (dog/000000-000079)
MINIBUS = "nodog/000030.jpg"   # ImageNet minibus: a same-size object that is not a dog
WIDE_VIEW = "regions = true\nsweep = true\n"   # the crops, as docs/configuration.md tells wide-view users


def write_crossing(path: Path, dev: Path, subject: str | None, width_fraction: float = 0.2, frames: int = 40) -> Path:
    """The scene at 640 px wide, the subject pasted at `width_fraction` of the width, crossing left to right along
    the bottom; a little sensor noise per frame. MP4 (mp4v) at 5 fps."""
    scene = cv2.imread(str(dev / SCENE))
    h, w = scene.shape[:2]
    height = int(round(h * WIDTH / w))
    scene = cv2.resize(scene, (WIDTH, height), interpolation=cv2.INTER_AREA)
    sub = None
    if subject is not None:
        photo = cv2.imread(str(dev / subject))
        sw = int(width_fraction * WIDTH)
        sub = cv2.resize(photo, (sw, min(height, int(photo.shape[0] * sw / photo.shape[1]))),
                         interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, height))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = scene.copy()
        if sub is not None:
            x = int(i / (frames - 1) * (WIDTH - sub.shape[1]))
            y = height - sub.shape[0] - 5
            frame[y:y + sub.shape[0], x:x + sub.shape[1]] = sub
        writer.write(np.clip(frame.astype(np.int16) + rng.integers(-2, 3, frame.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


def presence_events(tmp_path: Path, video: Path, model: Path, detect: str = "") -> int:
    config = tmp_path / f"{video.stem}-{len(detect)}.toml"
    config.write_text(f'[camera]\nsource = "{video}"\nfps = {FPS}\n[model]\npath = "{model / "model.tflite"}"\n'
                      f'threads = 2\n[detect]\n{detect}[snapshot]\nenabled = false\n[feedback]\nenabled = false\n')
    proc = subprocess.run([sys.executable, "-m", "edge_oneclass.device.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.count('"state":"ON"')


@pytest.fixture(scope="module")
def videos(tmp_path_factory, dev_data: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("crossing")
    return {name: write_crossing(base / f"{name}.mp4", dev_data, subject)
            for name, subject in (("dog", DOG), ("minibus", MINIBUS), ("empty", None))}


def test_the_crops_find_a_small_dog_the_whole_view_misses(tmp_path: Path, trained_model: Path,
                                                          videos: dict[str, Path]) -> None:
    assert presence_events(tmp_path, videos["dog"], trained_model) == 0       # the default, the whole view: too small
    assert presence_events(tmp_path, videos["dog"], trained_model, WIDE_VIEW) == 1    # the wide-view crops find it


def test_a_small_object_that_is_not_the_label_raises_nothing(tmp_path: Path, trained_model: Path,
                                                             videos: dict[str, Path]) -> None:
    for detect in ("", WIDE_VIEW):
        assert presence_events(tmp_path, videos["minibus"], trained_model, detect) == 0
        assert presence_events(tmp_path, videos["empty"], trained_model, detect) == 0
