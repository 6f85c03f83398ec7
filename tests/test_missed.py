""""Missed it": a dog the whole view does not find is flagged `missed` once, and is found from then on; the empty
scene the daemon kept as quiet frames stays quiet afterwards. On real video the test writes from real photos: a
dev house front, and a held-out dev dog (not one of the session model's training photos) small in it.

Plus the bank's positive side alone: a positive that would lift a known empty view over the threshold is kept off
it (its gate rises) or refused with one line, and a bank written by the previous version still loads.
"""

from __future__ import annotations

import io
import shutil
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_oneclass.device.config import load_config
from edge_oneclass.device.daemon import Daemon
from edge_oneclass.device.feedback.bank import POS_GATE_MIN, FeedbackBank
from edge_oneclass.device.feedback.bank_file import BANK_VERSION, read_bank
from edge_oneclass.device.feedback.controller import MISSED
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.stdout import StdoutSink

FIXTURES = Path(__file__).resolve().parent / "fixtures"
COLOUR = FIXTURES / "colour" / "model.tflite"
FPS = 5.0
WIDTH, HEIGHT = 640, 360
SCENE = "nodog/000011.jpg"     # a house front
DOG = "dog/000500.jpg"         # a held-out dev dog: the session model never saw it
DOG_WIDTH = 0.2                # of the frame width: the whole view misses it
# Chosen with a clear margin for any honest model, not for one set of bits: with models trained at seeds 0-2 (and
# checked on seeds 3-4), the noisy dog frames' whole view stays at least 0.5 of the label's score spread under the
# threshold (the kitchen 000010 used before sat 0.06 spreads under it at seed 1), and the dog's view is no closer
# to the empty scene's than cosine 0.9, far from the bank's gates.


