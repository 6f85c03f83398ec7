"""Model updates over MQTT: a pushed model is checked, saved and swapped in between two frames, no restart.

Topics (under `[mqtt] base_topic`):
- `<base>/<device_id>/model/set` and `<base>/all/model/set`: a model push (`device.model_payload`, sent by
  `push-edge`); on the device's own topic the text `rollback` brings back the previous model.
- `<base>/<device_id>/model`: retained JSON status (`device.model_info.status_payload`): the model scoring now,
  `status` ok/refused, `reason`, and the `push_id` of the push it answers.

A push is applied only when every check passes, in this order: the payload decodes; model.json is a card this
device understands (schema, preprocessing, score direction); the tflite's sha256 is the card's; calibration.npz's
sha256 is the card's `calibration.sha256` (when the card names one); the tflite loads in a Runner whose input
size is the card's; it scores the last camera frame (or a blank frame) to a finite number; the files are saved in
the model store (`device.model_store`: current/ and previous/, temp folder + rename). The swap itself runs on
the frame loop's thread (`Daemon.call_between_frames`): the FrameScorer gets the new Runner and thresholds, the
Decider the new threshold (and label: an open episode of the old label is closed first), the sinks the new
model (`model_changed`: the MQTT session is kept). Any failure: one log line and a `refused` status with the
reason; the old model keeps scoring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import EdgeError, ModelError
from device.model_card import CALIBRATION_FILE, ModelCard
from device.model_info import OK, REFUSED, ModelInfo, status_payload
from device.model_payload import CARD_FILE, MODEL_FILE, ROLLBACK, PayloadError, decode, push_id_of
from device.model_store import ModelStore, model_files, store_dir
from device.runner import Runner
from device.scoring import FrameScorer
from device.thresholds import Thresholds, decision_thresholds

log = logging.getLogger(__name__)

# How long a push waits for the frame loop to swap it in before the next push may start.
SWAP_WAIT_S = 60.0


class Refused(Exception):
    """A pushed model failed a check; the message is the reason published in the status."""


def check_card(files: dict[str, bytes]) -> ModelCard:
    """The card of a pushed model, with the hashes of the tflite and calibration file checked against it."""
    try:
        data = json.loads(files[CARD_FILE])
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"model.json is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise Refused("model.json is not a JSON object")
    try:
        card = ModelCard.from_dict(data, "pushed model.json")
    except (ModelError, TypeError) as exc:
        raise Refused(str(exc)) from None
    actual = hashlib.sha256(files[MODEL_FILE]).hexdigest()
    if actual != card.sha256:
        raise Refused(f"model.tflite sha256 {actual[:12]}… does not match model.json ({str(card.sha256)[:12]}…); "
                      "the files were changed or come from different exports")
    cal_sha = card.calibration.get("sha256") if isinstance(card.calibration, dict) else None
    if cal_sha:
        if CALIBRATION_FILE not in files:
            raise Refused(f"model.json names {CALIBRATION_FILE} (sha256 {cal_sha[:12]}…) but the push has none; "
                          "push the whole export folder")
        got = hashlib.sha256(files[CALIBRATION_FILE]).hexdigest()
        if got != cal_sha:
            raise Refused(f"{CALIBRATION_FILE} sha256 {got[:12]}… does not match model.json ({cal_sha[:12]}…)")
    elif CALIBRATION_FILE in files:
        raise Refused(f"{CALIBRATION_FILE} was pushed but model.json has no calibration.sha256 to check it with")
    return card


class ModelUpdates:
    """Wires model pushes into a running Daemon. Created by the daemon once scorer, decider and sinks exist."""

    def __init__(self, daemon: Any, cfg: Any, runner: Runner, card: ModelCard, scorer: FrameScorer,
                 decider: Any, sinks: list[Any]) -> None:
        self.daemon = daemon
        self.cfg = cfg
        self.runner = runner
        self.scorer = scorer
        self.decider = decider
        self.sinks = sinks
        self.store = ModelStore(store_dir(cfg))
        thresholds = decision_thresholds(card, runner.model_path, cfg.model.threshold, cfg.detect.crop_recall)
        self.info = ModelInfo.from_card(card, thresholds.whole, thresholds.crop)
        self._busy = threading.Lock()      # one push at a time
        self._mqtt = [s for s in sinks if hasattr(s, "on_command") and hasattr(s, "keep_retained")]
        self.on_swap: list[Callable[[Runner, ModelCard], None]] = []   # e.g. the feedback bank re-checking itself
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
        self._publish(status_payload(self.info, OK, source="startup"))

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
                card = check_card(files)
                candidate = card.sha256
                if self._running_card() == files[CARD_FILE]:   # same card, hashes checked: the same model
                    log.info("model update: %s… is already in use", card.sha256[:12])
                    self._publish(status_payload(self.info, OK, "already in use", source, push_id, candidate))
                    return
                try:
                    staged = self.store.stage(files)
                except OSError as exc:
                    raise Refused(f"cannot write the model store {self.store.root} ({exc.strerror or exc}); "
                                  "make it writable by the service user (StateDirectory=edge-device) or set "
                                  "[model] store") from None
                runner, thresholds = self._load(staged / MODEL_FILE)
                try:
                    current = self.store.promote(staged, Path(self.runner.model_path).parent)
                except OSError as exc:
                    raise Refused(f"cannot save the model in {self.store.root} ({exc.strerror or exc}); "
                                  "make it writable by the service user or set [model] store") from None
                staged = None
                runner.model_path = current / MODEL_FILE
                loaded = runner.card
                assert loaded is not None
                info = ModelInfo.from_card(loaded, thresholds.whole, thresholds.crop)
                swapped = threading.Event()

                def swap() -> None:
                    try:
                        self._swap(runner, loaded, info, source, push_id)
                    finally:
                        swapped.set()

                self.daemon.call_between_frames(swap)
                # hold the lock until the loop has swapped: the next push must see this model as the running one
                if not swapped.wait(SWAP_WAIT_S):
                    log.warning("model update: saved %s… but the frame loop has not swapped it in within %.0f s "
                                "(no frames?); it is used from the next frame or start", info.sha256[:12],
                                SWAP_WAIT_S)
            except Refused as exc:
                log.warning("model update refused: %s", exc)
                self._publish(status_payload(self.info, REFUSED, str(exc), source, push_id, candidate))
            except Exception as exc:  # noqa: BLE001 - a bad push must never take the daemon down
                log.exception("model update failed")
                self._publish(status_payload(self.info, REFUSED, f"{type(exc).__name__}: {exc}", source, push_id,
                                             candidate))
            finally:
                if staged is not None:
                    self.store.discard(staged)

    def _running_card(self) -> bytes | None:
        try:
            return Path(self.runner.model_path).with_name(CARD_FILE).read_bytes()
        except OSError:
            return None

    def _load(self, model_path: Path) -> tuple[Runner, Any]:
        """Load the staged model and score one frame with it, as the daemon would."""
        try:
            runner = Runner(model_path, threads=self.cfg.model.threads)
        except EdgeError as exc:
            raise Refused(str(exc)) from None
        card = runner.card
        assert card is not None
        try:
            thresholds = decision_thresholds(card, model_path, self.cfg.model.threshold, self.cfg.detect.crop_recall)
        except EdgeError as exc:
            raise Refused(str(exc)) from None
        last = getattr(self.daemon, "last_frame", None)
        image = last.image if last is not None else np.zeros((runner.input_size, runner.input_size, 3), np.uint8)
        try:
            scored = FrameScorer(runner, thresholds, self.cfg.detect, self.cfg.camera.region).score(image)
        except Exception as exc:  # noqa: BLE001 - any failure to score is a refusal
            raise Refused(f"the model failed to score a frame ({type(exc).__name__}: {exc})") from None
        if not math.isfinite(scored.score):
            raise Refused(f"the model scored a frame {scored.score}; re-export it")
        log.info("model update: %s… (label %r) loaded and scored a frame: %.4f", card.sha256[:12], card.label,
                 scored.score)
        return runner, thresholds

    # -- the swap (frame loop's thread) -------------------------------------------------------------------

    def _swap(self, runner: Runner, card: ModelCard, info: ModelInfo, source: str, push_id: str | None) -> None:
        old = self.info
        decider = self.decider
        if card.label != old.label and decider.present:
            last = getattr(self.daemon, "last_frame", None)
            change = decider.finish(last.t if last is not None else 0.0)
            if change is not None:
                self.daemon._fan_out(self.sinks, change, None)
        self.scorer.runner = runner
        # computed by _load (calibration.npz read and hashed there, not here between two frames)
        self.scorer.thresholds = Thresholds(info.threshold, info.threshold_crop)
        self.scorer.reset()
        decider.label = card.label
        decider.threshold = info.threshold
        self.runner, self.info = runner, info
        for sink in self.sinks:
            changed = getattr(sink, "model_changed", None)
            if changed is not None:
                try:
                    changed(info)
                except Exception as exc:  # noqa: BLE001 - one sink must not stop the swap
                    log.warning("%s.model_changed failed: %s", type(sink).__name__, exc)
        for hook in self.on_swap:
            try:
                hook(runner, card)
            except Exception as exc:  # noqa: BLE001
                log.warning("model swap hook failed: %s", exc)
        log.info("model swapped (%s): %s… -> %s… label %r, threshold %.4f (crops %.4f), confidence scale %.4g",
                 source, old.sha256[:12], info.sha256[:12], info.label, info.threshold, info.threshold_crop,
                 info.confidence_scale)
        self._publish(status_payload(info, OK, None, source, push_id, info.sha256, old.sha256))
