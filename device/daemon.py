"""The frame loop: source -> Runner -> Decider -> sinks, with systemd readiness, watchdog and clean shutdown.

Live sources are paced at `[camera] fps` on the newest frame (late ticks count as dropped frames); files and
folders run as fast as they decode on their own timeline, and the open episode is closed at their end.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from edge_oneclass.device.config import Config
from edge_oneclass.device.detect.debounce import Decider
from edge_oneclass.device.detect.events import StateChange, iso_utc
from edge_oneclass.device.detect.scoring import FrameScore, FrameScorer
from edge_oneclass.device.errors import SourceError
from edge_oneclass.device.feedback.controller import FeedbackController
from edge_oneclass.device.frame import Frame
from edge_oneclass.device.model.info import ModelInfo
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.base import Sink
from edge_oneclass.device.sinks.stdout import StdoutSink
from edge_oneclass.device.sources import Source, make_source
from edge_oneclass.device.update.swap import ModelUpdates

log = logging.getLogger(__name__)

FrameObserver = Callable[[Frame, FrameScore, bool], None]
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
BACKOFF_MAX_S = 30.0
FIRST_CONNECT_WAIT_S = 5.0   # at start-up, for the broker's first CONNACK (a dead broker costs this once)


def cpu_temperature(path: Path = THERMAL_ZONE) -> float | None:
    """SoC temperature in °C, or None where the kernel does not expose it (containers, most PCs)."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def build_sinks(cfg: Config, info: ModelInfo) -> list[Sink]:
    """One sink per configured output; stdout JSON when there is no [mqtt], so a first run needs no broker."""
    sinks: list[Sink] = []
    if cfg.mqtt is not None:
        from edge_oneclass.device.sinks.mqtt import MqttSink

        mqtt_sink = MqttSink(cfg.mqtt, info)
        mqtt_sink.start()
        mqtt_sink.wait_connected(FIRST_CONNECT_WAIT_S)
        sinks.append(mqtt_sink)
    else:
        sinks.append(StdoutSink(info))
    if cfg.gpio is not None:
        from edge_oneclass.device.sinks.gpio import GpioSink

        sinks.append(GpioSink(cfg.gpio))
    return sinks


class LoopStats:
    """Figures for `sink.stats`, reset every reporting period."""

    def __init__(self, started: float) -> None:
        self.started_wall = time.monotonic()
        self.period_start = started
        self.frames = 0
        self.total_frames = 0
        self.dropped = 0
        self.inference_ms: list[float] = []
        self.invocations = 0
        self.scored = 0                          # frames the model looked at (the others carried the last score)
        self.last_score: float | None = None
        self.period_cpu = time.process_time()

    def add(self, score: float, ms: float, invocations: int = 1) -> None:
        self.frames += 1
        self.total_frames += 1
        self.last_score = score
        self.invocations += invocations
        if invocations:
            self.scored += 1
            self.inference_ms.append(ms)

    def report(self, now: float, present: bool) -> dict[str, Any]:
        elapsed = max(now - self.period_start, 1e-9)
        ms = np.asarray(self.inference_ms or [float("nan")])
        cpu = time.process_time()
        figures = {
            "fps": round(self.frames / elapsed, 2),
            "inference_ms_p50": round(float(np.percentile(ms, 50)), 2) if self.inference_ms else None,
            "inference_ms_p95": round(float(np.percentile(ms, 95)), 2) if self.inference_ms else None,
            "invocations_per_frame": round(self.invocations / self.frames, 2) if self.frames else None,
            "scored_frames_share": round(self.scored / self.frames, 3) if self.frames else None,
            # the whole process (decode, motion, model, sinks) per frame: what a Pi's core pays
            "cpu_ms_per_frame": round(1000.0 * (cpu - self.period_cpu) / self.frames, 2) if self.frames else None,
            "dropped_frames": self.dropped,
            "frames": self.total_frames,
            "uptime_s": round(time.monotonic() - self.started_wall, 1),
            "last_score": None if self.last_score is None else round(self.last_score, 4),
            "present": present,
            "cpu_temp_c": cpu_temperature(),
        }
        self.period_start, self.frames, self.inference_ms, self.invocations = now, 0, [], 0
        self.scored, self.period_cpu = 0, cpu
        return figures


