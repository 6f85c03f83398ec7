"""The Decider, exhaustively, with plain lists of scores and times (no camera, no clock).

The Decider works on margins (score - threshold); these tests judge scores against THRESHOLD and pass both."""

from __future__ import annotations

import itertools
import math

import pytest

from edge_oneclass.device.detect.debounce import Decider
from edge_oneclass.device.detect.events import StateChange

HI, LO = 0.9, 0.1
THRESHOLD = 0.5


def step(decider: Decider, score: float, t: float) -> StateChange | None:
    """One frame scored `score`, judged against THRESHOLD."""
    return decider.update(score - THRESHOLD, t, score)


def feed(decider: Decider, scores: list[float], fps: float = 1.0, t0: float = 0.0) -> list[tuple[int, StateChange]]:
    """Feed scores at `fps`; return (frame index, change) for every change."""
    out = []
    for i, s in enumerate(scores):
        change = step(decider, s, t0 + i / fps)
        if change is not None:
            out.append((i, change))
    return out


def make(**kw) -> Decider:
    args = {"label": "dog", "on_frames": 3, "window": 5, "off_delay": 10.0} | kw
    return Decider(**args)


def test_all_negative_never_turns_on() -> None:
    d = make()
    assert feed(d, [LO] * 100) == []
    assert d.finish(100.0) is None


@pytest.mark.parametrize("pattern", [
    [HI, LO, LO, HI, LO, LO, HI, LO, LO] * 5,   # 1 in 3: never 3 in any 5
    [HI, HI, LO, LO, LO] * 10,                  # 2 in 5
    [HI, LO, HI, LO, LO] * 10,
])
def test_flicker_below_on_frames_never_turns_on(pattern: list[float]) -> None:
    d = make()
    assert feed(d, pattern) == []
    assert not d.present


def test_exactly_on_frames_in_window_turns_on_at_that_frame() -> None:
    d = make()
    changes = feed(d, [LO, HI, LO, HI, LO, HI, HI])
    assert len(changes) == 1
    i, change = changes[0]
    assert i == 5 and change.present and change.at == 5.0
    ev = change.event
    assert ev.type == "start" and ev.label == "dog" and ev.ended_at is None
    assert ev.started_at == 1.0              # the first positive frame in the window
    assert ev.frames == 3 and ev.score == HI and ev.threshold == 0.5


def test_positives_that_slid_out_of_the_window_do_not_count() -> None:
    d = make()
    # positives at 0, 1 then three negatives: by frame 5 only frame 5 is positive in the window
    assert feed(d, [HI, HI, LO, LO, LO, HI]) == []
    assert not d.present


def test_score_equal_to_threshold_is_positive() -> None:
    d = make(on_frames=1, window=1)
    [(i, change)] = feed(d, [0.49999, 0.5])
    assert i == 1 and change.present


def test_every_pattern_of_length_7_matches_a_brute_force_rule() -> None:
    """Turns on exactly at the first frame where the last 5 frames hold >= 3 positives."""
    for bits in itertools.product([0, 1], repeat=7):
        d = make()
        changes = feed(d, [HI if b else LO for b in bits])
        expected = next((i for i in range(7) if sum(bits[max(0, i - 4):i + 1]) >= 3 and bits[i]), None)
        assert [i for i, _ in changes] == ([] if expected is None else [expected]), bits


def test_off_only_after_off_delay_since_the_last_positive_frame() -> None:
    d = make(off_delay=10.0)
    # on at t=2; positives until t=6 (last positive); negatives after
    scores = [HI] * 7 + [LO] * 30
    changes = feed(d, scores)
    assert [(i, c.present) for i, c in changes] == [(2, True), (16, False)]
    end = changes[1][1]
    assert end.at == 16.0                  # 10 s after the last positive frame at t=6
    assert end.event.type == "end" and end.event.ended_at == 6.0
    assert end.event.started_at == 0.0 and end.event.frames == 7


def test_a_single_positive_frame_restarts_the_off_countdown() -> None:
    d = make(off_delay=10.0)
    scores = [HI] * 3 + [LO] * 9 + [HI] + [LO] * 9 + [LO] * 5
    changes = feed(d, scores)
    # last positive at t=12 -> off at t=22, not at t=12 (10 s after t=2)
    assert [(i, c.present) for i, c in changes] == [(2, True), (22, False)]


