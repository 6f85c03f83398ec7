"""The feedback bank ("not a dog"): what it costs per frame, and whether one flag per false alarm is enough.

(a) cost: the bank's adjustment at `max_negatives` (512) negatives vs one model inference (median over many calls,
    the ratio per view; the goal is <= 10 %).
(b) acceptance: ONE bank carried across replays of the real clips. Baseline: every clip replayed with an empty bank.
    Then each nodog clip that fires has its first false-alarm episode flagged by the same call the MQTT handler
    makes (`FeedbackController.apply("false_alarm")`, on the frame loop, 5 s after the episode started or when it
    ends, whichever comes first), and finally all 12 nodog clips (goal 0/12 with an event) and all 12 dog clips
    (goal: events unchanged) are replayed again with the bank.
(c) the same with `edge-device teach --not` (the real CLI, a fresh bank) fed JPEGs of the first false-alarm
    episode of each firing nodog clip (frames at the daemon's 5 fps, the episode's first 5 s).

(b') with `--broker`, the flags of (b) are published to `<base>/<device>/dog/feedback` on a real Mosquitto and reach
    the daemon through its MQTT sink (an episode that runs to the clip's end is flagged in-process after the run).

    .venv/bin/python -m benchmarks.feedback --model /tmp/std/model-v3/model.tflite \\
        [--skip-teach] [--broker] [--out FILE]

Writes benchmarks/results/feedback.json (or --out) and prints a table. Stored results: feedback.json (standard model),
feedback_broker.json (the same over a real broker), feedback_t80.json and feedback_broker_t80.json (the small 128 px
model trained on 80 dogs, which fires on 7 of the 12 nodog clips), feedback_brief_weight.json (the standard model with
the first weighting, w = 0.5 * w_knn alone, before the label-spread slope).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge_oneclass.device.config import load_config
from edge_oneclass.device.daemon import Daemon
from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.feedback.bank import FeedbackBank
from edge_oneclass.device.feedback.controller import FALSE_ALARM
from edge_oneclass.device.model.runner import Runner
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.base import Sink

REPO = Path(__file__).resolve().parents[1]

VIDEO = Path(os.environ.get("EDGE_SHARED_DATA", REPO.parent / "shared" / "data")) / "video"
RESULTS = REPO / "benchmarks" / "results" / "feedback.json"
FPS = 5.0
FLAG_AFTER_S = 5.0


class Collect(Sink):
    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        self.changes.append(change)


DETECT: list[str] = []   # `--detect KEY=VAL` lines of the [detect] table (e.g. crop_recall=0.75)


def write_config(path: Path, clip: Path, model: Path, bank_dir: Path) -> Path:
    detect = "".join(f"{line}\n" for line in DETECT)
    path.write_text(f'[camera]\nsource = "{clip}"\nfps = {FPS}\n[model]\npath = "{model}"\nthreads = 2\n'
                    f'[detect]\n{detect}[snapshot]\nenabled = false\n[feedback]\ndir = "{bank_dir}"\n')
    return path


class Broker:
    """A real Mosquitto on loopback, and a client that presses the false-alarm button (publishes to the topic)."""

    def __init__(self, work: Path) -> None:
        import shutil
        import socket

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-phone")
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def sink(self, info):
        from edge_oneclass.device.mqtt.config import MqttConfig
        from edge_oneclass.device.sinks.mqtt import MqttSink

        sink = MqttSink(MqttConfig(host="127.0.0.1", port=self.port, device_id="bench", discovery=False), info)
        sink.start()
        deadline = time.monotonic() + 10
        while not sink.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return sink

    def press(self, topic: str) -> None:
        self.client.publish(topic, FALSE_ALARM, qos=1).wait_for_publish(5)
        time.sleep(0.3)   # the replay runs faster than real time: let the press land at this point of the clip

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.proc.terminate()
        self.proc.wait(5)


def replay(clip: Path, model: Path, bank_dir: Path, work: Path, flag: bool = False, broker: Broker | None = None
           ) -> dict:
    """Replay one clip through `Daemon.run()`; with `flag`, flag its first episode as a false alarm: by the call the
    MQTT handler makes, or with `broker` by publishing `false_alarm` to the feedback topic of a real broker."""
    cfg = load_config(write_config(work / "config.toml", clip, model, bank_dir))
    sink = Collect()
    sinks: list[Sink] = [sink]
    mqtt_sink = broker.sink(RunningModel.load(model, 1).info) if broker is not None and flag else None
    if mqtt_sink is not None:
        sinks.append(mqtt_sink)
    state = {"started": None, "flagged": None, "was": False}
    daemon: Daemon

    def press() -> str:
        if mqtt_sink is not None and broker is not None:
            broker.press(mqtt_sink.topic("dog/feedback"))
            return "published false_alarm"
        assert daemon.feedback is not None
        return daemon.feedback.apply(FALSE_ALARM)

    def observer(frame, scored, present) -> None:
        if present and not state["was"]:
            state["started"] = frame.t
        due = state["started"] is not None and (not present or frame.t - state["started"] >= FLAG_AFTER_S)
        if flag and state["flagged"] is None and due:
            state["flagged"] = press()
        state["was"] = present

    daemon = Daemon(cfg, sinks=sinks, notifier=Notifier(env={}), stats_every=1e9, observer=observer)
    t0 = time.perf_counter()
    daemon.run()
    seconds = time.perf_counter() - t0
    if flag and state["flagged"] is None and state["started"] is not None and daemon.feedback is not None:
        state["flagged"] = daemon.feedback.apply(FALSE_ALARM)   # the episode ran to the clip's end
    starts = [c for c in sink.changes if c.present]
    return {"clip": f"{clip.parent.name}/{clip.name}", "events": len(starts),
            "first_start": starts[0].event.started_at if starts else None,
            "flag": state["flagged"], "seconds": round(seconds, 1)}


def clips(kind: str) -> list[Path]:
    return sorted((VIDEO / kind).glob("*.mp4"))


def replay_all(kind: str, model: Path, bank_dir: Path, work: Path, flag: bool = False,
               broker: Broker | None = None) -> list[dict]:
    out = []
    for clip in clips(kind):
        r = replay(clip, model, bank_dir, work, flag=flag, broker=broker)
        print(f"  {r['clip']}: {r['events']} event(s){'  flag: ' + r['flag'][:100] if r['flag'] else ''}",
              flush=True)
        out.append(r)
    return out


def cost(model: Path, n_negatives: int = 512, n: int = 300) -> dict:
    runner = Runner(model, threads=2)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (runner.input_size, runner.input_size, 3), dtype=np.uint8)
    infer = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        e = runner.infer(image).embedding
        if i >= 10:
            infer.append((time.perf_counter() - t0) * 1000)
    assert e is not None
    with tempfile.TemporaryDirectory() as tmp:
        bank = FeedbackBank(tmp, runner.embedding_dim, weight=1.0, max_negatives=n_negatives)
        neg = rng.standard_normal((n_negatives, runner.embedding_dim)).astype(np.float32)
        neg /= np.linalg.norm(neg, axis=1, keepdims=True)
        bank.negatives, bank.gates = neg, np.full(n_negatives, 0.5, np.float32)
        bank._activate()
        adj = []
        for _ in range(n * 10):
            t0 = time.perf_counter()
            bank.adjust(e)
            adj.append((time.perf_counter() - t0) * 1000)
    inf_ms, adj_ms = statistics.median(infer), statistics.median(adj)
    return {"negatives": n_negatives, "embedding_dim": runner.embedding_dim, "inference_ms_median": round(inf_ms, 3),
            "bank_ms_median": round(adj_ms, 4), "ratio": round(adj_ms / inf_ms, 4)}


def extract_episode_frames(clip: Path, start: float, out: Path, seconds: float = FLAG_AFTER_S) -> int:
    """JPEGs of the frames the daemon scores (5 fps) from `start` for `seconds`."""
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    i = n = 0
    next_t = start
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / fps
        i += 1
        if t + 1e-6 < next_t:
            continue
        if t > start + seconds:
            break
        cv2.imwrite(str(out / f"{clip.stem}_{n:03d}.jpg"), frame)
        n += 1
        next_t += 1.0 / FPS
    cap.release()
    return n


def dev_with_bank(model: Path, bank_dir: Path) -> dict:
    """The standard dev split scored on the whole view, with an empty bank and with `bank_dir`'s negatives: what
    the flags cost the label's new photos, and what they do to other cats."""
    from benchmarks.common import cat_false_alarm_rate, dev_split
    from edge_oneclass.device.detect.scoring import FrameScorer
    from edge_oneclass.device.detect.settings import ScoringSettings
    from edge_oneclass.export.evaluate import score_folder
    from edge_oneclass.export.metrics import detection_metrics

    split = dev_split()
    running = RunningModel.load(model, threads=2)
    bank = FeedbackBank.open(bank_dir, model, running.card, running.embedding_dim)
    out: dict = {"negatives": len(bank)}
    threshold = running.thresholds.whole
    for name, adjust in (("without", None), ("with", bank.adjust)):
        scorer = FrameScorer(ScoringSettings(regions=False, sweep=False), adjust=adjust)
        pos = score_folder(scorer, running, "dev", f"dev dogs, {name} bank", paths=split.test_pos)
        neg = score_folder(scorer, running, "dev", f"dev no-dog, {name} bank", paths=split.test_neg)
        m = detection_metrics(pos.scores, neg.scores, threshold)
        cats_fpr, _ = cat_false_alarm_rate(neg.scores, neg.paths, split.cats, threshold)
        out[name] = {"auroc": round(m.auroc, 4), "recall": round(m.tpr, 4), "false_alarms": round(m.fpr, 4),
                     "false_alarms_cats": round(cats_fpr, 4) if cats_fpr is not None else None}
    return out


