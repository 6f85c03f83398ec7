"""One JSON line per state change on stdout: the output of a first run, which needs no broker."""

from __future__ import annotations

import json
import socket
import sys
from typing import Any, TextIO

from device.confidence import DEFAULT_SCALE, confidence
from device.events import StateChange, iso_utc
from device.sinks.base import Sink


class StdoutSink(Sink):
    def __init__(self, label: str, model_sha256: str, device_id: str | None = None, stream: TextIO | None = None,
                 with_stats: bool = True, threshold: float | None = None,
                 confidence_scale: float = DEFAULT_SCALE) -> None:
        self.label = label
        self.model_sha256 = model_sha256
        self.threshold = threshold
        self.confidence_scale = confidence_scale
        self.device_id = device_id or socket.gethostname()
        self._stream = stream
        self.with_stats = with_stats

    def _write(self, record: dict[str, Any]) -> None:
        stream = self._stream or sys.stdout
        stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        stream.flush()

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        self._write({
            "kind": "state",
            "label": self.label,
            "state": "ON" if change.present else "OFF",
            "at": iso_utc(change.at),
            "event": change.event.to_json(self.device_id, self.model_sha256, self.confidence_scale),
            "snapshot_bytes": len(snapshot_jpeg) if snapshot_jpeg else 0,
        })

    def stats(self, stats: dict[str, Any]) -> None:
        if self.with_stats:
            record = {"kind": "stats", "label": self.label, **stats}
            if self.threshold is not None and stats.get("last_score") is not None:
                record["confidence"] = round(confidence(stats["last_score"], self.threshold, self.confidence_scale), 4)
            self._write(record)

    def model_changed(self, info: Any) -> None:
        """A pushed model scores from now on (`device.model_info.ModelInfo`)."""
        self.label, self.model_sha256 = info.label, info.sha256
        self.threshold, self.confidence_scale = info.threshold, info.confidence_scale
