"""From a camera frame to one score: the whole view, and (wide views) crops where something moved and a sweep.

A frame in which the scene did not change since the last scored frame (`device.detect.scene_change`) is not
scored again: it carries the last frame's score (`FrameScore.carried`, no model run), so the debouncer sees every
frame as before and a dog lying still stays present. The whole view is re-scored whenever the scene changes and
at least every `stationary_interval` seconds; with the sweep on, an unchanged scene is still scored until one
sweep cycle has covered it.

A scored frame is the whole view (the centre square, `device.model.preprocess`) and, where crops are on
(`[detect] regions` / `sweep`, the wide-view option), at most `max_crops` square crops, in this order of
priority:
  1. follow-ups: for each crop that scored over its threshold last frame, one of its partners (the same
     square shifted by a quarter side, `regions.partners`), so a hit is checked from a slightly different
     crop and a subject that stops moving stays found;
  2. motion regions: squares around the largest moving areas (`device.detect.motion`, `device.detect.regions`);
  3. the sweep: the next square of a grid that covers the frame (sides included), in turn, so a small
     subject that never moves is still found within one sweep cycle. One slot per frame is kept for it.
A crop counts only against its own threshold (`threshold_crop`: crops are smaller and blurrier than the
photos the whole-view threshold was calibrated on; their class-prior term has the prior's crop weight) and
only once hits near the same place agree over several frames (`HitTracker`): a follow-up partner or a motion
region that hits where a crop hit before.
The frame's score is then `threshold + best margin`, where a margin is a view's score minus its threshold:
on the whole view's scale, so the Decider, events and stats read as before.

`score_still` scores a single image the way the daemon scores a camera that sees it for one sweep cycle: the
whole view and every sweep crop, each crop hit checked by its partners. A crop's evidence is the weaker of
its own margin and its best partner's, so it is positive exactly when the daemon would confirm the hit on a
still scene. This is what `eval-edge` and the still-image benchmarks measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from edge_oneclass.device.detect.motion import MotionDetector
from edge_oneclass.device.detect.regions import Hit, HitTracker, motion_regions, partners, sweep_boxes
from edge_oneclass.device.detect.scene_change import SceneChange
from edge_oneclass.device.detect.settings import ScoringSettings
from edge_oneclass.device.model.preprocess import Box, Roi, centre_square, crop_fraction, preprocess
from edge_oneclass.device.model.running import RunningModel

WHOLE, REGION, SWEEP, FOLLOW = "whole", "region", "sweep", "follow"

# The feedback bank's hook (issue "not a dog"): embedding -> score correction (<= 0), applied to every view.
ScoreAdjust = Callable[[np.ndarray], float]


@dataclass
class ViewScore:
    kind: str                      # whole | region | sweep | follow
    box: Box
    score: float                   # model score, after any feedback adjustment
    margin: float                  # score - threshold of its kind
    inference_ms: float = 0.0
    embedding: np.ndarray | None = field(default=None, repr=False)
    adjustment: float = 0.0        # the feedback bank's part of `score` (the model's own margin is margin - this)


@dataclass
class FrameScore:
    score: float                   # threshold + margin: >= threshold means this frame counts as positive
    margin: float
    best: ViewScore                # the view that set the margin
    views: list[ViewScore]
    confirmed: list[ViewScore]     # crop views whose hits are confirmed
    inference_ms: float            # interpreter time summed over the views
    carried: bool = False          # the scene had not changed: the last scored frame's result, no model run
    changed: bool = True           # the scene changed since the frame scored before (False: a still scene)

    @property
    def invocations(self) -> int:
        return 0 if self.carried else len(self.views)


class FrameScorer:
    """Scores frames with whatever model it is handed (`RunningModel`): it keeps motion, sweep and hit state
    between frames, never a model or a threshold, so a model swap is one reference in the daemon."""

    def __init__(self, settings: ScoringSettings | None = None, roi: Roi | None = None,
                 adjust: ScoreAdjust | None = None) -> None:
        self.settings = settings or ScoringSettings()
        self.roi = roi
        self.adjust = adjust
        self._motion = MotionDetector()
        s = self.settings
        self._tracker = HitTracker(s.confirm_frames, s.confirm_window)
        self._sweep: list[Box] = []
        self._sweep_pos = 0
        self._sweep_shape: tuple[int, int] | None = None
        self._follow: list[Box] = []   # last frame's crop hits, best first
        self._frame_no = 0
        self._scene = SceneChange()
        self._last: FrameScore | None = None   # the last scored frame, carried while nothing changes
        self._last_t = 0.0
        self._cycle_start = 0                  # sweep position when the scene last changed

    def reset(self) -> None:
        """Forget motion background, sweep position, hits and the last score (a new camera, a reopened stream,
        another model): the next frame is scored."""
        self._motion.reset()
        self._tracker.reset()
        self._follow = []
        self._sweep_pos = 0
        self._scene.reset()
        self._last = None

    # -- one view -----------------------------------------------------------------------------------------

    def _view(self, model: RunningModel, image: np.ndarray, kind: str, box: Box) -> ViewScore:
        result = model.infer(preprocess(image, model.input_size, box), crop=kind != WHOLE)
        adjustment = self.adjust(result.embedding) if self.adjust is not None and result.embedding is not None else 0.0
        score = result.score + adjustment
        threshold = model.thresholds.whole if kind == WHOLE else model.thresholds.crop
        return ViewScore(kind, box, score, score - threshold, model.runner.last_inference_ms, result.embedding,
                         adjustment)

    def _sweep_for(self, width: int, height: int) -> list[Box]:
        if self._sweep_shape != (width, height):
            self._sweep = sweep_boxes(width, height, self.settings.sweep_fraction)
            self._sweep_shape, self._sweep_pos = (width, height), 0
        return self._sweep

    # -- frames -------------------------------------------------------------------------------------------

    def _crops(self, image: np.ndarray) -> list[tuple[str, Box]]:
        s = self.settings
        h, w = image.shape[:2]
        chosen: list[tuple[str, Box]] = []
        # one slot stays free for the sweep, so busy motion (leaves, reflections) never stops it
        others = s.max_crops - 1 if s.sweep and s.max_crops > 1 else s.max_crops

        def add(kind: str, box: Box) -> None:
            limit = s.max_crops if kind == SWEEP else others
            if len(chosen) < limit and not any(_overlap(box, b) > 0.5 for _, b in chosen):
                chosen.append((kind, box))

        for box in self._follow:
            options = partners(box, w, h)
            if options:
                add(FOLLOW, options[self._frame_no % len(options)])
        moving = self._motion(image) if s.regions else []
        for box in motion_regions(moving, w, h, others):
            add(REGION, box)
        if s.sweep:
            grid = self._sweep_for(w, h)
            while len(chosen) < s.max_crops and grid:
                add(SWEEP, grid[self._sweep_pos % len(grid)])
                self._sweep_pos += 1
                if self._sweep_pos % len(grid) == 0:
                    break   # never more than one cycle in a frame
        return chosen

    def invalidate(self) -> None:
        """The score function changed (the feedback bank learnt something): the next frame is scored even if the
        scene did not change, so a flag acts from the next frame on."""
        self._last = None

    def _may_carry(self, t: float | None, changed: bool, width: int, height: int) -> bool:
        """Whether the last score still holds for a frame at time `t` (None: always score)."""
        s = self.settings
        if t is None or self._last is None or s.stationary_interval <= 0 or changed:
            return False
        if not 0.0 <= t - self._last_t < s.stationary_interval:     # due for a re-check, or the clock stepped back
            return False
        return not s.sweep or self._sweep_pos - self._cycle_start >= len(self._sweep_for(width, height))

    def score(self, frame: np.ndarray, model: RunningModel, t: float | None = None) -> FrameScore:
        """Score the next frame of a stream taken at time `t` (seconds; keeps motion, sweep, hit and scene state
        between calls). Without `t` every frame is scored."""
        image = crop_fraction(frame, self.roi) if self.roi is not None else frame
        h, w = image.shape[:2]
        changed, small = self._scene.changed(image)
        if self._may_carry(t, changed, w, h):
            assert self._last is not None
            return replace(self._last, inference_ms=0.0, carried=True, changed=False)
        if changed or self._last is None:
            self._cycle_start = self._sweep_pos
        self._frame_no += 1
        views = [self._view(model, image, WHOLE, centre_square(w, h))]
        views += [self._view(model, image, kind, box) for kind, box in self._crops(image)]
        hits = [v for v in views[1:] if v.margin >= 0]
        confirmed_hits = self._tracker.update([Hit(v.box, v.score) for v in hits])
        confirmed_boxes = {id(c.box) for c in confirmed_hits}
        confirmed = [v for v in hits if id(v.box) in confirmed_boxes]
        self._follow = [v.box for v in sorted(hits, key=lambda v: v.margin, reverse=True)]
        result = replace(self._combine(model, views, confirmed), changed=changed)
        self._scene.accept(small)
        self._last, self._last_t = result, t if t is not None else 0.0
        return result

    def score_still(self, image: np.ndarray, model: RunningModel) -> FrameScore:
        """Score one image as a camera would over one sweep cycle of a still scene: the whole view and every
        sweep crop, each crop's evidence the weaker of its own margin and its best partner's (module docstring)."""
        image = crop_fraction(image, self.roi) if self.roi is not None else image
        h, w = image.shape[:2]
        views = [self._view(model, image, WHOLE, centre_square(w, h))]
        if not self.settings.sweep:
            return self._combine(model, views, [])
        crops = [self._view(model, image, SWEEP, box) for box in sweep_boxes(w, h, self.settings.sweep_fraction)]
        views += crops
        best: ViewScore | None = None
        for crop in sorted(crops, key=lambda v: v.margin, reverse=True):
            if best is not None and crop.margin <= best.margin:
                break   # no later crop can beat the evidence found so far
            checks = [self._view(model, image, FOLLOW, box) for box in partners(crop.box, w, h)]
            views += checks
            partner = max(checks, key=lambda v: v.margin, default=None)
            evidence = crop if partner is None or partner.margin >= crop.margin else partner
            if best is None or evidence.margin > best.margin:
                best = evidence
        # Below the threshold too, the frame's margin is the closer of the whole view and the best crop evidence.
        return self._combine(model, views, [best] if best is not None else [])

    @staticmethod
    def _combine(model: RunningModel, views: list[ViewScore], confirmed: list[ViewScore]) -> FrameScore:
        """The frame's margin: the whole view's or a confirmed crop's, whichever is higher (unconfirmed crop hits
        never make a frame positive)."""
        best = max([views[0], *confirmed], key=lambda v: v.margin)
        return FrameScore(model.thresholds.whole + best.margin, best.margin, best, views, confirmed,
                          float(sum(v.inference_ms for v in views)))


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / max(1, min(a.w * a.h, b.w * b.h))
