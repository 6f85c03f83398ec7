"""Real footage through the daemon: does each dog clip give a presence event, and does any no-dog clip?

Every clip of `../shared/data/video` (12 with a dog, 12 without: cats, people, street, parking, a cow) is
replayed by the daemon's own code path: a `Config` built as `edge-device run` builds it from config.toml
([camera] source = the clip, fps; [model] path; [detect] as configured), `Daemon(cfg, sinks, notifier,
observer)`, a sink that records the presence events and the observer hook that sees every scored frame. No
MQTT, no snapshots. A video file is scored at `[camera] fps` (default 5) on its own timeline, as fast as it
decodes, so the figures do not depend on the machine's speed.

Per clip: presence events (starts), share of the clip's frames with presence on, delay from the clip's start to
the first event (s), share of positive frames (frame score >= threshold, before debouncing) and model
invocations per frame. Per configuration: dog clips with an event (x/12), no-dog clips with a false alarm
(x/12, and which), false alarms on the people/street/parking clips nodog/08-11, and invocations per frame
(over all frames).

Configurations (several per run; each is a row of the summary):
    --config-set 'NAME:section.key=value,section.key=value'   repeatable; NAME alone = the defaults
    --set section.key=value [--name NAME]                     one more configuration (repeatable --set)
Without either: `default` (the default config) and `whole` (detect.regions=false, detect.sweep=false).
Keys without a section are [detect] keys; values are TOML values (true, 0.5, "text").

Usage (from the repository root):
    .venv/bin/python -m benchmarks.footage --model /tmp/std/model-v3
    .venv/bin/python -m benchmarks.footage --model DIR --config-set default \\
        --config-set 'whole:regions=false,sweep=false' --config-set 'no confirmation:confirm_frames=1'
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DATA,
    RESULTS,
    command_line,
    fmt,
    markdown_table,
    model_file,
    today,
    write_json,
)
from edge_oneclass.device.config import Config, parse_config
from edge_oneclass.device.daemon import Daemon
from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.detect.scoring import FrameScore
from edge_oneclass.device.frame import Frame
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.base import Sink

VIDEO = DATA / "video"
PEOPLE_STREET = ("nodog/08", "nodog/09", "nodog/10", "nodog/11")   # people, street CCTV, parking, room with people
DEFAULT_CONFIGS = ("default", "crops:detect.regions=true,detect.sweep=true", "no gate:detect.stationary_interval=0")


# -- configurations ---------------------------------------------------------------------------------------------

def _value(text: str) -> Any:
    """A TOML value (true, 3, 0.5, "x"); bare words that are not TOML are taken as strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['detect.sweep=false', 'max_crops=3'] -> {'detect': {'sweep': False, 'max_crops': 3}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"override {item!r} is not key=value")
        section, _, name = key.strip().rpartition(".")
        out.setdefault(section or "detect", {})[name] = _value(value.strip())
    return out


