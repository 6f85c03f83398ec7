"""Threshold choice and the bounded memory bank, checked with plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from edge_oneclass.device.model.coreset import greedy_coreset
from edge_oneclass.training.calibrate import calibrate, threshold_for_recall


def test_threshold_keeps_target_recall_on_validation() -> None:
    pos = np.arange(100, dtype=float)
    for target in (0.5, 0.9, 0.95, 1.0):
        t = threshold_for_recall(pos, target)
        assert np.mean(pos >= t) >= target
        # the highest such threshold: one step up would lose recall
        assert np.mean(pos >= t + 1) < target


def test_negatives_are_counted_at_the_fewest_alarm_threshold() -> None:
    pos = np.linspace(5, 10, 100)
    neg = np.array([0.0, 1.0, 4.0, 9.5])
    cal = calibrate(pos, 0.95, neg)
    assert cal.recall >= 0.95
    assert cal.threshold == threshold_for_recall(pos, 0.95)  # any higher loses recall, any lower adds alarms
    assert cal.false_alarm_rate == pytest.approx(0.25)  # only the 9.5, unavoidable at this recall
    assert cal.n_negatives == 4


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


def test_near_duplicates_stay_on_one_side_of_the_split() -> None:
    from pathlib import Path

    from edge_oneclass.training.dataset import split
    from edge_oneclass.training.near_duplicates import group_near_duplicates

    rng = np.random.default_rng(0)
    shots = rng.normal(size=(30, 64))
    # 30 distinct shots, each with 1 to 5 near-identical frames (a burst)
    emb, shot_of = [], []
    for k, s in enumerate(shots):
        for _ in range(1 + k % 5):
            emb.append(s + 0.01 * rng.normal(size=64))
            shot_of.append(k)
    emb = np.array(emb)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = group_near_duplicates(emb, block=7)  # small blocks exercise the block boundaries
    assert len(set(groups.tolist())) == 30
    assert all((groups[i] == groups[j]) == (shot_of[i] == shot_of[j]) for i in range(len(emb)) for j in range(i))
    paths = [Path(f"{i:03d}.jpg") for i in range(len(emb))]
    train, val = split(paths, 0.2, seed=3, min_val=5, groups=groups)
    assert len(train) + len(val) == len(paths) and 0.1 * len(paths) <= len(val) <= 0.35 * len(paths)
    val_shots = {shot_of[int(p.stem)] for p in val}
    assert not val_shots & {shot_of[int(p.stem)] for p in train}


def test_nearest_similarity_in_blocks_matches_the_full_matrix() -> None:
    from edge_oneclass.training.head import nearest_similarity

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    assert np.allclose(nearest_similarity(x, x, exclude_self=True, block=8), full.max(1))
    assert np.allclose(nearest_similarity(x[:7], x, block=3), (x[:7] @ x.T).max(1))


def test_split_falls_back_when_one_group_holds_everything(caplog) -> None:
    from pathlib import Path

    from edge_oneclass.training.dataset import split

    paths = [Path(f"{i:03d}.jpg") for i in range(40)]
    train, val = split(paths, 0.2, seed=0, min_val=5, groups=[0] * 40)
    assert len(val) == 8 and len(train) == 32
    assert "near-duplicates" in caplog.text
