"""The MQTT payload that carries a model from `push-edge` to the daemon (`device.update.swap`).

One JSON object, UTF-8, no other dependency:

    {"format": "edge-model/1",
     "push_id": "<32 hex>",              # echoed in the device's `model` status, so push-edge --wait can match it
     "sent_at": "2026-11-27T07:00:00Z",
     "files": {"model.tflite": "<base64>", "model.json": "<base64>", "calibration.npz": "<base64>"}}

`model.tflite` and `model.json` are required, `calibration.npz` goes along when it exists. The hashes are not
repeated here: model.json already holds the tflite's sha256 (and calibration.sha256), and the device checks
the bytes against it. The plain text payload `rollback` (on the device's own topic) asks for the previous model.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from edge_oneclass.device.model.card import CALIBRATION_FILE

FORMAT = "edge-model/1"
MODEL_FILE, CARD_FILE = "model.tflite", "model.json"
FILES = (MODEL_FILE, CARD_FILE, CALIBRATION_FILE)
REQUIRED = (MODEL_FILE, CARD_FILE)
ROLLBACK = b"rollback"
MAX_PAYLOAD = 64 * 1024 * 1024      # bytes on the wire; a model is a few MB


class PayloadError(ValueError):
    """A message on the model topic that is not a model push; the text says what is wrong."""


def encode(files: dict[str, bytes], push_id: str | None = None) -> tuple[bytes, str]:
    """(payload bytes, push_id) for `files` (name -> content)."""
    unknown = sorted(set(files) - set(FILES))
    if unknown:
        raise PayloadError(f"unexpected file {unknown[0]}; a model is {', '.join(FILES)}")
    push_id = push_id or uuid.uuid4().hex
    doc = {"format": FORMAT, "push_id": push_id,
           "sent_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
           "files": {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}}
    return json.dumps(doc, separators=(",", ":")).encode(), push_id


def read_model_dir(folder: str | Path) -> dict[str, bytes]:
    """The files of a model folder (export-edge's output): model.tflite + model.json (+ calibration.npz)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PayloadError(f"{folder}: not a folder; pass the folder export-edge wrote (model.tflite, model.json)")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise PayloadError(f"{folder}: {' and '.join(missing)} missing; pass the folder export-edge wrote")
    return {name: (folder / name).read_bytes() for name in FILES if (folder / name).is_file()}


def push_id_of(payload: bytes) -> str | None:
    """The push id of a payload, leniently (so a refusal of a broken push can still be matched)."""
    try:
        value = json.loads(payload).get("push_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and len(value) <= 64 else None


def decode(payload: bytes) -> tuple[dict[str, bytes], str | None]:
    """(files, push_id) of a payload; PayloadError with the reason when it is not a valid model push."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD} byte limit")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("payload is not JSON; send models with push-edge") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise PayloadError(f"payload format {got!r} is not {FORMAT!r}; send models with push-edge "
                           f"(or upgrade edge-device)")
    files = doc.get("files")
    if not isinstance(files, dict):
        raise PayloadError("payload has no 'files' object")
    unknown = sorted(set(files) - set(FILES))
    if unknown:
        raise PayloadError(f"unexpected file {unknown[0]!r} in the payload")
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise PayloadError(f"payload lacks {' and '.join(missing)}")
    out: dict[str, bytes] = {}
    for name, text in files.items():
        try:
            out[name] = base64.b64decode(text, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise PayloadError(f"{name} in the payload is not valid base64") from None
    return out, push_id_of(payload)
