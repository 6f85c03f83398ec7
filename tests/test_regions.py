"""Where the daemon looks besides the whole view: motion, square regions, the sweep grid, zoomed partners, and
the agreement rule that confirms a crop hit. Plain arrays and synthetic frames; the model-driven behaviour is in
test_scoring.py and the footage benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from edge_oneclass.device.detect.motion import MotionDetector
from edge_oneclass.device.detect.regions import (
    Hit,
    HitTracker,
    merge_boxes,
    motion_regions,
    partners,
    square_around,
    sweep_boxes,
)
from edge_oneclass.device.model.preprocess import Box, centre_square, preprocess


def frame_with_square(x: int, y: int, side: int = 40, shape: tuple[int, int] = (360, 640)) -> np.ndarray:
    f = np.full((*shape, 3), 60, np.uint8)
    f[y:y + side, x:x + side] = 230
    return f


def test_motion_finds_a_moving_square_and_nothing_in_a_still_scene() -> None:
    det = MotionDetector()
    assert det(frame_with_square(100, 100)) == []          # the first frame only starts the background
    for _ in range(3):
        assert det(frame_with_square(100, 100)) == []      # nothing moves
    boxes = det(frame_with_square(300, 200))
    # where it is now is covered (where it was shows too, until the background forgets it)
    assert any(x0 <= 305 and x1 >= 335 and y0 <= 205 and y1 >= 235 for x0, y0, x1, y1 in boxes), boxes
    assert all(x1 - x0 < 200 and y1 - y0 < 200 for x0, y0, x1, y1 in boxes), boxes


def test_a_lighting_change_resets_the_background_instead_of_reporting_motion_everywhere() -> None:
    det = MotionDetector()
    det(np.full((360, 640, 3), 40, np.uint8))
    assert det(np.full((360, 640, 3), 40, np.uint8)) == []
    noisy = np.random.default_rng(0).integers(0, 256, (360, 640, 3)).astype(np.uint8)
    assert det(noisy) == []                                  # most of the picture changed: a reset, not motion


def test_regions_are_squares_with_margin_at_least_the_minimum_and_inside_the_frame() -> None:
    # one small moving area near the right edge, another big one
    boxes = [(600, 10, 630, 40), (100, 100, 260, 200)]
    regions = motion_regions(boxes, 640, 360, limit=2)
    assert len(regions) == 2
    big, small = regions
    assert big.w == big.h == int(160 * 1.5)                  # the bigger area first, side = margin x longer edge
    assert small.w == small.h == int(0.25 * 360)             # the tiny one gets the minimum side
    for r in regions:
        assert 0 <= r.x and r.x + r.w <= 640 and 0 <= r.y and r.y + r.h <= 360
    assert motion_regions(boxes, 640, 360, limit=1) == [big]   # the cap keeps the biggest


def test_nearby_pieces_of_one_subject_merge() -> None:
    assert merge_boxes([(0, 0, 10, 10), (12, 0, 20, 10), (100, 100, 110, 110)], gap=3) == [
        (0, 0, 20, 10), (100, 100, 110, 110)]


def test_square_around_stays_in_frame_and_never_exceeds_the_shorter_side() -> None:
    b = square_around((0, 0, 639, 359), 640, 360, margin=1.5, min_side=10)
    assert (b.w, b.h) == (360, 360) and 0 <= b.x <= 280 and b.y == 0


def test_sweep_covers_the_whole_frame_including_what_the_centre_square_leaves_out() -> None:
    w, h = 640, 360
    covered = np.zeros((h, w), bool)
    for b in sweep_boxes(w, h):
        assert b.w == b.h and 0 <= b.x and b.x + b.w <= w and 0 <= b.y and b.y + b.h <= h
        covered[b.y:b.y + b.h, b.x:b.x + b.w] = True
    assert covered.all()
    centre = centre_square(w, h)
    assert (centre.x, centre.w) == (140, 360)
    assert any(b.x == 0 and b.w == 360 for b in sweep_boxes(w, h))           # the left side the centre misses
    assert any(b.x + b.w == w and b.w == 360 for b in sweep_boxes(w, h))     # and the right side
    assert all(b.w == 360 for b in sweep_boxes(360, 360)) is False           # a square frame needs no side squares


def test_partners_zoom_around_the_same_centre_inside_the_frame() -> None:
    box = Box.square(200, 100, 100)
    ps = partners(box, 640, 360)
    assert sorted(p.w for p in ps) == [71, 140]
    for p in ps:
        assert p.centre == pytest.approx(box.centre, abs=1)
    edge = partners(Box.square(0, 0, 300), 640, 360)
    assert all(p.x >= 0 and p.y >= 0 and p.y + p.h <= 360 for p in edge) and max(p.w for p in edge) == 360


def test_a_crop_hit_counts_only_once_a_hit_near_it_agrees() -> None:
    tracker = HitTracker(needed=2, window=5)
    here, there = Box.square(100, 100, 100), Box.square(500, 250, 100)
    assert tracker.update([Hit(here, 1.0)]) == []                       # alone: not yet
    assert tracker.update([]) == []
    assert [h.box for h in tracker.update([Hit(Box.square(120, 110, 100), 1.0)])] == [Box.square(120, 110, 100)]
    assert tracker.update([Hit(there, 1.0)]) == []                      # far away: a new, unconfirmed hit
    for _ in range(5):
        tracker.update([])
    assert tracker.update([Hit(here, 1.0)]) == []                       # the old agreement has left the window


def test_preprocess_crops_a_box_keeps_shape_and_rejects_a_box_outside() -> None:
    f = np.zeros((360, 640, 3), np.uint8)
    f[:, 320:] = 255
    whole = preprocess(f, 32)                         # centre square: left half dark, right half bright
    assert whole[:, :14].max() == 0 and whole[:, 18:].min() == 255
    right = preprocess(f, 32, Box.square(400, 0, 200))
    assert right.min() == 255 and right.shape == (32, 32, 3)
    squashed = preprocess(f, 32, Box(0, 0, 640, 360))   # a non-square box is squashed (the old pipeline)
    assert squashed[:, :15].max() == 0 and squashed[:, 17:].min() == 255
    with pytest.raises(ValueError, match="outside"):
        preprocess(f, 32, Box.square(700, 0, 50))
