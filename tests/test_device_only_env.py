"""The Pi install: only the `device` extra (no TensorFlow) must be enough to run the daemon.

scripts/test.sh builds `.venv-device` with `pip install '.[device]'` and points EDGE_DEVICE_ONLY_PYTHON at it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

DEVICE_PYTHON = os.environ.get("EDGE_DEVICE_ONLY_PYTHON")
pytestmark = pytest.mark.skipif(not DEVICE_PYTHON, reason="EDGE_DEVICE_ONLY_PYTHON not set (scripts/test.sh sets it)")


def test_device_extra_alone_runs_a_replay(brightness_model: Path, tmp_path: Path) -> None:
    py = str(DEVICE_PYTHON)
    probe = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is None)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "True", "the device venv must not contain TensorFlow"

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, level in enumerate([20] * 3 + [230] * 6 + [20] * 12):  # dark, bright stretch, dark
        cv2.imwrite(str(frames / f"{i:04d}.png"), np.full((48, 64, 3), level, np.uint8))
    for name in ("model.tflite", "model.json"):
        (tmp_path / name).write_bytes((brightness_model.parent / name).read_bytes())
    config = tmp_path / "config.toml"
    config.write_text(f'[camera]\nsource = "{frames}"\nfps = 5\n[model]\npath = "{tmp_path / "model.tflite"}"\n'
                      "[detect]\non_frames = 3\nwindow = 5\noff_delay = 1.0\n")
    proc = subprocess.run([py, "-m", "device.cli", "run", "--config", str(config)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert [ln.get("state") for ln in lines if "state" in ln] == ["ON", "OFF"], proc.stdout
