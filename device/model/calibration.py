"""`calibration.npz`: the label photos' int8 embeddings and out-of-fold scores, beside model.tflite.

The device reads it to keep a local feedback bank honest (what a teach must never suppress) and to move the crop
threshold to another recall (`[detect] crop_recall`). Its sha256 is in model.json's `calibration` section, which
is all this module needs of the card, so it imports nothing of the card's (the card imports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.state_files import sha256_file

CALIBRATION_FILE = "calibration.npz"


class CalibrationUnavailable(ModelError):
    """calibration.npz cannot be used: `reason` is "missing", "mismatch" (not the card's sha256) or "unreadable"."""

    def __init__(self, path: Path, reason: str, detail: str = "") -> None:
        super().__init__(f"{path}: {reason}{f' ({detail})' if detail else ''}")
        self.path, self.reason, self.detail = path, reason, detail


def read_calibration(model_path: str | Path, calibration: Mapping[str, Any] | None,
                     required: tuple[str, ...]) -> dict[str, Any]:
    """The arrays of the calibration file beside the model, its sha256 checked against the card's `calibration`
    section; raises CalibrationUnavailable (callers word what it means for them)."""
    import numpy as np

    cal = calibration or {}
    path = Path(model_path).with_name(str(cal.get("file") or CALIBRATION_FILE))
    if not path.is_file():
        raise CalibrationUnavailable(path, "missing")
    expected = cal.get("sha256")
    if expected and sha256_file(path) != expected:
        raise CalibrationUnavailable(path, "mismatch")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as exc:
        raise CalibrationUnavailable(path, "unreadable", str(exc)) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise CalibrationUnavailable(path, "unreadable", f"no {', '.join(missing)}")
    return arrays