def parse_config_set(spec: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """'NAME:key=val,key=val' (or 'NAME') -> (name, overrides)."""
    name, _, rest = spec.partition(":")
    items = [s for s in rest.split(",") if s.strip()]
    return name.strip() or "default", parse_overrides(items)


def daemon_config(clip: Path, model: Path, fps: float, overrides: dict[str, dict[str, Any]]) -> Config:
    """The Config `edge-device run` would build from a config.toml replaying `clip` with these overrides."""
    data: dict[str, dict[str, Any]] = {
        "camera": {"source": str(clip), "fps": fps},
        "model": {"path": str(model), "threads": 2},
        "snapshot": {"enabled": False},
        "log": {"level": "WARNING"},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, Path(f"<footage {clip.parent.name}/{clip.stem}>"))


# -- one replay -------------------------------------------------------------------------------------------------

class RecordingSink(Sink):
    """Keeps every presence change the daemon fans out."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        self.changes.append(change)


@dataclass
class ClipResult:
    clip: str
    label: str
    frames: int = 0
    seconds: float = 0.0
    events: int = 0
    present_share: float = 0.0
    first_event_s: float | None = None
    positive_share: float = 0.0
    invocations_per_frame: float = 0.0
    cpu_ms_per_frame: float = 0.0        # the whole replay in this process (decode included) per scored-at-fps frame
    max_margin: float | None = None
    event_starts_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def replay(clip: Path, model: Path, fps: float, overrides: dict[str, dict[str, Any]]) -> ClipResult:
    """Run the daemon on one clip, with a feedback bank of its own (never the host's); what it saw."""
    with tempfile.TemporaryDirectory(prefix="edge-footage-") as bank:
        return _replay(clip, model, fps, {"feedback": {"dir": bank}} | overrides)


def _replay(clip: Path, model: Path, fps: float, overrides: dict[str, dict[str, Any]]) -> ClipResult:
    cfg = daemon_config(clip, model, fps, overrides)
    sink = RecordingSink()
    times: list[float] = []
    present: list[bool] = []
    margins: list[float] = []
    invocations: list[int] = []

    def observe(frame: Frame, scored: FrameScore, is_present: bool) -> None:
        times.append(frame.t)
        present.append(is_present)
        margins.append(scored.margin)
        invocations.append(scored.invocations)

    t0, cpu0 = time.perf_counter(), time.process_time()
    Daemon(cfg, sinks=[sink], notifier=Notifier(env={}), stats_every=math.inf, observer=observe).run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    starts = [c.at - times[0] for c in sink.changes if c.present] if times else []
    n = len(times)
    return ClipResult(
        clip=f"{clip.parent.name}/{clip.stem}", label=clip.parent.name, frames=n,
        seconds=round(times[-1] - times[0], 2) if n else 0.0, events=len(starts),
        present_share=round(float(np.mean(present)), 4) if n else 0.0,
        first_event_s=round(starts[0], 2) if starts else None,
        positive_share=round(float(np.mean(np.asarray(margins) >= 0)), 4) if n else 0.0,
        invocations_per_frame=round(float(np.mean(invocations)), 3) if n else 0.0,
        cpu_ms_per_frame=round(1000.0 * cpu / n, 2) if n else 0.0,
        max_margin=round(float(np.max(margins)), 4) if n else None,
        event_starts_s=[round(s, 2) for s in starts], wall_s=round(wall, 1))


def summarise(name: str, overrides: dict, clips: list[ClipResult]) -> dict:
    dog = [c for c in clips if c.label == "dog"]
    nodog = [c for c in clips if c.label == "nodog"]
    alarms = [c.clip for c in nodog if c.events]
    people = [c for c in nodog if c.clip in PEOPLE_STREET]
    frames = sum(c.frames for c in clips)
    delays = [c.first_event_s for c in dog if c.first_event_s is not None]
    return {
        "name": name, "overrides": overrides,
        "dog_clips_with_event": sum(1 for c in dog if c.events), "dog_clips": len(dog),
        "nodog_clips_with_false_alarm": len(alarms), "nodog_clips": len(nodog), "false_alarm_clips": alarms,
        "people_street_false_alarm_clips": [c.clip for c in people if c.events],
        "people_street_false_alarm_events": sum(c.events for c in people), "people_street_clips": len(people),
        "nodog_false_alarm_events": sum(c.events for c in nodog),
        "median_first_event_s": round(float(np.median(delays)), 2) if delays else None,
        "invocations_per_frame": round(sum(c.invocations_per_frame * c.frames for c in clips) / frames, 3)
        if frames else None,
        "cpu_ms_per_frame": round(sum(c.cpu_ms_per_frame * c.frames for c in clips) / frames, 2) if frames else None,
        "frames": frames, "wall_s": round(sum(c.wall_s for c in clips), 1),
        "clips": [asdict(c) for c in clips],
    }


# -- report -----------------------------------------------------------------------------------------------------

def summary_table(configs: list[dict]) -> str:
    rows = []
    for c in configs:
        people = c["people_street_false_alarm_clips"]
        rows.append([
            c["name"], f"{c['dog_clips_with_event']}/{c['dog_clips']}",
            f"{c['nodog_clips_with_false_alarm']}/{c['nodog_clips']}"
            + (f" ({', '.join(x.split('/')[1] for x in c['false_alarm_clips'])})" if c["false_alarm_clips"] else ""),
            f"{len(people)}/{c['people_street_clips']}" + (f" ({c['people_street_false_alarm_events']} events)"
                                                            if people else ""),
            fmt(c["median_first_event_s"], 1), fmt(c["invocations_per_frame"], 2), fmt(c["wall_s"], 0)])
    return markdown_table(["configuration", "dog clips with an event", "no-dog clips with a false alarm",
                           "false alarms, nodog/08-11", "median delay to first event s", "invocations/frame",
                           "wall s"], rows)


def clip_table(configs: list[dict]) -> str:
    """One row per clip; per configuration: events, present share, first event s, positive share, calls/frame."""
    header = ["clip"]
    for c in configs:
        header += [f"{c['name']}: events", "present", "first s", "positive", "calls/frame"]
    rows = []
    for i, clip in enumerate(configs[0]["clips"]):
        row = [clip["clip"]]
        for c in configs:
            r = c["clips"][i]
            row += [str(r["events"]), f"{r['present_share']:.2f}", fmt(r["first_event_s"], 1),
                    f"{r['positive_share']:.2f}", f"{r['invocations_per_frame']:.2f}"]
        rows.append(row)
    return markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder (model.tflite + model.json) or .tflite")
    p.add_argument("--config-set", action="append", default=[], metavar="NAME:KEY=VAL,...",
                   help="a configuration to replay every clip with (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VAL",
                   help="an override of one more configuration, named by --name (repeatable)")
    p.add_argument("--name", help="name of the --set configuration (default: the overrides)")
    p.add_argument("--fps", type=float, default=5.0, help="[camera] fps the clips are scored at (default 5)")
    p.add_argument("--clips", nargs="+", metavar="LABEL/NN", help="only these clips, e.g. dog/01 nodog/08")
    p.add_argument("--video", type=Path, default=VIDEO, help=f"clips folder (default {VIDEO})")
    p.add_argument("--json", type=Path, default=RESULTS / "footage.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    model = model_file(args.model)
    specs = [parse_config_set(s) for s in args.config_set]
    if args.set:
        specs.append((args.name or ",".join(args.set), parse_overrides(args.set)))
    if not specs:
        specs = [parse_config_set(s) for s in DEFAULT_CONFIGS]
    clips = sorted(args.video.glob("dog/*.mp4")) + sorted(args.video.glob("nodog/*.mp4"))
    if args.clips:
        clips = [c for c in clips if f"{c.parent.name}/{c.stem}" in args.clips]
    if not clips:
        raise SystemExit(f"no clips found under {args.video}")
    for _, overrides in specs:   # fail on a typo before the first replay, naming the key
        daemon_config(clips[0], model, args.fps, overrides)

    results = []
    with tqdm(total=len(specs) * len(clips), unit="clip", dynamic_ncols=True) as bar:
        for name, overrides in specs:
            done = []
            for clip in clips:
                bar.set_description(f"{name}: {clip.parent.name}/{clip.stem}")
                done.append(replay(clip, model, args.fps, overrides))
                bar.update(1)
            results.append(summarise(name, overrides, done))
    data = {"command": command_line(), "date": today(), "model": str(model), "fps": args.fps, "configs": results}
    write_json(args.json, data)
    print()
    print(summary_table(results))
    print()
    print(clip_table(results))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
