"""MQTT output: presence state, events, snapshot and stats for Home Assistant and Node-RED.

All network work happens on paho's own thread (`loop_start`), so the frame loop never waits for the broker.
Topics live under `<base_topic>/<device_id>`:

- `status`            `online` / `offline`, retained; `offline` is also the last will.
- `<label>/state`     `ON` / `OFF`, retained; re-published after every (re)connect.
- `<label>/event`     event JSON (`Event.to_json`), QoS `qos_events`, not retained.
- `<label>/snapshot`  JPEG of the best frame at the start of an episode, retained.
- `stats`             health JSON (with `confidence`), not retained.
- `model`             the model in use and the last update's outcome, retained (`device.model_update`).

Home Assistant discovery goes to `<discovery_prefix>/binary_sensor/<device_id>_<label>/config` (and an `image`
entity for the snapshot, a `<label> confidence` sensor and a diagnostic `model` sensor), sent on every connect
and again when Home Assistant announces `online` on `<discovery_prefix>/status`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from device import __version__
from device.confidence import DEFAULT_SCALE, confidence
from device.errors import BrokerError, ConfigError
from device.events import StateChange
from device.sinks.base import Sink

log = logging.getLogger(__name__)

SECTION = "mqtt"
ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
# Bound on paho's outgoing QoS>0 queue: while the broker is away, events queue up to this many and then are
# dropped; state and snapshot never queue (they are re-published on reconnect instead).
MAX_QUEUED = 100
CLOSE_WAIT_S = 2.0
_SLUG_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def topic_slug(text: str) -> str:
    """Letters, digits, `_` and `-` only: safe as an MQTT topic level and as a Home Assistant object id."""
    return _SLUG_BAD.sub("_", text.strip()).strip("_")


def default_device_id() -> str:
    return topic_slug(socket.gethostname()) or "edge"


def _check_topic_prefix(key: str, value: str) -> None:
    if not value or value.startswith("/") or value.endswith("/") or "+" in value or "#" in value:
        raise ValueError(f"{key} {value!r} must be a non-empty MQTT topic without leading/trailing '/', '+' or '#'")


@dataclass
class MqttConfig:
    """The `[mqtt]` table. Secrets never live here: the password comes from an env var or a file."""

    host: str
    port: int = 1883
    base_topic: str = "edge"
    device_id: str = field(default_factory=default_device_id)
    discovery_prefix: str = "homeassistant"
    discovery: bool = True
    client_id: str | None = None
    keepalive: int = 30
    qos_events: int = 1
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    snapshot: bool = True
    stats_interval: float = 60.0
    # Only here to reject it with an explanation (an unknown-key error would not say what to do instead).
    password: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.password is not None:
            self.password = None
            raise ValueError("a literal 'password' is not supported in the config file (world-readable, ends up in "
                             "backups); put it in a file and set password_file (e.g. systemd LoadCredential), or in "
                             "an environment variable and set password_env")
        if not self.host.strip():
            raise ValueError("host must not be empty; set it to the broker's name or IP address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range 1..65535")
        _check_topic_prefix("base_topic", self.base_topic)
        _check_topic_prefix("discovery_prefix", self.discovery_prefix)
        if not self.device_id or topic_slug(self.device_id) != self.device_id:
            raise ValueError(f"device_id {self.device_id!r} may only contain letters, digits, '_' and '-' "
                             f"(try {topic_slug(self.device_id) or 'edge'!r})")
        if not 5 <= self.keepalive <= 65535:
            raise ValueError(f"keepalive {self.keepalive} must be 5..65535 seconds")
        if self.qos_events not in (0, 1, 2):
            raise ValueError(f"qos_events {self.qos_events} must be 0, 1 or 2")
        if self.stats_interval <= 0:
            raise ValueError(f"stats_interval {self.stats_interval} must be > 0 seconds")
        if self.password_env and self.password_file:
            raise ValueError("set only one of password_env and password_file")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("password_env/password_file need a username; set username")
        tls_files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        for key, value in tls_files.items():
            if value is None:
                continue
            if not self.tls:
                raise ValueError(f"{key} is set but tls = false; set tls = true or remove {key}")
            if not Path(value).expanduser().is_file():
                raise ValueError(f"{key} {value!r} not found; check the path")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file; set cert_file (the client certificate)")
        if self.tls_insecure and not self.tls:
            raise ValueError("tls_insecure is set but tls = false; set tls = true or remove tls_insecure")

    def resolve_password(self) -> str | None:
        """Read the password from `password_env` or `password_file` now (at start-up), never from the config."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"{SECTION}.password_env: environment variable {self.password_env} is not set; "
                                  f"export it or use password_file")
            return value
        if self.password_file:
            path = Path(os.path.expandvars(self.password_file)).expanduser()
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{SECTION}.password_file: cannot read {path} ({exc.strerror or exc}); "
                                  f"check the path and its permissions") from None
        return None