class Daemon:
    def __init__(self, cfg: Config, sinks: list[Sink] | None = None, notifier: Notifier | None = None,
                 stats_every: float = 60.0, observer: FrameObserver | None = None) -> None:
        """`observer(frame, scored, present)` is called after every frame is decided (benchmarks, tests)."""
        self.cfg = cfg
        self.sinks = sinks
        self.observer = observer
        # Work handed in from other threads (MQTT commands): run by the frame loop between two frames.
        self._pending: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.notifier = notifier or Notifier()
        self.stats_every = stats_every
        self._stop = threading.Event()
        self.last_frame: Frame | None = None     # the frame being scored (model updates test a new model on it)
        self.model_updates: ModelUpdates | None = None
        self.feedback: FeedbackController | None = None   # set by run(); None when [feedback] is off
        # The one reference to the model in use (set by run()); a swap replaces it between two frames.
        self._model: RunningModel | None = None
        self._scorer: FrameScorer | None = None
        self._decider: Decider | None = None
        self._sinks: list[Sink] = []

    # -- control ------------------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def call_between_frames(self, action: Callable[[], None]) -> None:
        """Run `action` on the frame loop's thread before the next frame is scored (thread-safe)."""
        self._pending.put(action)

    def _run_pending(self) -> None:
        while True:
            try:
                action = self._pending.get_nowait()
            except queue.Empty:
                return
            try:
                action()
            except Exception:  # noqa: BLE001 - a failed command must not stop detection
                log.exception("a queued action failed")

    # -- the running model (the `ModelHost` interface of model updates) ------------------------------------

    @property
    def model(self) -> RunningModel:
        if self._model is None:
            raise RuntimeError("no model yet: the daemon has not started")
        return self._model

    def last_image(self) -> np.ndarray | None:
        return self.last_frame.image if self.last_frame is not None else None

    def swap_model(self, model: RunningModel) -> None:
        """Score with `model` from the next frame on. Runs on the frame loop's thread (`call_between_frames`):
        an open episode of another label is closed first, the sinks and the feedback bank follow the new model."""
        old, decider, scorer = self.model, self._decider, self._scorer
        assert decider is not None and scorer is not None
        if model.label != old.label:
            if decider.present:
                change = decider.finish(self.last_frame.t if self.last_frame is not None else 0.0)
                if change is not None:
                    self._fan_out(self._sinks, change, None)
            decider.label = model.label
        self._model = model
        scorer.reset()
        if self.feedback is not None and not self.feedback.rebind(self.cfg, model):
            self.feedback, scorer.adjust = None, None
        for sink in self._sinks:
            self._call(sink, "model_changed", model.info)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}

    # -- main ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (live) or the end of a replay; returns the exit code (0)."""
        previous = self._install_signals()
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        cfg = self.cfg
        from edge_oneclass.device.update.store import active_model_path

        model_path = active_model_path(cfg)      # a model pushed over MQTT, else [model] path
        model = self._model = RunningModel.load(model_path, cfg.model.threads, cfg.model.threshold,
                                                cfg.detect.crop_recall)
        self.feedback = FeedbackController.create(cfg, model)
        scorer = self._scorer = FrameScorer(cfg.detect, cfg.camera.region,
                                            adjust=self.feedback.adjust if self.feedback is not None else None)
        decider = self._decider = Decider(model.label, cfg.detect.on_frames, cfg.detect.window, cfg.detect.off_delay)
        log.info("model %s: label %r, threshold %.4f, crops %.4f (%s), %s", model_path, model.label,
                 model.thresholds.whole, model.thresholds.crop,
                 "config override" if cfg.model.threshold is not None else "model.json", model.runner.backend)

        source = make_source(cfg.camera.source, cfg.camera.fps, cfg.camera.width, cfg.camera.height,
                             cfg.camera.realtime)
        source.open()
        sinks: list[Sink] = []
        try:
            first = source.read()
            if first is None:
                raise SourceError(f"{source.name}: no frames to read; check [camera] source")
            sinks = self._sinks = self.sinks if self.sinks is not None else build_sinks(cfg, model.info)
            self.model_updates = ModelUpdates(self, cfg, sinks)
            if self.feedback is not None:
                self.feedback.attach(sinks, self.call_between_frames)
            self.model_updates.start()
            self.notifier.ready(f"watching {source.name} for {model.label!r}")
            log.info("ready: %s %s, %dx%d, threshold %.3f, on %d/%d frames, off after %.1f s",
                     "live" if source.live else "replaying", source.name, *first.size, model.thresholds.whole,
                     decider.on_frames, decider.window, decider.off_delay)
            self._loop(source, first, scorer, decider, sinks)
        finally:
            self.notifier.stopping()
            for sink in sinks:
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001 - one broken sink must not keep the others open
                    log.warning("%s.close failed: %s", type(sink).__name__, exc)
            source.close()
            self.notifier.close()
        return 0

    def _loop(self, source: Source, first: Frame, scorer: FrameScorer, decider: Decider, sinks: list[Sink]) -> None:
        cfg = self.cfg
        keep_snapshot = cfg.snapshot.enabled or cfg.snapshot.dir is not None
        recent: deque[tuple[float, Frame]] = deque(maxlen=cfg.detect.window)
        clock = time.monotonic if source.live else None
        stats = LoopStats(clock() if clock else first.t)
        period = 1.0 / cfg.camera.fps
        next_due = time.monotonic()
        frame: Frame | None = first
        last_t = first.t
        bank_seen: tuple[int, int] | None = None
        while frame is not None and not self._stop.is_set():
            self._run_pending()
            self.last_frame = frame
            if self.feedback is not None:
                self.feedback.poll()
                bank = self.feedback.bank
                if (id(bank), bank.generation) != bank_seen:   # a flag or a teach: a carried score is stale
                    bank_seen = (id(bank), bank.generation)
                    scorer.invalidate()
            scored = scorer.score(frame.image, self.model, frame.t)
            stats.add(scored.score, scored.inference_ms, scored.invocations)
            last_t = frame.t
            if keep_snapshot and not decider.present:
                recent.append((scored.margin, frame))
            change = decider.update(scored.margin, frame.t, scored.score)
            if self.feedback is not None:   # "not a dog": the episode's views, a flagged episode ends at once
                change = self.feedback.after_frame(frame, scored, decider, change)
            if self.observer is not None:
                self.observer(frame, scored, decider.present)
            if change is not None:
                jpeg = self._snapshot(change, recent) if change.present and keep_snapshot else None
                recent.clear()
                self._fan_out(sinks, change, jpeg)
            self.notifier.watchdog()

            now = clock() if clock else frame.t
            if now - stats.period_start >= self.stats_every:
                figures = stats.report(now, decider.present)
                log.info("stats: %s", " ".join(f"{k}={v}" for k, v in figures.items()))
                for sink in sinks:
                    self._call(sink, "stats", figures)

            if source.live:
                next_due += period
                late = time.monotonic() - next_due
                if late > period:
                    stats.dropped += int(late / period)
                    next_due = time.monotonic()
                elif late < 0 and self._stop.wait(-late):
                    break
            frame = self._next(source)

        if not source.live and decider.present:
            change = decider.finish(last_t)
            if change is not None:
                self._fan_out(sinks, change, None)
        elif decider.present:
            log.info("stopping with %r present; no end event (the next start reports the truth)", decider.label)
        if not source.live:
            log.info("replay finished: %d frames", stats.total_frames)

    def _next(self, source: Source) -> Frame | None:
        """The next frame; on a live source failure: log once, back off 1, 2, 4 … 30 s and reopen."""
        try:
            return source.read()
        except SourceError as exc:
            if not source.live:
                raise
            log.warning("camera failed: %s; reopening", exc)
        delay = 1.0
        while not self._stop.is_set():
            source.close()
            self.notifier.status(f"{source.name} unavailable, retrying in {delay:.0f} s")
            if self._sleep_pinging(delay):
                return None
            try:
                source.open()
                frame = source.read()
            except SourceError as exc:
                log.warning("camera still unavailable: %s; next try in %.0f s", exc, min(delay * 2, BACKOFF_MAX_S))
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            log.info("camera %s is back", source.name)
            self.notifier.status(f"watching {source.name}")
            return frame
        return None

    def _sleep_pinging(self, seconds: float) -> bool:
        """Wait `seconds` while keeping the systemd watchdog fed; True if a stop was requested."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(remaining, 0.5)):
                return True
            self.notifier.watchdog()
        return self._stop.is_set()

    def _snapshot(self, change: StateChange, recent: deque[tuple[float, Frame]]) -> bytes | None:
        """JPEG of the best-scoring frame among those that turned the state on."""
        from edge_oneclass.device.snapshot import encode_jpeg, save_snapshot

        if not recent:
            return None
        _, best = max(recent, key=lambda item: item[0])
        try:
            jpeg = encode_jpeg(best.image)
        except ValueError as exc:
            log.warning("snapshot: %s", exc)
            return None
        if self.cfg.snapshot.dir:
            save_snapshot(self.cfg.snapshot.dir, change.event.label, best.t, jpeg, self.cfg.snapshot.keep)
        return jpeg if self.cfg.snapshot.enabled else None

    def _fan_out(self, sinks: list[Sink], change: StateChange, jpeg: bytes | None) -> None:
        ev = change.event
        log.info("%s %s at %s: score %.3f, max %.3f, %d positive frames", ev.label,
                 "present" if change.present else "absent", iso_utc(change.at), ev.score, ev.max_score, ev.frames)
        for sink in sinks:
            self._call(sink, "state_changed", change, jpeg)

    @staticmethod
    def _call(sink: Sink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:  # noqa: BLE001 - an output failing must never stop detection
            log.warning("%s.%s failed: %s: %s", type(sink).__name__, method, type(exc).__name__, exc)


def run(cfg: Config) -> int:
    """Run the daemon for `cfg`; EdgeErrors propagate for the CLI to print as one line."""
    stats_every = cfg.mqtt.stats_interval if cfg.mqtt is not None else 60.0
    return Daemon(cfg, stats_every=stats_every).run()
