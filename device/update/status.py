"""The retained `<base_topic>/<device_id>/model` status: the model scoring now, and how the last change went."""

from __future__ import annotations

import time
from typing import Any

from edge_oneclass.device.detect.events import iso_utc
from edge_oneclass.device.model.info import ModelInfo

OK, REFUSED = "ok", "refused"


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
