"""MqttSink against a real mosquitto: retained status/state/discovery, events, last will, outages, auth."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from mqtt_subscriber import WAIT, Subscriber, retained, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from edge_oneclass.device.config_section import parse_section
from edge_oneclass.device.detect.events import Event, StateChange, iso_utc
from edge_oneclass.device.errors import BrokerError, ConfigError
from edge_oneclass.device.model.info import ModelInfo
from edge_oneclass.device.mqtt.client import probe_broker
from edge_oneclass.device.mqtt.config import MqttConfig
from edge_oneclass.device.sinks.mqtt import MAX_QUEUED, MqttSink
from edge_oneclass.device.snapshot import encode_jpeg

ROOT = Path(__file__).resolve().parents[1]
EVENT_KEYS = {"type", "label", "score", "max_score", "threshold", "started_at", "ended_at", "frames", "device_id",
              "model_sha256", "confidence", "max_confidence"}


def info(label: str = "dog", sha256: str = "ab" * 32, threshold: float = 0.5, scale: float = 1.0) -> ModelInfo:
    """The model a sink reports: label, sha256, whole and crop thresholds, confidence scale."""
    return ModelInfo(label, sha256, threshold, threshold, "", scale)


def change(present: bool, t: float = 1_714_560_000.0) -> StateChange:
    ev = Event(type="start" if present else "end", label="dog", score=0.91, max_score=0.95, threshold=0.5,
               started_at=t - 2.0, ended_at=None if present else t, frames=7)
    return StateChange(present=present, at=t, event=ev)


@pytest.fixture
def make_sink(mosquitto):
    sinks: list[MqttSink] = []

    def make(start: bool = True, confidence_scale: float = 1.0, **overrides) -> MqttSink:
        kw = {"host": mosquitto.host, "port": mosquitto.port, "device_id": f"pi-{uuid.uuid4().hex[:6]}"}
        kw.update(overrides)
        sink = MqttSink(MqttConfig(**kw), info(scale=confidence_scale))
        sinks.append(sink)
        if start:
            sink.start()
        return sink

    yield make
    for s in sinks:
        s.close()


def connected(sink: MqttSink, broker, **auth) -> MqttSink:
    """Wait until the sink is connected and its `online` has reached the broker."""
    wait_until(lambda: sink.connected, what="sink to connect")
    sub = Subscriber(broker, [sink.status_topic], **auth)
    sub.wait_for(sink.status_topic, lambda m: m.text == "online")
    sub.close()
    return sink


# -- connect: status, discovery, initial state ---------------------------------------------------------------

def test_online_status_retained_on_connect(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    assert sink.status_topic == f"edge/{sink.cfg.device_id}/status"
    assert retained(mosquitto, sink.status_topic).text == "online"


def test_discovery_config_retained_and_consistent(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    dev = sink.cfg.device_id
    msg = retained(mosquitto, f"homeassistant/binary_sensor/{dev}_dog/config")
    cfg = json.loads(msg.payload)
    for key in ("name", "unique_id", "device_class", "state_topic", "payload_on", "payload_off",
                "availability_topic", "payload_available", "payload_not_available", "device"):
        assert key in cfg, key
    assert cfg["unique_id"] == f"{dev}_dog"
    assert cfg["device_class"] == "occupancy"
    assert cfg["state_topic"] == sink.state_topic == f"edge/{dev}/dog/state"
    assert cfg["availability_topic"] == sink.status_topic
    assert (cfg["payload_on"], cfg["payload_off"]) == ("ON", "OFF")
    assert (cfg["payload_available"], cfg["payload_not_available"]) == ("online", "offline")
    assert cfg["json_attributes_topic"] == sink.event_topic
    assert cfg["device"]["identifiers"] and cfg["device"]["name"] and cfg["device"]["sw_version"]
    assert cfg["origin"]["name"]
    image = json.loads(retained(mosquitto, f"homeassistant/image/{dev}_dog_snapshot/config").payload)
    assert image["image_topic"] == sink.snapshot_topic and image["content_type"] == "image/jpeg"
    # before the first decision Home Assistant still gets a state
    assert retained(mosquitto, sink.state_topic).text == "OFF"


def test_discovery_resent_when_home_assistant_comes_online(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    topic = f"homeassistant/binary_sensor/{sink.cfg.device_id}_dog/config"
    sub = Subscriber(mosquitto, [topic])
    sub.wait_for(topic, lambda m: m.retain)
    n = len(sub.messages)
    ha = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-home-assistant")
    ha.connect(mosquitto.host, mosquitto.port)
    ha.loop_start()
    ha.publish("homeassistant/status", "online", qos=1).wait_for_publish(WAIT)
    resent = sub.wait_for(topic, lambda m: not m.retain, start=n)   # delivered live, not from the retained store
    assert json.loads(resent.payload)["unique_id"] == f"{sink.cfg.device_id}_dog"
    ha.disconnect()
    ha.loop_stop()
    sub.close()


def test_discovery_off_publishes_none(make_sink, mosquitto):
    sink = connected(make_sink(discovery=False), mosquitto)
    sub = Subscriber(mosquitto, ["homeassistant/#", sink.state_topic])
    sub.wait_for(sink.state_topic)
    assert sub.on(f"homeassistant/binary_sensor/{sink.cfg.device_id}_dog/config") == []
    sub.close()


# -- state, event, snapshot, stats ---------------------------------------------------------------------------

def test_state_retained_on_change(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    sub = Subscriber(mosquitto, [sink.state_topic])
    sink.state_changed(change(True))
    sub.wait_for(sink.state_topic, lambda m: m.text == "ON")
    assert retained(mosquitto, sink.state_topic).text == "ON"
    sink.state_changed(change(False))
    sub.wait_for(sink.state_topic, lambda m: m.text == "OFF" and not m.retain)
    assert retained(mosquitto, sink.state_topic).text == "OFF"
    sub.close()


def test_event_json_at_qos1_not_retained(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    sub = Subscriber(mosquitto, [sink.event_topic])
    sink.state_changed(change(True))
    sink.state_changed(change(False))
    start = sub.wait_for(sink.event_topic, lambda m: json.loads(m.payload)["type"] == "start")
    end = sub.wait_for(sink.event_topic, lambda m: json.loads(m.payload)["type"] == "end")
    for msg in (start, end):
        assert msg.qos == 1 and not msg.retain
        body = json.loads(msg.payload)
        assert set(body) == EVENT_KEYS
        assert body["device_id"] == sink.cfg.device_id and body["model_sha256"] == "ab" * 32
        assert body["label"] == "dog" and body["threshold"] == 0.5 and body["frames"] == 7
        # logistic((score - threshold) / scale) with the default scale 1.0
        assert body["confidence"] == pytest.approx(1 / (1 + np.exp(-(0.91 - 0.5))), abs=1e-4)
        assert body["max_confidence"] == pytest.approx(1 / (1 + np.exp(-(0.95 - 0.5))), abs=1e-4)
        assert body["started_at"].endswith("Z")
        assert datetime.fromisoformat(body["started_at"]).utcoffset().total_seconds() == 0
    assert json.loads(start.payload)["ended_at"] is None
    ended = json.loads(end.payload)["ended_at"]
    assert ended.endswith("Z") and datetime.fromisoformat(ended).timestamp() == pytest.approx(1_714_560_000.0)
    sub.close()


def test_snapshot_retained_bytes_equal(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    jpeg = encode_jpeg(np.full((48, 64, 3), (200, 30, 30), np.uint8))
    sink.state_changed(change(True), snapshot_jpeg=jpeg)
    wait_until(lambda: retained_or_none(mosquitto, sink.state_topic) == "ON", what="state ON")
    assert retained(mosquitto, sink.snapshot_topic).payload == jpeg


def retained_or_none(broker, topic: str) -> str | None:
    try:
        return retained(broker, topic).text
    except AssertionError:
        return None


def test_snapshot_off_is_not_published(make_sink, mosquitto):
    sink = connected(make_sink(snapshot=False), mosquitto)
    sub = Subscriber(mosquitto, [sink.snapshot_topic, sink.state_topic])
    sink.state_changed(change(True), snapshot_jpeg=b"\xff\xd8fake")
    sub.wait_for(sink.state_topic, lambda m: m.text == "ON")
    assert sub.on(sink.snapshot_topic) == []
    sub.close()


def test_stats_json_not_retained(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    sub = Subscriber(mosquitto, [sink.stats_topic])
    sink.stats({"fps": 4.9, "inference_ms_p50": 31.0})
    msg = sub.wait_for(sink.stats_topic)
    body = json.loads(msg.payload)
    assert not msg.retain and body["fps"] == 4.9 and body["label"] == "dog"
    sub.close()


def test_stats_carry_confidence_and_its_sensor_is_discovered(make_sink, mosquitto):
    sink = connected(make_sink(confidence_scale=0.2), mosquitto)
    dev = sink.cfg.device_id
    sub = Subscriber(mosquitto, [sink.stats_topic])
    sink.stats({"fps": 5.0, "last_score": 0.5})
    sink.stats({"fps": 5.0, "last_score": 0.7})
    first = json.loads(sub.wait_for(sink.stats_topic).payload)
    second = json.loads(sub.wait_for(sink.stats_topic, lambda m: json.loads(m.payload)["last_score"] == 0.7).payload)
    assert first["confidence"] == 0.5                                   # exactly 0.5 at the threshold
    assert second["confidence"] == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-4)   # (0.7 - 0.5) / 0.2
    sub.close()
    conf = json.loads(retained(mosquitto, f"homeassistant/sensor/{dev}_dog_confidence/config").payload)
    assert conf["state_topic"] == sink.stats_topic and "value_json.confidence" in conf["value_template"]
    assert conf["unit_of_measurement"] == "%" and conf["unique_id"] == f"{dev}_dog_confidence"
    model = json.loads(retained(mosquitto, f"homeassistant/sensor/{dev}_model/config").payload)
    assert model["entity_category"] == "diagnostic" and model["state_topic"] == f"edge/{dev}/model"
    assert model["json_attributes_topic"] == f"edge/{dev}/model"


def test_kept_status_is_reasserted_after_a_broker_restart(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    first = Subscriber(mosquitto, [sink.topic("model")])
    sink.keep_retained(sink.topic("model"), '{"status": "ok"}')
    first.wait_for(sink.topic("model"))
    first.close()
    assert retained(mosquitto, sink.topic("model")).text == '{"status": "ok"}'
    mosquitto.stop()                      # no persistence: the retained store is gone
    mosquitto.start()
    sub = Subscriber(mosquitto, [sink.topic("model")])
    sub.wait_for(sink.topic("model"), timeout=30)      # re-published by the sink once it is back
    sub.close()
    assert retained(mosquitto, sink.topic("model")).text == '{"status": "ok"}'


def test_label_change_moves_topics_and_removes_the_old_entities(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    dev = sink.cfg.device_id
    sink.state_changed(change(True))
    sub = Subscriber(mosquitto, ["homeassistant/#", f"edge/{dev}/#"])
    sub.wait_for(f"homeassistant/binary_sensor/{dev}_dog/config", lambda m: m.retain)
    n = len(sub.messages)
    sink.model_changed(ModelInfo("cat", "cd" * 32, 0.7, 0.6, "", 0.1))
    for old in (f"homeassistant/binary_sensor/{dev}_dog/config", f"homeassistant/image/{dev}_dog_snapshot/config",
                f"homeassistant/sensor/{dev}_dog_confidence/config", f"edge/{dev}/dog/state"):
        sub.wait_for(old, lambda m: m.payload == b"", start=n)
    new = json.loads(sub.wait_for(f"homeassistant/binary_sensor/{dev}_cat/config", start=n).payload)
    assert new["state_topic"] == sink.state_topic == f"edge/{dev}/cat/state"
    sub.wait_for(f"edge/{dev}/cat/state", lambda m: m.text == "OFF", start=n)
    assert sub.on(f"homeassistant/sensor/{dev}_model/config")[-1].payload != b""   # not label-bound: kept
    sub.close()
    assert sink.connected and sink.info == ModelInfo("cat", "cd" * 32, 0.7, 0.6, "", 0.1)


# -- shutdown, crash -----------------------------------------------------------------------------------------

def test_close_leaves_offline_retained(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    sink.close()
    assert not sink.connected
    assert retained(mosquitto, sink.status_topic).text == "offline"
    sink.state_changed(change(True))   # after close: ignored, no error


SINK_PROCESS = """
import sys, time
from edge_oneclass.device.model.info import ModelInfo
from edge_oneclass.device.mqtt.config import MqttConfig
from edge_oneclass.device.sinks.mqtt import MqttSink
sink = MqttSink(MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), device_id=sys.argv[3]),
                ModelInfo("dog", "00", 0.5, 0.5, "", 1.0))
