"""The Decider: per-frame margins in, debounced presence changes out. Pure: no I/O, no clock, no threshold.

A frame's margin is its score minus the threshold in use (`FrameScore.margin`): positive at margin >= 0. The
Decider holds no threshold of its own, so a model swapped in between two frames (`RunningModel`) changes nothing
here. Fast on, slow off. A subject turns the state on once `on_frames` of the last `window` frames are positive
(one bright flash is not a dog), and turns it off only after `off_delay` seconds of frame time without a single
positive frame (a dog lying still and briefly scoring low is still there). Times are the frames' own, so a replay
gives the same events every time. Events report the frames' scores on the model's own scale and the threshold
they were judged by (score - margin), so Home Assistant sees the same payload as before.
"""

from __future__ import annotations

import math
from collections import deque

from edge_oneclass.device.detect.events import Event, StateChange


class Decider:
    def __init__(self, label: str, on_frames: int = 3, window: int = 5, off_delay: float = 30.0) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 1 <= on_frames <= window:
            raise ValueError(f"on_frames must be between 1 and window ({window}), got {on_frames}")
        if not off_delay >= 0:  # also rejects NaN
            raise ValueError(f"off_delay must be zero or more seconds, got {off_delay}")
        self.label = label
        self.on_frames = int(on_frames)
        self.window = int(window)
        self.off_delay = float(off_delay)
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=self.window)  # (t, score, margin)
        self.present = False
        self._started_at = 0.0
        self._last_positive_t = 0.0
        self._max_score = -math.inf
        self._frames = 0
        self._last_score = 0.0
        self._threshold = 0.0     # what the last finite frame was judged by (score - margin)
        self._last_t: float | None = None

    @staticmethod
    def _positive(margin: float) -> bool:
        return not math.isnan(margin) and margin >= 0

    def _event(self, kind: str, ended_at: float | None) -> Event:
        return Event(type=kind, label=self.label, score=self._last_score, max_score=self._max_score,  # type: ignore[arg-type]
                     threshold=self._threshold, started_at=self._started_at, ended_at=ended_at,
                     frames=self._frames)

    def update(self, margin: float, t: float, score: float | None = None) -> StateChange | None:
        """Feed one frame's margin (score - threshold), time and score (default: the margin, i.e. a threshold of
        0); returns a StateChange when the debounced state flips."""
        margin = float(margin)
        score = margin if score is None else float(score)
        if self._last_t is not None and t < self._last_t:
            self._clock_stepped_back(t - self._last_t)
        self._last_t = t
        positive = self._positive(margin)
        self._last_score = score
        if math.isfinite(score - margin):
            self._threshold = score - margin
        if not self.present:
            self._recent.append((t, score, margin))
            hits = [(ft, fs) for ft, fs, fm in self._recent if self._positive(fm)]
            if len(hits) < self.on_frames:
                return None
            self.present = True
            self._started_at = hits[0][0]   # the episode began at its first positive frame in the window
            self._last_positive_t = t
            self._max_score = max(fs for _, fs in hits)
            self._frames = len(hits)
            self._recent.clear()
            return StateChange(present=True, at=t, event=self._event("start", None))
        if positive:
            self._last_positive_t = t
            self._frames += 1
            self._max_score = max(self._max_score, score)
            return None
        if t - self._last_positive_t >= self.off_delay:
            return self._end(t)
        return None

    def _clock_stepped_back(self, shift: float) -> None:
        """A live camera's frames are stamped with the wall clock, which NTP may step back: move the open episode
        and the window onto the new clock, so the episode keeps its true length (never a negative duration) and
        `off_delay` still counts from the last positive frame. The end event's `started_at` is then on the new
        clock too."""
        self._started_at += shift
        self._last_positive_t += shift
        self._recent = deque(((ft + shift, fs, fm) for ft, fs, fm in self._recent), maxlen=self.window)

    def finish(self, t: float) -> StateChange | None:
        """Close an episode still open when the frames run out (end of a replay, shutdown)."""
        if not self.present:
            self._recent.clear()
            return None
        return self._end(t)

    def force_off(self, t: float) -> StateChange | None:
        """End the open episode now (the user flagged it a false alarm and the frame no longer scores positive)."""
        if not self.present:
            return None
        return self._end(t)

    def _end(self, t: float) -> StateChange:
        # ended_at is when the subject was last seen; `at` is when the decision was made.
        change = StateChange(present=False, at=t, event=self._event("end", self._last_positive_t))
        self.present = False
        self._recent.clear()
        self._max_score, self._frames = -math.inf, 0
        return change