def frame_with(dev: Path, dog: bool) -> np.ndarray:
    scene = cv2.resize(load_rgb(dev / SCENE), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    if not dog:
        return scene
    photo = load_rgb(dev / DOG)
    w = int(DOG_WIDTH * WIDTH)
    h = int(photo.shape[0] * w / photo.shape[1])
    scene[HEIGHT - h - 10:HEIGHT - 10, (WIDTH - w) // 2:(WIDTH - w) // 2 + w] = cv2.resize(photo, (w, h),
                                                                                           interpolation=cv2.INTER_AREA)
    return scene


def write_video(path: Path, parts: list[tuple[np.ndarray, float]], seed: int = 0) -> Path:
    """MJPG at 5 fps: each (frame, seconds) part with +-3 grey levels of sensor noise per frame."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for rgb, seconds in parts:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        for _ in range(int(seconds * FPS)):
            writer.write(np.clip(bgr.astype(np.int16) + rng.integers(-3, 4, bgr.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


def test_a_small_dog_flagged_missed_is_found_and_the_empty_scene_stays_quiet(tmp_path: Path, trained_model: Path,
                                                                            dev_data: Path) -> None:
    empty, dog = frame_with(dev_data, False), frame_with(dev_data, True)
    # 20 s of the empty scene (the daemon keeps quiet frames), 40 s of the dog lying there, 30 s empty again
    video = write_video(tmp_path / "yard.avi", [(empty, 20), (dog, 40), (empty, 30)])
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(f"""\
        [camera]
        source = "{video}"
        fps = {FPS}
        [model]
        path = "{trained_model / 'model.tflite'}"
        threads = 1
        [detect]
        on_frames = 3
        window = 5
        off_delay = 2.0
        [snapshot]
        enabled = false
        [feedback]
        dir = "{tmp_path / 'feedback'}"
        quiet_every = 2.0
        missed_span = 3.0
        """))
    cfg = load_config(config)
    flag_at = int(30 * FPS)                  # 10 s into the dog's 40 s
    presence: list[bool] = []
    messages: list[str] = []

    def observer(frame, scored, present) -> None:
        presence.append(present)
        if frame.index == flag_at:
            assert daemon.feedback is not None
            messages.append(daemon.feedback.apply(MISSED))

    sink = StdoutSink(RunningModel.load(cfg.model.path, 1).info, stream=io.StringIO())
    daemon = Daemon(cfg, sinks=[sink], notifier=Notifier(env={}), observer=observer)
    assert daemon.run() == 0
    assert messages and "positive(s) added" in messages[0] and "0 positive(s) added" not in messages[0], messages
    assert not any(presence[:flag_at + 1]), "the whole view must miss this dog before the flag"
    onset = presence.index(True)
    assert onset <= flag_at + 3 * FPS, f"found {(onset - flag_at) / FPS:.1f} s after the flag"
    dog_ends = int(60 * FPS)
    assert all(presence[onset:dog_ends]), "once taught, the dog stays found while it is there"
    assert not any(presence[dog_ends + int(5 * FPS):]), "the empty scene must stay quiet after the flag"
    bank = daemon.feedback.bank
    assert int(np.sum(~bank.state.scene_user)) >= 3, "the daemon kept quiet frames of the empty scene"
    # the quiet frames are at work: they hold the positives' gates above the floor (kept off the empty scene)
    assert float(np.max(bank.pos_gates)) > POS_GATE_MIN, bank.pos_gates


# -- the bank's positive side -------------------------------------------------------------------------------------

@pytest.fixture
def colour_bank(tmp_path: Path):
    model = RunningModel.load(COLOUR, threads=1)
    bank = FeedbackBank.open(tmp_path / "feedback", COLOUR, model.card, model.embedding_dim)

    def embed(rgb: tuple[int, int, int]) -> np.ndarray:
        e = model.infer(np.full((model.input_size, model.input_size, 3), rgb, np.uint8)).embedding
        assert e is not None
        return e

    return bank, embed


def test_a_positive_is_kept_off_a_quiet_frame_it_would_lift_over_the_threshold(colour_bank) -> None:
    bank, embed = colour_bank
    missed, empty = embed((120, 120, 60)), embed((120, 100, 60))      # a dim dog, and a scene very like it
    sim = float(missed @ empty)
    assert 0.95 < sim < 0.98
    spread = bank.spread
    assert spread is not None and bank.target is not None
    bank.add_scene(empty[None], [-0.05], ["quiet 1"])                # just under the threshold, as a frame can be
    result = bank.add_positives(missed[None], [-0.3], ["missed"])
    assert result.added == 1 and result.shrunk == 1, result.summary("positive")
    gate = float(bank.pos_gates[0])
    assert gate > sim                                                # it no longer reaches the quiet frame
    assert -0.05 + bank.adjust(empty) < 0                             # the empty view stays under the threshold
    assert bank.adjust(missed) > 0.3                                  # and the missed view is lifted over it


def test_a_positive_that_would_lift_a_background_photo_like_itself_is_refused_with_one_line(colour_bank) -> None:
    bank, embed = colour_bank
    missed = embed((120, 120, 60))
    bank.add_scene(missed[None], [-0.1], ["back yard.jpg"], user=True)   # the user's own photo of the empty scene
    result = bank.add_positives(missed[None], [-0.3], ["missed"])
    assert result.added == 0 and len(result.refused) == 1
    source, reason = result.refused[0]
    assert source == "missed" and "a background photo you taught (back yard.jpg)" in reason
    assert "1 refused" in result.summary("positive")


def test_the_users_word_wins_over_the_daemons_quiet_frames(colour_bank) -> None:
    """A dog lying still that was never detected is "quiet" too: such frames leave the reservoir when the user
    says `missed`, and no later quiet frame like a taught positive is kept."""
    bank, embed = colour_bank
    lying = embed((120, 120, 60))
    bank.add_scene(np.stack([lying, embed((20, 20, 20))]), [-0.1, -0.4], ["quiet dog", "quiet night"])
    result = bank.add_positives(lying[None], [-0.1], ["missed"])
    assert result.added == 1 and result.yielded == 1
    assert bank.state.scene_sources == ("quiet night",)
    again = bank.add_scene(lying[None], [-0.1], ["quiet dog again"])
    assert again.added == 0 and bank.state.scene_sources == ("quiet night",)


def test_a_bank_written_by_the_previous_version_still_loads(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "bank_v1" / "bank.npz", tmp_path / "bank.npz")
    model = RunningModel.load(COLOUR, threads=1)
    bank = FeedbackBank.open(tmp_path, COLOUR, model.card, model.embedding_dim)
    assert len(bank) == 1 and len(bank.positives) == 1
    assert bank.neg_sources[0].startswith("false alarm") and bank.pos_sources == ["missed 2026-12-01T10:05:00Z"]
    assert np.isnan(bank.pos_margins[0]) and bank.pos_lifts[0] == 0    # protection only: its margin was not kept
    assert bank.adjust(bank.negatives[0]) < 0                           # its negative still acts
    bank.add_scene(bank.negatives[:1], [-0.5], ["quiet"])               # any change writes the current version
    state, _, version = read_bank(tmp_path / "bank.npz")
    assert version == BANK_VERSION == 2 and len(state.positives) == 1 and len(state.scene) == 1


def test_a_camera_whose_empty_scene_scores_near_the_threshold_still_takes_a_missed_flag(colour_bank) -> None:
    """An empty view already within the safety band may take no lift at all, but a positive that does not reach it
    is safe: it is accepted and leaves that view unlifted (it used to be refused as 'as close to the empty scene as
    to itself', whatever the similarity: on such a camera no missed flag was ever learnt)."""
    bank, embed = colour_bank
    missed, empty = embed((120, 120, 60)), embed((120, 60, 60))       # an empty scene unlike the dog (cosine ~0.78)
    assert float(missed @ empty) < 0.85
    near = -0.1 * bank.spread                                         # inside POS_SAFETY (0.25) spreads
    bank.add_scene(empty[None], [near], ["quiet near the threshold"])
    result = bank.add_positives(missed[None], [-0.3], ["missed"])
    assert result.added == 1 and not result.refused, result.summary("positive")
    assert bank.adjust(empty) == 0.0                                  # the empty view gets no lift
    assert bank.adjust(missed) > 0.3                                  # the missed view is lifted over the threshold


def test_a_missed_flag_overrules_the_quiet_frames_kept_of_the_scene_it_names(colour_bank) -> None:
    """A dog lying still, never detected, is kept as a quiet frame too. Two noisy frames of one still scene are
    0.96-0.99 apart (by the model's last bits), so similarity alone cannot tell those frames from the empty scene:
    the controller names the quiet frames kept since the scene last changed, and they leave the reservoir."""
    bank, embed = colour_bank
    lying, still_frame, night = embed((120, 120, 60)), embed((120, 100, 60)), embed((20, 20, 20))
    assert float(lying @ still_frame) < 0.98                          # under QUIET_YIELD: not yielded by similarity
    bank.add_scene(np.stack([still_frame, night]), [-0.1, -0.4], ["quiet dog lying", "quiet night"])
    result = bank.add_positives(lying[None], [-0.3], ["missed"], contradicted=["quiet dog lying"])
    assert result.added == 1 and result.yielded == 1 and not result.shrunk, result.summary("positive")
    assert bank.state.scene_sources == ("quiet night",)
    assert bank.adjust(lying) > 0.3
