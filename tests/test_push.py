"""Model updates over MQTT against a real broker: `push-edge` sends, the running daemon checks, saves and swaps
the model between two frames without restarting or reconnecting; a tampered model is refused; the confidence
mapping; the model store; push-edge's one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mqtt_subscriber import Subscriber, retained
from test_mqtt_sink import auth_broker  # noqa: F401 - the fixture

from edge_oneclass.device.detect.events import Event
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.confidence import confidence, confidence_scale, scale_from_scores
from edge_oneclass.device.update.check import FilesRefused, check_files
from edge_oneclass.device.update.payload import FORMAT, PayloadError, decode, encode, read_model_dir
from edge_oneclass.device.update.store import ModelStore, active_model_path

ROOT = Path(__file__).resolve().parents[1]
PUSH_EDGE = [sys.executable, "-m", "edge_oneclass.device.update.push_cli"]
EDGE_DEVICE = [sys.executable, "-m", "edge_oneclass.device.cli"]
DEVICE = "pi-push"


# -- helpers -----------------------------------------------------------------------------------------------

def second_model(fixture: Path, dst: Path, threshold: float, label: str = "bright", tamper: bool = False) -> Path:
    """A valid tflite with a different sha (one byte of the converter's description changed) and its card."""
    dst.mkdir(parents=True, exist_ok=True)
    data = fixture.read_bytes()
    assert data.count(b"MLIR Converted.") == 1
    data = data.replace(b"MLIR Converted.", b"MLIR Converted!")
    card = json.loads(fixture.with_name("model.json").read_text())
    card.update(threshold=threshold, label=label, sha256=hashlib.sha256(data).hexdigest(),
                created_at="2026-11-27T07:00:00+00:00")
    if tamper:      # the bytes change after the card was written
        data = data.replace(b"MLIR Converted!", b"MLIR Converted?")
    (dst / "model.tflite").write_bytes(data)
    (dst / "model.json").write_text(json.dumps(card))
    return dst


def write_video(path: Path, seconds: float, level: int = 100, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for _ in range(int(seconds * fps)):
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    return path


def daemon_config(tmp_path: Path, source: Path, model: Path, broker, store: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""\
        [camera]
        source = "{source}"
        fps = 5.0
        realtime = true
        [model]
        path = "{model}"
        threads = 1
        store = "{store}"
        [detect]
        on_frames = 3
        window = 5
        off_delay = 2.0
        [mqtt]
        host = "{broker.host}"
        port = {broker.port}
        device_id = "{DEVICE}"
        keepalive = 5
        stats_interval = 1.0
        """))
    return path


def push(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PUSH_EDGE, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the daemon receives pushes ------------------------------------------------------------------------------

def test_push_swaps_the_model_live_refuses_a_tampered_one_and_rolls_back(tmp_path: Path, brightness_model: Path,
                                                                          mosquitto) -> None:
    video = write_video(tmp_path / "grey.avi", 120.0, level=100)     # mean brightness 0.39: below 0.5, above 0.3
    store = tmp_path / "store"
    cfg = daemon_config(tmp_path, video, brightness_model, mosquitto, store)
    lower = second_model(brightness_model, tmp_path / "lower", threshold=0.3)
    tampered = second_model(brightness_model, tmp_path / "tampered", threshold=0.2, tamper=True)
    old_sha, new_sha = sha(brightness_model), sha(lower / "model.tflite")
    assert old_sha != new_sha
    root = f"edge/{DEVICE}"
    proc = subprocess.Popen([*EDGE_DEVICE, "run", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    sub = None
    try:
        started = Subscriber(mosquitto, [f"{root}/model"])
        status = json.loads(started.wait_for(f"{root}/model", timeout=30).payload)
        started.close()
        assert (status["status"], status["source"], status["sha256"], status["threshold"]) == \
            ("ok", "startup", old_sha, 0.5)
        sub = Subscriber(mosquitto, [f"{root}/#", "homeassistant/#"])
        sub.wait_for(f"{root}/stats", lambda m: json.loads(m.payload)["frames"] >= 3, timeout=30)
        assert retained(mosquitto, f"{root}/bright/state").text == "OFF"

        # 1. a valid model with a lower threshold: swapped live, the grey scene is now "present"
        out = push(str(lower), "--host", mosquitto.host, "--port", str(mosquitto.port), "--device", DEVICE,
                   "--wait", "30")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("push-edge: pushed 'bright'") and f"{DEVICE} now runs it" in out.stdout
        assert len(out.stdout.strip().splitlines()) == 1
        status = json.loads(retained(mosquitto, f"{root}/model").payload)
        assert (status["status"], status["source"], status["sha256"], status["threshold"]) == \
            ("ok", "push", new_sha, 0.3)
        assert status["previous_sha256"] == old_sha and status["created_at"] == "2026-11-27T07:00:00+00:00"
        sub.wait_for(f"{root}/bright/state", lambda m: m.text == "ON", timeout=30)
        after = sub.wait_for(f"{root}/stats", lambda m: json.loads(m.payload)["model_sha256"] == new_sha, timeout=30)
        stats = [json.loads(m.payload) for m in sub.on(f"{root}/stats")]
        frames = [s["frames"] for s in stats]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)   # one run, counting on
        assert json.loads(after.payload)["threshold"] == 0.3 and 0.5 < json.loads(after.payload)["confidence"] <= 1
        before = [s for s in stats if s["model_sha256"] == old_sha]
        assert before and all(s["confidence"] < 0.5 for s in before)
        # saved for the next start: current/ is the pushed model, previous/ the one it replaced
        assert sha(store / "current" / "model.tflite") == new_sha
        assert sha(store / "previous" / "model.tflite") == old_sha
        assert not list(store.glob(".incoming-*"))

        # 2. a tampered model: refused with the reason, the pushed model keeps scoring
        out = push(str(tampered), "--host", mosquitto.host, "--port", str(mosquitto.port), "--device", DEVICE,
                   "--wait", "30", "--force")
        assert out.returncode == 1 and "refused it" in out.stderr and "sha256" in out.stderr, out.stderr
        status = json.loads(retained(mosquitto, f"{root}/model").payload)
        assert status["status"] == "refused" and "does not match model.json" in status["reason"]
        assert status["sha256"] == new_sha and status["threshold"] == 0.3       # still the model in use
        n = len(sub.messages)
        sub.wait_for(f"{root}/stats", lambda m: json.loads(m.payload)["model_sha256"] == new_sha, start=n, timeout=30)
        assert sha(store / "current" / "model.tflite") == new_sha

        # 3. rollback on the device's own topic brings the previous model back
        n = len(sub.messages)
        sub.client.publish(f"{root}/model/set", "rollback", qos=1).wait_for_publish(10)
        back = sub.wait_for(f"{root}/model", lambda m: json.loads(m.payload)["source"] == "rollback", start=n,
                            timeout=30)
        status = json.loads(back.payload)
        assert (status["status"], status["sha256"], status["threshold"]) == ("ok", old_sha, 0.5)
        sub.wait_for(f"{root}/bright/state", lambda m: m.text == "OFF", start=n, timeout=30)
        assert sha(store / "current" / "model.tflite") == old_sha
        assert sha(store / "previous" / "model.tflite") == new_sha

        # 4. a new label, sent to every device: the old label's Home Assistant entities are removed
        lamp = second_model(brightness_model, tmp_path / "lamp", threshold=0.3, label="lamp")
        n = len(sub.messages)
        out = push(str(lamp), "--host", mosquitto.host, "--port", str(mosquitto.port), "--all", "--wait", "30")
        assert out.returncode == 0 and f"{DEVICE} now runs it" in out.stdout, out.stderr
        sub.wait_for(f"homeassistant/binary_sensor/{DEVICE}_bright/config", lambda m: m.payload == b"", start=n)
        sub.wait_for(f"homeassistant/sensor/{DEVICE}_bright_confidence/config", lambda m: m.payload == b"", start=n)
        lamp_cfg = sub.wait_for(f"homeassistant/binary_sensor/{DEVICE}_lamp/config", start=n)
        assert json.loads(lamp_cfg.payload)["state_topic"] == f"{root}/lamp/state"
        sub.wait_for(f"{root}/lamp/state", lambda m: m.text == "ON", start=n, timeout=30)

        # the same MQTT session all along: `online` was never re-sent and no reconnect was logged
        assert [m for m in sub.on(f"{root}/status") if not m.retain] == []
        assert proc.poll() is None
    finally:
        if sub is not None:
            sub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "lost connection" not in stderr and "Traceback" not in stderr
    assert stderr.count("model swapped") == 3 and stderr.count("model update refused") == 1
    # the device is gone now (retained `offline`): push-edge says so at once instead of waiting
    t0 = time.monotonic()
    out = push(str(lower), "--host", mosquitto.host, "--port", str(mosquitto.port), "--device", DEVICE, "--wait", "30")
    assert out.returncode == 1 and f"{DEVICE} is offline" in out.stderr, out.stderr
    assert time.monotonic() - t0 < 20


def test_the_daemon_starts_from_the_pushed_model(tmp_path: Path, brightness_model: Path) -> None:
    """After a restart the store's current/ model is used; a broken one falls back to previous/ (the model that ran
    before it), and without a usable one of those to [model] path."""
    from edge_oneclass.device.config import load_config

    store = tmp_path / "store"
    lower = second_model(brightness_model, tmp_path / "lower", threshold=0.3)

    class Broker:
        host, port = "127.0.0.1", closed_port()

    cfg = load_config(daemon_config(tmp_path, tmp_path / "x.avi", brightness_model, Broker, store))
    assert active_model_path(cfg) == brightness_model
    s = ModelStore(store)
    s.promote(s.stage(read_model_dir(lower)), brightness_model.parent)
    assert active_model_path(cfg) == store / "current" / "model.tflite"
    assert sha(store / "previous" / "model.tflite") == sha(brightness_model)
    (store / "current" / "model.tflite").write_bytes(b"broken")
    assert active_model_path(cfg) == store / "previous" / "model.tflite"
    (store / "previous" / "model.tflite").write_bytes(b"broken too")
    assert active_model_path(cfg) == brightness_model


# -- the checks, without a broker ------------------------------------------------------------------------

def test_payload_round_trip_and_refusals(tmp_path: Path, brightness_model: Path) -> None:
    lower = second_model(brightness_model, tmp_path / "lower", threshold=0.3)
    files = read_model_dir(lower)
    payload, push_id = encode(files)
    assert json.loads(payload)["format"] == FORMAT
    decoded, got_id = decode(payload)
    assert decoded == files and got_id == push_id
    assert check_files(decoded).threshold == 0.3
    for bad, needle in [(b"hello", "not JSON"), (b'{"format": "zip"}', "is not 'edge-model/1'"),
                        (json.dumps({"format": FORMAT, "files": {"model.tflite": "AA=="}}).encode(), "lacks")]:
        with pytest.raises(PayloadError, match=needle):
            decode(bad)
    tampered = dict(files, **{"model.tflite": files["model.tflite"] + b"x"})
    with pytest.raises(FilesRefused, match="does not match model.json"):
        check_files(tampered)
    card = json.loads(files["model.json"])
    with_cal = dict(files, **{"model.json": json.dumps({**card, "calibration": {"sha256": "00" * 32}}).encode()})
    with pytest.raises(FilesRefused, match="push has none"):
        check_files(with_cal)
    with pytest.raises(FilesRefused, match="calibration.npz sha256"):
        check_files(dict(with_cal, **{"calibration.npz": b"npz"}))
    old = dict(files, **{"model.json": json.dumps({**card, "preprocessing": "v1"}).encode()})
    with pytest.raises(FilesRefused, match="preprocessing"):
        check_files(old)


def test_push_edge_errors_are_one_line(tmp_path: Path, brightness_model: Path, mosquitto) -> None:
    out = push(str(tmp_path / "nowhere"), "--host", "127.0.0.1", "--device", "x")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "not a folder" in out.stderr
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(brightness_model, half / "model.tflite")
    out = push(str(half), "--host", "127.0.0.1", "--device", "x")
    assert out.returncode == 1 and "model.json missing" in out.stderr and out.stderr.count("\n") == 1
    tampered = second_model(brightness_model, tmp_path / "tampered", threshold=0.2, tamper=True)
    out = push(str(tampered), "--host", "127.0.0.1", "--device", "x")
    assert out.returncode == 1 and "does not match model.json" in out.stderr and out.stderr.count("\n") == 1
    port = closed_port()
    out = push(str(brightness_model.parent), "--host", "127.0.0.1", "--port", str(port), "--device", "x",
               "--timeout", "3")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert f"cannot reach MQTT broker at 127.0.0.1:{port}" in out.stderr, out.stderr
    # a broker but no such device: pushed, then no answer
    out = push(str(brightness_model.parent), "--host", mosquitto.host, "--port", str(mosquitto.port),
               "--device", "nobody", "--wait", "1")
    assert out.returncode == 1 and "no answer within 1 s from nobody" in out.stderr, out.stderr
    out = push(str(brightness_model.parent), "--host", mosquitto.host, "--port", str(mosquitto.port),
               "--device", "nobody")
    assert out.returncode == 0 and "to edge/nobody/model/set" in out.stdout, out.stderr
    usage = push(str(brightness_model.parent), "--host", "h")
    assert usage.returncode == 2 and "--device" in usage.stderr


# -- confidence ------------------------------------------------------------------------------------------

def test_confidence_is_one_half_at_the_threshold_and_monotone() -> None:
    for threshold, scale in [(0.5, 1.0), (-3.2, 0.05), (12.0, 7.0)]:
        assert confidence(threshold, threshold, scale) == 0.5
        scores = threshold + scale * np.linspace(-50, 50, 2001)
        values = [confidence(s, threshold, scale) for s in scores]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert all(b >= a for a, b in zip(values, values[1:], strict=False))
        assert values[0] < 1e-6 and values[-1] > 1 - 1e-6
        assert confidence(threshold + scale * math.log(19), threshold, scale) == pytest.approx(0.95)
    assert confidence(float("nan"), 0.5) == 0.0
    assert confidence(1e308, 0.0, 1e-300) == 1.0 and confidence(-1e308, 0.0, 1e-300) == 0.0


def test_confidence_scale_from_the_card_the_quantiles_or_one() -> None:
    base = {"label": "dog", "image_size": 32, "threshold": 1.0, "sha256": "00" * 32}
    assert confidence_scale(ModelCard.from_dict({**base, "confidence_scale": 0.25})) == 0.25
    quantiles = {"calibration": {"positive_quantiles": {"p05": 1.0, "p50": 1.0 + math.log(19)}}}
    assert confidence_scale(ModelCard.from_dict({**base, **quantiles})) == pytest.approx(1.0)
    assert confidence_scale(ModelCard.from_dict({**base, "calibration": {"positive_quantiles": {"p50": 2.0}}})) \
        == pytest.approx(1.0 / math.log(19))
    assert confidence_scale(ModelCard.from_dict(base)) == 1.0
    # export-edge: the median label photo maps to 0.95
    scores = np.array([1.0, 1.5, 2.0, 2.5, 3.0])
    scale = scale_from_scores(scores, 1.0)
    assert confidence(2.0, 1.0, scale) == pytest.approx(0.95)
    assert scale_from_scores(np.array([0.0, 0.1, 0.2]), 5.0) == pytest.approx(np.std([0.0, 0.1, 0.2]))


def test_events_carry_confidence() -> None:
    ev = Event(type="start", label="dog", score=0.7, max_score=0.9, threshold=0.5, started_at=0.0, ended_at=None,
               frames=3)
    body = ev.to_json("pi", "ab", confidence_scale=0.2)
    assert body["confidence"] == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-4)
    assert body["max_confidence"] == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-4)
    assert "confidence" not in ev.to_json("pi", "ab")


def test_stdout_events_carry_confidence(tmp_path: Path, brightness_model: Path) -> None:
    from test_daemon import json_lines, run_cli, write_config, write_frames

    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model)
    proc = run_cli("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    states = [r for r in json_lines(proc.stdout) if r["kind"] == "state"]
    assert states[0]["event"]["confidence"] > 0.5 and 0 <= states[1]["event"]["confidence"] < 0.5


def test_check_fails_on_a_model_store_it_cannot_write(tmp_path: Path, brightness_model: Path) -> None:
    from test_daemon import run_cli, write_config, write_frames

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = write_config(tmp_path, write_frames(tmp_path / "frames"), brightness_model,
                       f'[snapshot]\ndir = "{tmp_path / "snaps"}"\n[feedback]\ndir = "{tmp_path / "fb"}"\n')
    cfg.write_text(cfg.read_text().replace("threads = 1\n", f'threads = 1\nstore = "{blocker / "store"}"\n'))
    proc = run_cli("check", "--config", str(cfg))
    assert proc.returncode != 0
    [line] = [line for line in proc.stdout.splitlines() if line.split()[1] == "store"]
    assert line.startswith("FAIL") and str(blocker) in line and "StateDirectory" in line and "chown" in line
    cfg.write_text(cfg.read_text().replace(str(blocker / "store"), str(tmp_path / "store")))
    proc = run_cli("check", "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout
    assert (f"OK   store    model store {tmp_path / 'store'}, snapshot dir {tmp_path / 'snaps'}, "
            f"feedback dir {tmp_path / 'fb'} writable") in proc.stdout


def test_push_edge_never_imports_tensorflow(tmp_path: Path, brightness_model: Path, mosquitto) -> None:
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from edge_oneclass.device.update.push_cli import main\n"
            f"rc = main([{str(brightness_model.parent)!r}, '--host', {mosquitto.host!r}, '--port', "
            f"'{mosquitto.port}', '--all'])\n"
            "assert not any(m.startswith(('tensorflow', 'keras', 'ai_edge_litert')) and sys.modules[m] is not None "
            "for m in sys.modules), 'a heavy module was imported'\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("push-edge: pushed 'bright'") and "edge/all/model/set" in proc.stdout


def test_a_new_card_for_the_same_tflite_is_applied_and_a_repeat_is_a_no_op(tmp_path: Path,
                                                                           brightness_model: Path) -> None:
    """In process, no broker: the updater with a stand-in daemon (a `ModelHost`) whose frame loop runs queued
    actions at once. A swap changes the host's one model reference, and nothing else."""
    from test_daemon import write_config

    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.model.running import RunningModel
    from edge_oneclass.device.update.swap import ModelUpdates

    class Host:
        def __init__(self, model: RunningModel) -> None:
            self.model = model

        def last_image(self):
            return None

        def call_between_frames(self, action):
            action()

        def swap_model(self, model: RunningModel) -> None:
            self.model = model

    cfg = load_config(write_config(tmp_path, tmp_path / "x.avi", brightness_model,
                                   f'[snapshot]\ndir = "{tmp_path / "snaps"}"\n'))
    cfg.model.store = str(tmp_path / "store")
    first = RunningModel.load(brightness_model, threads=1)
    host = Host(first)
    updates = ModelUpdates(host, cfg, [])
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(brightness_model, same / "model.tflite")
    (same / "model.json").write_text(json.dumps({**json.loads(brightness_model.with_name("model.json").read_text()),
                                                 "threshold": 0.25}))
    payload, push_id = encode(read_model_dir(same))
    updates._apply(payload, allow_rollback=True)
    status = updates.last_status
    assert (status["status"], status["threshold"], status["push_id"]) == ("ok", 0.25, push_id)
    assert host.model.thresholds.whole == 0.25 and host.model.runner is not first.runner
    updates._apply(encode(read_model_dir(same))[0], allow_rollback=True)
    assert (updates.last_status["status"], updates.last_status["reason"]) == ("ok", "already in use")
    updates._apply(b"rollback", allow_rollback=False)
    assert updates.last_status["status"] == "refused" and "own model/set topic" in updates.last_status["reason"]
    updates._apply(b"rollback", allow_rollback=True)
    assert (updates.last_status["status"], updates.last_status["threshold"]) == ("ok", 0.5)
    assert host.model.thresholds.whole == 0.5 and host.model.path.parent.name == "current"


def test_push_edge_logs_in_like_the_daemon(tmp_path: Path, brightness_model: Path,
                                           auth_broker) -> None:  # noqa: F811 - the imported fixture
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    base = [str(brightness_model.parent), "--host", auth_broker.host, "--port", str(auth_broker.port), "--device", "x"]
    out = push(*base, "--username", "edge", "--password-file", str(secret))
    assert out.returncode == 0 and out.stdout.startswith("push-edge: pushed"), out.stderr
    out = push(*base, "--username", "edge", "--password", "wrong")
    assert out.returncode == 1 and "refused the login" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    out = push(*base, "--password", "s3cret")
    assert out.returncode == 2 and "needs --username" in out.stderr
