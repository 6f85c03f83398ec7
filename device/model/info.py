"""What the sinks need to know about the model in use (`Sink.model_changed`, the MQTT `model` status).

Kept apart from the runner so the sinks can import it without an interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_oneclass.device.model.confidence import confidence_scale


@dataclass(frozen=True)
class ModelInfo:
    label: str
    sha256: str
    threshold: float                 # the whole-view threshold in use (after any [model] threshold override)
    threshold_crop: float
    created_at: str
    confidence_scale: float
    calibration_sha256: str | None = None

    @classmethod
    def from_card(cls, card: Any, threshold: float, threshold_crop: float) -> ModelInfo:
        cal = card.calibration if isinstance(card.calibration, dict) else {}
        return cls(card.label, card.sha256, float(threshold), float(threshold_crop), card.created_at or "",
                   confidence_scale(card), cal.get("sha256"))
