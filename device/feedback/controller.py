"""The daemon's side of "not a dog": remember what each episode looked like, and learn from the user's flag at once.

Per episode the daemon keeps the embeddings of the views that were positive (the whole view and/or the crops whose
margin was >= 0, `FrameScore.views`), including the frames of the debounce window that turned it on. A
`false_alarm` (MQTT `<base_topic>/<device_id>/<label>/feedback`, a Home Assistant button) turns them into
negatives of the feedback bank (`device.feedback.bank`): the open episode's, or the last one's if it ended less than
`[feedback] window` seconds ago (frame time). From the next frame on, the bank lowers every similar view's score; the
flagged episode ends at the first frame that no longer scores positive (the debouncer is forced off, no 30 s wait).
A `missed` (the "missed" button) turns the views of the last `[feedback] missed_span` seconds (the current frame's
and the frames' before it, whole view and any crops) into positives: from the next frame on, views close to them
score higher, unless that would lift a view the device knows is empty (the bank's docstring says how that is
checked). The daemon keeps those empty views itself: a quiet frame (the scene still for `QUIET_HOLD` seconds,
nothing present) at most every `[feedback] quiet_every` seconds goes to the bank's reservoir of the camera's empty
scene, spread over the day. The flagged frames are kept as JPEGs in `<dir>/frames` (and `missed` ones in
`<dir>/missed`) for the next retraining.

Thread safety: MQTT messages arrive on paho's thread; they are only parsed there and the work is queued for the frame
loop (`Daemon.call_between_frames`), so the bank and the episode state are only ever touched between two frames.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_oneclass.device.detect.events import StateChange, iso_utc
from edge_oneclass.device.feedback.bank import BankMismatch, FeedbackBank
from edge_oneclass.device.feedback.frame_store import FRAMES_DIR, MISSED_DIR, FrameStore

if TYPE_CHECKING:
    from edge_oneclass.device.config import Config, FeedbackConfig
    from edge_oneclass.device.detect.debounce import Decider
    from edge_oneclass.device.detect.scoring import FrameScore
    from edge_oneclass.device.frame import Frame
    from edge_oneclass.device.model.running import RunningModel

log = logging.getLogger(__name__)

FALSE_ALARM, MISSED = "false_alarm", "missed"
COMMANDS = (FALSE_ALARM, MISSED)
MAX_EPISODE_EMBEDDINGS = 256     # per episode; when full, every other one is dropped (spread over the episode)
MAX_EPISODE_IMAGES = 6           # frames of an episode kept for JPEGs: positive frames 1, 2, 4, 8, … (the last 6)
MAX_MISSED_VIEWS = 64            # views one `missed` teaches at most: the span's whole views, then crops
QUIET_HOLD = 2.0                 # seconds the scene must stay still, nothing present, for a quiet frame


@dataclass
class Episode:
    started_at: float
    ended_at: float | None = None
    positives: int = 0
    embeddings: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    images: deque = field(default_factory=lambda: deque(maxlen=MAX_EPISODE_IMAGES))

    def add(self, t: float, views: Sequence[Any], image: np.ndarray | None) -> None:
        if not views:
            return
        self.positives += 1
        for v in views:
            self.embeddings.append(np.array(v.embedding, np.float32))
            self.sources.append(f"false alarm {iso_utc(t)} {v.kind} {v.box.as_list()}")
        if len(self.embeddings) > MAX_EPISODE_EMBEDDINGS:
            self.embeddings, self.sources = self.embeddings[::2], self.sources[::2]
        if image is not None and self.positives & (self.positives - 1) == 0:   # 1, 2, 4, 8, …
            self.images.append((t, image.copy()))


class FeedbackController:
    def __init__(self, cfg: FeedbackConfig, bank: FeedbackBank, label: str, pre_frames: int = 8) -> None:
        self.cfg = cfg
        self.bank = bank
        self.label = label
        self.frames = FrameStore(bank.dir / FRAMES_DIR, cfg.max_frames)
        self.missed_frames = FrameStore(bank.dir / MISSED_DIR, cfg.max_frames)
        self._pre: deque[tuple[float, list, np.ndarray | None]] = deque(maxlen=max(1, pre_frames))
        self.current: Episode | None = None
        self.last: Episode | None = None
        self._now = 0.0
        self._last_frame: tuple[Frame, FrameScore] | None = None
        self._end_flagged = False
        self._reload_failed = False
        self._recent: deque[tuple[float, Any]] = deque()     # (t, view) of the scored frames of the last span
        self._still_since: float | None = None               # when the scene last changed
        self._quiet: tuple[float, Any] | None = None         # the last scored frame's whole view, while absent
        self._last_quiet_kept = -float("inf")
        self._quiet_of_this_scene: list[str] = []            # quiet frames kept since the scene last changed

    @classmethod
    def create(cls, cfg: Config, model: RunningModel) -> FeedbackController | None:
        """The controller for this daemon and the model it runs (after a restart that followed a push, the pushed
        one: its calibration.npz guards the bank), or None (with one log line) when feedback cannot or must not
        run."""
        fc = cfg.feedback
        if not fc.enabled:
            return None
        if not model.embedding_dim:
            log.info("feedback: off (the model has no embedding output; re-export it with this version)")
            return None
        try:
            bank = FeedbackBank.open(fc.dir, model.path, model.card, model.embedding_dim, fc.max_negatives,
                                     fc.max_quiet)
        except BankMismatch as exc:
            log.error("feedback: off: %s", exc)
            return None
        except OSError as exc:
            log.error("feedback: off: cannot use [feedback] dir %s (%s); make it writable (StateDirectory)",
                      fc.dir, exc.strerror or exc)
            return None
        log.info("feedback: %s", bank.describe())
        return cls(fc, bank, model.label, cfg.detect.window)

    def rebind(self, cfg: Config, model: RunningModel) -> bool:
        """After a model swap: the bank re-opened for the new model (its label photos set the gates); False, with
        one log line, when the bank cannot serve it (then feedback is off until a restart)."""
        if not model.embedding_dim:
            log.error("feedback: off: the new model has no embedding output")
            return False
        try:
            bank = FeedbackBank.open(cfg.feedback.dir, model.path, model.card, model.embedding_dim,
                                     cfg.feedback.max_negatives, cfg.feedback.max_quiet)
        except (BankMismatch, OSError) as exc:
            log.error("feedback: off after the model swap: %s", exc)
            return False
        same_label, same_net = model.label == self.label, bank.model_sha256 == self.bank.model_sha256
        self.bank, self.label = bank, model.label
        if not same_label:              # another label's episode is over (the daemon closed it)
            self.current = self.last = None
        elif not same_net:              # the episode goes on and can still be flagged; the old network's views
            self.current = Episode(self.current.started_at) if self.current is not None else None   # do not fit
            self.last = None
            self._pre.clear()
        self._recent.clear()             # the old model's views and margins mean nothing to the new one
        self._quiet = None
        self._quiet_of_this_scene = []   # another bank's rows
        log.info("feedback (new model): %s", bank.describe())
        return True

    # -- the frame loop -------------------------------------------------------------------------------------

    def adjust(self, embedding: np.ndarray) -> float:
        return self.bank.adjust(embedding)

    def poll(self) -> None:
        """Between frames: pick up a bank file changed by `edge-device teach`."""
        try:
            if self.bank.reload_if_changed():
                self._reload_failed = False
                log.info("feedback: bank file changed, reloaded: %s", self.bank.describe())
        except BankMismatch as exc:
            if not self._reload_failed:
                log.error("feedback: %s; keeping the bank in memory", exc)
            self._reload_failed = True

    def after_frame(self, frame: Frame, scored: FrameScore, decider: Decider,
                    change: StateChange | None) -> StateChange | None:
        """Record the frame's positive views for its episode; end a flagged episode once a frame is negative."""
        self._now = frame.t
        self._last_frame = (frame, scored)
        if self._end_flagged and change is None and decider.present and scored.margin < 0:
            change = decider.force_off(frame.t)
            if change is not None:
                log.info("feedback: the flagged episode ends now (score %.3f, %.3f under the threshold)",
                         scored.score, -scored.margin)
        # a frame that carried the last score (nothing changed) adds no views of its own: they are the last frame's
        views = [] if scored.carried else [v for v in scored.views if v.margin >= 0 and v.embedding is not None]
        if self.current is None:
            self._pre.append((frame.t, views, frame.image if views else None))
            if change is not None and change.present:
                self.current = Episode(started_at=change.event.started_at)
                for t, v, image in self._pre:
                    self.current.add(t, v, image)
                self._pre.clear()
        else:
            self.current.add(frame.t, views, frame.image)
            if change is not None and not change.present:
                self.current.ended_at = frame.t
                self.last, self.current = self.current, None
                self._end_flagged = False
        self._remember(frame.t, scored, decider.present)
        return change

    def _remember(self, t: float, scored: FrameScore, present: bool) -> None:
        """Keep the scored views of the last `missed_span` seconds (for `missed`), and now and then a quiet frame
        for the bank's reservoir of the camera's empty scene."""
        if not scored.carried:
            self._recent.extend((t, v) for v in scored.views if v.embedding is not None)
        while self._recent and (self._recent[0][0] < t - self.cfg.missed_span or self._recent[0][0] > t):
            self._recent.popleft()        # too old, or from before a clock step back
        if scored.changed or self._still_since is None or t < self._still_since:
            self._still_since = t
            self._quiet_of_this_scene = []
        whole = scored.views[0] if scored.views else None
        if present or whole is None or whole.embedding is None or whole.margin >= 0:
            self._quiet = None
            return
        if not scored.carried:
            self._quiet = (t, whole)
        if (self._quiet is not None and t - self._still_since >= QUIET_HOLD
                and not 0 <= t - self._last_quiet_kept < self.cfg.quiet_every and self.cfg.max_quiet > 0):
            qt, view = self._quiet
            self._last_quiet_kept, self._quiet = t, None
            source = f"quiet {iso_utc(qt)}"
            try:
                if self.bank.add_scene(view.embedding[None, :], [view.margin - view.adjustment], [source]).added:
                    self._quiet_of_this_scene.append(source)
            except OSError as exc:
                log.warning("feedback: cannot keep a quiet frame in %s (%s)", self.bank.dir, exc.strerror or exc)

    # -- commands (run on the frame loop's thread) ------------------------------------------------------------

    def apply(self, command: str) -> str:
        if command == FALSE_ALARM:
            return self.false_alarm()
        if command == MISSED:
            return self.missed()
        raise ValueError(f"unknown feedback command {command!r}")

    def false_alarm(self) -> str:
        episode = self.current
        if episode is None and self.last is not None and self.last.ended_at is not None \
                and self._now - self.last.ended_at <= self.cfg.window:
            episode = self.last
        if episode is None:
            msg = f"false_alarm: no episode open or ended in the last {self.cfg.window:g} s; nothing to learn"
            log.info("feedback: %s", msg)
            return msg
        if not episode.embeddings:
            msg = "false_alarm: this episode was already taught"
            log.info("feedback: %s", msg)
            return msg
        result = self.bank.add_negatives(np.stack(episode.embeddings), episode.sources)
        for t, image in episode.images:
            self._keep(self.frames, image, "false_alarm", t)
        episode.embeddings, episode.sources = [], []
        episode.images.clear()
        if episode is self.current:
            self._end_flagged = True
        msg = (f"false alarm of the episode started at {iso_utc(episode.started_at)}: {result.summary()}; "
               f"bank: {self.bank.describe()}")
        for source, reason in result.refused[:3]:
            log.warning("feedback: refused %s: %s", source, reason)
        log.info("feedback: %s", msg)
        return msg

    def missed(self) -> str:
        """The user says the label is there and was not seen: the views of the last `missed_span` seconds become
        positives (the JPEG of the current frame is kept for retraining too)."""
        if self._last_frame is None:
            return "missed: no frame scored yet"
        frame, scored = self._last_frame
        views = [v for _, v in self._recent] or [v for v in scored.views if v.embedding is not None]
        if not views:
            return "missed: the model gave no embedding"
        if len(views) > MAX_MISSED_VIEWS:     # every whole view of the span; the crops thinned evenly to fit
            whole = [v for v in views if v.kind == "whole"][:MAX_MISSED_VIEWS]
            crops = [v for v in views if v.kind != "whole"]
            room = MAX_MISSED_VIEWS - len(whole)
            views = whole + ([crops[i] for i in np.linspace(0, len(crops) - 1, room).round().astype(int)]
                             if room > 0 and crops else [])
        # the quiet frames kept while the scene stayed as it is now showed what the user says is the label
        result = self.bank.add_positives(np.stack([v.embedding for v in views]),
                                         [v.margin - v.adjustment for v in views],
                                         [f"missed {iso_utc(frame.t)} {v.kind} {v.box.as_list()}" for v in views],
                                         contradicted=self._quiet_of_this_scene)
        self._quiet_of_this_scene = []
        self._keep(self.missed_frames, frame.image, "missed", frame.t)
        for source, reason in result.refused[:3]:
            log.warning("feedback: refused %s: %s", source, reason)
        msg = f"missed: {result.summary('positive')} (the frame is kept for retraining); bank: {self.bank.describe()}"
        log.info("feedback: %s", msg)
        return msg

    @staticmethod
    def _keep(store: FrameStore, image: np.ndarray, prefix: str, t: float) -> None:
        from edge_oneclass.device.snapshot import encode_jpeg

        try:
            store.add(encode_jpeg(image, quality=95), prefix)
        except (OSError, ValueError) as exc:
            log.warning("feedback: cannot keep the frame in %s (%s)", store.dir, exc)

    # -- MQTT ---------------------------------------------------------------------------------------------------

    def attach(self, sinks: Sequence[Any], schedule: Callable[[Callable[[], None]], None]) -> None:
        """Listen on each MQTT sink's `<label>/feedback` topic and announce the two Home Assistant buttons."""
        for sink in sinks:
            if not hasattr(sink, "on_command"):
                continue
            topic = sink.topic(f"{sink.label_slug}/feedback")

            def on_message(payload: bytes, topic: str = topic) -> None:   # paho's thread: parse, then queue
                command = payload.decode("utf-8", "replace").strip().lower()
                if command not in COMMANDS:
                    log.warning("feedback: unknown payload %r on %s; send %s", payload[:40], topic,
                                " or ".join(COMMANDS))
                    return
                schedule(lambda: self._apply_logged(command))

            sink.on_command(topic, on_message)
            if hasattr(sink, "add_discovery"):
                for command, name, icon in ((FALSE_ALARM, "false alarm", "mdi:thumb-down"),
                                            (MISSED, "missed", "mdi:thumb-up")):
                    sink.add_discovery("button", command, {
                        "name": f"{self.label}: {name}", "command_topic": topic, "payload_press": command,
                        "icon": icon})
            log.info("feedback: listening on %s", topic)

    def _apply_logged(self, command: str) -> None:
        try:
            self.apply(command)
        except OSError as exc:
            log.error("feedback: %s not learnt: cannot write the bank in %s (%s); check [feedback] dir and its "
                      "permissions", command, self.bank.dir, exc.strerror or exc)
        except Exception:  # noqa: BLE001 - a failed teach must not stop detection
            log.exception("feedback: %s failed", command)
