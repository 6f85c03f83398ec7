"""Fast versions of benchmarks/soak.py's faults: real processes SIGKILLed at random moments while they write the
device's state, and a real broker restarted under a real daemon process.

(a) A child process writes the feedback bank in a loop (FeedbackBank.add_negatives on real files) and is SIGKILLed
    at random moments: the bank then reads as the old one or a newer complete one, never half of one, and each
    kill leaves at most the one temporary file it interrupted.
(b) The same for the model store (ModelStore.stage + promote, as a push does): active_model_path() then gives a
    model that passes load_verified, the old one or the new one (between promote()'s two renames, the running
    one from previous/).
(c) The daemon is present (state ON), the broker stops, the episode ends while it is down, the broker comes back:
    the retained state is OFF, and a subscriber with a persistent session at a broker that keeps its database
    gets the end event, after the start, even when it reconnects after the daemon did.

Two of these were soak findings, fixed since: a killed writer's temporary bank file is removed by the next writer,
and a crash between promote()'s renames starts the model that was running (previous/), not the factory one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from mqtt_subscriber import Msg, Subscriber, retained, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from test_daemon import EDGE_DEVICE, FAKE_PICAMERA2, ROOT, write_config

from edge_oneclass.device.config import load_config
from edge_oneclass.device.feedback.bank import BANK_FILE, FeedbackBank, _as_stored
from edge_oneclass.device.model.card import load_verified
from edge_oneclass.device.update.store import ModelStore, active_model_path, store_dir

DIM = 1000          # the standard model's embedding size: a bank of a few hundred negatives is a few hundred KB
BATCH = 16          # negatives per write


def child(code: str, *args: str, **popen) -> subprocess.Popen:
    """`python -c code args…` with this checkout on the path; returns once it printed `ready`."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **popen)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"ready\n", f"child did not start: {line!r}"
    return proc


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()


# -- (a) the feedback bank --------------------------------------------------------------------------------------

BANK_WRITER = """
import sys
import numpy as np
from edge_oneclass.device.feedback.bank import FeedbackBank
folder, seed, dim, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bank = FeedbackBank(folder, dim, max_negatives=10**6)
bank.load()
rng = np.random.default_rng(seed)
print("ready", flush=True)
i = 0
while True:
    bank.add_negatives(rng.normal(size=(batch, dim)).astype(np.float32), [f"{seed}-{i}-{j}" for j in range(batch)])
    i += 1
"""


def batches(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(BATCH, DIM)).astype(np.float32) for _ in range(n)]


def temps(folder: Path) -> set[str]:
    return {p.name for p in folder.glob(f".{BANK_FILE}.*.tmp")}


def read_bank(folder: Path) -> FeedbackBank:
    bank = FeedbackBank(folder, DIM, max_negatives=10**6)
    bank.load()
    assert not list(folder.glob(f"{BANK_FILE}.corrupt-*")), "the bank was unreadable (half written) and set aside"
    return bank


