"""The paho client, made and connected one way for the daemon's sink, `edge-device check` and `push-edge`.

Errors name what to fix in the words of whoever is asking: the daemon's `[mqtt]` keys, or push-edge's options
(`Hints`).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_oneclass.device.errors import BrokerError, ConfigError
from edge_oneclass.device.mqtt.config import MqttConfig


@dataclass(frozen=True)
class Hints:
    """What a user changes when the broker cannot be used: the config keys, or the command-line options."""

    address: str = "[mqtt] host/port"
    login: str = "[mqtt] username and password_env/password_file"
    tls: str = "[mqtt] ca_file/cert_file/key_file and tls_insecure"
    port_kind: str = "[mqtt] host/port and tls"


CONFIG_HINTS = Hints()
CLI_HINTS = Hints("--host/--port", "--username and the password", "--ca-file/--cert-file/--key-file and --tls-insecure",
                  "--port and --tls")


def make_client(cfg: MqttConfig, client_id: str, password: str | None = None, hints: Hints = CONFIG_HINTS
                ) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, clean session) with credentials and TLS applied. `password` overrides the one
    `cfg` names (password_env / password_file)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    if cfg.username:
        client.username_pw_set(cfg.username, password if password is not None else cfg.resolve_password())
    if cfg.tls:
        try:
            client.tls_set(ca_certs=_expand(cfg.ca_file), certfile=_expand(cfg.cert_file),
                           keyfile=_expand(cfg.key_file))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"cannot load the TLS files ({exc}); check {hints.tls} and that key and certificate "
                              f"match") from None
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
    return client


def _expand(path: str | None) -> str | None:
    return str(Path(path).expanduser()) if path else None


def connect_and_wait(client: mqtt.Client, cfg: MqttConfig, timeout: float, hints: Hints = CONFIG_HINTS) -> None:
    """Connect synchronously and wait for the broker's answer; BrokerError saying what to fix otherwise.

    Runs paho's loop in this thread until the CONNACK; the caller starts `loop_start()` afterwards if it stays.
    Any `on_connect` the caller set is still called.
    """
    where = f"{cfg.host}:{cfg.port}"
    result: dict[str, Any] = {}
    previous = client.on_connect

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        result["rc"] = reason_code
        if previous is not None:
            previous(c, userdata, flags, reason_code, properties)

    client.on_connect = on_connect
    client.connect_timeout = timeout
    try:
        try:
            client.connect(cfg.host, cfg.port, keepalive=max(cfg.keepalive, int(timeout) + 1))
        except socket.gaierror as exc:
            raise BrokerError(f"cannot resolve MQTT broker host {cfg.host!r} ({exc.strerror}); "
                              f"check {hints.address}") from None
        except ssl.SSLError as exc:
            raise BrokerError(f"TLS handshake with MQTT broker {where} failed ({exc.reason or exc}); "
                              f"check {hints.tls}") from None
        except (TimeoutError, OSError) as exc:
            reason = exc.strerror or type(exc).__name__
            raise BrokerError(f"cannot reach MQTT broker at {where} ({reason}); is mosquitto running? "
                              f"check {hints.address}") from None
        deadline = time.monotonic() + timeout
        while "rc" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
    finally:
        client.on_connect = previous
    rc = result.get("rc")
    if rc is None:
        raise BrokerError(f"MQTT broker at {where} did not answer within {timeout:g} s; is it an MQTT port? "
                          f"check {hints.port_kind}")
    if rc.is_failure:
        raise BrokerError(f"MQTT broker at {where} refused the login ({rc}); check {hints.login}")


def probe_broker(cfg: MqttConfig, timeout: float = 5.0) -> None:
    """Connect once, synchronously, and disconnect; raise BrokerError with what to fix (for `edge-device check`)."""
    client = make_client(cfg, client_id="")    # a random id: never kick the running daemon's session
    try:
        connect_and_wait(client, cfg, timeout)
    finally:
        client.disconnect()
