"""One JSON line per state change on stdout: the output of a first run, which needs no broker."""

from __future__ import annotations

import json
import socket
import sys
from typing import Any, TextIO

from edge_oneclass.device.detect.events import StateChange, iso_utc
from edge_oneclass.device.model.confidence import confidence
from edge_oneclass.device.model.info import ModelInfo
from edge_oneclass.device.sinks.base import Sink


class StdoutSink(Sink):
    def __init__(self, info: ModelInfo, device_id: str | None = None, stream: TextIO | None = None,
                 with_stats: bool = True) -> None:
        self.info = info                  # the model in use; replaced by `model_changed`
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
            "label": self.info.label,
            "state": "ON" if change.present else "OFF",
            "at": iso_utc(change.at),
            "event": change.event.to_json(self.device_id, self.info.sha256, self.info.confidence_scale),
            "snapshot_bytes": len(snapshot_jpeg) if snapshot_jpeg else 0,
        })

    def stats(self, stats: dict[str, Any]) -> None:
        if self.with_stats:
            record = {"kind": "stats", "label": self.info.label, **stats}
            if stats.get("last_score") is not None:
                record["confidence"] = round(confidence(stats["last_score"], self.info.threshold,
                                                        self.info.confidence_scale), 4)
            self._write(record)

    def model_changed(self, info: ModelInfo) -> None:
        self.info = info
