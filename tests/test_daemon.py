"""The daemon end to end with the brightness fixture model (score = mean brightness, threshold 0.5).

Most tests run `edge-device run` in a subprocess and read its stdout JSON lines, exit code and stderr,
as systemd would. The only fake is a `picamera2` module on PYTHONPATH for the live runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_oneclass.device.config import load_config
from edge_oneclass.device.daemon import Daemon, LoopStats, cpu_temperature
from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.base import Sink

ROOT = Path(__file__).resolve().parents[1]
EDGE_DEVICE = [sys.executable, "-m", "edge_oneclass.device.cli"]
ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"

# 8 dark, 10 bright, 20 dark frames at 5 fps: ON at frame 10 (3rd bright), OFF 2 s after the last bright.
LEVELS = [20] * 8 + [230] * 10 + [20] * 20


def write_frames(folder: Path, levels: list[int] = LEVELS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(levels):
        cv2.imwrite(str(folder / f"frame_{i:04d}.png"), np.full((48, 64, 3), level, np.uint8))
    return folder


def write_config(tmp_path: Path, source: str | Path, model: Path, extra: str = "", fps: float = 5.0) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""\
        [camera]
        source = "{source}"
        fps = {fps}
        [model]
        path = "{model}"
        threads = 1
        [detect]
        on_frames = 3
        window = 5
        off_delay = 2.0
        """) + extra + ("" if "[feedback]" in extra else f'[feedback]\ndir = "{tmp_path / "feedback"}"\n'))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE_DEVICE, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_replay_of_a_folder_reports_on_then_off(tmp_path: Path, brightness_model: Path) -> None:
    frames = write_frames(tmp_path / "frames")
    snaps = tmp_path / "snaps"
    cfg = write_config(tmp_path, frames, brightness_model, f'[snapshot]\ndir = "{snaps}"\n')
    proc = run_cli("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    states = [r for r in json_lines(proc.stdout) if r["kind"] == "state"]
    assert [r["state"] for r in states] == ["ON", "OFF"]
    on, off = states
    assert on["label"] == off["label"] == "bright"
    assert on["event"]["type"] == "start" and off["event"]["type"] == "end"
    for record in (on, off):
        assert record["at"] and re.match(ISO, record["at"])
        assert re.match(ISO, record["event"]["started_at"])
    assert on["at"] == "1970-01-01T00:00:02.000Z"                # frame 10 at 5 fps on the folder's own timeline
    assert on["event"]["started_at"] == "1970-01-01T00:00:01.600Z"
    assert on["event"]["ended_at"] is None and on["snapshot_bytes"] > 0
    assert off["event"]["ended_at"] == "1970-01-01T00:00:03.400Z"   # last bright frame (17)
    assert off["at"] == "1970-01-01T00:00:05.400Z"                  # 2 s later
    assert off["event"]["frames"] == 10 and off["event"]["max_score"] > 0.85
    assert off["event"]["model_sha256"] == json.loads((brightness_model.parent / "model.json").read_text())["sha256"]
    # the best frame of the start is kept on disk too, and it is a real JPEG of a bright frame
    [snap] = list(snaps.glob("bright_*.jpg"))
    assert cv2.imread(str(snap)).mean() > 200
    # logging: one line per state change on stderr
    assert proc.stderr.count("bright present at") == 1 and proc.stderr.count("bright absent at") == 1


def test_replay_of_a_video_closes_the_open_event_at_the_end(tmp_path: Path, brightness_model: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for level in [20] * 5 + [230] * 10:              # ends while still bright
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    proc = run_cli("run", "--config", str(write_config(tmp_path, path, brightness_model)))
    assert proc.returncode == 0, proc.stderr
    states = [r for r in json_lines(proc.stdout) if r["kind"] == "state"]
    assert [r["state"] for r in states] == ["ON", "OFF"]
    # scored like a 5 fps camera: frames 0, 2, 4 … of the 10 fps video; the 3rd bright one scored is frame 10
    assert states[0]["at"] == "1970-01-01T00:00:01.000Z"             # the video's own timeline
    assert states[0]["event"]["started_at"] == "1970-01-01T00:00:00.600Z"
    assert states[1]["event"]["ended_at"] == "1970-01-01T00:00:01.400Z"
    assert states[1]["event"]["frames"] == 5                          # frames 6, 8, 10, 12, 14


def test_realtime_replay_takes_its_duration_and_reports_wall_clock_times(tmp_path: Path,
                                                                         brightness_model: Path) -> None:
    frames = write_frames(tmp_path / "frames", [20] * 2 + [230] * 5 + [20] * 3)     # 10 frames = 2 s at 5 fps
    cfg = write_config(tmp_path, frames, brightness_model, "", fps=5.0)
    cfg.write_text(cfg.read_text().replace("fps = 5.0\n", "fps = 5.0\nrealtime = true\n"))
    before = time.time()
    t0 = time.monotonic()
    proc = run_cli("run", "--config", str(cfg))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed >= 0.8 * 2.0                                       # a lower bound only: the machine is shared
    on, off = [r for r in json_lines(proc.stdout) if r["kind"] == "state"]
    assert (on["state"], off["state"]) == ("ON", "OFF")               # the open episode is closed at the end
    at = {name: datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
          for name, value in [("on", on["at"]), ("started", on["event"]["started_at"]),
                              ("ended", off["event"]["ended_at"])]}
    assert before - 1 <= at["started"] <= before + 60                  # real times, not 1970
    # spaced exactly as the timeline: bright frames 2..6, ON at the 3rd (frame 4), last seen at frame 6
    assert at["on"] - at["started"] == pytest.approx(0.4, abs=0.002)
    assert at["ended"] - at["started"] == pytest.approx(0.8, abs=0.002)


def test_replays_are_deterministic(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model)
    outputs = [[r for r in json_lines(run_cli("run", "--config", str(cfg)).stdout) if r["kind"] == "state"]
               for _ in range(2)]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2


def test_tampered_model_exits_78_with_one_clear_line(tmp_path: Path, brightness_model: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = model_dir / "model.tflite"
    shutil.copy(brightness_model, model)
    shutil.copy(brightness_model.parent / "model.json", model_dir / "model.json")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = run_cli("run", "--config", str(write_config(tmp_path, write_frames(tmp_path / "f"), model)))
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"edge-device: {model}: sha256") and "does not match model.json" in lines[-1]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("kind", ["missing", "not-a-video"])
def test_unreadable_source_exits_nonzero_with_one_clear_line(tmp_path: Path, brightness_model: Path,
                                                             kind: str) -> None:
    source = tmp_path / "camera.mp4"
    if kind == "not-a-video":
        source.write_bytes(b"\x00" * 256)
    proc = run_cli("run", "--config", str(write_config(tmp_path, source, brightness_model)))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-device: ") and str(source) in last
    assert "Traceback" not in proc.stderr


def test_check_reports_each_step(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model)
    proc = run_cli("check", "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["OK", "config"], ["OK", "model"], ["OK", "source"],
                                                    ["OK", "score"], ["OK", "store"], ["OK", "mqtt"]]
    assert "label 'bright'" in proc.stdout and "absent at threshold 0.5000" in proc.stdout


def test_check_fails_on_a_bad_source_and_an_unreachable_broker(tmp_path: Path, brightness_model: Path) -> None:
    pytest.importorskip("edge_oneclass.device.sinks.mqtt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path, tmp_path / "nothing", brightness_model,
                       f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n')
    proc = run_cli("check", "--config", str(cfg), "--timeout", "2")
    assert proc.returncode != 0
    status = {line.split()[1]: line.split()[0] for line in proc.stdout.splitlines()}
    assert status == {"config": "OK", "model": "OK", "source": "FAIL", "store": "OK", "mqtt": "FAIL"}
    assert "Traceback" not in proc.stderr


def write_gpio_config(tmp_path: Path, model: Path, pin: int | str = 17) -> Path:
    return write_config(tmp_path, write_frames(tmp_path / "frames"), model,
                        f"[log]\nlevel = \"WARNING\"\n[gpio]\npin = {json.dumps(pin)}\n")


def check_status(stdout: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in stdout.splitlines()}


def test_check_opens_the_pin_factory_gpio_would_use(tmp_path: Path, brightness_model: Path) -> None:
    proc = run_cli("check", "--config", str(write_gpio_config(tmp_path, brightness_model)),
                   env={"GPIOZERO_PIN_FACTORY": "mock"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check_status(proc.stdout)["gpio"] == "OK"
    assert "pin 17 is GPIO17 (J8:11)" in proc.stdout and "MockFactory" in proc.stdout
    bad = run_cli("check", "--config", str(write_gpio_config(tmp_path, brightness_model, pin=99)),
                  env={"GPIOZERO_PIN_FACTORY": "mock"})
    assert bad.returncode == 78 and check_status(bad.stdout)["gpio"] == "FAIL"
    assert "gpio.pin 99 does not exist on this board" in bad.stdout


def no_pin_library() -> bool:
    return not any(importlib.util.find_spec(m) for m in ("lgpio", "RPi", "pigpio"))


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio is installed here")
def test_check_and_run_agree_on_a_pin_factory_that_cannot_load(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_gpio_config(tmp_path, brightness_model)
    proc = run_cli("check", "--config", str(cfg), env={"GPIOZERO_PIN_FACTORY": "lgpio"})
    assert proc.returncode == 78
    [line] = [line for line in proc.stdout.splitlines() if line.split()[1] == "gpio"]
    assert line.startswith("FAIL gpio") and "GPIOZERO_PIN_FACTORY=lgpio cannot be loaded" in line
    assert "No module named 'lgpio'" in line and "apt install python3-lgpio" in line
    run = run_cli("run", "--config", str(cfg), env={"GPIOZERO_PIN_FACTORY": "lgpio"})
    assert run.returncode == 78 and "Traceback" not in run.stderr
    assert stderr_lines(run.stderr) == [f"edge-device: {line.split(maxsplit=2)[2]}"]


@pytest.mark.skipif(not no_pin_library() or Path("/proc/device-tree/model").exists(),
                    reason="this machine has a GPIO library or is a Raspberry Pi")
def test_check_fails_gpio_when_no_pin_factory_is_available(tmp_path: Path, brightness_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    proc = subprocess.run([*EDGE_DEVICE, "check", "--config", str(write_gpio_config(tmp_path, brightness_model))],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 78
    assert check_status(proc.stdout) == {"config": "OK", "model": "OK", "source": "OK", "score": "OK",
                                         "store": "OK", "mqtt": "OK", "gpio": "FAIL"}
    assert "no GPIO library available" in proc.stdout and "install python3-lgpio" in proc.stdout
    assert "Traceback" not in proc.stderr and "warnings.warn" not in proc.stderr


def stderr_lines(stderr: str) -> list[str]:
    """stderr without LiteRT's native banner (printed when the interpreter is created, below Python)."""
    return [line for line in stderr.splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]


def broken_picamera2_path(tmp_path: Path) -> Path:
    """A stand-in picamera2 package that fails at import as apt's does next to a pip numpy of another ABI."""
    package = tmp_path / "broken_modules" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ValueError("numpy.dtype size changed, may indicate binary '
                                         'incompatibility. Expected 96 from C header, got 88 from PyObject")\n')
    return package.parent


def test_picamera2_that_fails_to_import_is_one_line_and_exit_78(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_config(tmp_path, "picamera2", brightness_model, '[log]\nlevel = "WARNING"\n')
    env = {"PYTHONPATH": f"{broken_picamera2_path(tmp_path)}{os.pathsep}{ROOT}"}
    run = run_cli("run", "--config", str(cfg), env=env)
    assert run.returncode == 78, run.stderr                   # systemd's RestartPreventExitStatus: no restart loop
    assert "Traceback" not in run.stderr
    [line] = stderr_lines(run.stderr)
    assert line.startswith("edge-device: picamera2 fails to import (ValueError: numpy.dtype size changed")
    assert "numpy" in line and "scripts/install-pi.sh" in line and "pip install 'numpy==" in line
    check = run_cli("check", "--config", str(cfg), env=env)
    assert check.returncode == 78 and "Traceback" not in check.stderr
    assert check_status(check.stdout) == {"config": "OK", "model": "OK", "source": "FAIL", "store": "OK",
                                          "mqtt": "OK"}
    [source] = [s for s in check.stdout.splitlines() if s.split()[1] == "source"]
    assert "ValueError: numpy.dtype size changed" in source and "scripts/install-pi.sh" in source


def test_capture_saves_jpegs(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model)
    out = tmp_path / "captured"
    proc = run_cli("capture", "--config", str(cfg), "--out", str(out), "--every", "1", "--count", "5")
    assert proc.returncode == 0, proc.stderr
    saved = sorted(out.glob("*.jpg"))
    assert len(saved) == 5 and "5 frame(s) saved" in proc.stderr
    # every 1 s of the folder's 5 fps timeline: frames 0, 5, 10, 15, 20
    assert [int(cv2.imread(str(p)).mean() > 128) for p in saved] == [0, 0, 1, 1, 0]


# scripts/test.sh builds a venv with only the `device` extra and names its python here.
DEVICE_ONLY_PYTHON = os.environ.get("EDGE_DEVICE_ONLY_PYTHON")


@pytest.mark.parametrize("python", [
    pytest.param(sys.executable, id="full-venv"),
    pytest.param(DEVICE_ONLY_PYTHON, id="device-only-venv",
                 marks=pytest.mark.skipif(not DEVICE_ONLY_PYTHON, reason="EDGE_DEVICE_ONLY_PYTHON not set")),
])
def test_daemon_never_imports_tensorflow(tmp_path: Path, brightness_model: Path, python: str) -> None:
    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model)
    code = textwrap.dedent(f"""
        import sys
        from edge_oneclass.device.cli import main
        rc = main(["run", "--config", {str(cfg)!r}])
        loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras")))
        print("TF:", loaded, file=sys.stderr)
        sys.exit(rc if not loaded else 99)
    """)
    # cwd outside the repository: the installed package runs, as on the Pi
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "TF: []" in proc.stderr
    if python == DEVICE_ONLY_PYTHON:
        probe = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is None)"],
                               capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == "True", "the device-only venv must not contain TensorFlow"
    assert len([r for r in json_lines(proc.stdout) if r["kind"] == "state"]) == 2


# -- systemd notification and live runs ---------------------------------------------------------------------


class NotifySocket:
    """The receiving end of $NOTIFY_SOCKET, as systemd would hold it."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        raise AssertionError(f"{text!r} not received; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def test_replay_notifies_ready_then_watchdog_then_stopping(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model)
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        proc = run_cli("run", "--config", str(cfg),
                       env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "30000000"})
        assert proc.returncode == 0, proc.stderr
        listener.wait_for("STOPPING=1", timeout=5)
    finally:
        listener.close()
    kinds = [m.splitlines()[0] for m in listener.messages]
    assert kinds.index("READY=1") < kinds.index("WATCHDOG=1") < kinds.index("STOPPING=1")


def test_notifier_uses_abstract_sockets_and_rate_limits_the_watchdog() -> None:
    name = f"edge-device-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(b"\0" + name.encode())
    receiver.settimeout(1)
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"}, clock=lambda: now[0])
    try:
        assert notifier.ready("watching") and receiver.recv(100) == b"READY=1\nSTATUS=watching"
        assert notifier.watchdog() and receiver.recv(100) == b"WATCHDOG=1"
        now[0] += 0.5
        assert not notifier.watchdog()                 # rate-limited
        now[0] += 0.6
        assert notifier.watchdog() and receiver.recv(100) == b"WATCHDOG=1"
    finally:
        notifier.close()
        receiver.close()
    assert not Notifier({}).notify("READY=1")          # no socket: a no-op


FAKE_PICAMERA2 = '''
"""Test stand-in for picamera2: bright frames, B, G, R in memory like "RGB888"; FAIL_AFTER breaks it once."""
import os, time
import numpy as np

_opened = []

class Picamera2:
    def __init__(self, camera_num=0):
        _opened.append(self)
        self.n = 0
        self.fail_after = int(os.environ.get("FAKE_PICAMERA2_FAIL_AFTER", "0")) if len(_opened) == 1 else 0

    def create_video_configuration(self, main=None, **kw):
        return {"main": dict(main or {}), **kw}

    def configure(self, config):
        self.size = config["main"]["size"]

    def start(self):
        pass

    def capture_array(self, name="main"):
        time.sleep(0.01)
        self.n += 1
        if self.fail_after and self.n > self.fail_after:
            raise OSError("camera unplugged")
        w, h = self.size
        return np.full((h, w, 3), 230, np.uint8)

    def stop(self):
        pass

    def close(self):
        pass
'''


def fake_picamera2_path(tmp_path: Path) -> Path:
    folder = tmp_path / "fake_modules"
    folder.mkdir(exist_ok=True)
    (folder / "picamera2.py").write_text(FAKE_PICAMERA2)
    return folder


def test_live_run_stops_cleanly_on_sigterm(tmp_path: Path, brightness_model: Path) -> None:
    cfg = write_config(tmp_path, "picamera2", brightness_model, fps=10.0)
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    env = {**os.environ, "PYTHONPATH": f"{fake_picamera2_path(tmp_path)}{os.pathsep}{ROOT}",
           "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    proc = subprocess.Popen([*EDGE_DEVICE, "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listener.wait_for("READY=1")
        listener.wait_for("WATCHDOG=1")
        time.sleep(1.0)              # 3 bright frames at 10 fps turn the state on
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=5)
        listener.wait_for("STOPPING=1", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        listener.close()
    assert proc.returncode == 0, stderr
    states = [r for r in json_lines(stdout) if r["kind"] == "state"]
    assert [r["state"] for r in states] == ["ON"]            # no fake "absent" just because we stopped
    on_at = datetime.fromisoformat(states[0]["at"].replace("Z", "+00:00")).timestamp()
    assert abs(time.time() - on_at) < 600                    # live frames carry wall-clock capture time
    assert "received SIGTERM" in stderr


# -- in-process: the loop survives broken sinks and cameras -------------------------------------------------


class ListSink(Sink):
    """Keeps what it is given (a real, in-memory output)."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []
        self.snapshots: list[bytes | None] = []
        self.stats_seen: list[dict] = []
        self.closed = False

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        self.changes.append(change)
        self.snapshots.append(snapshot_jpeg)

    def stats(self, stats: dict) -> None:
        self.stats_seen.append(stats)

    def close(self) -> None:
        self.closed = True


class BrokenSink(Sink):
    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        raise ConnectionError("broker gone")

    def stats(self, stats: dict) -> None:
        raise RuntimeError("nope")

    def close(self) -> None:
        raise RuntimeError("cannot close")


def test_a_broken_sink_never_stops_the_loop_and_stats_are_reported(tmp_path: Path, brightness_model: Path,
                                                                   caplog) -> None:
    cfg = load_config(write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model))
    good = ListSink()
    with caplog.at_level("INFO"):
        rc = Daemon(cfg, sinks=[BrokenSink(), good], notifier=Notifier({}), stats_every=2.0).run()
    assert rc == 0 and good.closed
    assert [c.present for c in good.changes] == [True, False]
    assert good.snapshots[0] is not None and good.snapshots[0][:2] == b"\xff\xd8" and good.snapshots[1] is None
    assert "BrokenSink.state_changed failed: ConnectionError: broker gone" in caplog.text
    assert len(good.stats_seen) >= 3                     # every 2 s of a 7.6 s timeline
    stats = good.stats_seen[0]
    assert stats["fps"] == pytest.approx(5.0, rel=0.25)  # frame-time fps of a 5 fps replay
    assert {"inference_ms_p50", "inference_ms_p95", "dropped_frames", "uptime_s", "last_score",
            "cpu_temp_c"} <= set(stats)
    assert stats["inference_ms_p95"] >= stats["inference_ms_p50"] >= 0


def test_snapshots_off_sends_none(tmp_path: Path, brightness_model: Path) -> None:
    cfg = load_config(write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model,
                                   "[snapshot]\nenabled = false\n"))
    sink = ListSink()
    assert Daemon(cfg, sinks=[sink], notifier=Notifier({})).run() == 0
    assert sink.snapshots == [None, None]


def test_a_failing_camera_is_reopened(tmp_path: Path, brightness_model: Path, monkeypatch, caplog) -> None:
    monkeypatch.syspath_prepend(str(fake_picamera2_path(tmp_path)))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.setenv("FAKE_PICAMERA2_FAIL_AFTER", "5")
    cfg = load_config(write_config(tmp_path, "picamera2", brightness_model, fps=20.0))
    sink = ListSink()
    daemon = Daemon(cfg, sinks=[sink], notifier=Notifier({}))

    def stop_when_back() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "is back" not in caplog.text:
            time.sleep(0.05)
        time.sleep(0.3)
        daemon.request_stop()

    with caplog.at_level("INFO"):
        stopper = threading.Thread(target=stop_when_back)
        stopper.start()
        assert daemon.run() == 0
        stopper.join()
    sys.modules.pop("picamera2", None)
    assert "camera failed: picamera2: OSError: camera unplugged" in caplog.text
    assert "camera picamera2 is back" in caplog.text
    assert sink.closed and [c.present for c in sink.changes][:1] == [True]


def test_loop_stats_and_cpu_temperature(tmp_path: Path) -> None:
    stats = LoopStats(started=0.0)
    for ms in (1.0, 2.0, 3.0, 4.0, 100.0):
        stats.add(0.5, ms)
    report = stats.report(now=1.0, present=True)
    assert report["fps"] == 5.0 and report["inference_ms_p50"] == 3.0 and report["inference_ms_p95"] > 50
    assert stats.report(now=2.0, present=True)["inference_ms_p50"] is None     # reset each period
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert cpu_temperature(zone) == 48.3
    assert cpu_temperature(tmp_path / "absent") is None
