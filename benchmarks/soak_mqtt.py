"""The soak's MQTT side: a recorder of everything the daemon publishes, a sender of commands, and the comparison of
what arrived at the broker with the daemon's own log of decisions."""

from __future__ import annotations

import difflib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.soak_env import Decision


@dataclass
class Received:
    mono: float
    topic: str
    retain: bool
    text: str | None      # None for binary payloads (snapshots)
    size: int


class Recorder:
    """A persistent-session subscriber (clean_session=False, QoS 1) to `<root>/#`: with the broker's persistence,
    nothing published while it (or the broker) was away is lost to it, so what it misses the daemon never sent."""

    def __init__(self, host: str, port: int, root: str) -> None:
        self.root = root
        self.messages: list[Received] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-soak-recorder", clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the recorder could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connects += 1
        if not flags.session_present:
            client.subscribe(f"{self.root}/#", qos=1)
        else:
            self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        payload = bytes(message.payload)
        try:
            text = None if message.topic.endswith("/snapshot") else payload.decode()
        except UnicodeDecodeError:
            text = None
        with self._lock:
            self.messages.append(Received(time.monotonic(), message.topic, bool(message.retain), text, len(payload)))

    def on(self, suffix: str, since: float = 0.0, live_only: bool = True) -> list[Received]:
        topic = f"{self.root}/{suffix}"
        with self._lock:
            return [m for m in self.messages if m.topic == topic and m.mono >= since and not (live_only and m.retain)]

    def events(self, label: str, since: float = 0.0) -> list[dict]:
        out = []
        for m in self.on(f"{label}/event", since):
            try:
                out.append({**json.loads(m.text or ""), "_mono": m.mono})
            except ValueError:
                out.append({"type": "unparseable", "_mono": m.mono, "_text": (m.text or "")[:80]})
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Commander:
    """Publishes what a user (or an attacker on the LAN) sends the device: feedback flags, model pushes, junk."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-soak-cmd-{uuid.uuid4().hex[:6]}")
        self.client.reconnect_delay_set(1, 2)
        self.client.max_inflight_messages_set(100)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)

    def send(self, topic: str, payload: bytes | str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + 30
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.1)
        info = self.client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_now(host: str, port: int, topic: str, timeout: float = 3.0) -> str | None:
    """What a newcomer (Home Assistant after a restart) reads on `topic`: the retained payload, or None."""
    got: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-soak-probe-{uuid.uuid4().hex[:6]}")

    def on_message(c, u, message) -> None:
        if message.retain:
            got.append(bytes(message.payload).decode(errors="replace"))
        done.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return None
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


# -- the comparison -------------------------------------------------------------------------------------------

def event_key(ev: dict) -> tuple:
    """An event as the daemon's log line prints it: type, score and max to 3 decimals, positive frames."""
    return (ev.get("type"), f"{float(ev.get('score', 'nan')):.3f}", f"{float(ev.get('max_score', 'nan')):.3f}",
            int(ev.get("frames", -1)))


def compare(decisions: list[Decision], events: list[dict]) -> dict:
    """The daemon's decisions (its log, in order) against the events that reached the broker (arrival order):
    missing (logged, never arrived), duplicated (arrived more than once), extra (arrived, never logged),
    out of order (arrived, but not where the log has it)."""
    expected = [d.key() for d in decisions]
    received = [event_key(e) for e in events if e.get("type") in ("start", "end")]
    # duplicates: the same event twice in a row (QoS 1 redelivery) is collapsed before aligning
    dedup, dups = [], []
    for i, k in enumerate(received):
        if dedup and dedup[-1] == k:
            dups.append(i)
            continue
        dedup.append(k)
    sm = difflib.SequenceMatcher(a=expected, b=dedup, autojunk=False)
    missing, extra = [], []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag in ("delete", "replace"):
            missing += list(range(i1, i2))
        if tag in ("insert", "replace"):
            extra += list(range(j1, j2))
    missing_keys = Counter(expected[i] for i in missing)
    extra_keys = Counter(dedup[j] for j in extra)
    moved = missing_keys & extra_keys                  # arrived, but elsewhere in the sequence
    # starts and ends alternate at the broker (per process: a SIGKILL leaves a start without its end)
    alternation = []
    last = None
    for k in dedup:
        if last == k[0]:
            alternation.append(k)
        last = k[0]
    return {
        "expected": len(expected), "received": len(received), "duplicates": len(dups),
        "missing": sum((missing_keys - moved).values()), "extra": sum((extra_keys - moved).values()),
        "out_of_order": sum(moved.values()),
        "missing_events": [decisions[i].__dict__ for i in missing if expected[i] not in moved][:20],
        "extra_events": [dedup[j] for j in extra if dedup[j] not in moved][:20],
        "same_type_twice_in_a_row": len(alternation),
    }