sink.start()
while not sink.connected:
    time.sleep(0.02)
print("ready", flush=True)
time.sleep(120)
"""


def test_hard_kill_delivers_offline_last_will(mosquitto):
    device_id = f"pi-{uuid.uuid4().hex[:6]}"
    status = f"edge/{device_id}/status"
    sub = Subscriber(mosquitto, [status])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SINK_PROCESS, mosquitto.host, str(mosquitto.port), device_id],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sub.wait_for(status, lambda m: m.text == "online", timeout=20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
        sub.wait_for(status, lambda m: m.text == "offline")
        assert retained(mosquitto, status).text == "offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()


# -- outages -------------------------------------------------------------------------------------------------

def test_broker_outage_does_not_block_and_latest_state_wins(make_sink, mosquitto):
    sink = connected(make_sink(), mosquitto)
    sink.state_changed(change(True, t=1000.0))
    wait_until(lambda: retained_or_none(mosquitto, sink.state_topic) == "ON", what="state ON before the outage")
    mosquitto.stop()

    # Behaviour check: every call finishes while the broker is still down.
    worker = threading.Thread(target=lambda: [sink.state_changed(change(p, t=1001.0 + i))
                                              for i, p in enumerate([False, True, False, True])])
    worker.start()
    worker.join(WAIT)
    assert not worker.is_alive(), "state_changed blocked while the broker was down"
    assert mosquitto.proc is None
    sink.stats({"fps": 5.0})   # dropped quietly

    mosquitto.start()   # same port; persistence is off, so every retained message must come from the sink again
    sub = Subscriber(mosquitto, [sink.event_topic])
    connected(sink, mosquitto)
    assert retained(mosquitto, sink.state_topic).text == "ON"
    assert retained(mosquitto, sink.status_topic).text == "online"
    # The QoS 1 events of the outage were held in paho's bounded queue and arrive after reconnecting.
    last_start = iso_utc(1002.0)   # the final change above: start at t=1004, started 2 s earlier
    sub.wait_for(sink.event_topic, lambda m: json.loads(m.payload)["started_at"] == last_start)
    assert retained(mosquitto, sink.state_topic).text == "ON"
    sub.close()


def test_outage_backlog_is_bounded_and_does_not_crowd_out_status(make_sink, mosquitto, caplog):
    caplog.set_level(logging.WARNING, logger="edge_oneclass.device.sinks.mqtt")
    sink = connected(make_sink(), mosquitto)
    mosquitto.stop()
    wait_until(lambda: not sink.connected, what="the sink to notice the outage")
    for i in range(MAX_QUEUED + 11):                       # more events than paho may hold; ends present
        sink.state_changed(change(i % 2 == 0, t=2000.0 + i))
    assert "event dropped" in caplog.text
    mosquitto.start()
    sub = Subscriber(mosquitto, [sink.event_topic])
    connected(sink, mosquitto)
    assert retained(mosquitto, sink.state_topic).text == "ON"
    wait_until(lambda: len(sub.on(sink.event_topic)) == MAX_QUEUED, what="the queued events")
    sub.close()


def test_broker_down_at_startup(make_sink, mosquitto, caplog):
    caplog.set_level(logging.WARNING, logger="edge_oneclass.device.sinks.mqtt")
    mosquitto.stop()
    sink = make_sink()   # start() must not raise
    wait_until(lambda: any("cannot connect" in r.getMessage() for r in caplog.records), what="a failed attempt")
    assert not sink.connected
    sink.state_changed(change(True))
    mosquitto.start()
    connected(sink, mosquitto)
    assert retained(mosquitto, sink.state_topic).text == "ON"


def test_the_daemon_waits_briefly_for_the_broker_so_a_runs_first_state_is_delivered(make_sink, mosquitto, caplog):
    """A replayed file can reach its first decision before the CONNACK (seen on a loaded machine: the first OFF
    never reached the broker). The daemon waits for the first connection, bounded, and says when it gave up."""
    caplog.set_level(logging.WARNING, logger="edge_oneclass.device.sinks.mqtt")
    sink = make_sink()
    assert sink.wait_connected(WAIT) and sink.connected
    sub = Subscriber(mosquitto, [sink.state_topic])
    try:
        sink.state_changed(change(True))
        sub.wait_for(sink.state_topic, lambda m: m.text == "ON")
    finally:
        sub.close()
    assert [m.text for m in sub.on(sink.state_topic)][:1] == ["OFF"]   # the connect's OFF came before the ON
    mosquitto.stop()
    late = make_sink()
    assert not late.wait_connected(0.5)
    assert any("no connection" in r.getMessage() and "starting anyway" in r.getMessage() for r in caplog.records)


# -- probe ---------------------------------------------------------------------------------------------------

def test_probe_broker_ok(mosquitto):
    probe_broker(MqttConfig(host=mosquitto.host, port=mosquitto.port), timeout=3)


def test_probe_broker_closed_port_names_host_port(mosquitto):
    port = mosquitto.port
    mosquitto.stop()
    with pytest.raises(BrokerError) as exc:
        probe_broker(MqttConfig(host="127.0.0.1", port=port), timeout=2)
    msg = str(exc.value)
    assert f"127.0.0.1:{port}" in msg and "mosquitto" in msg and "[mqtt] host/port" in msg
    assert "\n" not in msg


# -- credentials ---------------------------------------------------------------------------------------------

@pytest.fixture
def auth_broker(mosquitto, tmp_path):
    """The fixture's broker restarted with anonymous access off and one user (edge / s3cret)."""
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(passwd).exists():
        pytest.skip("mosquitto_passwd not installed; test_credentials_are_set_on_the_client covers the client side")
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "edge", "s3cret"], check=True, capture_output=True)
    pwfile.chmod(0o600)
    mosquitto.stop()
    # as root, mosquitto drops to user "mosquitto", who cannot read pytest's private tmp dir
    as_root = "user root\n" if os.geteuid() == 0 else ""
    mosquitto.conf.write_text(f"listener {mosquitto.port} 127.0.0.1\nallow_anonymous false\n"
                              f"password_file {pwfile}\npersistence false\n{as_root}")
    mosquitto.start()
    return mosquitto


