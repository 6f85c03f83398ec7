"""A real MQTT subscriber for the tests: records every message, waits for the one it needs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 10.0


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode()


def wait_until(cond: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Subscriber:
    """A real paho client that records every message on `topics`; `wait_for` blocks until one matches."""

    def __init__(self, broker, topics: list[str], username: str | None = None, password: str | None = None) -> None:
        self.messages: list[Msg] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT), "test subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append(Msg(message.topic, bytes(message.payload), message.qos, bool(message.retain)))
            self._cond.notify_all()

    def wait_for(self, topic: str, pred: Callable[[Msg], bool] = lambda m: True, timeout: float = WAIT,
                 start: int = 0) -> Msg:
        """First message on `topic` (from index `start`) satisfying `pred`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[start:]:
                    if m.topic == topic and pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:40]) for m in self.messages]
                    raise AssertionError(f"no matching message on {topic} within {timeout} s; saw {seen}")
                self._cond.wait(left)

    def on(self, topic: str) -> list[Msg]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker, topic: str, **auth) -> Msg:
    """What a newcomer gets on `topic`: must be a retained message."""
    sub = Subscriber(broker, [topic], **auth)
    try:
        msg = sub.wait_for(topic)
        assert msg.retain, f"{topic} is not retained"
        return msg
    finally:
        sub.close()
