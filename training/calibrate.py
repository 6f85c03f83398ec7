"""Choosing the decision threshold from held-out scores, never from training ones."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge_oneclass.device.model.thresholds import threshold_for_recall


@dataclass
class Calibration:
    threshold: float
    target_recall: float
    method: str
    n_positives: int
    n_negatives: int
    recall: float                 # on the held-out positives used to calibrate
    false_alarm_rate: float | None  # on the held-out negatives, where given
    positive_quantiles: dict[str, float]

    def as_dict(self) -> dict:
        return asdict(self)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {f"p{q:02d}": float(np.percentile(x, q)) for q in (1, 5, 10, 25, 50, 75, 90, 95, 99)}


def calibrate(pos: np.ndarray, target_recall: float, neg: np.ndarray | None = None) -> Calibration:
    """Threshold at `target_recall` of held-out positives: the highest one that keeps that recall, which is
    also the one with the fewest false alarms on any held-out negatives (reported beside it).

    The threshold is not moved towards the negatives: background frames of one scene are near-identical, so
    held-out ones score lower than new scenes will, and a threshold fitted to their gap would be too lax.
    """
    pos = np.asarray(pos, dtype=np.float64)
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    t = threshold_for_recall(pos, target_recall)
    method = "validation positives quantile"
    fpr = None
    n_neg = 0
    if neg is not None and len(neg):
        neg = np.asarray(neg, dtype=np.float64)
        n_neg = len(neg)
        fpr = float(np.mean(neg >= t))
    return Calibration(
        threshold=t,
        target_recall=target_recall,
        method=method,
        n_positives=len(pos),
        n_negatives=n_neg,
        recall=float(np.mean(pos >= t)),
        false_alarm_rate=fpr,
        positive_quantiles=_quantiles(pos),
    )
