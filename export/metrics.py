"""Detection figures shared by export parity, eval-edge and the benchmarks (scikit-learn underneath)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


@dataclass
class DetectionMetrics:
    auroc: float
    average_precision: float
    threshold: float
    tpr: float
    fpr: float
    n_positives: int
    n_negatives: int
    true_positives: int
    false_positives: int

    def as_dict(self) -> dict:
        return asdict(self)


def detection_metrics(pos: np.ndarray, neg: np.ndarray, threshold: float) -> DetectionMetrics:
    """Higher score = positive. Recall (tpr) and false-alarm rate (fpr) at `threshold` (score >= threshold)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg]
    tp, fp = int(np.sum(pos >= threshold)), int(np.sum(neg >= threshold))
    return DetectionMetrics(
        auroc=float(roc_auc_score(y, s)),
        average_precision=float(average_precision_score(y, s)),
        threshold=float(threshold),
        tpr=tp / len(pos),
        fpr=fp / len(neg),
        n_positives=len(pos),
        n_negatives=len(neg),
        true_positives=tp,
        false_positives=fp,
    )


def roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, _ = roc_curve(y, np.r_[pos, neg])
    return fpr, tpr


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))
