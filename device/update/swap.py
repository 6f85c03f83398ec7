"""Model updates over MQTT: a pushed model is checked, saved and swapped in between two frames, no restart.

Topics (under `[mqtt] base_topic`):
- `<base>/<device_id>/model/set` and `<base>/all/model/set`: a model push (`device.update.payload`, sent by
  `push-edge`); on the device's own topic the text `rollback` brings back the previous model.
- `<base>/<device_id>/model`: retained JSON status (`device.model.info.status_payload`): the model scoring now,
  `status` ok/refused, `reason`, and the `push_id` of the push it answers.

A push is applied only when every check passes, in this order: the payload decodes; model.json is a card this
device understands (schema, preprocessing, score direction); the tflite's sha256 is the card's; calibration.npz's
sha256 is the card's `calibration.sha256` (when the card names one); the tflite loads in a Runner whose input
size is the card's; it scores the last camera frame (or a blank frame) to a finite number; the files are saved in
the model store (`device.update.store`: current/ and previous/, temp folder + rename). The swap itself runs on
the frame loop's thread: the new model is one `RunningModel`, handed to the daemon through the small `ModelHost`
interface (`swap_model`), which replaces its one reference to the running model (and closes an open episode of
an old label, tells the sinks, re-opens the feedback bank). Any failure: one log line and a `refused` status with
the reason; the old model keeps scoring.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.errors import EdgeError
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.update.check import FilesRefused, check_files
from edge_oneclass.device.update.payload import CARD_FILE, MODEL_FILE, ROLLBACK, PayloadError, decode, push_id_of
from edge_oneclass.device.update.status import OK, REFUSED, status_payload
from edge_oneclass.device.update.store import ModelStore, model_files, store_dir

log = logging.getLogger(__name__)

# How long a push waits for the frame loop to swap it in before the next push may start.
SWAP_WAIT_S = 60.0


class Refused(Exception):
    """A pushed model failed a check; the message is the reason published in the status."""


class ModelHost(Protocol):
    """What model updates need of the daemon, and nothing more."""

    @property
    def model(self) -> RunningModel: ...

    def last_image(self) -> np.ndarray | None:
        """The frame being scored now (a new model is tried on it), or None before the first."""

    def call_between_frames(self, action: Callable[[], None]) -> None:
        """Run `action` on the frame loop's thread before the next frame is scored."""

    def swap_model(self, model: RunningModel) -> None:
        """Score with `model` from the next frame on (called on the frame loop's thread)."""