def verdict(nodog: list[dict], dog: list[dict], dog_before: list[dict]) -> dict:
    return {"nodog_firing": sum(r["events"] > 0 for r in nodog), "nodog_events": sum(r["events"] for r in nodog),
            "dog_with_event": sum(r["events"] > 0 for r in dog), "dog_events": sum(r["events"] for r in dog),
            "dog_events_unchanged": sum(a["events"] == b["events"] for a, b in zip(dog, dog_before, strict=True))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/tmp/std/model-v3/model.tflite"))
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS.relative_to(REPO)})")
    ap.add_argument("--skip-teach", action="store_true")
    ap.add_argument("--skip-acceptance", action="store_true")
    ap.add_argument("--broker", action="store_true", help="flag over a real Mosquitto (publish to the feedback topic)")
    ap.add_argument("--detect", action="append", default=[], metavar="KEY=VAL",
                    help="a [detect] key of the daemon's config, e.g. crop_recall=0.75 (repeatable)")
    args = ap.parse_args(argv)
    DETECT[:] = [f"{k.strip()} = {v.strip()}" for k, v in (item.split("=", 1) for item in args.detect)]
    model = args.model.resolve()
    sha = json.loads(model.with_name("model.json").read_text())["sha256"]
    results: dict = {"model": str(model), "model_sha256": sha, "fps": FPS, "flag_after_s": FLAG_AFTER_S,
                     "detect": DETECT}
    print("(a) cost of the bank per view", flush=True)
    results["cost"] = cost(model)
    print(f"  {results['cost']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_acceptance:
            empty = work / "empty-bank"
            print("(b) baseline: every clip, empty bank", flush=True)
            base_nodog = replay_all("nodog", model, empty, work)
            base_dog = replay_all("dog", model, empty, work)
            bank = work / "bank-mqtt"
            print(f"(b) flagging the first false alarm of each firing nodog clip (one shared bank"
                  f"{', over a real MQTT broker' if args.broker else ''})", flush=True)
            broker = Broker(work) if args.broker else None
            try:
                flagging = replay_all("nodog", model, bank, work, flag=True, broker=broker)
            finally:
                if broker is not None:
                    broker.close()
            results["flag_path"] = "mqtt broker" if args.broker else "in-process FeedbackController.apply"
            print("(b) replay with the bank", flush=True)
            after_nodog = replay_all("nodog", model, bank, work)
            after_dog = replay_all("dog", model, bank, work)
            with np.load(bank / "bank.npz") as z:
                n_neg = int(len(z["negatives"]))
            results["baseline"] = {"nodog": base_nodog, "dog": base_dog,
                                   "summary": verdict(base_nodog, base_dog, base_dog)}
            results["flagging"] = flagging
            results["after_flag"] = {"nodog": after_nodog, "dog": after_dog, "bank_negatives": n_neg,
                                     "summary": verdict(after_nodog, after_dog, base_dog)}
            print("(d) dev photos (whole view) without and with that bank", flush=True)
            results["dev"] = dev_with_bank(model, bank)
            print(f"  {results['dev']}", flush=True)
            if not args.skip_teach:
                print("(c) teach --not with the first false-alarm episode's frames of each firing nodog clip",
                      flush=True)
                frames = work / "teach-frames"
                n_frames = 0
                for r in base_nodog:
                    if r["first_start"] is not None:
                        n_frames += extract_episode_frames(VIDEO / r["clip"], r["first_start"], frames)
                bank_c = work / "bank-teach"
                cfg = write_config(work / "teach.toml", VIDEO / "nodog" / "01.mp4", model, bank_c)
                proc = subprocess.run([sys.executable, "-m", "edge_oneclass.device.cli", "teach",
                                       "--config", str(cfg), "--not",
                                       str(frames)], capture_output=True, text=True, cwd=REPO,
                                      env={**os.environ, "PYTHONPATH": str(REPO)})
                last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
                print(f"  teach: {n_frames} frames -> {last}", flush=True)
                teach_nodog = replay_all("nodog", model, bank_c, work)
                teach_dog = replay_all("dog", model, bank_c, work)
                results["after_teach"] = {"frames": n_frames, "teach_output": last, "nodog": teach_nodog,
                                          "dog": teach_dog, "summary": verdict(teach_nodog, teach_dog, base_dog)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.out}")
    return 0


def table(r: dict) -> str:
    c = r["cost"]
    lines = [f"cost: bank of {c['negatives']} x {c['embedding_dim']}-d: {c['bank_ms_median']:.4f} ms per view vs "
             f"inference {c['inference_ms_median']:.2f} ms: {100 * c['ratio']:.2f} % (goal <= 10 %)"]
    if "baseline" in r:
        lines.append(f"{'run':<34} {'nodog firing /12':>16} {'nodog events':>12} {'dog with event /12':>18} "
                     f"{'dog events':>10} {'dog unchanged':>13}")
        for name, key in (("baseline (empty bank)", "baseline"), ("after MQTT false_alarm flags", "after_flag"),
                          ("after teach --not", "after_teach")):
            if key in r:
                s = r[key]["summary"]
                lines.append(f"{name:<34} {s['nodog_firing']:>16} {s['nodog_events']:>12} {s['dog_with_event']:>18} "
                             f"{s['dog_events']:>10} {s['dog_events_unchanged']:>13}")
        per = ["clip      " + " ".join(f"{x['clip'][-6:-4]:>3}" for x in r["baseline"]["nodog"])]
        for name, key in (("base", "baseline"), ("flag", "after_flag"), ("teach", "after_teach")):
            for kind in ("nodog", "dog"):
                if key in r:
                    per.append(f"{name:<5} {kind:<5} " + " ".join(f"{x['events']:>3}" for x in r[key][kind]))
        lines += per
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