def test_password_from_env_reaches_broker(make_sink, auth_broker, monkeypatch):
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "s3cret")
    sink = make_sink(username="edge", password_env="EDGE_MQTT_PASSWORD")
    connected(sink, auth_broker, username="edge", password="s3cret")
    probe_broker(sink.cfg, timeout=3)


def test_password_from_file_reaches_broker(make_sink, auth_broker, tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    sink = make_sink(username="edge", password_file=str(secret))
    connected(sink, auth_broker, username="edge", password="s3cret")


def test_wrong_password_probe_names_the_keys(auth_broker, monkeypatch):
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "wrong")
    cfg = MqttConfig(host=auth_broker.host, port=auth_broker.port, username="edge", password_env="EDGE_MQTT_PASSWORD")
    with pytest.raises(BrokerError, match=r"refused the login .*password_env"):
        probe_broker(cfg, timeout=3)


def test_credentials_are_set_on_the_client(monkeypatch):
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "s3cret")
    sink = MqttSink(MqttConfig(host="127.0.0.1", username="edge", password_env="EDGE_MQTT_PASSWORD"), info())
    assert (sink._client.username, sink._client.password) == ("edge", "s3cret")


# -- configuration -------------------------------------------------------------------------------------------

def test_config_defaults_and_sanitised_hostname(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "Living Room.pi")
    cfg = parse_section(MqttConfig, {"host": "broker.lan"}, "mqtt")
    assert (cfg.port, cfg.base_topic, cfg.discovery_prefix, cfg.keepalive, cfg.qos_events) == \
        (1883, "edge", "homeassistant", 30, 1)
    assert cfg.device_id == "Living_Room_pi" and cfg.snapshot and cfg.discovery and not cfg.tls
    assert cfg.stats_interval == 60.0


