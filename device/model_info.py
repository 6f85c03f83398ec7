"""What the sinks need to know about the model in use, and the retained `model` status payload.

Kept apart from `device.model_update` (which loads models) so the sinks can import it without the runner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from device.confidence import confidence_scale
from device.events import iso_utc

OK, REFUSED = "ok", "refused"


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


def status_payload(info: ModelInfo, status: str = OK, reason: str | None = None, source: str = "startup",
                   push_id: str | None = None, candidate_sha256: str | None = None,
                   previous_sha256: str | None = None) -> dict[str, Any]:
    """The retained `<base>/<device>/model` JSON: the model that is scoring now, and how the last change went.

    After a refusal `label`/`sha256`/`threshold` still describe the model in use (the old one); the refused
    model's hash is `candidate_sha256` and `reason` says why.
    """
    return {
        "status": status,
        "reason": reason,
        "label": info.label,
        "sha256": info.sha256,
        "created_at": info.created_at or None,
        "threshold": round(info.threshold, 6),
        "threshold_crop": round(info.threshold_crop, 6),
        "confidence_scale": round(info.confidence_scale, 6),
        "source": source,                 # startup | push | rollback
        "push_id": push_id,
        "candidate_sha256": candidate_sha256,
        "previous_sha256": previous_sha256,
        "at": iso_utc(time.time()),
    }
