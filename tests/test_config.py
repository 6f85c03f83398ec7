"""config.toml -> Config: defaults, types, and one-line errors naming `section.key` or the file (exit 78)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_oneclass.device.config import Config, load_config
from edge_oneclass.device.errors import EX_CONFIG, ConfigError, ModelError
from edge_oneclass.device.model.preprocess import Roi

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, model: Path | None = None) -> Path:
    path = tmp_path / "config.toml"
    if model is not None:
        text = f'[model]\npath = "{model}"\n' + text
    path.write_text(text)
    return path


def test_defaults_for_an_empty_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), require_model=False)
    assert isinstance(cfg, Config)
    assert cfg.camera.source == "picamera2" and cfg.camera.fps == 5.0 and cfg.camera.region is None
    assert cfg.camera.realtime is False                  # replays run as fast as possible unless asked
    assert cfg.model.path == "/var/lib/edge-device/model.tflite" and cfg.model.threads == 2
    assert cfg.model.threshold is None
    assert (cfg.detect.on_frames, cfg.detect.window, cfg.detect.off_delay) == (6, 8, 30.0)
    assert cfg.snapshot.enabled and cfg.snapshot.dir is None
    assert cfg.mqtt is None and cfg.gpio is None     # missing section = output off


def test_full_file(tmp_path: Path, brightness_model: Path) -> None:
    cfg = load_config(write(tmp_path, """
[camera]
source = 0
fps = 2
width = 320
height = 240
roi = [0.25, 0, 0.5, 1]
realtime = true
[detect]
on_frames = 2
window = 4
off_delay = 5
regions = false
sweep = true
max_crops = 3
confirm_frames = 3
confirm_window = 4
[snapshot]
enabled = false
dir = "/tmp/snaps"
[log]
level = "debug"
""", model=brightness_model))
    assert cfg.camera.source == 0 and cfg.camera.fps == 2.0 and isinstance(cfg.camera.fps, float)
    assert cfg.camera.region == Roi(0.25, 0.0, 0.5, 1.0) and cfg.camera.realtime is True
    assert (cfg.detect.on_frames, cfg.detect.window, cfg.detect.off_delay) == (2, 4, 5.0)
    d = cfg.detect
    assert (d.regions, d.sweep, d.max_crops, d.confirm_frames, d.confirm_window) == (False, True, 3, 3, 4)
    assert not cfg.snapshot.enabled and cfg.snapshot.dir == "/tmp/snaps"
    assert cfg.log.level == "DEBUG"
    assert cfg.model.path == str(brightness_model)


def test_the_shipped_example_parses(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt")
    cfg = load_config(ROOT / "systemd" / "config.example.toml", require_model=False)
    assert cfg.camera.source == "picamera2"
    assert cfg.mqtt is not None and cfg.mqtt.host == "homeassistant.local"


@pytest.mark.parametrize("text, names", [
    ("[camera]\nfsp = 5\n", "camera.fsp"),
    ("[detect]\noff_dealy = 5\n", "detect.off_dealy"),
    ("[camera]\nfps = \"fast\"\n", "camera.fps"),
    ("[camera]\ntiles = true\n", "camera.tiles is gone"),
    ("[detect]\nmax_crops = 40\n", "detect.max_crops"),
    ("[detect]\nconfirm_frames = 6\nconfirm_window = 5\n", "detect.confirm_frames"),
    ("[detect]\nsweep = 1\n", "detect.sweep"),
    ("[detect]\nstationary_interval = -1\n", "detect.stationary_interval"),
    ("[camera]\nrealtime = \"yes\"\n", "camera.realtime"),
    ("[model]\nthreads = 2.5\n", "model.threads"),
    ("[camera]\nsource = 1.5\n", "camera.source"),
    ("[camera]\nroi = [0, 0, 1.5, 1]\n", "camera.roi"),
    ("[camera]\nroi = [0, 0, 1]\n", "camera.roi"),
    ("[camera]\nwidth = 640\n", "camera.height"),
    ("[detect]\non_frames = 6\nwindow = 5\n", "detect.on_frames"),
    ("[detect]\noff_delay = -1\n", "detect.off_delay"),
    ("[log]\nlevel = \"chatty\"\n", "log.level"),
    ("[snapshot]\nkeep = -1\n", "snapshot.keep"),
    ("[cameras]\nfps = 5\n", "[cameras]"),
    ("fps = 5\n", "[fps]"),
    ("camera = 5\n", "camera"),
    ("[camera\n", "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, names: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, require_model=False)
    message = str(info.value)
    assert names in message and str(path) in message
    assert "\n" not in message and info.value.exit_code == EX_CONFIG


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_model_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing\.tflite: model file not found.*model\.path"):
        load_config(write(tmp_path, "", model=tmp_path / "missing.tflite"))


def test_gpio_and_mqtt_sections_are_parsed_by_their_sinks(tmp_path: Path) -> None:
    pytest.importorskip("edge_oneclass.device.sinks.mqtt")
    pytest.importorskip("edge_oneclass.device.sinks.gpio")
    cfg = load_config(write(tmp_path, '[mqtt]\nhost = "broker.lan"\n[gpio]\npin = 17\n'), require_model=False)
    assert cfg.mqtt is not None and cfg.mqtt.host == "broker.lan" and cfg.mqtt.port == 1883
    assert cfg.gpio is not None and cfg.gpio.pin == 17
    with pytest.raises(ConfigError, match="mqtt.hots"):
        load_config(write(tmp_path, '[mqtt]\nhots = "broker.lan"\n'), require_model=False)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_oneclass.device.cli", *args], capture_output=True, text=True,
                          timeout=60,
                          cwd=ROOT)


@pytest.mark.parametrize("text, names", [
    ("[camera]\nfsp = 5\n", "camera.fsp"),
    ("[camera]\nfps = \"fast\"\n", "camera.fps"),
    ("[mystery]\n", "[mystery]"),
])
def test_cli_prints_one_line_and_exits_78(tmp_path: Path, brightness_model: Path, text: str, names: str) -> None:
    proc = cli("run", "--config", str(write(tmp_path, text, model=brightness_model)))
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-device: ") and names in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_missing_model_exits_78_naming_the_file(tmp_path: Path) -> None:
    proc = cli("run", "--config", str(write(tmp_path, "", model=tmp_path / "gone.tflite")))
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert f"{tmp_path / 'gone.tflite'}: model file not found" in proc.stderr


def test_cli_missing_config_file_exits_78(tmp_path: Path) -> None:
    proc = cli("run", "--config", str(tmp_path / "absent.toml"))
    assert proc.returncode == 78 and "absent.toml: config file not found" in proc.stderr


def test_cli_usage_error_exits_2() -> None:
    proc = cli("capture")
    assert proc.returncode == 2 and "--out" in proc.stderr