def _make_client(cfg: MqttConfig, client_id: str) -> mqtt.Client:
    """A paho client with credentials and TLS applied; shared by the sink and `probe_broker`."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.resolve_password())
    if cfg.tls:
        try:
            client.tls_set(ca_certs=_expand(cfg.ca_file), certfile=_expand(cfg.cert_file),
                           keyfile=_expand(cfg.key_file))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{SECTION}: cannot load TLS files ca_file/cert_file/key_file ({exc}); "
                              f"check the paths and that key and certificate match") from None
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
    return client


def _expand(path: str | None) -> str | None:
    return str(Path(path).expanduser()) if path else None


class MqttSink(Sink):
    """Publishes presence to an MQTT broker without ever blocking the caller.

    While disconnected, only the latest state (and snapshot) is remembered and re-published on reconnect;
    events wait in paho's bounded queue (`MAX_QUEUED`) and are dropped with a log line when it is full.
    """

    def __init__(self, cfg: MqttConfig, label: str, model_sha256: str, threshold: float,
                 confidence_scale: float = DEFAULT_SCALE) -> None:
        self.cfg = cfg
        self.model_sha256 = model_sha256
        self.threshold = float(threshold)
        self.confidence_scale = float(confidence_scale)

        root = f"{cfg.base_topic}/{cfg.device_id}"
        self.status_topic = f"{root}/status"
        self.stats_topic = f"{root}/stats"
        self.model_topic = f"{root}/model"
        self.ha_status_topic = f"{cfg.discovery_prefix}/status"
        self._set_label(label)
        first_slug = self.label_slug

        self._lock = threading.Lock()
        self._commands: dict[str, Callable[[bytes], None]] = {}   # full topic -> handler (paho's thread)
        self._entities: dict[str, dict[str, Any]] = {}            # discovery topic -> extra entity config
        self._present: bool | None = None        # None until the first decision: OFF is published on connect
        self._last_snapshot: bytes | None = None
        self._snapshot_pending = False           # a snapshot arrived while the broker was away
        self._closing = False
        self._started = False
        self._failures = 0
        self._kept: dict[str, str | bytes] = {}  # retained status messages re-asserted on every connect

        client_id = cfg.client_id or f"edge-{cfg.device_id}-{first_slug}"
        self._client = _make_client(cfg, client_id)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.reconnect_delay_set(1, 30)
        self._client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def _set_label(self, label: str) -> None:
        slug = topic_slug(label)
        if not slug:
            raise ConfigError(f"label {label!r} has no letters or digits to use in MQTT topics; rename the label")
        cfg, root = self.cfg, f"{self.cfg.base_topic}/{self.cfg.device_id}"
        self.label, self.label_slug = label, slug
        self.state_topic = f"{root}/{slug}/state"
        self.event_topic = f"{root}/{slug}/event"
        self.snapshot_topic = f"{root}/{slug}/snapshot"
        self.object_id = f"{cfg.device_id}_{slug}"
        self.discovery_topic = f"{cfg.discovery_prefix}/binary_sensor/{self.object_id}/config"
        self.image_discovery_topic = f"{cfg.discovery_prefix}/image/{self.object_id}_snapshot/config"

    def model_changed(self, info: Any) -> None:
        """A new model scores from now on (`device.model_info.ModelInfo`): new sha/threshold/scale in events and
        stats; a new label moves the topics, removes the old label's Home Assistant entities (empty retained
        configs) and retained state/snapshot, and announces the new ones. The MQTT session is kept."""
        with self._lock:
            old_label, old_configs = self.label, self.discovery_configs()
            old_retained = (self.state_topic, self.snapshot_topic)
            self.model_sha256, self.threshold = info.sha256, float(info.threshold)
            self.confidence_scale = float(info.confidence_scale)
            if info.label == old_label:
                return
            self._set_label(info.label)
            self._present, self._last_snapshot, self._snapshot_pending = None, None, False
            if self._closing:
                return
            log.info("mqtt: label %r -> %r: moving topics and Home Assistant entities", old_label, info.label)
            new_configs = self.discovery_configs()
            if self.cfg.discovery:
                for topic in old_configs:
                    if topic not in new_configs:
                        self._publish(topic, "", retain=True)
            for topic in old_retained:
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
        return f"{self.cfg.base_topic}/{self.cfg.device_id}/{suffix}"

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
        object_id = f"{self.object_id}_{topic_slug(suffix)}"
        topic = f"{self.cfg.discovery_prefix}/{component}/{object_id}/config"
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
                payload = json.dumps(change.event.to_json(self.cfg.device_id, self.model_sha256,
                                                          self.confidence_scale))
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
            payload = {"device_id": self.cfg.device_id, "label": self.label, "model_sha256": self.model_sha256,
                       "threshold": self.threshold, **stats}
            if stats.get("last_score") is not None:
                payload["confidence"] = round(confidence(stats["last_score"], self.threshold,
                                                         self.confidence_scale), 4)
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
                client.subscribe(self.ha_status_topic, qos=1)
                self._publish_discovery()
            if self._snapshot_pending and self._last_snapshot is not None:
                self._snapshot_pending = not self._publish(self.snapshot_topic, self._last_snapshot, retain=True)
            self._publish_state()

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
        if message.topic != self.ha_status_topic or message.payload.strip() != ONLINE.encode():
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
        device = {
            "identifiers": [f"edge_{self.cfg.device_id}"],
            "name": f"Edge {self.cfg.device_id}",
            "model": "edge-oneclass detector",
            "manufacturer": "edge-oneclass",
            "sw_version": __version__,
        }
        common = {
            "availability_topic": self.status_topic,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device,
            "origin": {"name": "edge-oneclass", "sw_version": __version__},
        }
        sensor = {
            "name": self.label,
            "unique_id": self.object_id,
            "device_class": "occupancy",
            "state_topic": self.state_topic,
            "payload_on": ON,
            "payload_off": OFF,
            "json_attributes_topic": self.event_topic,
            **common,
        }
        image = {
            "name": f"{self.label} snapshot",
            "unique_id": f"{self.object_id}_snapshot",
            "image_topic": self.snapshot_topic,
            "content_type": "image/jpeg",
            **common,
        }
        configs = {self.discovery_topic: sensor, self.image_discovery_topic: image if self.cfg.snapshot else None}
        configs.update(self._extra_discovery(common))
        configs.update({topic: {**entity, **common} for topic, entity in self._entities.items()})
        return configs

    def _extra_discovery(self, common: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        """The `<label> confidence` sensor (0..1 shown as %, from stats) and the diagnostic `model` sensor."""
        prefix, dev = self.cfg.discovery_prefix, self.cfg.device_id
        conf = {
            "name": f"{self.label} confidence",
            "unique_id": f"{self.object_id}_confidence",
            "state_topic": self.stats_topic,
            "value_template": "{{ (value_json.confidence * 100) | round(1) if value_json.confidence is defined "
                              "and value_json.confidence is not none else none }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:gauge",
            **common,
        }
        model = {
            "name": "model",
            "unique_id": f"{dev}_model",
            "state_topic": self.model_topic,
            "value_template": "{{ value_json.status }}: {{ value_json.label }} {{ value_json.sha256[:12] }}",
            "json_attributes_topic": self.model_topic,
            "entity_category": "diagnostic",
            "icon": "mdi:brain",
            **common,
        }
        return {f"{prefix}/sensor/{self.object_id}_confidence/config": conf,
                f"{prefix}/sensor/{dev}_model/config": model}

    def _log_failure(self, what: str) -> None:
        # One warning per outage, then quiet: the backoff retries every <= 30 s and would flood the journal.
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "mqtt: %s:%d %s", self.cfg.host, self.cfg.port, what)


def probe_broker(cfg: MqttConfig, timeout: float = 5.0) -> None:
    """Connect once, synchronously, and disconnect; raise BrokerError with what to fix (for `edge-device check`)."""
    where = f"{cfg.host}:{cfg.port}"
    client = _make_client(cfg, client_id="")    # a random id: never kick the running daemon's session
    client.connect_timeout = timeout
    result: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        result["rc"] = reason_code

    client.on_connect = on_connect
    try:
        client.connect(cfg.host, cfg.port, keepalive=max(cfg.keepalive, int(timeout) + 1))
    except socket.gaierror as exc:
        raise BrokerError(f"cannot resolve MQTT broker host {cfg.host!r} ({exc.strerror}); "
                          f"check [mqtt] host") from None
    except ssl.SSLError as exc:
        raise BrokerError(f"TLS handshake with MQTT broker {where} failed ({exc.reason or exc}); "
                          f"check [mqtt] ca_file/cert_file/key_file and tls_insecure") from None
    except (TimeoutError, OSError) as exc:
        reason = exc.strerror or type(exc).__name__
        raise BrokerError(f"cannot reach MQTT broker at {where} ({reason}); is mosquitto running? "
                          f"check [mqtt] host/port") from None
    try:
        deadline = time.monotonic() + timeout
        while "rc" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        rc = result.get("rc")
        if rc is None:
            raise BrokerError(f"MQTT broker at {where} did not answer within {timeout:g} s; is it an MQTT port? "
                              f"check [mqtt] host/port and tls")
        if rc.is_failure:
            raise BrokerError(f"MQTT broker at {where} refused the login ({rc}); check [mqtt] username and "
                              f"password_env/password_file")
    finally:
        client.disconnect()
