"""The feedback bank ("not a dog") with the colour fixture model: score = brightness (threshold 0.5), embedding =
the mean colour. A bright red frame is the "cat" (a false alarm), the label photos in calibration.npz are bluish.

Real files, a real Mosquitto broker and the real `edge-device` processes; no fakes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mqtt_subscriber import Subscriber, retained, wait_until

from edge_oneclass.device.config import parse_config
from edge_oneclass.device.errors import ConfigError
from edge_oneclass.device.feedback.bank import (
    BANK_FILE,
    BankMismatch,
    FeedbackBank,
    LabelReference,
    TeachResult,
    bank_weight,
)
from edge_oneclass.device.feedback.frame_store import FRAMES_DIR
from edge_oneclass.device.model.runner import Runner
from edge_oneclass.device.model.running import RunningModel

ROOT = Path(__file__).resolve().parents[1]
COLOUR = Path(__file__).resolve().parent / "fixtures" / "colour" / "model.tflite"
EDGE_DEVICE = [sys.executable, "-m", "edge_oneclass.device.cli"]
DARK, CAT, DOG = (20, 20, 20), (255, 140, 110), (110, 140, 255)      # RGB
DEVICE_ID = "pi-fb"


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(COLOUR, threads=1)


def embed(runner: Runner, rgb: tuple[int, int, int]) -> np.ndarray:
    result = runner.infer(np.full((runner.input_size, runner.input_size, 3), rgb, np.uint8))
    assert result.embedding is not None
    return result.embedding


def open_bank(directory: Path, runner: Runner, **kw) -> FeedbackBank:
    assert runner.card is not None
    return FeedbackBank.open(directory, COLOUR, runner.card, runner.embedding_dim, **kw)


def far_from_label(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors with little blue: nowhere near the bluish label photos."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal((n, 3))).astype(np.float32) * [1.0, 1.0, 0.0] + [0.0, 0.0, -0.3]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- the bank ------------------------------------------------------------------------------------------------

def test_bank_persists_reloads_and_stays_bounded(tmp_path: Path, runner: Runner) -> None:
    bank = open_bank(tmp_path, runner, max_negatives=10)
    assert len(bank) == 0 and bank.reference is not None and bank.weight == 1.0   # 0.5 * w_knn (w_neg = 0)
    result = bank.add_negatives(far_from_label(30), [f"n{i}" for i in range(30)])
    assert (result.added, result.dropped, result.refused) == (30, 20, [])
    assert len(bank) == 10 and (tmp_path / BANK_FILE).is_file()
    assert not list(tmp_path.glob(".*.tmp"))                          # the temporary file was renamed into place
    again = open_bank(tmp_path, runner, max_negatives=10)
    assert again.neg_sources == bank.neg_sources
    np.testing.assert_allclose(again.negatives, bank.negatives)
    np.testing.assert_allclose(again.gates, bank.gates)
    # a near-duplicate of a negative is pushed down by w * (1 - gate); the label's photos are untouched
    assert again.adjust(again.negatives[0]) == pytest.approx(-(1.0 - again.gates[0]), abs=1e-3)
    ref = again.reference
    assert ref is not None and np.all(again.adjust_many(ref.embeddings) == 0)
    # another process (the teach CLI) replacing the file is picked up by its stat
    other = open_bank(tmp_path, runner, max_negatives=10)
    other.add_positives(embed(runner, DOG)[None], [-0.1], ["dog"])
    assert again.reload_if_changed() and len(again.positives) == 1
    assert not again.reload_if_changed()
    assert again.forget() == (10, 1) and len(open_bank(tmp_path, runner)) == 0


def test_a_corrupt_bank_is_set_aside_with_one_line(tmp_path: Path, runner: Runner, caplog) -> None:
    (tmp_path / BANK_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with caplog.at_level(logging.WARNING, logger="edge_oneclass.device.feedback.bank"):
        bank = open_bank(tmp_path, runner)
    assert len(bank) == 0
    [aside] = list(tmp_path.glob(f"{BANK_FILE}.corrupt-*"))
    assert aside.read_bytes().startswith(b"PK") and not (tmp_path / BANK_FILE).exists()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "unreadable" in lines[0] and aside.name in lines[0]
    # and the bank works from empty
    assert bank.add_negatives(embed(runner, CAT)[None], ["cat"]).added == 1


def test_a_bank_of_another_embedding_size_is_refused(tmp_path: Path, runner: Runner) -> None:
    FeedbackBank(tmp_path, dim=5).add_negatives(far_from_label(2) @ np.eye(3, 5, dtype=np.float32), ["a", "b"])
    with pytest.raises(BankMismatch, match=r"5-d embeddings but this model has 3-d.*teach --forget"):
        open_bank(tmp_path, runner)


def test_label_like_negatives_are_refused(tmp_path: Path, runner: Runner) -> None:
    bank = open_bank(tmp_path, runner)
    result = bank.add_negatives(np.stack([embed(runner, CAT), embed(runner, DOG)]), ["cat", "dog"])
    assert result.added == 1 and [s for s, _ in result.refused] == ["dog"]
    assert "label's own photos" in result.refused[0][1]
    assert bank.adjust(embed(runner, CAT)) < -0.4 and bank.adjust(embed(runner, DOG)) == 0.0


def test_negatives_that_would_break_the_label_recall_are_refused(tmp_path: Path, runner: Runner) -> None:
    """With a loose gate (the lowest label similarity instead of the highest) the recall check is what holds."""
    assert runner.card is not None
    ref = LabelReference.load(COLOUR, runner.card)
    assert ref is not None and ref.recall() == 1.0 and ref.target_recall == 0.95
    bank = FeedbackBank(tmp_path, 3, weight=10.0, reference=ref, gate_quantile=0.0)
    bluish = embed(runner, (100, 120, 250))
    result = bank.add_negatives(np.stack([bluish, embed(runner, CAT)]), ["bluish", "cat"])
    assert [s for s, _ in result.refused] == ["bluish"] and "recall below 0.95" in result.refused[0][1]
    assert result.added == 1
    assert ref.recall(bank.adjust_many(ref.whole)) >= 0.95
    assert "1 refused (would drop the label photos' recall below 0.95)" in result.summary()
    assert TeachResult().summary() == "0 negative(s) added"


def test_positives_raise_the_gates_of_nearby_negatives(tmp_path: Path, runner: Runner) -> None:
    bank = open_bank(tmp_path, runner)
    yellow, orange = embed(runner, (255, 220, 40)), embed(runner, (255, 170, 90))   # cosine to the cat 0.83, 0.96
    cat = embed(runner, CAT)
    bank.add_negatives(cat[None], ["cat"])
    before = bank.adjust(yellow)
    bank.add_positives(yellow[None], [-0.2], ["this yellow one was a dog"])
    # the negative no longer pushes it (its gate rose above the yellow one), and the positive lifts it
    assert before < -0.3 and bank.adjust_many(yellow[None])[0] == 0.0 and bank.adjust(yellow) > 0
    assert len(bank) == 1 and bank.adjust(cat) < -0.1
    # a positive as close to a flagged negative as that negative's own duplicates would make it fire: refused
    result = bank.add_positives(orange[None], [-0.2], ["and so was this orange one"])
    assert result.added == 0 and "as close to a view flagged not the label (cat)" in result.refused[0][1]
    assert len(bank) == 1 and len(bank.positives) == 1 and bank.adjust(cat) < -0.1


def test_weight_follows_the_model(runner: Runner) -> None:
    assert runner.card is not None
    card = runner.card
    assert bank_weight(card) == 1.0
    card_neg = type(card)(**{**card.to_dict(), "score": {"w_knn": 8.0, "w_neg": 3.0}})
    assert bank_weight(card_neg) == 3.0


def test_feedback_config_section(tmp_path: Path) -> None:
    cfg = parse_config({}, tmp_path / "c.toml")
    assert (cfg.feedback.enabled, cfg.feedback.dir, cfg.feedback.window, cfg.feedback.max_negatives,
            cfg.feedback.max_frames) == (True, "/var/lib/edge-device/feedback", 60.0, 512, 200)
    cfg = parse_config({"feedback": {"dir": "/x", "window": 5, "max_negatives": 64}}, tmp_path / "c.toml")
    assert (cfg.feedback.dir, cfg.feedback.window, cfg.feedback.max_negatives) == ("/x", 5.0, 64)
    with pytest.raises(ConfigError, match=r"unknown key feedback.size"):
        parse_config({"feedback": {"size": 3}}, tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"feedback.max_negatives"):
        parse_config({"feedback": {"max_negatives": 0}}, tmp_path / "c.toml")


# -- the daemon, over MQTT -----------------------------------------------------------------------------------

def write_video(path: Path, colours: list[tuple[int, int, int]], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for rgb in colours:
        writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))
    writer.release()
    return path


def write_config(tmp_path: Path, source: Path, bank: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(f"""\
        [camera]
        source = "{source}"
        fps = 5
        realtime = true
        [model]
        path = "{COLOUR}"
        threads = 1
        [detect]
        on_frames = 3
        window = 5
        off_delay = 20.0
        [feedback]
        dir = "{bank}"
        window = 30
        """) + extra)
    return path


def mqtt_section(broker) -> str:
    return f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ndevice_id = "{DEVICE_ID}"\nkeepalive = 5\n'


def start(config: Path, stderr: Path) -> subprocess.Popen:
    return subprocess.Popen([*EDGE_DEVICE, "run", "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=open(stderr, "w"), text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_false_alarm_over_mqtt_ends_the_episode_and_teaches_the_bank(tmp_path: Path, mosquitto) -> None:
    # 1 s dark, 12 s of the cat, 1 s dark, in real time: without feedback one episode lasting to the end
    video = write_video(tmp_path / "cat.avi", [DARK] * 10 + [CAT] * 120 + [DARK] * 10)
    bank_dir = tmp_path / "feedback"
    root = f"edge/{DEVICE_ID}"
    sub = Subscriber(mosquitto, [f"{root}/#", "homeassistant/#"])
    log_path = tmp_path / "stderr.txt"
    proc = start(write_config(tmp_path, video, bank_dir, mqtt_section(mosquitto)), log_path)
    try:
        on = sub.wait_for(f"{root}/dog/state", lambda m: m.payload == b"ON", timeout=30)
        # the two Home Assistant buttons, on the binary sensor's device, pointing at the feedback topic
        sensor = json.loads(retained(mosquitto, f"homeassistant/binary_sensor/{DEVICE_ID}_dog/config").payload)
        buttons = {}
        for command in ("false_alarm", "missed"):
            msg = retained(mosquitto, f"homeassistant/button/{DEVICE_ID}_dog_{command}/config")
            buttons[command] = json.loads(msg.payload)
        assert buttons["false_alarm"]["name"] == "dog: false alarm" and buttons["missed"]["name"] == "dog: missed"
        for command, button in buttons.items():
            assert button["command_topic"] == f"{root}/dog/feedback" and button["payload_press"] == command
            assert button["device"] == sensor["device"] and button["availability_topic"] == f"{root}/status"
            assert button["unique_id"] == f"{DEVICE_ID}_dog_{command}"
        # an unknown payload: one line, nothing changes
        sub.client.publish(buttons["false_alarm"]["command_topic"], b"not a cat", qos=1)
        time.sleep(0.5)
        # pressing the button: HA publishes payload_press to command_topic
        sub.client.publish(buttons["false_alarm"]["command_topic"], buttons["false_alarm"]["payload_press"], qos=1)
        off = sub.wait_for(f"{root}/dog/state", lambda m: m.payload == b"OFF", timeout=10)
        # off at once (off_delay is 20 s), while the cat is still in view, and it never comes back
        assert off is not None
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    stderr = log_path.read_text()
    assert code == 0, stderr
    events = [json.loads(m.payload) for m in sub.on(f"{root}/dog/event")]
    assert [e["type"] for e in events] == ["start", "end"]
    start_t, end_t = (e["started_at"] for e in events[:1]), events[1]
    assert end_t["ended_at"] is not None
    # the end came within a couple of seconds of the flag, long before the cat left (13 s) and off_delay
    from datetime import datetime
    ended = datetime.fromisoformat(end_t["ended_at"].replace("Z", "+00:00")).timestamp()
    started = datetime.fromisoformat(next(start_t).replace("Z", "+00:00")).timestamp()
    assert ended - started < 8.0, events
    assert [m.payload for m in sub.on(f"{root}/dog/state")].count(b"ON") == 1 and on.payload == b"ON"
    assert stderr.count("unknown payload") == 1 and "Traceback" not in stderr
    assert "false alarm of the episode started at" in stderr and "the flagged episode ends now" in stderr
    bank = np.load(bank_dir / BANK_FILE)
    # the scene never changed after the cat appeared: its frames carried one scored view, learnt once
    assert len(bank["negatives"]) >= 1 and len(bank["positives"]) == 0
    cat = bank["negatives"].astype(np.float32)
    assert np.all(cat[:, 0] > 0.9)                                       # red: the cat's view
    jpegs = list((bank_dir / FRAMES_DIR).glob("*.jpg"))
    assert jpegs and cv2.imread(str(jpegs[0]))[..., 2].mean() > 200      # red: the cat's frames, kept for retraining


def test_missed_over_mqtt_stores_the_current_frame_as_a_positive(tmp_path: Path, mosquitto) -> None:
    video = write_video(tmp_path / "dim.avi", [(60, 60, 150)] * 60)        # a dim blue dog under the threshold
    bank_dir = tmp_path / "feedback"
    root = f"edge/{DEVICE_ID}"
    log_path = tmp_path / "stderr.txt"
    sub = Subscriber(mosquitto, [f"{root}/#"])
    proc = start(write_config(tmp_path, video, bank_dir, mqtt_section(mosquitto)), log_path)
    try:
        sub.wait_for(f"{root}/dog/state", lambda m: m.payload == b"OFF", timeout=30)
        wait_until(lambda: "listening on" in log_path.read_text(), timeout=10, what="feedback topic")
        sub.client.publish(f"{root}/dog/feedback", b"missed", qos=1)
        wait_until(lambda: (bank_dir / BANK_FILE).exists(), timeout=10, what="the bank file")
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert code == 0, log_path.read_text()
    bank = np.load(bank_dir / BANK_FILE)
    assert len(bank["positives"]) == 1 and len(bank["negatives"]) == 0
    assert len(list((bank_dir / "missed").glob("*.jpg"))) == 1


# -- edge-device teach ---------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE_DEVICE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def write_png(path: Path, rgb: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((60, 80, 3), rgb[::-1], np.uint8))
    return path


def test_teach_adds_lists_and_forgets(tmp_path: Path) -> None:
    cat = write_png(tmp_path / "photos" / "cat.png", CAT)
    write_png(tmp_path / "photos" / "more" / "cat2.png", (250, 150, 120))
    dog = write_png(tmp_path / "dog.png", DOG)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    bank_dir = tmp_path / "feedback"
    cfg = write_config(tmp_path, tmp_path / "photos", bank_dir)
    proc = run_cli("teach", "--config", str(cfg), "--not", str(tmp_path / "photos"), str(broken), str(dog))
    assert proc.returncode == 0, proc.stderr
    assert f"added   {cat}" in proc.stdout and f"refused {dog}: as close to the label's own photos" in proc.stdout
    assert "2 negative(s) added, 1 refused" in proc.stdout                 # each photo's view, as a flag adds it
    mine = [line for line in proc.stderr.splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]
    assert mine == [f"edge-device: {broken}: truncated image (no end marker), skipped"]
    assert len(list((bank_dir / FRAMES_DIR).glob("*.jpg"))) == 2
    listing = run_cli("teach", "--config", str(cfg), "--list")
    assert listing.returncode == 0 and listing.stdout.count("\nnot ") == 2 and "cat2.png" in listing.stdout
    positive = run_cli("teach", "--config", str(cfg), "--is", str(dog))
    assert positive.returncode == 0 and "1 positive(s) added" in positive.stdout
    nothing = run_cli("teach", "--config", str(cfg), "--not", str(broken))
    assert nothing.returncode == 1 and "nothing taught" in nothing.stderr
    forget = run_cli("teach", "--config", str(cfg), "--forget")
    assert forget.returncode == 0 and "forgot 2 negative(s) and 1 positive(s)" in forget.stdout
    assert "0 negative(s)" in run_cli("teach", "--config", str(cfg), "--list").stdout
    usage = run_cli("teach", "--config", str(cfg))
    assert usage.returncode == 2
    assert "one of the arguments --not --is --background --list --forget is required" in usage.stderr


def test_a_running_daemon_picks_up_a_teach(tmp_path: Path) -> None:
    # 7 s dark, then 4 s of the cat: taught while the daemon watches the dark part, the cat never fires
    video = write_video(tmp_path / "later.avi", [DARK] * 70 + [CAT] * 40)
    bank_dir = tmp_path / "feedback"
    cfg = write_config(tmp_path, video, bank_dir)
    log_path = tmp_path / "stderr.txt"
    proc = start(cfg, log_path)
    try:
        wait_until(lambda: "ready:" in log_path.read_text(), timeout=20, what="the daemon to start")
        taught = run_cli("teach", "--config", str(cfg), "--not", str(write_png(tmp_path / "cat.png", CAT)))
        assert taught.returncode == 0, taught.stderr
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = log_path.read_text()
    assert proc.returncode == 0, stderr
    assert "bank file changed, reloaded: 1 negative(s)" in stderr, stderr
    states = [json.loads(line) for line in stdout.splitlines() if line.strip() and '"state"' in line]
    assert states == [], "the taught cat still fired"


def test_the_same_cat_fires_without_a_teach(tmp_path: Path) -> None:
    """The control for the test above: the same clip with an empty bank reports the cat."""
    video = write_video(tmp_path / "cat.avi", [DARK] * 5 + [CAT] * 20)
    cfg = write_config(tmp_path, video, tmp_path / "feedback")
    cfg.write_text(cfg.read_text().replace("realtime = true", "realtime = false"))
    proc = run_cli("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    states = [json.loads(line)["state"] for line in proc.stdout.splitlines() if '"state"' in line]
    assert states == ["ON", "OFF"]


def replay_and_flag(tmp_path: Path, window: float, flag_at: int) -> tuple[list[str], list[bool]]:
    """Replay 5 dark, 10 cat, 25 dark frames (5 fps, off after 2 s) in this process; flag at frame `flag_at`."""
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.daemon import Daemon
    from edge_oneclass.device.feedback.controller import FALSE_ALARM
    from edge_oneclass.device.model.info import ModelInfo
    from edge_oneclass.device.notify import Notifier
    from edge_oneclass.device.sinks.stdout import StdoutSink

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, rgb in enumerate([DARK] * 5 + [CAT] * 10 + [DARK] * 25):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 64, 3), rgb[::-1], np.uint8))
    cfg_path = write_config(tmp_path, folder, tmp_path / "feedback")
    cfg_path.write_text(cfg_path.read_text().replace("realtime = true", "realtime = false")
                        .replace("off_delay = 20.0", "off_delay = 2.0").replace("window = 30", f"window = {window}"))
    cfg = load_config(cfg_path)
    messages: list[str] = []
    presence: list[bool] = []

    def observer(frame, scored, present) -> None:
        presence.append(present)
        if frame.index in (flag_at, flag_at + 1):
            assert daemon.feedback is not None
            messages.append(daemon.feedback.apply(FALSE_ALARM))

    import io
    info = ModelInfo("dog", "x", 0.5, 0.5, "", 1.0)
    daemon = Daemon(cfg, sinks=[StdoutSink(info, stream=io.StringIO())], notifier=Notifier(env={}),
                    observer=observer)
    assert daemon.run() == 0
    return messages, presence


def test_a_false_alarm_after_the_episode_applies_within_the_window(tmp_path: Path) -> None:
    messages, presence = replay_and_flag(tmp_path, window=5.0, flag_at=30)
    assert presence[30] is False and presence.count(True) > 0           # the episode ended at frame 24
    assert messages[0].startswith("false alarm of the episode started at 1970-01-01T00:00:01.000Z: ")
    assert "negative(s) added" in messages[0] and messages[1] == "false_alarm: this episode was already taught"


def test_a_false_alarm_after_the_window_changes_nothing(tmp_path: Path) -> None:
    messages, _ = replay_and_flag(tmp_path, window=0.5, flag_at=30)
    assert messages[0] == "false_alarm: no episode open or ended in the last 0.5 s; nothing to learn"
    assert not (tmp_path / "feedback" / BANK_FILE).exists()


def test_the_daemon_runs_without_feedback_when_the_bank_is_another_models(tmp_path: Path, runner: Runner,
                                                                          caplog) -> None:
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.feedback.controller import FeedbackController

    bank_dir = tmp_path / "feedback"
    FeedbackBank(bank_dir, dim=5).add_negatives(np.eye(1, 5, dtype=np.float32), ["from another model"])
    cfg = load_config(write_config(tmp_path, tmp_path, bank_dir))
    assert runner.card is not None
    with caplog.at_level(logging.ERROR, logger="edge_oneclass.device.feedback.controller"):
        assert FeedbackController.create(cfg, RunningModel.of(runner)) is None
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("feedback: off: ") and "5-d embeddings but this model has 3-d" in line
    assert (bank_dir / BANK_FILE).exists()                                   # left for the user to decide
    cfg.feedback.enabled = False
    assert FeedbackController.create(cfg, RunningModel.of(runner)) is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root, as `sudo edge-device teach`")
def test_teach_as_root_hands_the_bank_to_the_daemons_user(tmp_path: Path) -> None:
    from edge_oneclass.device.feedback.teach import match_owner

    state = tmp_path / "state"
    (state / "feedback" / "frames").mkdir(parents=True)
    (state / "feedback" / "frames" / "a.jpg").write_bytes(b"x")
    os.chown(state, 4321, 4321)
    match_owner(state / "feedback")
    assert {p.stat().st_uid for p in [state / "feedback", *(state / "feedback").rglob("*")]} == {4321}


def test_an_unwritable_bank_is_one_line_and_detection_goes_on(tmp_path: Path, runner: Runner, caplog) -> None:
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.feedback.controller import Episode, FeedbackController

    assert runner.card is not None
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the bank's folder should be")
    with caplog.at_level(logging.ERROR, logger="edge_oneclass.device.feedback.controller"):  # at start: off, one line
        cfg = load_config(write_config(tmp_path, tmp_path, blocker / "feedback"))
        assert FeedbackController.create(cfg, RunningModel.of(runner)) is None
    assert [r.getMessage()[:40] for r in caplog.records] == ["feedback: off: cannot use [feedback] dir"]
    caplog.clear()
    cfg = load_config(write_config(tmp_path, tmp_path, tmp_path / "feedback"))
    controller = FeedbackController.create(cfg, RunningModel.of(runner))
    assert controller is not None
    (tmp_path / "feedback").write_text("the folder became a file")        # while running: the flag is not learnt
    controller.current = Episode(started_at=0.0, embeddings=[embed(runner, CAT)], sources=["cat"])
    with caplog.at_level(logging.ERROR, logger="edge_oneclass.device.feedback.controller"):
        controller._apply_logged("false_alarm")
    [record] = caplog.records
    assert record.getMessage().startswith("feedback: false_alarm not learnt: cannot write the bank in")
    assert not record.exc_info


def test_a_swapped_in_model_keeps_the_bank_with_its_own_label(tmp_path: Path, runner: Runner) -> None:
    """A model pushed over MQTT: the bank is re-opened for it (its label photos set the gates) and its negatives
    keep acting; the swap changes the host's one model reference, and the controller follows through `rebind`."""
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.feedback.controller import FeedbackController
    from edge_oneclass.device.update.payload import encode, read_model_dir
    from edge_oneclass.device.update.swap import ModelUpdates

    cfg = load_config(write_config(tmp_path, tmp_path, tmp_path / "feedback"))
    cfg.model.store = str(tmp_path / "store")
    controller = FeedbackController.create(cfg, RunningModel.of(runner))
    assert controller is not None

    class Host:
        model = RunningModel.of(runner)

        def last_image(self):
            return None

        def call_between_frames(self, action):
            action()

        def swap_model(self, model: RunningModel) -> None:
            self.model = model
            assert controller.rebind(cfg, model), "rebind refused"

    cat = embed(runner, CAT)
    assert controller.bank.add_negatives(cat[None], ["the cat"]).added == 1
    before = controller.adjust(cat)
    assert before < 0
    host = Host()
    updates = ModelUpdates(host, cfg, [])
    new = tmp_path / "new"
    new.mkdir()
    for name in ("model.tflite", "calibration.npz"):
        shutil.copy(COLOUR.with_name(name), new / name)
    card = json.loads(COLOUR.with_name("model.json").read_text())
    (new / "model.json").write_text(json.dumps({**card, "label": "parcel", "threshold": 0.4}))
    updates._apply(encode(read_model_dir(new))[0], allow_rollback=True)
    assert updates.last_status["status"] == "ok", updates.last_status
    assert (host.model.label, host.model.thresholds.whole, controller.label) == ("parcel", 0.4, "parcel")
    assert len(controller.bank) == 1 and controller.adjust(cat) == pytest.approx(before)
    assert controller.adjust(embed(runner, DOG)) == 0.0          # the label's look stays untouched


