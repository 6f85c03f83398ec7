"""`edge-device`: run the detector, check a setup end to end, or capture frames for training.

Every user-fixable failure prints as one line `edge-device: <what, where, what to do>` with exit code 78
(config/model: systemd will not restart), 1 (runtime) or 2 (usage); tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_oneclass.device import __version__
from edge_oneclass.device.config import DEFAULT_CONFIG_PATH, Config, load_config
from edge_oneclass.device.console import run_main, setup_logging
from edge_oneclass.device.errors import EX_RUNTIME, EdgeError

PROG = "edge-device"
log = logging.getLogger(PROG)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg.log.level)
    from edge_oneclass.device.daemon import run

    return run(cfg)


def _report(ok: bool, what: str, detail: str) -> bool:
    print(f"{'OK  ' if ok else 'FAIL'} {what:<8} {detail}", flush=True)
    return ok


def _cmd_check(args: argparse.Namespace) -> int:
    """Each step prints one OK/FAIL line; a failed step that later steps need stops the run."""
    setup_logging("WARNING")
    try:
        cfg = load_config(args.config, require_model=False)
    except EdgeError as exc:
        _report(False, "config", str(exc))
        return exc.exit_code
    _report(True, "config", str(cfg.path))
    failures: list[int] = []

    def step(what: str, fn: Callable[[], str]) -> bool:
        try:
            return _report(True, what, fn())
        except EdgeError as exc:
            failures.append(exc.exit_code)
            return _report(False, what, str(exc))

    from edge_oneclass.device.model.running import RunningModel

    models: list[RunningModel] = []

    def load_model() -> str:
        from edge_oneclass.device.update.store import active_model_path

        path = active_model_path(cfg)      # a model pushed over MQTT, else [model] path: what `run` would load
        model = RunningModel.load(path, cfg.model.threads, cfg.model.threshold, cfg.detect.crop_recall)
        models.append(model)
        prior = model.prior
        prior_text = f", class prior on {len(prior.classes)} classes" if prior is not None else ""
        return (f"{path}: label {model.label!r}, {model.card.image_size}px, threshold {model.thresholds.whole:.4f} "
                f"(crops {model.thresholds.crop:.4f}){prior_text}, sha256 {model.sha256[:12]}… verified, "
                f"{model.runner.backend}")

    frames: list = []

    def open_camera() -> str:
        from edge_oneclass.device.sources import open_source

        source = open_source(cfg.camera.source, cfg.camera.fps, cfg.camera.width, cfg.camera.height)
        try:
            frame = source.read()
        finally:
            source.close()
        if frame is None:
            from edge_oneclass.device.errors import SourceError

            raise SourceError(f"{source.name}: opened but gave no frame")
        frames.append(frame)
        return f"{source.name}: {'live' if source.live else 'replay'}, first frame {frame.size[0]}x{frame.size[1]}"

    step("model", load_model)
    step("source", open_camera)
    if models and frames:
        def score() -> str:
            from edge_oneclass.device.detect.scoring import FrameScorer

            model = models[0]
            t0 = time.perf_counter()
            scored = FrameScorer(cfg.detect, cfg.camera.region).score(frames[0].image, model)
            ms = (time.perf_counter() - t0) * 1000
            verdict = "present" if scored.margin >= 0 else "absent"
            return (f"one frame scored {scored.score:.4f} ({verdict} at threshold {model.thresholds.whole:.4f}; "
                    f"{scored.invocations} model run(s)) in {ms:.1f} ms")

        step("score", score)
    from edge_oneclass.device.update.store import check_state_dirs

    step("store", lambda: check_state_dirs(cfg))
    if cfg.mqtt is not None:
        def broker() -> str:
            from edge_oneclass.device.mqtt.client import probe_broker

            probe_broker(cfg.mqtt, timeout=args.timeout)
            return f"reached MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port}"

        step("mqtt", broker)
    else:
        _report(True, "mqtt", "no [mqtt] section: events go to stdout as JSON lines")
    if cfg.gpio is not None:
        gpio = cfg.gpio

        def pin() -> str:
            from edge_oneclass.device.sinks.gpio import probe_pin

            return probe_pin(gpio)

        step("gpio", pin)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return max(failures)
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    """Save frames from the configured source, e.g. the empty scene for `train-edge --background`."""
    cfg: Config = load_config(args.config, require_model=False)
    setup_logging(cfg.log.level)
    from edge_oneclass.device.snapshot import encode_jpeg
    from edge_oneclass.device.sources import open_source

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeError(f"{out}: cannot create output folder ({exc.strerror or exc}); choose another --out") from None
    source = open_source(cfg.camera.source, cfg.camera.fps, cfg.camera.width, cfg.camera.height, cfg.camera.realtime)
    saved, last_t = 0, None
    try:
        while saved < args.count:
            frame = source.read()
            if frame is None:
                break
            if last_t is not None and frame.t - last_t < args.every:
                if source.live:
                    time.sleep(max(0.0, args.every - (frame.t - last_t)))
                continue
            last_t = frame.t
            path = out / f"frame_{int(time.time() * 1000) if source.live else frame.index:013d}.jpg"
            path.write_bytes(encode_jpeg(frame.image, quality=95))
            saved += 1
            print(f"\rcaptured {saved}/{args.count} -> {path}", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
        print(f"\n{saved} frame(s) saved in {out}", file=sys.stderr)
    if saved == 0:
        print(f"{PROG}: no frames captured from {cfg.camera.source}", file=sys.stderr)
        return EX_RUNTIME
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="One-class presence detector for the Raspberry Pi.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), metavar="FILE",
                       help=f"TOML configuration (default {DEFAULT_CONFIG_PATH})")
        return p

    with_config(sub.add_parser("run", help="watch the camera and report presence")).set_defaults(fn=_cmd_run)
    check = with_config(sub.add_parser("check", help="validate config, source, model, scoring, broker and GPIO"))
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker (default 5)")
    check.set_defaults(fn=_cmd_check)
    capture = with_config(sub.add_parser("capture", help="save frames from the camera as JPEGs"))
    capture.add_argument("--out", required=True, metavar="DIR", help="folder to write JPEGs into")
    capture.add_argument("--every", type=float, default=1.0, metavar="S", help="seconds between frames (default 1)")
    capture.add_argument("--count", type=int, default=50, metavar="N", help="frames to save (default 50)")
    capture.set_defaults(fn=_cmd_capture)
    from edge_oneclass.device.feedback.teach import add_parser as add_teach

    add_teach(sub, with_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "capture" and (args.count < 1 or args.every < 0):
        build_parser().error("--count must be at least 1 and --every zero or more")
    return run_main(PROG, lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