def test_sigkill_during_bank_writes_leaves_the_old_or_a_new_bank(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    rnd = random.Random(20261202)
    sources: list[str] = []
    mid_write = 0
    for kill in range(12):
        before = temps(folder) if folder.exists() else set()
        proc = child(BANK_WRITER, str(folder), str(kill), str(DIM), str(BATCH))
        time.sleep(rnd.uniform(0.05, 0.4))
        sigkill(proc)
        left = temps(folder) - before
        assert len(left) <= 1, f"one kill left {len(left)} temporary files: {sorted(left)}"
        mid_write += len(left)
        bank = read_bank(folder)
        got = bank.neg_sources
        # the bank only grows (no bound here): the old one is a prefix of whatever is on disk now
        assert got[:len(sources)] == sources, "the bank lost or changed what an earlier write had saved"
        new = got[len(sources):]
        assert len(new) % BATCH == 0 and len(bank.negatives) == len(got) == len(bank.neg_added)
        n = len(new) // BATCH
        if n:   # the last batch on disk is exactly what the child wrote, to float16
            assert new[-1] == f"{kill}-{n - 1}-{BATCH - 1}"
            np.testing.assert_array_equal(bank.negatives[-BATCH:], _as_stored(batches(kill, n)[-1]))
        sources = got
    assert sources, "no write ever completed: the kills came too early to test anything"
    assert mid_write >= 1, "no kill landed during a write: the test did not exercise the case it is about"
    # A killed writer's temporary file is removed by the next writer: see the next test.


def test_the_next_writer_removes_a_killed_writers_temp_file(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    for kill in range(20):
        proc = child(BANK_WRITER, str(folder), str(kill), str(DIM), str(BATCH))
        time.sleep(0.2)
        sigkill(proc)
        if temps(folder):
            break
    assert temps(folder), "no kill landed during a write"
    bank = read_bank(folder)
    bank.add_negatives(batches(999, 1)[0], [f"next-{j}" for j in range(BATCH)])
    assert not temps(folder)


# -- (b) the model store ------------------------------------------------------------------------------------------

STORE_WRITER = """
import json, sys
from pathlib import Path
from edge_oneclass.device.config import load_config
from edge_oneclass.device.update.store import ModelStore, active_model_path, model_files, store_dir
cfg = load_config(sys.argv[1])
variants = [Path(p) / "model.tflite" for p in sys.argv[2:]]
store = ModelStore(store_dir(cfg))
store.cleanup()                                   # what the daemon does at start
running = active_model_path(cfg)                  # the model the daemon would run
log = open(store.root.parent / "pushes.log", "a", buffering=1)
threshold = lambda p: json.loads(p.with_name("model.json").read_text())["threshold"]
print("ready", flush=True)
i = 0
while True:
    new = variants[i % len(variants)]
    i += 1
    if threshold(new) == threshold(running):
        continue
    log.write(f"{threshold(running)} {threshold(new)}\\n")
    staged = store.stage(model_files(new))
    running = store.promote(staged, running.parent) / "model.tflite"
"""


def model_variant(src: Path, dst: Path, threshold: float) -> Path:
    """The brightness model with another threshold in model.json (its sha256 still matches model.tflite)."""
    dst.mkdir(parents=True)
    shutil.copy2(src, dst / "model.tflite")
    card = json.loads(src.with_name("model.json").read_text())
    card["threshold"] = threshold
    (dst / "model.json").write_text(json.dumps(card, indent=2))
    return dst


def test_sigkill_during_model_store_writes_leaves_the_old_or_the_new_model(tmp_path: Path,
                                                                         brightness_model: Path) -> None:
    factory = model_variant(brightness_model, tmp_path / "factory", 0.5)
    a = model_variant(brightness_model, tmp_path / "a", 0.4)
    b = model_variant(brightness_model, tmp_path / "b", 0.6)
    cfg_path = write_config(tmp_path, "picamera2", factory / "model.tflite")
    cfg = load_config(cfg_path)
    rnd = random.Random(7)
    outcomes = {"old": 0, "new": 0, "killed mid-push": 0}
    for _ in range(25):
        proc = child(STORE_WRITER, str(cfg_path), str(a), str(b))
        time.sleep(rnd.uniform(0.0, 0.15))
        sigkill(proc)
        pushes = store_dir(cfg).parent / "pushes.log"
        lines = pushes.read_text().splitlines() if pushes.is_file() else []
        if not lines:
            continue
        old, new = (float(x) for x in lines[-1].split())
        path = active_model_path(cfg)
        card = load_verified(path)              # raises if the model it picked is half written
        if card.threshold == old:
            outcomes["old"] += 1
        elif card.threshold == new:
            outcomes["new"] += 1
        else:
            raise AssertionError(f"{path} is neither the old model nor the new one (threshold {card.threshold})")
        outcomes["killed mid-push"] += any(p.name.startswith(".") for p in store_dir(cfg).iterdir())
        ModelStore(store_dir(cfg)).cleanup()
        assert not [p for p in store_dir(cfg).iterdir() if p.name.startswith(".")], "cleanup left temp folders"
    assert outcomes["old"] + outcomes["new"] >= 10, outcomes
    assert outcomes["killed mid-push"] >= 3, f"too few kills landed inside a push to test anything: {outcomes}"


STORE_WRITER_STOPPED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from edge_oneclass.device.config import load_config
from edge_oneclass.device.update.store import ModelStore, active_model_path, model_files, store_dir
cfg = load_config(sys.argv[1])
store = ModelStore(store_dir(cfg))
running = active_model_path(cfg)
a, b = Path(sys.argv[2]) / "model.tflite", Path(sys.argv[3]) / "model.tflite"
running = store.promote(store.stage(model_files(a)), running.parent) / "model.tflite"     # push A: runs from current/
real_replace = os.replace
def replace(src, dst):                        # stop right after current/ became previous/ (a power cut's moment)
    real_replace(src, dst)
    if Path(dst).name == "previous" and Path(src).name == "current":
        os.kill(os.getpid(), signal.SIGSTOP)
os.replace = replace
print("ready", flush=True)
store.promote(store.stage(model_files(b)), running.parent)                                  # push B
"""


def test_a_crash_between_the_two_renames_starts_the_model_that_was_running(tmp_path: Path,
                                                                          brightness_model: Path) -> None:
    factory = model_variant(brightness_model, tmp_path / "factory", 0.5)
    a = model_variant(brightness_model, tmp_path / "a", 0.4)
    b = model_variant(brightness_model, tmp_path / "b", 0.6)
    cfg_path = write_config(tmp_path, "picamera2", factory / "model.tflite")
    proc = child(STORE_WRITER_STOPPED_BETWEEN_RENAMES, str(cfg_path), str(a), str(b))
    _, status = os.waitpid(proc.pid, os.WUNTRACED)          # stopped between the renames
    assert os.WIFSTOPPED(status)
    sigkill(proc)
    cfg = load_config(cfg_path)
    assert load_verified(active_model_path(cfg)).threshold in (0.4, 0.6)     # A (running) or B (pushed)


# -- (c) the broker restarts during an episode ---------------------------------------------------------------------

ROOT_TOPIC = "edge/pi-faults"
BRIGHT = "np.full((h, w, 3), 230, np.uint8)"
assert BRIGHT in FAKE_PICAMERA2, "tests/test_daemon.py's fake picamera2 changed: update the level patch below"
# tests/test_daemon.py's fake picamera2, its brightness read from a file the test rewrites (atomically)
FAKE_PICAMERA2_LEVEL = FAKE_PICAMERA2.replace(
    BRIGHT, "np.full((h, w, 3), int(open(os.environ['FAKE_PICAMERA2_LEVEL_FILE']).read()), np.uint8)")


def set_level(path: Path, level: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(level))
    os.replace(tmp, path)


class SessionSubscriber(Subscriber):
    """tests/mqtt_subscriber.Subscriber with a persistent session (clean_session=False, fixed client id): with a
    broker that keeps its database, what is published while it is away waits for it."""

    def __init__(self, broker, topics: list[str], client_id: str) -> None:
        # not Subscriber.__init__: it makes a clean-session client
        self.messages: list[Msg] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "test subscriber could not subscribe"


def test_broker_restart_during_an_episode_retains_off_and_delivers_the_end(tmp_path: Path, brightness_model: Path,
                                                                          persistent_mosquitto) -> None:
    broker = persistent_mosquitto
    level = tmp_path / "level"
    set_level(level, 230)
    fake = tmp_path / "fake_modules"
    fake.mkdir()
    (fake / "picamera2.py").write_text(FAKE_PICAMERA2_LEVEL)
    extra = f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ndevice_id = "pi-faults"\nkeepalive = 5\n'
    cfg = write_config(tmp_path, "picamera2", brightness_model, extra=extra, fps=10.0)
    log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}", "FAKE_PICAMERA2_LEVEL_FILE": str(level)}
    state, event = f"{ROOT_TOPIC}/bright/state", f"{ROOT_TOPIC}/bright/event"
    sub = SessionSubscriber(broker, [f"{ROOT_TOPIC}/#"], "faults-recorder")
    with log.open("w") as err:
        daemon = subprocess.Popen([*EDGE_DEVICE, "run", "--config", str(cfg)], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        start = sub.wait_for(event, lambda m: json.loads(m.payload)["type"] == "start", timeout=30)
        sub.wait_for(state, lambda m: m.payload == b"ON", timeout=10)
        broker.stop()                                       # saves its database, drops every connection
        assert broker.saved(), broker.log.read_text()
        sub.client.disconnect()                             # the subscriber stays away until the daemon is back:
        sub.client.loop_stop()                              # what it gets, it gets from its session at the broker
        set_level(level, 20)                                # the subject leaves while the broker is away
        wait_until(lambda: "bright absent at" in log.read_text(), timeout=30, what="the daemon's end decision")
        assert daemon.poll() is None, log.read_text()
        broker.start()                                      # same port; the retained state there is still ON
        wait_until(lambda: log.read_text().count("mqtt: connected") >= 2, timeout=60, what="the daemon's reconnect")
        time.sleep(1.0)                                     # its re-asserted state and queued end event go out
        sub.client.reconnect()
        sub.client.loop_start()
        end = sub.wait_for(event, lambda m: json.loads(m.payload)["type"] == "end", timeout=30)
        # what a newcomer (Home Assistant after its own restart) reads: the daemon re-asserted OFF on reconnect
        assert retained(broker, state).payload == b"OFF"
        events = [json.loads(m.payload) for m in sub.on(event)]
        assert [e["type"] for e in events] == ["start", "end"]          # nothing lost, nothing twice
        assert sub.messages.index(end) > sub.messages.index(start)
        assert events[1]["started_at"] == events[0]["started_at"] and events[1]["ended_at"]
        assert sub.on(state)[-1].payload == b"OFF"
        text = log.read_text()
        assert text.count("bright present at") == 1 and text.count("bright absent at") == 1
        assert "lost connection" in text and "Traceback" not in text
    finally:
        sub.close()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(15)
    assert daemon.returncode == 0, log.read_text()[-2000:]
