"""The feedback bank, both ways: one flag in the first half of a clip, judged on its second half.

(a) cost: the bank's adjustment at its bounds (512 negatives and 512 positives) vs one model inference (median over
    many calls; the goal is under 2 % per view).
(b) baseline: every shared clip replayed whole with an empty bank, through `Daemon.run()` at 5 fps (the clips'
    frames at the daemon's 5 fps, kept as PNG folders so a half of a clip is exactly the frames of the whole one).
(c) flags: ONE bank, as a household accumulates it. The first half of every clip is replayed in turn; on each dog
    clip that raised no event in (b) the user presses "missed" 3 frames before the first half ends, and on each
    no-dog clip that fired, "false alarm" 5 s into its first false alarm in the first half (or when it ends).
    With `--broker` the presses are published to `<base>/<device>/dog/feedback` on a real Mosquitto and reach the
    daemon through its MQTT sink; otherwise by the call the MQTT handler makes. Then the second half of every clip
    is replayed with (a copy of) that bank.
(d) teach: the same with `edge-device teach` (the real CLI, a fresh bank) fed the same moments' frames: `--is` the
    frames of the flag's `missed_span` (the 5 s before the press), `--not` the false alarm's first 5 s.
(e) acceptance with the bank all the flags built: every clip replayed whole (every dog clip must still raise an
    event, no no-dog clip that did not fire before may fire now), and the dev photos scored as the daemon does.

    .venv/bin/python -m benchmarks.feedback --model /tmp/std/base-model [--broker] [--detect KEY=VAL] [--json FILE]

Writes benchmarks/results/feedback.json (or --json), prints a table and writes the `feedback` block of
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import DATA, RESULTS, command_line, markdown_table, model_file, publish, today, write_json
from edge_oneclass.device.config import load_config
from edge_oneclass.device.daemon import Daemon
from edge_oneclass.device.detect.events import StateChange
from edge_oneclass.device.feedback.bank import FeedbackBank
from edge_oneclass.device.feedback.controller import FALSE_ALARM, MISSED
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.notify import Notifier
from edge_oneclass.device.sinks.base import Sink

REPO = Path(__file__).resolve().parents[1]
VIDEO = DATA / "video"
FPS = 5.0
FLAG_AFTER_S = 5.0
MISSED_SPAN_S = 5.0          # the daemon's default [feedback] missed_span
PRESS_LEAD = 3               # frames before a first half's end at which "missed" is pressed


class Collect(Sink):
    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def state_changed(self, change: StateChange, snapshot_jpeg: bytes | None = None) -> None:
        self.changes.append(change)


def write_config(path: Path, source: Path, model: Path, bank_dir: Path, detect: list[str]) -> Path:
    lines = "".join(f"{line}\n" for line in detect)
    path.write_text(f'[camera]\nsource = "{source}"\nfps = {FPS}\n[model]\npath = "{model}"\nthreads = 2\n'
                    f'[detect]\n{lines}[snapshot]\nenabled = false\n[feedback]\ndir = "{bank_dir}"\n'
                    f'missed_span = {MISSED_SPAN_S}\n')
    return path


class Broker:
    """A real Mosquitto on loopback, and a client that presses the feedback buttons (publishes to the topic)."""

    def __init__(self, work: Path) -> None:
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

    def press(self, topic: str, command: str) -> None:
        self.client.publish(topic, command, qos=1).wait_for_publish(5)
        time.sleep(0.3)   # the replay runs faster than real time: let the press land at this point of the clip

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.proc.terminate()
        self.proc.wait(5)


# -- the clips as frames ---------------------------------------------------------------------------------------------

def clip_names() -> list[str]:
    return [f"{kind}/{p.stem}" for kind in ("dog", "nodog") for p in sorted((VIDEO / kind).glob("*.mp4"))]


def extract_frames(clip: str, out: Path) -> int:
    """The frames the daemon scores at 5 fps (the first at or after each 1/fps tick), as lossless PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(VIDEO / f"{clip}.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    i = n = 0
    next_t = 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / fps
        i += 1
        if t + 1e-6 < next_t:
            continue
        cv2.imwrite(str(out / f"{n:05d}.png"), frame)
        n += 1
        next_t += 1.0 / FPS
    cap.release()
    return n


def part(frames: Path, out: Path, start: int, stop: int) -> Path:
    """A folder of symlinks to frames [start, stop): a part of a clip, exactly its frames."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(frames.glob("*.png"))[start:stop]:
        link = out / f.name
        if not link.exists():
            link.symlink_to(f)
    return out


# -- one replay ----------------------------------------------------------------------------------------------------

def replay(source: Path, model: Path, bank_dir: Path, work: Path, detect: list[str], press: str | None = None,
           broker: Broker | None = None) -> dict:
    """Replay a folder of frames through `Daemon.run()`; `press` = "missed" (at the last frame) or "false_alarm"
    (5 s into the first episode, or when it ends)."""
    cfg = load_config(write_config(work / "config.toml", source, model, bank_dir, detect))
    n_frames = len(list(source.glob("*.png")))
    sink = Collect()
    sinks: list[Sink] = [sink]
    mqtt_sink = broker.sink(RunningModel.load(model, 1).info) if broker is not None and press else None
    if mqtt_sink is not None:
        sinks.append(mqtt_sink)
    state: dict = {"started": None, "pressed": None, "was": False}
    daemon: Daemon

    def do_press() -> str:
        if mqtt_sink is not None and broker is not None:
            broker.press(mqtt_sink.topic("dog/feedback"), press)
            return f"published {press}"
        assert daemon.feedback is not None
        return daemon.feedback.apply(press)

    def observer(frame, scored, present) -> None:
        if present and not state["was"]:
            state["started"] = frame.t
        # "missed" near the end of the part: a published press reaches the frame loop at the next frames
        if state["pressed"] is None and press == MISSED and frame.index == max(0, n_frames - 1 - PRESS_LEAD):
            state["pressed"] = do_press()
        if state["pressed"] is None and press == FALSE_ALARM and state["started"] is not None and (
                not present or frame.t - state["started"] >= FLAG_AFTER_S):
            state["pressed"] = do_press()
        state["was"] = present

    daemon = Daemon(cfg, sinks=sinks, notifier=Notifier(env={}), stats_every=1e9, observer=observer)
    daemon.run()
    if press == FALSE_ALARM and state["pressed"] is None and state["started"] is not None and daemon.feedback:
        state["pressed"] = daemon.feedback.apply(FALSE_ALARM)      # the episode ran to the part's end
    if mqtt_sink is not None:
        mqtt_sink.close()
    if broker is not None and state["pressed"] and daemon.feedback is not None:
        state["bank"] = daemon.feedback.bank.describe()
    starts = [c for c in sink.changes if c.present]
    return {"events": len(starts), "first_start_s": round(starts[0].event.started_at, 2) if starts else None,
            "press": state["pressed"]}


def copy_bank(bank_dir: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(bank_dir, dest) if bank_dir.exists() else dest.mkdir(parents=True)
    return dest


def second_halves(halves: dict, model: Path, bank_dir: Path, work: Path, detect: list[str]) -> dict:
    """Every clip's second half, each with a fresh copy of `bank_dir` (the halves do not teach each other)."""
    out = {}
    for clip, h in halves.items():
        out[clip] = replay(h["second"], model, copy_bank(bank_dir, work / "bank-copy"), work, detect)
    return out


# -- cost and dev photos --------------------------------------------------------------------------------------------

def cost(model: Path, n: int = 300) -> dict:
    running = RunningModel.load(model, threads=1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (running.input_size, running.input_size, 3), dtype=np.uint8)
    infer = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        e = running.infer(image).embedding
        if i >= 10:
            infer.append((time.perf_counter() - t0) * 1000)
    assert e is not None
    with tempfile.TemporaryDirectory() as tmp:
        bank = FeedbackBank.open(tmp, model, running.card, running.embedding_dim)
        d = running.embedding_dim
        neg = rng.standard_normal((512, d)).astype(np.float32)
        pos = rng.standard_normal((512, d)).astype(np.float32)
        bank.add_negatives(neg, [f"n{i}" for i in range(512)])
        bank.add_positives(pos, [-5.0] * 512, [f"p{i}" for i in range(512)])
        adj = []
        for _ in range(n * 10):
            t0 = time.perf_counter()
            bank.adjust(e)
            adj.append((time.perf_counter() - t0) * 1000)
        sizes = (len(bank), len(bank.positives))
    inf_ms, adj_ms = statistics.median(infer), statistics.median(adj)
    return {"negatives": sizes[0], "positives": sizes[1], "embedding_dim": d, "inference_ms_median": round(inf_ms, 3),
            "bank_ms_median": round(adj_ms, 4), "ratio": round(adj_ms / inf_ms, 4)}


def dev_with_bank(model: Path, bank_dir: Path | None, detect: list[str]) -> dict:
    """The standard dev split scored as the daemon does (its [detect]), with the bank's adjustment."""
    from benchmarks.common import cat_false_alarm_rate, dev_split
    from edge_oneclass.device.config import parse_config
    from edge_oneclass.device.detect.scoring import FrameScorer
    from edge_oneclass.export.evaluate import score_folder
    from edge_oneclass.export.metrics import detection_metrics

    table = {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in detect)}
    import tomllib

    settings = parse_config({"detect": tomllib.loads("\n".join(f"{k} = {v}" for k, v in table.items()))},
                            Path("<dev>")).detect
    split = dev_split()
    running = RunningModel.load(model, threads=2, crop_recall=settings.crop_recall)
    adjust = None
    if bank_dir is not None:
        bank = FeedbackBank.open(bank_dir, model, running.card, running.embedding_dim)
        adjust = bank.adjust
    scorer = FrameScorer(settings, adjust=adjust)
    pos = score_folder(scorer, running, "dev", "dev dogs", paths=split.test_pos)
    neg = score_folder(scorer, running, "dev", "dev no-dog", paths=split.test_neg)
    threshold = running.thresholds.whole
    m = detection_metrics(pos.scores, neg.scores, threshold)
    cats, _ = cat_false_alarm_rate(neg.scores, neg.paths, split.cats, threshold)
    return {"auroc": round(m.auroc, 4), "recall": round(m.tpr, 4), "false_alarms": round(m.fpr, 4),
            "false_alarms_cats": round(cats, 4) if cats is not None else None}