def test_a_long_still_presence_stays_on() -> None:
    d = make(off_delay=5.0)
    # an hour at 1 fps, positive only every 4th frame (a dog lying still, scoring low now and then)
    scores = [HI if i % 4 == 0 or i < 3 else LO for i in range(3600)]
    changes = feed(d, scores)
    assert [(i, c.present) for i, c in changes] == [(2, True)]
    assert d.present


def test_off_delay_uses_frame_time_not_frame_count() -> None:
    d = make(off_delay=10.0)
    changes = feed(d, [HI] * 3 + [LO] * 200, fps=10.0)   # 0.1 s per frame
    [(_, on), (i_off, off)] = changes
    assert off.at == pytest.approx(0.2 + 10.0) and i_off == 102


def test_max_score_and_frame_count_follow_the_episode() -> None:
    d = make(off_delay=2.0)
    changes = feed(d, [0.6, 0.7, 0.8, 0.95, LO, 0.55, LO, LO, LO, LO])
    (_, start), (_, end) = changes
    assert start.event.max_score == 0.8 and start.event.frames == 3
    assert end.event.max_score == 0.95 and end.event.frames == 5
    assert end.event.score == LO


def test_a_second_episode_starts_fresh() -> None:
    d = make(off_delay=2.0)
    scores = [HI] * 3 + [LO] * 3 + [HI, LO, LO, LO, HI, HI] + [HI] * 2
    changes = feed(d, scores)
    # the positive at t=6 slid out of the window before two more arrived: on at 12, started at 10
    assert [(i, c.present) for i, c in changes] == [(2, True), (4, False), (12, True)]
    second = changes[2][1].event
    assert second.frames == 3 and second.started_at == 10.0 and second.max_score == HI


def test_finish_closes_an_open_event() -> None:
    d = make()
    feed(d, [HI] * 10)
    change = d.finish(42.0)
    assert change is not None and not change.present and change.at == 42.0
    assert change.event.type == "end" and change.event.ended_at == 9.0 and change.event.frames == 10
    assert not d.present
    assert d.finish(43.0) is None


def test_finish_without_episode_returns_none_and_resets_window() -> None:
    d = make()
    feed(d, [HI, HI])
    assert d.finish(2.0) is None
    assert step(d, HI, 3.0) is None       # the two earlier positives were forgotten


def test_nan_scores_are_negative() -> None:
    d = make(on_frames=1, window=1, off_delay=0.0)
    assert step(d, math.nan, 0.0) is None
    assert step(d, HI, 1.0) is not None
    change = step(d, math.nan, 2.0)
    assert change is not None and change.event.max_score == HI


def test_clock_stepping_back_does_not_keep_the_state_on_forever() -> None:
    d = make(off_delay=10.0)
    for t in (1000.0, 1001.0, 1002.0):
        step(d, HI, t)
    assert d.present
    # NTP steps the clock back an hour: the countdown restarts from the new time
    assert step(d, LO, -2600.0 + 1000) is None
    change = step(d, LO, -2600.0 + 1010)
    assert change is not None and not change.present


def test_off_delay_zero_turns_off_on_the_first_negative_frame() -> None:
    d = make(on_frames=1, window=1, off_delay=0.0)
    changes = feed(d, [HI, LO, HI, LO])
    assert [(i, c.present) for i, c in changes] == [(0, True), (1, False), (2, True), (3, False)]


@pytest.mark.parametrize("kw, message", [
    ({"on_frames": 6, "window": 5}, "on_frames"),
    ({"on_frames": 0}, "on_frames"),
    ({"window": 0}, "window"),
    ({"off_delay": -1.0}, "off_delay"),
    ({"off_delay": math.nan}, "off_delay"),
])
def test_validation(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_a_clock_stepped_back_mid_episode_keeps_the_episode_its_true_length() -> None:
    """Live frames are stamped with the wall clock; NTP stepping it back an hour must not give a negative or
    hour-long episode."""
    d = make(off_delay=10.0)
    t = 10_000.0
    for _ in range(20):                          # 20 s of a dog, then the clock steps back an hour
        step(d, HI, t)
        t += 1.0
    t -= 3600.0
    for _ in range(10):                          # 10 more seconds of the dog on the new clock
        step(d, HI, t)
        t += 1.0
    change = None
    while change is None:                        # then it leaves
        change = step(d, LO, t)
        t += 1.0
    ev = change.event
    assert not change.present and 28.0 <= ev.ended_at - ev.started_at <= 30.0, (ev.started_at, ev.ended_at)