def _pushed_model_whose_label_is_the_cat(store: Path, runner: Runner) -> Path:
    """What a push leaves in the model store: the same tflite, but label photos (calibration.npz) that are red:
    for this model the "cat" colour IS the label."""
    from edge_oneclass.device.state_files import sha256_file

    current = store / "current"
    current.mkdir(parents=True)
    shutil.copy(COLOUR, current / "model.tflite")
    with np.load(COLOUR.with_name("calibration.npz")) as z:
        arrays = {k: np.asarray(z[k]) for k in z.files}
    reds = np.repeat(embed(runner, CAT)[None], len(arrays["embedding_whole"]), axis=0)
    arrays["embedding_whole"] = arrays["embedding_crop"] = reds.astype(arrays["embedding_whole"].dtype)
    np.savez(current / "calibration.npz", **arrays)
    card = json.loads(COLOUR.with_name("model.json").read_text())
    card["label"] = "cat"
    card["calibration"] = {**card["calibration"], "sha256": sha256_file(current / "calibration.npz")}
    (current / "model.json").write_text(json.dumps(card))
    return current / "model.tflite"


def test_after_a_restart_that_follows_a_push_the_bank_guards_the_pushed_models_photos(tmp_path: Path,
                                                                                      runner: Runner) -> None:
    """The daemon restarts from the model store's current/ (a push), not from [model] path: the feedback bank and
    `teach` must check negatives against that model's calibration.npz, or a user could teach the device to
    suppress the very thing the pushed model detects."""
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.daemon import Daemon
    from edge_oneclass.device.notify import Notifier
    from edge_oneclass.device.update.store import active_model_path

    store = tmp_path / "store"
    pushed = _pushed_model_whose_label_is_the_cat(store, runner)
    cfg_path = write_config(tmp_path, tmp_path, tmp_path / "feedback")
    cfg_path.write_text(cfg_path.read_text().replace("threads = 1\n", f'threads = 1\nstore = "{store}"\n', 1))
    cfg = load_config(cfg_path)
    assert active_model_path(cfg) == pushed
    # the daemon, restarted: one dark frame is enough to start it
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((64, 64, 3), DARK, np.uint8))
    cfg.camera.source, cfg.camera.realtime = str(frames), False
    daemon = Daemon(cfg, sinks=[], notifier=Notifier(env={}))
    assert daemon.run() == 0 and daemon.model.path == pushed and daemon.feedback is not None
    result = daemon.feedback.bank.add_negatives(embed(runner, CAT)[None], ["the cat"])
    assert result.added == 0 and "label's own photos" in result.refused[0][1]
    # the command line, as a user runs it next to the daemon
    image = tmp_path / "cat.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), CAT[::-1], np.uint8))
    proc = subprocess.run([*EDGE_DEVICE, "teach", "--config", str(cfg_path), "--not", str(image)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "refused" in proc.stdout and "0 negative(s) added" in proc.stdout, proc.stdout


def test_an_episode_open_across_a_push_of_the_same_label_can_still_be_flagged(tmp_path: Path,
                                                                           runner: Runner) -> None:
    """A model push lands mid-episode (same label): the user's false_alarm must still reach that episode."""
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.feedback.controller import Episode, FeedbackController

    cfg = load_config(write_config(tmp_path, tmp_path, tmp_path / "feedback"))
    controller = FeedbackController.create(cfg, RunningModel.of(runner))
    assert controller is not None
    controller.current = Episode(started_at=0.0, embeddings=[embed(runner, CAT)], sources=["cat"])
    assert controller.rebind(cfg, RunningModel.of(runner))          # the pushed model: same label
    message = controller.false_alarm()
    assert "1 negative(s) added" in message, message


def test_a_flag_that_cannot_be_saved_changes_nothing_in_memory(tmp_path: Path, runner: Runner, monkeypatch) -> None:
    """A full disk: the bank says it did not learn, and then it must not act as if it had (what scores is what is
    on disk, so a restart changes nothing either)."""
    import errno

    from edge_oneclass.device.feedback import bank_file

    bank = open_bank(tmp_path, runner)
    assert bank.add_negatives(far_from_label(2), ["a", "b"]).added == 2

    def disk_full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bank_file, "atomic_write", disk_full)
    cat = embed(runner, CAT)
    before = bank.adjust(cat)
    with pytest.raises(OSError):
        bank.add_negatives(cat[None], ["the cat"])
    assert len(bank) == 2 and bank.neg_sources == ["a", "b"] and bank.adjust(cat) == before
    with pytest.raises(OSError):
        bank.add_positives(embed(runner, DOG)[None], [-0.1], ["dog"])
    assert len(bank.positives) == 0
    monkeypatch.undo()
    assert len(open_bank(tmp_path, runner)) == 2
