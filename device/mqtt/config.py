"""The `[mqtt]` table, also what `push-edge` builds from its options: one set of checks and one password rule."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_oneclass.device.errors import ConfigError

SECTION = "mqtt"
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
