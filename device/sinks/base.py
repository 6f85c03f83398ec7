"""The interface every output implements. The daemon fans each change out to every configured sink.

A sink must never block the frame loop: network sinks hand work to their own thread (paho's loop) or a
bounded queue, and swallow-and-log their own failures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.model.info import ModelInfo


class Sink(ABC):
    @abstractmethod
    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        """Debounced state flipped; `snapshot_jpeg` is the best frame of the start (None on end or if off)."""

    def stats(self, stats: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Periodic health figures (fps, inference ms p50/p95, dropped frames, uptime, last score, temp)."""

    def model_changed(self, info: ModelInfo) -> None:  # noqa: B027 - optional hook
        """Another model scores from the next frame on (pushed over MQTT, or a rollback): its label, sha256,
        thresholds and confidence scale. Sinks that name the model or the label (MQTT topics, events) follow it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Final state on exit: MQTT publishes offline, GPIO switches off."""
