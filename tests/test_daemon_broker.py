"""The daemon process itself against a real broker: a hard kill shows `offline`, and a broker restart mid-run
neither crashes it nor loses the retained state. Live source: the fake picamera2 (the only allowed fake)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from mqtt_subscriber import Subscriber, retained
from test_daemon import EDGE_DEVICE, ROOT, fake_picamera2_path, write_config

ROOT_TOPIC = "edge/pi-test"


def start_daemon(tmp_path: Path, model: Path, broker) -> subprocess.Popen:
    extra = f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ndevice_id = "pi-test"\nkeepalive = 5\n'
    cfg = write_config(tmp_path, "picamera2", model, extra=extra, fps=10.0)
    env = {**os.environ, "PYTHONPATH": f"{fake_picamera2_path(tmp_path)}{os.pathsep}{ROOT}"}
    return subprocess.Popen([*EDGE_DEVICE, "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def daemon(tmp_path: Path, brightness_model: Path, mosquitto):
    proc = start_daemon(tmp_path, brightness_model, mosquitto)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_hard_kill_leaves_offline(daemon: subprocess.Popen, mosquitto) -> None:
    sub = Subscriber(mosquitto, [f"{ROOT_TOPIC}/#"])
    try:
        sub.wait_for(f"{ROOT_TOPIC}/bright/state", lambda m: m.payload == b"ON", timeout=30)
        daemon.send_signal(signal.SIGKILL)      # a crash or power cut: no chance to say goodbye
        daemon.wait(10)
        sub.wait_for(f"{ROOT_TOPIC}/status", lambda m: m.payload == b"offline", timeout=30)
    finally:
        sub.close()
    assert retained(mosquitto, f"{ROOT_TOPIC}/status").payload == b"offline"


def test_broker_restart_mid_run(daemon: subprocess.Popen, mosquitto) -> None:
    sub = Subscriber(mosquitto, [f"{ROOT_TOPIC}/#"])
    sub.wait_for(f"{ROOT_TOPIC}/bright/state", lambda m: m.payload == b"ON", timeout=30)
    sub.close()
    mosquitto.stop()                  # the broker keeps no persistence: every retained message is gone
    assert daemon.poll() is None
    mosquitto.start()                 # same port
    # the daemon reconnects by itself and republishes what a newcomer must see
    later = Subscriber(mosquitto, [f"{ROOT_TOPIC}/#"])
    try:
        later.wait_for(f"{ROOT_TOPIC}/status", lambda m: m.payload == b"online", timeout=30)
        later.wait_for(f"{ROOT_TOPIC}/bright/state", lambda m: m.payload == b"ON", timeout=30)
    finally:
        later.close()
    assert daemon.poll() is None, "the daemon died during the outage"
    assert retained(mosquitto, f"{ROOT_TOPIC}/bright/state").payload == b"ON"
    daemon.send_signal(signal.SIGTERM)
    _, stderr = daemon.communicate(timeout=10)
    assert daemon.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert retained(mosquitto, f"{ROOT_TOPIC}/status").payload == b"offline"