@pytest.mark.parametrize("data, needle", [
    ({"host": "h", "hots": "x"}, "unknown key mqtt.hots"),
    ({}, "missing key mqtt.host"),
    ({"host": "h", "port": "1883"}, "mqtt.port must be int"),
    ({"host": "h", "port": 0}, "port 0 is out of range"),
    ({"host": "h", "qos_events": 3}, "qos_events 3"),
    ({"host": "h", "base_topic": "edge/#"}, "base_topic"),
    ({"host": "h", "device_id": "my/pi"}, "device_id 'my/pi' may only contain"),
    ({"host": "h", "password_env": "X"}, "need a username"),
    ({"host": "h", "username": "u", "password_env": "X", "password_file": "/f"}, "only one of"),
    ({"host": "h", "ca_file": "/etc/hostname"}, "set tls = true"),
    ({"host": "h", "tls": True, "ca_file": "/nonexistent/ca.pem"}, "ca_file '/nonexistent/ca.pem' not found"),
])
def test_config_errors_name_the_key(data, needle):
    with pytest.raises(ConfigError) as exc:
        parse_section(MqttConfig, data, "mqtt")
    assert needle in str(exc.value)


def test_literal_password_is_refused_with_the_alternatives():
    with pytest.raises(ConfigError) as exc:
        parse_section(MqttConfig, {"host": "h", "username": "u", "password": "hunter2"}, "mqtt")
    msg = str(exc.value)
    assert msg.startswith("[mqtt]") and "password_file" in msg and "password_env" in msg
    assert "hunter2" not in msg


def test_missing_password_sources_are_config_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_PASSWORD", raising=False)
    cfg = MqttConfig(host="h", username="u", password_env="NOPE_PASSWORD")
    with pytest.raises(ConfigError, match="NOPE_PASSWORD is not set"):
        MqttSink(cfg, info())
    cfg = MqttConfig(host="h", username="u", password_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="mqtt.password_file: cannot read"):
        cfg.resolve_password()
