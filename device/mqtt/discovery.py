"""Topic names and Home Assistant MQTT discovery for one device and label.

Everything lives under `<base_topic>/<device_id>`; the label's own topics under `<label slug>/`. Discovery goes to
`<discovery_prefix>/<component>/<object id>/config`: the occupancy binary sensor, the snapshot `image`, a
`<label> confidence` sensor (from stats), a diagnostic `model` sensor, and any entity another part adds (the
feedback buttons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_oneclass.device import __version__
from edge_oneclass.device.errors import ConfigError
from edge_oneclass.device.mqtt.config import MqttConfig, topic_slug

ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"


@dataclass(frozen=True)
class Topics:
    root: str                  # <base_topic>/<device_id>
    label: str
    label_slug: str
    object_id: str             # <device_id>_<label slug>: Home Assistant's unique id of the binary sensor
    discovery_prefix: str

    @classmethod
    def for_label(cls, cfg: MqttConfig, label: str) -> Topics:
        slug = topic_slug(label)
        if not slug:
            raise ConfigError(f"label {label!r} has no letters or digits to use in MQTT topics; rename the label")
        return cls(f"{cfg.base_topic}/{cfg.device_id}", label, slug, f"{cfg.device_id}_{slug}", cfg.discovery_prefix)

    def own(self, suffix: str) -> str:
        """`<base_topic>/<device_id>/<suffix>`: where this device's own messages live."""
        return f"{self.root}/{suffix}"

    @property
    def status(self) -> str:
        return self.own("status")

    @property
    def stats(self) -> str:
        return self.own("stats")

    @property
    def model(self) -> str:
        return self.own("model")

    @property
    def state(self) -> str:
        return self.own(f"{self.label_slug}/state")

    @property
    def event(self) -> str:
        return self.own(f"{self.label_slug}/event")

    @property
    def snapshot(self) -> str:
        return self.own(f"{self.label_slug}/snapshot")

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{object_id}/config"


def discovery_configs(cfg: MqttConfig, topics: Topics, extra: dict[str, dict[str, Any]] | None = None
                      ) -> dict[str, dict[str, Any] | None]:
    """Home Assistant discovery payloads by topic; None means "remove this entity". `extra` maps more config
    topics to entity configs (availability and device are added here)."""
    device = {
        "identifiers": [f"edge_{cfg.device_id}"],
        "name": f"Edge {cfg.device_id}",
        "model": "edge-oneclass detector",
        "manufacturer": "edge-oneclass",
        "sw_version": __version__,
    }
    common = {
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device,
        "origin": {"name": "edge-oneclass", "sw_version": __version__},
    }
    oid = topics.object_id
    sensor = {
        "name": topics.label,
        "unique_id": oid,
        "device_class": "occupancy",
        "state_topic": topics.state,
        "payload_on": ON,
        "payload_off": OFF,
        "json_attributes_topic": topics.event,
        **common,
    }
    image = {
        "name": f"{topics.label} snapshot",
        "unique_id": f"{oid}_snapshot",
        "image_topic": topics.snapshot,
        "content_type": "image/jpeg",
        **common,
    }
    confidence = {
        "name": f"{topics.label} confidence",
        "unique_id": f"{oid}_confidence",
        "state_topic": topics.stats,
        "value_template": "{{ (value_json.confidence * 100) | round(1) if value_json.confidence is defined "
                          "and value_json.confidence is not none else none }}",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "icon": "mdi:gauge",
        **common,
    }
    model = {
        "name": "model",
        "unique_id": f"{cfg.device_id}_model",
        "state_topic": topics.model,
        "value_template": "{{ value_json.status }}: {{ value_json.label }} {{ value_json.sha256[:12] }}",
        "json_attributes_topic": topics.model,
        "entity_category": "diagnostic",
        "icon": "mdi:brain",
        **common,
    }
    configs: dict[str, dict[str, Any] | None] = {
        topics.config_topic("binary_sensor", oid): sensor,
        topics.config_topic("image", f"{oid}_snapshot"): image if cfg.snapshot else None,
        topics.config_topic("sensor", f"{oid}_confidence"): confidence,
        topics.config_topic("sensor", f"{cfg.device_id}_model"): model,
    }
    configs.update({topic: {**entity, **common} for topic, entity in (extra or {}).items()})
    return configs
