"""`config.toml` -> a typed `Config`, checked at start-up so a typo fails at once with the key's name.

Each table is a small dataclass parsed by `device.config_section.parse_section`; the `[mqtt]` and `[gpio]`
tables belong to their sink modules (Frigate-style). A missing `[mqtt]` or `[gpio]` table means that output is
off (and without `[mqtt]` the daemon prints JSON lines to stdout instead).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_oneclass.device.config_section import parse_section
from edge_oneclass.device.detect.settings import ScoringSettings
from edge_oneclass.device.errors import ConfigError, ModelError
from edge_oneclass.device.model.preprocess import Roi

if TYPE_CHECKING:
    from edge_oneclass.device.mqtt.config import MqttConfig
    from edge_oneclass.device.sinks.gpio import GpioConfig

DEFAULT_CONFIG_PATH = Path("/etc/edge-device/config.toml")
DEFAULT_MODEL_PATH = "/var/lib/edge-device/model.tflite"
DEFAULT_FEEDBACK_DIR = "/var/lib/edge-device/feedback"


@dataclass
class CameraConfig:
    source: str | int = "picamera2"
    fps: float = 5.0
    width: int | None = None
    height: int | None = None
    roi: list[float] | None = None      # x, y, w, h as fractions of the frame
    realtime: bool = False              # files and folders: replay at their own pace, not as fast as possible
    # Only here to reject it with an explanation: the 2x2 tiles became [detect] regions and sweep.
    tiles: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tiles is not None:
            raise ValueError("camera.tiles is gone: small subjects are now found by [detect] regions (crops around "
                             "motion) and sweep (a grid looked at a few crops per frame), both on by default; "
                             "remove camera.tiles")
        if not (math.isfinite(self.fps) and 0 < self.fps <= 120):
            raise ValueError(f"camera.fps must be between 0 and 120, got {self.fps}")
        if (self.width is None) != (self.height is None):
            raise ValueError("camera.width and camera.height must be set together")
        for key in ("width", "height"):
            value = getattr(self, key)
            if value is not None and not 16 <= value <= 8192:
                raise ValueError(f"camera.{key} must be between 16 and 8192 pixels, got {value}")
        if self.roi is not None:
            if len(self.roi) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in self.roi):
                raise ValueError(f"camera.roi must be 4 numbers [x, y, w, h] as fractions 0..1, got {self.roi!r}")
            try:
                Roi(*(float(v) for v in self.roi))
            except ValueError as exc:
                raise ValueError(f"camera.{exc}") from None

    @property
    def region(self) -> Roi | None:
        return Roi(*(float(v) for v in self.roi)) if self.roi is not None else None


@dataclass
class ModelConfig:
    path: str = DEFAULT_MODEL_PATH
    threads: int = 2
    threshold: float | None = None      # overrides model.json's calibrated threshold
    store: str | None = None            # models pushed over MQTT (current/, previous/); default models/ beside path

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= 64:
            raise ValueError(f"model.threads must be between 1 and 64, got {self.threads}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"model.threshold must be a finite number, got {self.threshold}")


@dataclass
class DetectConfig(ScoringSettings):
    """The `[detect]` table: what each frame is scored on (ScoringSettings), then the debounce."""

    on_frames: int = 6
    window: int = 8
    off_delay: float = 30.0
    # The crops' threshold at this recall of the label photos' out-of-fold crop views (calibration.npz) instead
    # of the model's (0.5): higher finds more small, distant subjects and costs more false alarms.
    crop_recall: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop_recall is not None and not 0.0 < self.crop_recall < 1.0:
            raise ValueError(f"detect.crop_recall must be between 0 and 1 (e.g. 0.9), got {self.crop_recall}")
        if self.window < 1:
            raise ValueError(f"detect.window must be at least 1, got {self.window}")
        if not 1 <= self.on_frames <= self.window:
            raise ValueError(f"detect.on_frames must be between 1 and detect.window ({self.window}), "
                             f"got {self.on_frames}")
        if not self.off_delay >= 0:
            raise ValueError(f"detect.off_delay must be zero or more seconds, got {self.off_delay}")


@dataclass
class SnapshotConfig:
    enabled: bool = True
    dir: str | None = None              # also save the JPEG of every episode start here
    keep: int = 1000                    # ... the newest this many (oldest removed; 0 = keep all)

    def __post_init__(self) -> None:
        if not 0 <= self.keep <= 10_000_000:
            raise ValueError(f"snapshot.keep must be 0 (keep all) or a number of snapshots, got {self.keep}")


@dataclass
class FeedbackConfig:
    """The `[feedback]` table: what the user flags (MQTT, `edge-device teach`) changes scores at once."""

    enabled: bool = True
    dir: str = DEFAULT_FEEDBACK_DIR     # bank.npz, frames/ (flagged JPEGs), missed/
    window: float = 60.0                # a false_alarm this many seconds after an episode ended applies to it
    max_negatives: int = 512            # bank bound (a k-centre coreset keeps it spread out)
    max_frames: int = 200               # flagged JPEGs kept in frames/ and in missed/ (oldest removed)
    missed_span: float = 5.0            # a `missed` flag teaches the views of this many seconds before it
    quiet_every: float = 300.0          # keep a quiet frame (still scene, nothing present) at most this often ...
    max_quiet: int = 64                 # ... up to this many, spread out (what taught positives must not lift)

    def __post_init__(self) -> None:
        if not self.dir.strip():
            raise ValueError("feedback.dir must not be empty")
        if not (math.isfinite(self.window) and self.window >= 0):
            raise ValueError(f"feedback.window must be zero or more seconds, got {self.window}")
        if not 1 <= self.max_negatives <= 100_000:
            raise ValueError(f"feedback.max_negatives must be between 1 and 100000, got {self.max_negatives}")
        if not 0 <= self.max_frames <= 100_000:
            raise ValueError(f"feedback.max_frames must be between 0 and 100000, got {self.max_frames}")
        if not (math.isfinite(self.missed_span) and 0 <= self.missed_span <= 600):
            raise ValueError(f"feedback.missed_span must be between 0 and 600 seconds, got {self.missed_span}")
        if not (math.isfinite(self.quiet_every) and self.quiet_every > 0):
            raise ValueError(f"feedback.quiet_every must be more than 0 seconds, got {self.quiet_every}")
        if not 0 <= self.max_quiet <= 10_000:
            raise ValueError(f"feedback.max_quiet must be between 0 and 10000, got {self.max_quiet}")


@dataclass
class LogConfig:
    level: str = "INFO"

    def __post_init__(self) -> None:
        self.level = self.level.upper()
        if self.level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"log.level must be DEBUG, INFO, WARNING or ERROR, got {self.level!r}")


@dataclass
class Config:
    path: Path
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    log: LogConfig = field(default_factory=LogConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    mqtt: MqttConfig | None = None
    gpio: GpioConfig | None = None


def _parse_mqtt(data: dict[str, Any]) -> MqttConfig:
    from edge_oneclass.device.mqtt.config import MqttConfig

    return parse_section(MqttConfig, data, "mqtt")


def _parse_gpio(data: dict[str, Any]) -> GpioConfig:
    from edge_oneclass.device.sinks.gpio import GpioConfig

    return parse_section(GpioConfig, data, "gpio")


_SECTIONS: dict[str, Any] = {
    "camera": CameraConfig,
    "model": ModelConfig,
    "detect": DetectConfig,
    "snapshot": SnapshotConfig,
    "log": LogConfig,
    "feedback": FeedbackConfig,
    "mqtt": _parse_mqtt,
    "gpio": _parse_gpio,
}


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Build a Config from an already-parsed TOML document; raises ConfigError naming `section.key`."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]; valid sections: {', '.join(_SECTIONS)}")
    parsed: dict[str, Any] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name} must be a table [{name}], got {table!r}")
        kind = _SECTIONS[name]
        try:
            parsed[name] = kind(table) if not isinstance(kind, type) else parse_section(kind, table, name)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return Config(path=path, **parsed)


def load_config(path: str | Path = DEFAULT_CONFIG_PATH, require_model: bool = True) -> Config:
    """Read and check `path`. With `require_model`, a missing model file is a ModelError naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; copy config.example.toml there or pass --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    cfg = parse_config(data, path)
    if require_model:
        model = Path(cfg.model.path)
        if not model.is_file():
            raise ModelError(f"{model}: model file not found (config {path}, key model.path); "
                             "copy model.tflite and model.json there")
    return cfg
