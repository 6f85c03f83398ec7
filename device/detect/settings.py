"""How much of each frame the daemon looks at, and how crop hits are confirmed ([detect] in the config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ScoringSettings:
    regions: bool = True          # crops around motion
    sweep: bool = True            # crops of a grid, a few per frame in turn
    max_crops: int = 2            # crops per frame on top of the whole view (the compute cap)
    sweep_fraction: float = 0.5   # sweep square side, as a fraction of the frame's shorter side
    confirm_frames: int = 2       # crop hits near the same place needed ...
    confirm_window: int = 5       # ... within this many frames

    def __post_init__(self) -> None:
        if not 0 <= self.max_crops <= 16:
            raise ValueError(f"detect.max_crops must be between 0 and 16, got {self.max_crops}")
        if not 0.1 <= self.sweep_fraction <= 1.0:
            raise ValueError(f"detect.sweep_fraction must be between 0.1 and 1, got {self.sweep_fraction}")
        if not 1 <= self.confirm_frames <= self.confirm_window:
            raise ValueError(f"detect.confirm_frames must be between 1 and detect.confirm_window "
                             f"({self.confirm_window}), got {self.confirm_frames}")
