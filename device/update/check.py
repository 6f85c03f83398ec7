"""The checks a model's files must pass before anything uses them: one function for the device and `push-edge`.

The device refuses a push that fails them (`device.update.swap`); `push-edge` runs the same checks before it
sends, so a wrong folder fails on the workstation first, with the same reason.
"""

from __future__ import annotations

import hashlib
import json

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.model.calibration import CALIBRATION_FILE
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.update.payload import CARD_FILE, MODEL_FILE


class FilesRefused(ModelError):
    """The files are not one consistent export; the message is the reason (published in the device's status)."""


def check_files(files: dict[str, bytes]) -> ModelCard:
    """The card of a model's files (name -> bytes), with the tflite's and calibration file's hashes checked."""
    try:
        data = json.loads(files[CARD_FILE])
    except (ValueError, UnicodeDecodeError) as exc:
        raise FilesRefused(f"model.json is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FilesRefused("model.json is not a JSON object")
    try:
        card = ModelCard.from_dict(data, "model.json")
    except (ModelError, TypeError) as exc:
        raise FilesRefused(str(exc)) from None
    actual = hashlib.sha256(files[MODEL_FILE]).hexdigest()
    if actual != card.sha256:
        raise FilesRefused(f"model.tflite sha256 {actual[:12]}… does not match model.json ({str(card.sha256)[:12]}…); "
                           "the files were changed or come from different exports")
    cal_sha = card.calibration.get("sha256") if isinstance(card.calibration, dict) else None
    if cal_sha:
        if CALIBRATION_FILE not in files:
            raise FilesRefused(f"model.json names {CALIBRATION_FILE} (sha256 {cal_sha[:12]}…) but the push has none; "
                               "push the whole export folder")
        got = hashlib.sha256(files[CALIBRATION_FILE]).hexdigest()
        if got != cal_sha:
            raise FilesRefused(f"{CALIBRATION_FILE} sha256 {got[:12]}… does not match model.json ({cal_sha[:12]}…)")
    elif CALIBRATION_FILE in files:
        raise FilesRefused(f"{CALIBRATION_FILE} was pushed but model.json has no calibration.sha256 to check it with")
    return card
