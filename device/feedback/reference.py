"""What a feedback bank must never get wrong: the label's own photos (calibration.npz), and its score scale."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_oneclass.device.errors import ConfigError
from edge_oneclass.device.model.calibration import CalibrationUnavailable, read_calibration
from edge_oneclass.device.model.card import ModelCard

log = logging.getLogger("edge_oneclass.device.feedback.bank")   # its lines read as the bank's

DEFAULT_GATE = 0.9         # models without calibration.npz: no label photos to measure, act on near-duplicates only
DEFAULT_WEIGHT = 1.0
SPREAD_PERCENTILE = 95     # how far a duplicate of a negative is pushed: label photos' p95 score - threshold


class BankMismatch(ConfigError):
    """A bank file made for a model with another embedding (size): cannot be used with this model."""


@dataclass
class LabelReference:
    """The label's own photos from `calibration.npz`: what a teach must never suppress."""

    embeddings: np.ndarray        # (m, D) float32: whole views and crop views, for the gates
    whole: np.ndarray             # (n, D) float32: whole views, for the recall check
    oof_whole: np.ndarray         # (n,) out-of-fold scores on the threshold's scale
    threshold: float
    target_recall: float

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def load(cls, model_path: str | Path, card: ModelCard) -> LabelReference | None:
        """Read calibration.npz beside the model (sha256 checked); None with one log line if it is missing."""
        cal = card.calibration or {}
        try:
            z = read_calibration(model_path, card.calibration, required=("embedding_whole", "oof_whole"))
        except CalibrationUnavailable as exc:
            if exc.reason == "missing":
                log.warning("feedback: %s not found: the label's photos cannot be checked, negatives act only on "
                            "near-duplicates (similarity > %.2f)", exc.path, DEFAULT_GATE)
            elif exc.reason == "mismatch":
                log.warning("feedback: %s does not match model.json's sha256: ignored (copy it again with the model)",
                            exc.path)
            else:
                log.warning("feedback: %s unreadable (%s): ignored", exc.path, exc.detail)
            return None
        whole = np.asarray(z["embedding_whole"], np.float32)
        crop = np.asarray(z["embedding_crop"], np.float32) if "embedding_crop" in z else whole[:0]
        oof = np.asarray(z["oof_whole"], np.float32)
        return cls(np.concatenate([whole, crop]), whole, oof, float(cal.get("threshold", card.threshold)),
                   float(cal.get("target_recall", 0.95)))

    def spread(self) -> float | None:
        if not len(self.oof_whole):
            return None
        value = float(np.percentile(self.oof_whole, SPREAD_PERCENTILE)) - self.threshold
        return value if value > 0 else None

    def median_margin(self) -> float | None:
        """The typical label photo's margin over the threshold (out of fold): where a taught positive is lifted to."""
        return float(np.median(self.oof_whole)) - self.threshold if len(self.oof_whole) else None

    def recall(self, adjust: np.ndarray | None = None) -> float:
        scores = self.oof_whole if adjust is None else self.oof_whole + adjust
        return float(np.mean(scores >= self.threshold)) if len(scores) else 1.0


def bank_weight(card: ModelCard) -> float:
    """How hard a negative pushes: the model's background weight, or half its kNN weight."""
    w_neg = float(card.score.get("w_neg") or 0.0)
    if w_neg > 0:
        return w_neg
    w_knn = float(card.score.get("w_knn") or 0.0)
    return 0.5 * w_knn if w_knn > 0 else DEFAULT_WEIGHT


