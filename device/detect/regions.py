"""Where to look in a frame besides the whole view: square crops around motion, and a slow sweep of a grid.

Every crop the model sees is a square of the frame (`Box`), so nothing is squashed out of shape and a small
subject fills more of the model's input. Crops are scored against their own threshold (`threshold_crop` in
model.json) and count only once they agree over several frames (`HitTracker`): a dog walking through is seen
again next to where it was, while a chance resemblance somewhere in a crowd of moving crops is not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from edge_oneclass.device.detect.motion import MotionBox
from edge_oneclass.device.model.preprocess import Box


def square_around(box: MotionBox, width: int, height: int, margin: float, min_side: int) -> Box:
    """The square of side `margin` x the box's longer edge (at least `min_side`), centred on it, moved inside."""
    x0, y0, x1, y1 = box
    limit = min(width, height)
    side = max(int(max(x1 - x0, y1 - y0) * margin), min_side)
    side = max(1, min(side, limit))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    x = int(round(min(max(cx - side / 2.0, 0), width - side)))
    y = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return Box.square(x, y, side)


def merge_boxes(boxes: list[MotionBox], gap: int) -> list[MotionBox]:
    """Union boxes that overlap or lie within `gap` pixels of each other (one subject often moves in pieces)."""
    merged = [list(b) for b in boxes]
    changed = True
    while changed:
        changed = False
        out: list[list[int]] = []
        for b in merged:
            for o in out:
                if b[0] <= o[2] + gap and o[0] <= b[2] + gap and b[1] <= o[3] + gap and o[1] <= b[3] + gap:
                    o[0], o[1], o[2], o[3] = min(o[0], b[0]), min(o[1], b[1]), max(o[2], b[2]), max(o[3], b[3])
                    changed = True
                    break
            else:
                out.append(b)
        merged = out
    return [(b[0], b[1], b[2], b[3]) for b in merged]


@dataclass(frozen=True)
class RegionSettings:
    margin: float = 1.5        # region side = margin x the moving area's longer edge
    min_fraction: float = 0.25  # smallest region side, as a fraction of the frame's shorter side
    merge_fraction: float = 0.03  # moving areas closer than this (x shorter side) are one subject


def motion_regions(boxes: list[MotionBox], width: int, height: int, limit: int,
                   settings: RegionSettings | None = None) -> list[Box]:
    """Up to `limit` square regions around the largest moving areas, biggest first."""
    if limit <= 0 or not boxes:
        return []
    s = settings or RegionSettings()
    short = min(width, height)
    merged = merge_boxes(boxes, gap=int(s.merge_fraction * short))
    merged.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return [square_around(b, width, height, s.margin, int(s.min_fraction * short)) for b in merged[:limit]]


def sweep_boxes(width: int, height: int, fraction: float = 0.5) -> list[Box]:
    """A grid of squares of side `fraction` x the shorter side, half-overlapping, plus the squares that cover
    the sides the centre view leaves out. The daemon scores a few of them per frame in turn."""
    short = min(width, height)
    side = max(1, int(round(short * fraction)))
    step = max(1, side // 2)
    xs = list(range(0, width - side + 1, step))
    ys = list(range(0, height - side + 1, step))
    if xs[-1] != width - side:
        xs.append(width - side)
    if ys[-1] != height - side:
        ys.append(height - side)
    grid = [Box.square(x, y, side) for y in ys for x in xs]
    sides = [Box.square(0, 0, short), Box.square(width - short, height - short, short)] if width != height else []
    return sides + grid


@dataclass
class Hit:
    box: Box
    score: float


class HitTracker:
    """Spatio-temporal agreement: a crop hit counts once `needed` of the last `window` frames had a hit near it.

    "Near" means the centres are within `reach` x the larger side of each other on both axes: the subject
    moved a little between frames, while independent chance hits land anywhere.
    """

    def __init__(self, needed: int = 2, window: int = 5, reach: float = 0.75) -> None:
        if not 1 <= needed <= window:
            raise ValueError(f"needed must be between 1 and window ({window}), got {needed}")
        self.needed, self.window, self.reach = needed, window, reach
        self._history: deque[list[Hit]] = deque(maxlen=window)

    def reset(self) -> None:
        self._history.clear()

    def _near(self, a: Box, b: Box) -> bool:
        (ax, ay), (bx, by) = a.centre, b.centre
        limit = self.reach * max(a.side, b.side)
        return abs(ax - bx) <= limit and abs(ay - by) <= limit

    def update(self, hits: list[Hit]) -> list[Hit]:
        """Record this frame's hits; return those confirmed by enough recent frames (this one included)."""
        self._history.append(hits)
        return [h for h in hits
                if sum(1 for frame in self._history if any(self._near(h.box, o.box) for o in frame)) >= self.needed]


# A partner is the same crop zoomed out or in by this factor around the same centre.
PARTNER_ZOOM = 1.4


def partners(box: Box, width: int, height: int) -> list[Box]:
    """The same square zoomed out and in by PARTNER_ZOOM around its centre (kept inside the frame).

    A subject inside `box` is inside both, at another scale; a chance resemblance of one particular crop of
    texture rarely survives the change of scale. A crop hit counts once a partner agrees. Measured on pasted
    subjects at 20 % of the frame width (benchmarks/ladder.py), checking hits this way raised AUROC from 0.90 to
    0.92, where shifting the crop by a quarter of its side instead gave 0.90.
    """
    limit = min(width, height)
    cx, cy = box.centre
    out: list[Box] = []
    for factor in (PARTNER_ZOOM, 1.0 / PARTNER_ZOOM):
        side = int(min(limit, max(16, round(box.w * factor))))
        x = int(round(min(max(cx - side / 2.0, 0), width - side)))
        y = int(round(min(max(cy - side / 2.0, 0), height - side)))
        b = Box.square(x, y, side)
        if b != box and b not in out:
            out.append(b)
    return out
