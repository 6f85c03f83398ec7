"""Threshold choice and the bounded memory bank, checked with plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibrate import calibrate, threshold_for_recall
from training.coreset import greedy_coreset


def test_threshold_keeps_target_recall_on_validation() -> None:
    pos = np.arange(100, dtype=float)
    for target in (0.5, 0.9, 0.95, 1.0):
        t = threshold_for_recall(pos, target)
        assert np.mean(pos >= t) >= target
        # the highest such threshold: one step up would lose recall
        assert np.mean(pos >= t + 1) < target


def test_negatives_widen_threshold_without_new_false_alarms() -> None:
    pos = np.linspace(5, 10, 100)
    neg = np.array([0.0, 1.0, 4.0, 9.5])
    cal = calibrate(pos, 0.95, neg)
    assert cal.recall >= 0.95
    assert cal.false_alarm_rate == pytest.approx(0.25)  # only the 9.5, unavoidable at this recall
    assert 4.0 < cal.threshold < threshold_for_recall(pos, 0.95)


def test_calibration_rejects_bad_target() -> None:
    with pytest.raises(ValueError):
        calibrate(np.ones(10), 0.0)


def test_coreset_is_bounded_and_spread() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 64)) * 10
    x = np.concatenate([c + rng.normal(size=(400, 64)) for c in centres])
    idx = greedy_coreset(x, 5, seed=1)
    assert len(idx) == 5 and len(set(idx.tolist())) == 5
    # farthest-point sampling puts one pick in each cluster
    assert sorted({int(i) // 400 for i in idx}) == [0, 1, 2, 3, 4]
    assert len(greedy_coreset(x, 5000)) == len(x)
