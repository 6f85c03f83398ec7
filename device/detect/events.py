"""What the Decider emits and the sinks consume. Times are the frames' own timestamps (seconds since the
epoch for live sources, the source's own timeline for files), so replays are deterministic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal


def iso_utc(t: float | None) -> str | None:
    """ISO-8601 UTC with a Z, as Home Assistant and Node-RED parse it."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """Start or end of one presence episode."""

    type: Literal["start", "end"]
    label: str
    score: float          # score of the frame that triggered this event
    max_score: float      # best frame score so far in the episode
    threshold: float
    started_at: float
    ended_at: float | None
    frames: int           # positive frames in the episode so far

    def to_json(self, device_id: str, model_sha256: str, confidence_scale: float | None = None) -> dict[str, Any]:
        """The event's JSON; with `confidence_scale`, also `confidence` and `max_confidence` (device/confidence.py)."""
        extra: dict[str, Any] = {}
        if confidence_scale is not None:
            from edge_oneclass.device.model.confidence import confidence

            extra = {"confidence": round(confidence(self.score, self.threshold, confidence_scale), 4),
                     "max_confidence": round(confidence(self.max_score, self.threshold, confidence_scale), 4)}
        return {
            "type": self.type,
            "label": self.label,
            "score": round(float(self.score), 6),
            "max_score": round(float(self.max_score), 6),
            "threshold": round(float(self.threshold), 6),
            "started_at": iso_utc(self.started_at),
            "ended_at": iso_utc(self.ended_at),
            "frames": int(self.frames),
            "device_id": device_id,
            "model_sha256": model_sha256,
            **extra,
        }


@dataclass(frozen=True)
class StateChange:
    """The debounced state flipped. `event` is the start (present=True) or end (present=False) event."""

    present: bool
    at: float
    event: Event
