"""One JSON line per state change on stdout: the output of a first run, which needs no broker."""

from __future__ import annotations

import json
import socket
import sys
from typing import Any, TextIO

from device.events import StateChange, iso_utc
from device.sinks.base import Sink


class StdoutSink(Sink):
    def __init__(self, label: str, model_sha256: str, device_id: str | None = None, stream: TextIO | None = None,
                 with_stats: bool = True) -> None:
        self.label = label
        self.model_sha256 = model_sha256
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
            "event": change.event.to_json(self.device_id, self.model_sha256),
            "snapshot_bytes": len(snapshot_jpeg) if snapshot_jpeg else 0,
        })

    def stats(self, stats: dict[str, Any]) -> None:
        if self.with_stats:
            self._write({"kind": "stats", "label": self.label, **stats})