class ModelUpdates:
    """Wires model pushes into a running daemon (a `ModelHost`); listens on the MQTT sinks' model topics."""

    def __init__(self, host: ModelHost, cfg: Any, sinks: list[Any]) -> None:
        self.host = host
        self.cfg = cfg
        self.store = ModelStore(store_dir(cfg))
        self._busy = threading.Lock()      # one push at a time
        self._mqtt = [s for s in sinks if hasattr(s, "on_command") and hasattr(s, "keep_retained")]
        self.last_status: dict[str, Any] | None = None

    # -- wiring -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the model topics and publish the startup status (retained)."""
        if not self._mqtt:
            return
        self.store.cleanup()
        for sink in self._mqtt:     # each sink's own broker settings (also when sinks are handed to the daemon)
            own = sink.topic("model/set")
            every = f"{sink.cfg.base_topic}/all/model/set"
            sink.on_command(own, lambda payload: self.receive(payload, allow_rollback=True))
            sink.on_command(every, lambda payload: self.receive(payload, allow_rollback=False))
            log.info("model updates: listening on %s and %s", own, every)
        self._publish(status_payload(self.host.model.info, OK, source="startup"))

    def _publish(self, status: dict[str, Any]) -> None:
        self.last_status = status
        text = json.dumps(status)
        for sink in self._mqtt:
            sink.keep_retained(sink.topic("model"), text)

    # -- a message (paho's thread) ------------------------------------------------------------------------

    def receive(self, payload: bytes, allow_rollback: bool = True) -> None:
        """Check the push on a worker thread (paho's network thread must stay free)."""
        threading.Thread(target=self._apply, args=(bytes(payload), allow_rollback), name="model-update",
                         daemon=True).start()

    def _apply(self, payload: bytes, allow_rollback: bool) -> None:
        with self._busy:
            push_id = push_id_of(payload)
            source = "push"
            candidate: str | None = None
            staged: Path | None = None
            try:
                if payload.strip() == ROLLBACK:
                    if not allow_rollback:
                        raise Refused("rollback is only accepted on the device's own model/set topic")
                    source = "rollback"
                    if not (self.store.previous / MODEL_FILE).is_file():
                        raise Refused(f"no previous model in {self.store.previous} to roll back to")
                    files = model_files(self.store.previous / MODEL_FILE)
                else:
                    try:
                        files, push_id = decode(payload)
                    except PayloadError as exc:
                        raise Refused(str(exc)) from None
                try:
                    card = check_files(files)
                except FilesRefused as exc:
                    raise Refused(str(exc)) from None
                candidate = card.sha256
                running = self.host.model
                if self._running_card(running) == files[CARD_FILE]:   # same card, hashes checked: the same model
                    log.info("model update: %s… is already in use", card.sha256[:12])
                    self._publish(status_payload(running.info, OK, "already in use", source, push_id, candidate))
                    return
                try:
                    staged = self.store.stage(files)
                except OSError as exc:
                    raise Refused(f"cannot write the model store {self.store.root} ({exc.strerror or exc}); "
                                  "make it writable by the service user (StateDirectory=edge-device) or set "
                                  "[model] store") from None
                checked = self._load(staged / MODEL_FILE)
                try:
                    current = self.store.promote(staged, running.path.parent)
                except OSError as exc:
                    raise Refused(f"cannot save the model in {self.store.root} ({exc.strerror or exc}); "
                                  "make it writable by the service user or set [model] store") from None
                staged = None
                checked.runner.model_path = current / MODEL_FILE       # same files, renamed into current/
                new = RunningModel(checked.runner, checked.card, checked.thresholds, current / MODEL_FILE)
                swapped = threading.Event()

                def swap() -> None:
                    try:
                        self._swap(new, source, push_id)
                    finally:
                        swapped.set()

                self.host.call_between_frames(swap)
                # hold the lock until the loop has swapped: the next push must see this model as the running one
                if not swapped.wait(SWAP_WAIT_S):
                    log.warning("model update: saved %s… but the frame loop has not swapped it in within %.0f s "
                                "(no frames?); it is used from the next frame or start", new.sha256[:12],
                                SWAP_WAIT_S)
            except Refused as exc:
                log.warning("model update refused: %s", exc)
                self._publish(status_payload(self.host.model.info, REFUSED, str(exc), source, push_id, candidate))
            except Exception as exc:  # noqa: BLE001 - a bad push must never take the daemon down
                log.exception("model update failed")
                self._publish(status_payload(self.host.model.info, REFUSED, f"{type(exc).__name__}: {exc}", source,
                                             push_id, candidate))
            finally:
                if staged is not None:
                    self.store.discard(staged)

    @staticmethod
    def _running_card(model: RunningModel) -> bytes | None:
        try:
            return model.path.with_name(CARD_FILE).read_bytes()
        except OSError:
            return None

    def _load(self, model_path: Path) -> RunningModel:
        """Load the staged model and score one frame with it, as the daemon would."""
        try:
            model = RunningModel.load(model_path, self.cfg.model.threads, self.cfg.model.threshold,
                                      self.cfg.detect.crop_recall)
        except EdgeError as exc:
            raise Refused(str(exc)) from None
        image = self.host.last_image()
        if image is None:
            image = np.zeros((model.input_size, model.input_size, 3), np.uint8)
        try:
            scored = FrameScorer(self.cfg.detect, self.cfg.camera.region).score(image, model)
        except Exception as exc:  # noqa: BLE001 - any failure to score is a refusal
            raise Refused(f"the model failed to score a frame ({type(exc).__name__}: {exc})") from None
        if not math.isfinite(scored.score):
            raise Refused(f"the model scored a frame {scored.score}; re-export it")
        log.info("model update: %s… (label %r) loaded and scored a frame: %.4f", model.sha256[:12], model.label,
                 scored.score)
        return model

    # -- the swap (frame loop's thread) -------------------------------------------------------------------

    def _swap(self, new: RunningModel, source: str, push_id: str | None) -> None:
        old = self.host.model.info
        self.host.swap_model(new)
        info = new.info
        log.info("model swapped (%s): %s… -> %s… label %r, threshold %.4f (crops %.4f), confidence scale %.4g",
                 source, old.sha256[:12], info.sha256[:12], info.label, info.threshold, info.threshold_crop,
                 info.confidence_scale)
        self._publish(status_payload(info, OK, None, source, push_id, info.sha256, old.sha256))
