"""The whole product: a model trained by train-edge on real dog photos, a video the test writes from real
photos (empty scene, a dog stretch, empty scene again), replayed by the daemon into a real Mosquitto
broker and a gpiozero MockFactory pin."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from mqtt_subscriber import Subscriber, retained

from edge_oneclass.device.config import load_config
from edge_oneclass.device.daemon import Daemon
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.card import ModelCard

FPS = 10
SIZE = (320, 240)


# Rooms and house fronts (the Houses dataset among the dev no-dog photos): what an empty home camera sees. This test
# checks the plumbing (MQTT, GPIO, events), so the scenes are ones any honest model scores clearly under its
# threshold: the first 25 Houses photos whose whole view stays at least half the label's score spread under it with
# the suite's model trained at seeds 0, 1 and 2 (checked on seeds 3 and 4: the same). Taken in manifest order, the
# list held 000077, which scored 0.10 spreads under the threshold at seed 3: a knife's edge, not a test.
SCENES = ["000002", "000006", "000009", "000010", "000011", "000016", "000022", "000034", "000037", "000041",
          "000046", "000049", "000051", "000057", "000063", "000070", "000076", "000078", "000081", "000083",
          "000084", "000086", "000095", "000096", "000099"]


def write_video(path: Path, segments: list[tuple[list[Path], int]]) -> int:
    """MJPG AVI at FPS: each photo of a segment held for the given number of frames. Returns the frame count."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    assert writer.isOpened()
    n = 0
    for photos, hold in segments:
        for p in photos:
            bgr = cv2.cvtColor(cv2.resize(load_rgb(p), SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
            for _ in range(hold):
                writer.write(bgr)
                n += 1
    writer.release()
    return n


@pytest.fixture
def mock_pins():
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


def test_replay_drives_mqtt_and_gpio(trained_model: Path, dev_data: Path, mosquitto, mock_pins, tmp_path: Path):
    scenes = [dev_data / "nodog" / f"{n}.jpg" for n in SCENES]
    dogs = [dev_data / "dog" / f"{i:06d}.jpg" for i in range(400, 412)]  # held out: never seen in training
    video = tmp_path / "driveway.avi"
    n_frames = write_video(video, [(scenes[:5], 2), (dogs, 4), (scenes[5:25], 4)])
    dog_from, dog_to = 10 / FPS, (10 + 48) / FPS      # seconds on the video's own timeline
    model = tmp_path / "model.tflite"
    model.write_bytes((trained_model / "model.tflite").read_bytes())
    (tmp_path / "model.json").write_bytes((trained_model / "model.json").read_bytes())
    card = ModelCard.load(tmp_path / "model.json")
    config = tmp_path / "config.toml"
    config.write_text(f"""
[camera]
source = "{video}"
fps = {FPS}
[model]
path = "{model}"
threads = 2
[detect]
on_frames = 3
window = 5
off_delay = 3.0
[feedback]
dir = "{tmp_path / 'feedback'}"
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
base_topic = "edge"
device_id = "garden-pi"
discovery_prefix = "homeassistant"
[gpio]
pin = 17
active_high = true
""")
    root = "edge/garden-pi"
    sub = Subscriber(mosquitto, [f"{root}/#", "homeassistant/#"])
    try:
        assert Daemon(load_config(config)).run() == 0
        sub.wait_for(f"{root}/dog/event", lambda m: b'"end"' in m.payload)
        sub.wait_for(f"{root}/status", lambda m: m.payload == b"offline")
    finally:
        sub.close()

    # status: online while running, offline (retained) after a clean exit
    assert sub.on(f"{root}/status")[0].payload == b"online"
    assert retained(mosquitto, f"{root}/status").payload == b"offline"

    # state: ON during the dog stretch, OFF after; retained
    states = [m.text for m in sub.on(f"{root}/dog/state")]
    changes = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert changes == ["OFF", "ON", "OFF"], states
    assert retained(mosquitto, f"{root}/dog/state").payload == b"OFF"

    # events: start then end, with sane fields
    start, end = (json.loads(m.payload) for m in sub.on(f"{root}/dog/event"))
    assert (start["type"], end["type"]) == ("start", "end")
    for ev in (start, end):
        assert ev["label"] == "dog" and ev["device_id"] == "garden-pi" and ev["model_sha256"] == card.sha256
        assert ev["threshold"] == pytest.approx(card.threshold, abs=1e-4)
        assert ev["max_score"] >= ev["score"]
    assert start["score"] >= card.threshold and start["ended_at"] is None
    t_start = datetime.fromisoformat(start["started_at"]).timestamp()
    t_end = datetime.fromisoformat(end["ended_at"]).timestamp()
    assert end["started_at"] == start["started_at"]
    assert dog_from <= t_start <= dog_from + 1.0, start       # fast on: within a second of the dog appearing
    # ended_at is when the dog was last seen; the OFF came off_delay (3 s) later, before the video ended
    assert dog_to - 0.5 <= t_end < dog_to, end
    assert t_end + 3.0 < n_frames / FPS
    assert end["frames"] >= 0.8 * 48

    # snapshot: a real JPEG of the frame that started the event, retained
    snap = sub.on(f"{root}/dog/snapshot")
    assert len(snap) == 1
    assert retained(mosquitto, f"{root}/dog/snapshot").payload == snap[0].payload
    img = cv2.imdecode(np.frombuffer(snap[0].payload, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (SIZE[1], SIZE[0])

    # Home Assistant discovery: retained, valid, pointing at the topics above
    disc = json.loads(retained(mosquitto, "homeassistant/binary_sensor/garden-pi_dog/config").payload)
    assert disc["device_class"] == "occupancy"
    assert disc["state_topic"] == f"{root}/dog/state"
    assert disc["payload_on"] == "ON" and disc["payload_off"] == "OFF"
    assert disc["unique_id"] == "garden-pi_dog" and disc["device"]["identifiers"]
    avail = disc.get("availability_topic") or disc["availability"][0]["topic"]
    assert avail == f"{root}/status"

    # GPIO followed the state: low, high while the dog was there, low at the end
    pin = mock_pins.pin(17)
    levels = [s.state for s in pin.states]
    compact = [v for i, v in enumerate(levels) if i == 0 or v != levels[i - 1]]
    assert compact == [False, True, False], levels
