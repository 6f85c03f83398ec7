"""`model.json`: the contract between the workstation and the device. The device owns its schema.

Written by `train-edge`/`export-edge` beside `model.tflite`; read by the runner, which refuses a model
whose sha256 does not match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.model.calibration import CALIBRATION_FILE
from edge_oneclass.device.model.class_prior import ClassPrior
from edge_oneclass.device.model.preprocess import PREPROCESSING_ID
from edge_oneclass.device.model.thresholds import Thresholds
from edge_oneclass.device.state_files import sha256_file

# 2: square crops (preprocessing v3), `threshold_crop`, an embedding output and `outputs`, out-of-fold calibration.
# 3: `class_prior` (device/class_prior.py): scores and thresholds include the label's-classes term, so a device
#    that ignored it would decide on the wrong scale.
# 4: `class_prior.crop_weight`: crop views carry a heavier prior term. A schema-3 card (no crop_weight) is still
#    read exactly: its crops were calibrated with the whole view's weight, which is what a missing crop_weight means.
SCHEMA_VERSION = 4
OLDEST_SCHEMA_VERSION = 3
# Higher score = more like the label. The daemon says "present" when score >= threshold.
SCORE_DIRECTION = "higher_is_label"

__all__ = ["CALIBRATION_FILE", "ModelCard", "card_path_for", "load_verified"]


@dataclass
class ModelCard:
    label: str
    image_size: int
    threshold: float
    sha256: str
    backbone: str = "efficientnet_lite0"
    colour_order: str = "RGB"
    input_dtype: str = "uint8"
    preprocessing: str = PREPROCESSING_ID
    score_direction: str = SCORE_DIRECTION
    schema_version: int = SCHEMA_VERSION
    # Crops (motion regions, the sweep) are smaller and blurrier than photos: they have their own threshold.
    threshold_crop: float | None = None
    # What the TFLite outputs are: {"score": {...}, "embedding": {"dim": D, ...}}.
    outputs: dict[str, Any] = field(default_factory=dict)
    # Free-form sections written by training/export; the device only reads the fields above.
    calibration: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    # Score units per logistic unit of `confidence` (device/confidence.py); None on older cards.
    confidence_scale: float | None = None
    # The label's ImageNet classes term added to every score (device/class_prior.py); None: no such term.
    class_prior: dict[str, Any] | None = None

    def thresholds(self, override: float | None = None) -> Thresholds:
        """The thresholds to decide with; a `[model] threshold` override moves both by the same amount."""
        crop = self.threshold_crop if self.threshold_crop is not None else self.threshold
        return Thresholds(float(self.threshold), float(crop)).shifted(override)

    def prior(self, source: str = "model.json") -> ClassPrior | None:
        return ClassPrior.from_dict(self.class_prior, source) if self.class_prior else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model.json") -> ModelCard:
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("label", "image_size", "threshold", "sha256") if k not in data]
        if missing:
            raise ModelError(f"{source}: missing key(s) {', '.join(missing)}; re-export the model with export-edge")
        card = cls(**{k: v for k, v in data.items() if k in known})
        if card.schema_version > SCHEMA_VERSION:
            raise ModelError(f"{source}: schema_version {card.schema_version} is newer than this device "
                             f"understands ({SCHEMA_VERSION}); upgrade edge-device")
        if card.schema_version < OLDEST_SCHEMA_VERSION:
            raise ModelError(f"{source}: schema_version {card.schema_version} was made by an older train-edge; "
                             f"retrain with this version (train-edge), re-export its training folder "
                             f"(export-edge MODEL_DIR), or install the matching edge-device")
        if card.preprocessing != PREPROCESSING_ID:
            raise ModelError(f"{source}: preprocessing '{card.preprocessing}' differs from this device's "
                             f"'{PREPROCESSING_ID}'; re-export the model or upgrade edge-device")
        if card.score_direction != SCORE_DIRECTION:
            raise ModelError(f"{source}: unknown score_direction '{card.score_direction}'")
        card.prior(source)   # an unreadable class_prior fails here, at load, with the file's name
        return card

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: model.json not found; copy it beside model.tflite") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: unreadable model.json ({exc}); copy it again from the training machine") from exc
        return cls.from_dict(data, str(path))


def card_path_for(model_path: str | Path) -> Path:
    """model.json lives beside model.tflite."""
    return Path(model_path).with_name("model.json")


def load_verified(model_path: str | Path) -> ModelCard:
    """Load model.json beside `model_path` and check the model file's hash against it."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found; set [model] path or copy model.tflite there")
    card = ModelCard.load(card_path_for(model_path))
    actual = sha256_file(model_path)
    if actual != card.sha256:
        raise ModelError(f"{model_path}: sha256 {actual[:12]}… does not match model.json ({card.sha256[:12]}…); "
                         "copy model.tflite and model.json from the same export")
    return card