def teach(cli_args: list[str], cfg: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "edge_oneclass.device.cli", "teach", "--config", str(cfg),
                           *cli_args], capture_output=True, text=True, cwd=REPO)
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]


# -- the run ---------------------------------------------------------------------------------------------------------

def run(model: Path, work: Path, detect: list[str], use_broker: bool) -> dict:
    names = clip_names()
    print("extracting the clips' frames at 5 fps", flush=True)
    halves = {}
    for clip in names:
        frames = work / "frames" / clip.replace("/", "_")
        n = extract_frames(clip, frames)
        halves[clip] = {"n": n, "whole": frames, "first": part(frames, work / "first" / frames.name, 0, n // 2),
                        "second": part(frames, work / "second" / frames.name, n // 2, n)}
    empty = work / "empty-bank"
    print("(b) baseline: every clip whole, and its second half, with an empty bank", flush=True)
    base = {c: replay(h["whole"], model, copy_bank(empty, work / "bank-copy"), work, detect) for c, h in halves.items()}
    base_second = second_halves(halves, model, empty, work, detect)
    to_flag = {c: (MISSED if c.startswith("dog/") else FALSE_ALARM) for c in names
               if (c.startswith("dog/") and not base[c]["events"]) or (c.startswith("nodog/") and base[c]["events"])}
    print(f"  to flag: {to_flag}", flush=True)

    bank = work / "bank-flags"
    print(f"(c) first halves with one bank, flags{' over a real MQTT broker' if use_broker else ''}", flush=True)
    broker = Broker(work) if use_broker else None
    flags = {}
    try:
        for clip, h in halves.items():
            r = replay(h["first"], model, bank, work, detect, press=to_flag.get(clip), broker=broker)
            if to_flag.get(clip):
                flags[clip] = r
                print(f"  {clip}: {to_flag[clip]}: {str(r['press'])[:160]}", flush=True)
    finally:
        if broker is not None:
            broker.close()
    after_flag = second_halves(halves, model, bank, work, detect)
    print("(e) acceptance: every clip whole with that bank, and the dev photos", flush=True)
    accept = {c: replay(h["whole"], model, copy_bank(bank, work / "bank-copy"), work, detect)
              for c, h in halves.items()}
    dev_before, dev_after = dev_with_bank(model, None, detect), dev_with_bank(model, bank, detect)

    print("(d) teach with the same moments' frames", flush=True)
    bank_t = work / "bank-teach"
    cfg = write_config(work / "teach.toml", work, model, bank_t, detect)
    taught = {}
    for clip, command in to_flag.items():
        h = halves[clip]
        if command == MISSED:
            span, end = int(MISSED_SPAN_S * FPS), h["n"] // 2 - PRESS_LEAD
            folder = part(h["whole"], work / "teach" / f"{clip.replace('/', '_')}-is", max(0, end - span), end)
            taught[clip] = teach(["--is", str(folder)], cfg)
        else:
            first = base[clip]["first_start_s"]
            if first is None or first >= h["n"] // 2 / FPS:
                taught[clip] = "no false alarm in the first half: nothing to teach"
                continue
            start = int(round(first * FPS))
            stop = min(start + int(FLAG_AFTER_S * FPS), h["n"] // 2)
            folder = part(h["whole"], work / "teach" / f"{clip.replace('/', '_')}-not", start, stop)
            taught[clip] = teach(["--not", str(folder)], cfg)
        print(f"  {clip}: {taught[clip][:160]}", flush=True)
    after_teach = second_halves(halves, model, bank_t, work, detect)
    bank_state = FeedbackBank.open(bank, model, RunningModel.load(model, 1).card, RunningModel.load(model, 1)
                                   .embedding_dim).describe()
    return {"clips": names, "to_flag": to_flag, "baseline": base, "baseline_second_half": base_second,
            "flags": flags, "after_flag_second_half": after_flag, "bank_after_flags": bank_state,
            "acceptance_whole": accept, "dev_before": dev_before, "dev_after_flags": dev_after,
            "teach": taught, "after_teach_second_half": after_teach,
            "summary": summary(names, to_flag, base, base_second, after_flag, after_teach, accept)}


def summary(names, to_flag, base, base_second, after_flag, after_teach, accept) -> dict:
    dogs = [c for c in names if c.startswith("dog/")]
    nodogs = [c for c in names if c.startswith("nodog/")]
    missed, alarms = [c for c in to_flag if c in dogs], [c for c in to_flag if c in nodogs]

    def fired(result, clips):
        return [c for c in clips if result[c]["events"]]

    return {
        "missed_clips": missed, "false_alarm_clips": alarms,
        "missed_second_half_event": {"before": fired(base_second, missed), "flag": fired(after_flag, missed),
                                     "teach": fired(after_teach, missed)},
        "alarm_second_half_fires": {"before": fired(base_second, alarms), "flag": fired(after_flag, alarms),
                                    "teach": fired(after_teach, alarms)},
        "second_half_dog_events": {"before": len(fired(base_second, dogs)), "flag": len(fired(after_flag, dogs)),
                                   "teach": len(fired(after_teach, dogs))},
        "second_half_nodog_fires": {"before": fired(base_second, nodogs), "flag": fired(after_flag, nodogs),
                                    "teach": fired(after_teach, nodogs)},
        "whole_dog_clips_with_event": {"before": len(fired(base, dogs)), "with_bank": len(fired(accept, dogs))},
        "whole_nodog_new_fires": [c for c in nodogs if accept[c]["events"] and not base[c]["events"]],
        "whole_nodog_fires": {"before": fired(base, nodogs), "with_bank": fired(accept, nodogs)},
    }


def table(r: dict) -> str:
    s = r["summary"]
    c = r["cost"]

    def clips(xs: list[str]) -> str:
        return ", ".join(x.split("/")[1] for x in xs) or "none"

    def dev(d: dict) -> str:
        return f"{d['recall']:.3f} / {100 * d['false_alarms']:.1f} % / {100 * d['false_alarms_cats']:.1f} %"

    rows = [
        ["dog clips missed in (b), flagged `missed` in the first half", clips(s["missed_clips"]),
         "event in the second half: " + f"{len(s['missed_second_half_event']['before'])} before, "
         f"{len(s['missed_second_half_event']['flag'])} after the flag, {len(s['missed_second_half_event']['teach'])}"
         " after teach --is"],
        ["no-dog clips that fired in (b), flagged `false_alarm` in the first half", clips(s["false_alarm_clips"]),
         "second half fires: " + f"{clips(s['alarm_second_half_fires']['before'])} before, "
         f"{clips(s['alarm_second_half_fires']['flag'])} after the flag, {clips(s['alarm_second_half_fires']['teach'])}"
         " after teach --not"],
        ["every second half: dog clips with an event", "24 halves",
         f"{s['second_half_dog_events']['before']}/12 before, {s['second_half_dog_events']['flag']}/12 with the flags' "
         f"bank, {s['second_half_dog_events']['teach']}/12 with teach's"],
        ["every second half: no-dog clips that fire", "",
         f"{clips(s['second_half_nodog_fires']['before'])} before, {clips(s['second_half_nodog_fires']['flag'])} with "
         f"the flags' bank, {clips(s['second_half_nodog_fires']['teach'])} with teach's"],
        ["whole clips with the flags' bank", "",
         f"dog clips with an event {s['whole_dog_clips_with_event']['before']}/12 -> "
         f"{s['whole_dog_clips_with_event']['with_bank']}/12; no-dog clips firing "
         f"{clips(s['whole_nodog_fires']['before'])} -> {clips(s['whole_nodog_fires']['with_bank'])} "
         f"(new: {clips(s['whole_nodog_new_fires'])})"],
        ["dev photos (daemon's pipeline)", "recall / false alarms / cats",
         f"{dev(r['dev_before'])} -> {dev(r['dev_after_flags'])}"],
        ["bank cost per view", f"{c['negatives']} negatives + {c['positives']} positives",
         f"{c['bank_ms_median']:.4f} ms vs {c['inference_ms_median']:.2f} ms per inference: "
         f"{100 * c['ratio']:.2f} %"],
    ]
    return markdown_table(["what", "clips", "result"], rows)


def readme_block(r: dict) -> str:
    return (table(r) + "\n\n"
            f"Produced by `{r['command']}` on {r['date']}; per clip in `benchmarks/results/"
            f"{Path(r['json']).name}`. Model `{r['model']}`, `[detect]` {r['detect'] or 'default'}, flags "
            f"{r['flag_path']}. One bank for all first halves (quiet frames and flags accumulate as in a home); "
            "each second half replayed with a fresh copy of it. `teach` is the real CLI, on a fresh bank, fed the "
            "frames of the same moments (`--is`: the flag's missed_span, the 5 s before the press; `--not`: "
            "the first 5 s of the first false alarm).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="model folder (model.tflite + model.json) or .tflite")
    ap.add_argument("--json", type=Path, default=RESULTS / "feedback.json")
    ap.add_argument("--broker", action="store_true", help="flag over a real Mosquitto (publish to the feedback topic)")
    ap.add_argument("--detect", action="append", default=[], metavar="KEY=VAL",
                    help="a [detect] key of the daemon's config, e.g. crop_recall=0.75 (repeatable)")
    ap.add_argument("--readme-only", action="store_true", help="only regenerate the README block from --json")
    args = ap.parse_args(argv)
    if args.readme_only:
        print(f"wrote {publish('feedback', readme_block(json.loads(args.json.read_text())))}")
        return 0
    model = model_file(args.model).resolve()
    detect = [f"{k.strip()} = {v.strip()}" for k, v in (item.split("=", 1) for item in args.detect)]
    results: dict = {"command": command_line(), "date": today(), "json": str(args.json), "model": str(model),
                     "model_sha256": json.loads(model.with_name("model.json").read_text())["sha256"],
                     "fps": FPS, "detect": detect, "flag_path": "over a real Mosquitto broker" if args.broker
                     else "in-process (the MQTT handler's call)"}
    print("(a) cost of the bank per view", flush=True)
    results["cost"] = cost(model)
    print(f"  {results['cost']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results.update(run(model, Path(tmp), detect, args.broker))
    write_json(args.json, results)
    print(table(results))
    print(f"\nwrote {args.json} and {publish('feedback', readme_block(results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
