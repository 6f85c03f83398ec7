"""MQTT output: presence state, events, snapshot and stats for Home Assistant and Node-RED.

All network work happens on paho's own thread (`loop_start`), so the frame loop never waits for the broker.
Topics live under `<base_topic>/<device_id>` (`device.mqtt.discovery.Topics`):

- `status`            `online` / `offline`, retained; `offline` is also the last will.
- `<label>/state`     `ON` / `OFF`, retained; re-published after every (re)connect.
- `<label>/event`     event JSON (`Event.to_json`), QoS `qos_events`, not retained.
- `<label>/snapshot`  JPEG of the best frame at the start of an episode, retained.
- `stats`             health JSON (with `confidence`), not retained.
- `model`             the model in use and the last update's outcome, retained (`device.update.swap`).

Home Assistant discovery (`device.mqtt.discovery`) is sent on every connect and again when Home Assistant
announces `online` on `<discovery_prefix>/status`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.model.confidence import confidence
from edge_oneclass.device.model.info import ModelInfo
from edge_oneclass.device.mqtt.client import make_client
from edge_oneclass.device.mqtt.config import MqttConfig, topic_slug
from edge_oneclass.device.mqtt.discovery import OFF, OFFLINE, ON, ONLINE, Topics, discovery_configs
from edge_oneclass.device.sinks.base import Sink

log = logging.getLogger(__name__)

# Bound on paho's outgoing QoS>0 queue: while the broker is away, events queue up to this many and then are
# dropped; state and snapshot never queue (they are re-published on reconnect instead).
MAX_QUEUED = 100
CLOSE_WAIT_S = 2.0


class MqttSink(Sink):
    """Publishes presence to an MQTT broker without ever blocking the caller.

    While disconnected, only the latest state (and snapshot) is remembered and re-published on reconnect;
    events wait in paho's bounded queue (`MAX_QUEUED`) and are dropped with a log line when it is full.
    """

    def __init__(self, cfg: MqttConfig, info: ModelInfo) -> None:
        self.cfg = cfg
        self.info = info                         # the model in use; replaced by `model_changed`
        self.topics = Topics.for_label(cfg, info.label)

        self._lock = threading.Lock()
        self._commands: dict[str, Callable[[bytes], None]] = {}   # full topic -> handler (paho's thread)
        self._entities: dict[str, dict[str, Any]] = {}            # discovery topic -> extra entity config
        self._present: bool | None = None        # None until the first decision: OFF is published on connect
        self._last_snapshot: bytes | None = None
        self._snapshot_pending = False           # a snapshot arrived while the broker was away
        self._closing = False
        self._started = False
        self._failures = 0
        self._first_connect = threading.Event()  # set by the first accepted connection
        self._kept: dict[str, str | bytes] = {}  # retained status messages re-asserted on every connect

        client_id = cfg.client_id or f"edge-{cfg.device_id}-{self.topics.label_slug}"
        self._client = make_client(cfg, client_id)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.reconnect_delay_set(1, 30)
        self._client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # topic names, as the tests and the other parts read them
    label = property(lambda self: self.topics.label)
    label_slug = property(lambda self: self.topics.label_slug)
    status_topic = property(lambda self: self.topics.status)
    stats_topic = property(lambda self: self.topics.stats)
    state_topic = property(lambda self: self.topics.state)
    event_topic = property(lambda self: self.topics.event)
    snapshot_topic = property(lambda self: self.topics.snapshot)

    def model_changed(self, info: ModelInfo) -> None:
        """A new model scores from now on: its sha, threshold and scale in events and stats; a new label moves the
        topics, removes the old label's Home Assistant entities (empty retained configs) and retained
        state/snapshot, and announces the new ones. The MQTT session is kept."""
        with self._lock:
            old, old_configs = self.topics, self.discovery_configs()
            self.info = info
            if info.label == old.label:
                return
            self.topics = Topics.for_label(self.cfg, info.label)
            self._present, self._last_snapshot, self._snapshot_pending = None, None, False
            if self._closing:
                return
            log.info("mqtt: label %r -> %r: moving topics and Home Assistant entities", old.label, info.label)
            new_configs = self.discovery_configs()
            if self.cfg.discovery:
                for topic in old_configs:
                    if topic not in new_configs:
                        self._publish(topic, "", retain=True)
            for topic in (old.state, old.snapshot):
                self._publish(topic, "", retain=True)
            if self.cfg.discovery:
                self._publish_discovery()
            self._publish_state()

    def keep_retained(self, topic: str, payload: str | bytes) -> None:
        """Publish a retained status now and again after every reconnect (a broker restart forgets it)."""
        with self._lock:
            self._kept[topic] = payload
            if not self._closing and self._client.is_connected():
                self._publish(topic, payload, retain=True)

    # -- inbound commands -------------------------------------------------------------------------------

    def topic(self, suffix: str) -> str:
        """`<base_topic>/<device_id>/<suffix>`: where this device's own messages live."""
        return self.topics.own(suffix)

    def on_command(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Call `handler(payload)` for every message on `topic` (subscribed now and after every reconnect).

        Handlers run on paho's network thread: they must not block, and hand real work to the frame loop
        (the daemon runs queued actions between two frames).
        """
        with self._lock:
            self._commands[topic] = handler
            if self._client.is_connected():
                self._client.subscribe(topic, qos=1)

    def add_discovery(self, component: str, suffix: str, config: dict[str, Any]) -> str:
        """Another Home Assistant entity on this device (e.g. the feedback buttons): its unique id, availability and
        device are added; announced now if connected and on every connect. Returns its discovery topic."""
        object_id = f"{self.topics.object_id}_{topic_slug(suffix)}"
        topic = self.topics.config_topic(component, object_id)
        with self._lock:
            self._entities[topic] = {"unique_id": object_id, **config}
            if self.cfg.discovery and not self._closing and self._client.is_connected():
                self._publish(topic, json.dumps(self.discovery_configs()[topic]), retain=True)
        return topic

    def publish_retained(self, topic: str, payload: str | bytes) -> bool:
        """A retained status message (e.g. the model in use); dropped while the broker is away."""
        with self._lock:
            if self._closing:
                return False
            return self._publish(topic, payload, retain=True)

    # -- life cycle ---------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def start(self) -> None:
        """Begin connecting in the background; a broker that is down now is retried with backoff (1..30 s)."""
        if self._started:
            return
        self._started = True
        log.info("mqtt: connecting to %s:%d as %s", self.cfg.host, self.cfg.port, self.cfg.device_id)
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Wait (bounded) for the first accepted connection, so the first state and events of a run reach the
        broker instead of racing it: a replayed file can reach its first episode before the CONNACK arrives."""
        if self._first_connect.wait(timeout):
            return True
        log.warning("mqtt: no connection to %s:%d after %.0f s; starting anyway, still trying (events wait in a "
                    "bounded queue)", self.cfg.host, self.cfg.port, timeout)
        return False

    def close(self) -> None:
        """Publish `offline` (retained), wait for it briefly, then disconnect; a clean exit sends no last will."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            info = None
            if self._client.is_connected():   # QoS 0 is ordered before DISCONNECT on the same TCP stream
                info = self._client.publish(self.status_topic, OFFLINE, qos=0, retain=True)
        if info is not None:
            try:
                info.wait_for_publish(CLOSE_WAIT_S)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: offline status not delivered to %s:%d (%s)", self.cfg.host, self.cfg.port, exc)
        self._client.disconnect()
        if self._started:
            self._client.loop_stop()
        log.info("mqtt: closed connection to %s:%d", self.cfg.host, self.cfg.port)

    # -- Sink ---------------------------------------------------------------------------------------------

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        """Snapshot first, then event, then state: an automation triggered by ON finds the picture in place."""
        try:
            with self._lock:
                self._present = change.present
                if self._closing:
                    return
                if snapshot_jpeg and self.cfg.snapshot:
                    self._last_snapshot = bytes(snapshot_jpeg)
                    self._snapshot_pending = not self._publish(self.snapshot_topic, self._last_snapshot, retain=True)
                payload = json.dumps(change.event.to_json(self.cfg.device_id, self.info.sha256,
                                                          self.info.confidence_scale))
                rc = self._client.publish(self.event_topic, payload, qos=self.cfg.qos_events).rc
                # QoS>0 while disconnected reports NO_CONN but stays in paho's queue; QUEUE_SIZE means dropped.
                if rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or (self.cfg.qos_events == 0 and rc != 0):
                    log.warning("mqtt: %s event dropped: broker %s:%d away and nothing queued (%s)",
                                change.event.type, self.cfg.host, self.cfg.port, mqtt.error_string(rc))
                self._publish_state()
        except Exception:  # a broken sink must not take the frame loop down
            log.exception("mqtt: failed to publish state change")

    def stats(self, stats: dict[str, Any]) -> None:
        """Health figures, not retained; skipped while disconnected (the next ones will follow)."""
        if self._closing or not self._client.is_connected():
            return
        try:
            info = self.info
            payload = {"device_id": self.cfg.device_id, "label": info.label, "model_sha256": info.sha256,
                       "threshold": info.threshold, **stats}
            if stats.get("last_score") is not None:
                payload["confidence"] = round(confidence(stats["last_score"], info.threshold,
                                                         info.confidence_scale), 4)
            self._publish(self.stats_topic, json.dumps(payload, default=str))
        except Exception:
            log.exception("mqtt: failed to publish stats")

    # -- paho callbacks (network thread) ------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._log_failure(f"broker refused the connection ({reason_code}); check [mqtt] username and "
                              f"password_env/password_file")
            return
        self._failures = 0
        log.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        with self._lock:
            if self._closing:
                return
            self._publish(self.status_topic, ONLINE, retain=True)
            for topic, payload in self._kept.items():
                self._publish(topic, payload, retain=True)
            for topic in self._commands:
                client.subscribe(topic, qos=1)
            if self.cfg.discovery:
                client.subscribe(self.topics.ha_status, qos=1)
                self._publish_discovery()
            if self._snapshot_pending and self._last_snapshot is not None:
                self._snapshot_pending = not self._publish(self.snapshot_topic, self._last_snapshot, retain=True)
            self._publish_state()
        self._first_connect.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._log_failure("cannot connect; is mosquitto running? check [mqtt] host/port; retrying")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if not self._closing:
            log.warning("mqtt: lost connection to %s:%d (%s); reconnecting", self.cfg.host, self.cfg.port,
                        reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self._commands.get(message.topic)
        if handler is not None:
            try:
                handler(bytes(message.payload))
            except Exception:  # a bad message must never take paho's thread (and every other message) down
                log.exception("mqtt: handling a message on %s failed", message.topic)
            return
        if message.topic != self.topics.ha_status or message.payload.strip() != ONLINE.encode():
            return
        log.info("mqtt: Home Assistant came online; re-sending discovery")
        with self._lock:
            if not self._closing:
                self._publish_discovery()
                self._publish_state()

    # -- helpers (called with self._lock held) -------------------------------------------------------------

    def _publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> bool:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _publish_state(self) -> None:
        # QoS 0 on purpose, like status, discovery and snapshot: paho replays queued QoS>0 messages *after*
        # on_connect, which could overwrite the latest retained state with a stale one, and a queue full of
        # events would refuse them. Everything retained is re-asserted on every connect instead.
        self._publish(self.state_topic, ON if self._present else OFF, retain=True)

    def _publish_discovery(self) -> None:
        for topic, config in self.discovery_configs().items():
            payload = json.dumps(config) if config is not None else ""   # empty retained payload removes it
            self._publish(topic, payload, retain=True)

    def discovery_configs(self) -> dict[str, dict[str, Any] | None]:
        """Home Assistant discovery payloads by topic; None means "remove this entity"."""
        return discovery_configs(self.cfg, self.topics, self._entities)

    def _log_failure(self, what: str) -> None:
        # One warning per outage, then quiet: the backoff retries every <= 30 s and would flood the journal.
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "mqtt: %s:%d %s", self.cfg.host, self.cfg.port, what)
