"""How much of each frame the daemon looks at, and how crop hits are confirmed ([detect] in the config).

The default is one look per changed frame: the whole view, re-scored when the scene changes and at least every
`stationary_interval` seconds (`device.detect.scene_change`). Crops (motion regions, the sweep) are the wide-view
option: on the shared clips they changed no event of the default while tripling the model runs per frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ScoringSettings:
    regions: bool = False         # crops around motion (wide views)
    sweep: bool = False           # crops of a grid, a few per frame in turn (wide views)
    max_crops: int = 2            # crops per frame on top of the whole view (the compute cap)
    sweep_fraction: float = 0.5   # sweep square side, as a fraction of the frame's shorter side
    confirm_frames: int = 2       # crop hits near the same place needed ...
    confirm_window: int = 5       # ... within this many frames
    # Re-score an unchanged scene at least this often (seconds); in between, a frame in which nothing changed
    # carries the last score. 0 scores every frame.
    stationary_interval: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_crops <= 16:
            raise ValueError(f"detect.max_crops must be between 0 and 16, got {self.max_crops}")
        if not 0.1 <= self.sweep_fraction <= 1.0:
            raise ValueError(f"detect.sweep_fraction must be between 0.1 and 1, got {self.sweep_fraction}")
        if not (0.0 <= self.stationary_interval <= 3600.0):
            raise ValueError(f"detect.stationary_interval must be between 0 and 3600 seconds, got "
                             f"{self.stationary_interval}")
        if not 1 <= self.confirm_frames <= self.confirm_window:
            raise ValueError(f"detect.confirm_frames must be between 1 and detect.confirm_window "
                             f"({self.confirm_window}), got {self.confirm_frames}")
