"""24/7 proof: the device-only daemon on a live camera stream for hours, with faults thrown at known times.

What runs (all on 127.0.0.1, all real processes):
- `.venv-device/bin/edge-device run` (the device-only install, its own process, as systemd runs it) with MQTT,
  snapshots (kept on disk) and the feedback bank on, `[mqtt] stats_interval` low so its loop fps is visible;
- a live MJPEG-over-HTTP camera at 5 fps filming the shared clips (../shared/data/video: dog and no-dog
  alternating, looped, so episodes start and end all along; frame time is wall time);
- Mosquitto with persistence, and a recorder with a persistent session that keeps every retained state change
  and every event the daemon publishes (benchmarks/soak_mqtt.py);
- a small tmpfs (root) holding the snapshot and feedback folders, so the harness can fill it.

Faults (benchmarks/soak_faults.py), each at a known time, each with its own result line: the broker stopped for
`--outage-seconds` during an episode and between episodes; the camera stream gone and back; the disk full; a
`false_alarm` mid-episode; a model push mid-episode (the same model, threshold changed); a burst of bad input on
the model and feedback topics; SIGKILL during a bank write and during a model store write (then restarted); the
wall clock stepped back an hour (libfaketime on the daemon only). Over the whole run: RSS, threads, open files and
the folders' sizes are sampled, and the events that reached the broker are compared with the daemon's own log of
decisions (missing, duplicated, out of order).

Fault times: `--fault-times absolute` uses the 6-hour schedule (minutes below); `scaled` (the default) scales it
to `--hours`, so a short run still throws every fault. A fault never starts before the previous one is over, and
waits (at most `--max-wait`) for the situation it needs; the run lasts `--hours` or until the last fault is done.

Needs: root (it mounts the tmpfs; otherwise the disk-full fault is skipped), mosquitto, .venv-device, and
libfaketime (`apt-get install libfaketime`; otherwise the clock fault is skipped). libfaketime 0.9.10 makes Python
3.11's time.sleep fail under DONT_FAKE_MONOTONIC (wolfcw/libfaketime#426) and paho's reconnect wait sleeps, so the
daemon runs under it only from the restart after the last SIGKILL, after the broker faults. A 6-hour run takes
6 h and a few minutes; run it under nohup or tmux.

Usage (the target run is 6 hours):
    .venv/bin/python -m benchmarks.soak --hours 6 --model /tmp/std/base-model
    .venv/bin/python -m benchmarks.soak --hours 0.25 --model /tmp/std/base-model      # every fault, scaled
Writes benchmarks/results/soak.json and prints the table; never touches a README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import soak_faults as faults
from benchmarks.common import REPO, RESULTS, command_line, markdown_table, today, write_json
from benchmarks.soak_env import (
    FAKETIME_LIB,
    Broker,
    DaemonProcess,
    LiveCamera,
    Sampler,
    Tmpfs,
    camera_frames,
)
from benchmarks.soak_mqtt import Commander, Recorder, compare, retained_now

VIDEO = Path(os.environ.get("EDGE_SHARED_DATA", REPO.parent / "shared" / "data")) / "video"
DEVICE_EXE = REPO / ".venv-device" / "bin" / "edge-device"
MODEL_FILES = ("model.tflite", "model.json", "calibration.npz")

# (fault, minute of the 6-hour run). The libfaketime segment starts at the last SIGKILL's restart (libfaketime
# 0.9.10 breaks Python 3.11's time.sleep under DONT_FAKE_MONOTONIC, which paho's reconnect wait uses), so the
# broker faults come first and the clock step last; the last ~2 hours are quiet, for the memory trend.
SCHEDULE = [
    ("broker_down_in_episode", 20),
    ("broker_down_between_episodes", 45),
    ("stream_gone", 70),
    ("disk_full", 95),
    ("false_alarm_mid_episode", 120),
    ("model_push_mid_episode", 145),
    ("bad_input_burst", 170),
    ("sigkill_during_bank_write", 195),
    ("sigkill_during_model_store_write", 220),
    ("clock_back_1h", 245),
]


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.t0 = time.monotonic()
        self.label = "dog"
        self.root = "edge/soak"
        self.stats_interval = args.stats_interval
        self.factor = args.hours / 6.0 if args.fault_times == "scaled" else 1.0
        self.max_wait = args.max_wait if args.max_wait else min(900.0, max(240.0, 900.0 * self.factor))
        self.notes: list[str] = []
        self._model = None

    # -- helpers the faults use ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def topic(self, suffix: str) -> str:
        return f"{self.root}/{suffix}"

    def wait_present(self, timeout: float, min_age: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.present and time.monotonic() - self.daemon.last_decision_mono() >= min_age:
                return True
            time.sleep(0.2)
        return False

    def wait_absent(self, timeout: float, min_age: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.daemon.present and time.monotonic() - self.daemon.last_decision_mono() >= min_age:
                return True
            time.sleep(0.2)
        return False

    def frames_so_far(self) -> int:
        """Frames scored by every daemon process so far (the last `frames=` of each segment's stats lines)."""
        last: dict[int, int] = {}
        for _m, seg, st in self.daemon.stats:
            if "frames" in st:
                last[seg] = int(st["frames"])
        return sum(last.values())

    def running_model(self):
        from edge_oneclass.device.model.running import RunningModel

        if self._model is None:
            self._model = RunningModel.load(self.factory / "model.tflite", threads=1)
        return self._model

    def model_payload(self, threshold: float) -> tuple[bytes, str]:
        """The factory model's files with model.json's threshold changed (its sha256 still matches model.tflite),
        encoded as push-edge would."""
        from edge_oneclass.device.update.payload import encode, read_model_dir

        files = read_model_dir(self.factory)
        card = json.loads(files["model.json"])
        card["threshold"] = threshold
        files["model.json"] = (json.dumps(card, indent=2) + "\n").encode()
        return encode(files)

    def restart(self, faketime: bool = False) -> float | None:
        """Start the daemon again (after a SIGKILL); seconds to READY, or None if it never got there."""
        if faketime:
            self.faketime_file.write_text("+0\n")
        self.daemon.start(self.faketime_file if faketime else None)
        try:
            return round(self.daemon.wait_ready(120), 1)
        except RuntimeError:
            return None

    # -- set-up ---------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        a = self.args
        self.factory = self.work / "factory"
        self.factory.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            if (a.model / name).is_file():
                shutil.copy2(a.model / name, self.factory / name)
        self.factory_threshold = float(json.loads((self.factory / "model.json").read_text())["threshold"])
        self.store_dir = self.work / "models"
        self.tmpfs = Tmpfs(self.work / "state", a.tmpfs_mb)
        if not self.tmpfs.mount():
            self.notes.append(f"tmpfs not mounted ({self.tmpfs.error}): folders on the main disk")
        self.snapshot_dir = self.tmpfs.path / "snapshots"
        self.feedback_dir = self.tmpfs.path / "feedback"
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        self.feedback_dir.mkdir(parents=True, exist_ok=True)
        self.faketime_file = self.work / "faketime.txt"
        self.faketime_file.write_text("+0\n")
        self.faketime_ok, self.faketime_error = self._probe_faketime()

        print(f"  camera: the clips of {VIDEO} at {a.fps:g} fps (encoded once, then cached)", flush=True)
        jpegs, segments = camera_frames(VIDEO, a.fps, Path(tempfile.gettempdir()) / "edge-soak-cache")
        self.camera = LiveCamera(jpegs, segments, a.fps)
        self.camera.up()
        self.broker = Broker(self.work)
        self.broker.start()
        self.recorder = Recorder(self.broker.host, self.broker.port, self.root)
        self.commander = Commander(self.broker.host, self.broker.port)
        self.config = self.work / "soak.toml"
        self.config.write_text(
            f'[camera]\nsource = "{self.camera.url}"\nfps = {a.fps}\n\n'
            f'[model]\npath = "{self.factory / "model.tflite"}"\nthreads = {a.threads}\nstore = "{self.store_dir}"\n\n'
            f'[snapshot]\nenabled = true\ndir = "{self.snapshot_dir}"\n\n'
            f'[feedback]\nenabled = true\ndir = "{self.feedback_dir}"\n\n'
            f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\nbase_topic = "edge"\n'
            f'device_id = "soak"\nstats_interval = {a.stats_interval}\n\n[log]\nlevel = "INFO"\n')
        self.daemon = DaemonProcess(a.device_exe, self.config, self.work)
        self.sampler = Sampler(self.daemon, {"snapshots": self.snapshot_dir, "feedback": self.feedback_dir},
                               a.sample_every, self.t0)
        print(f"  camera {self.camera.url} ({len(jpegs)} frames, a {self.camera.loop_seconds / 60:.1f} min loop of "
              f"{len(segments)} clips); broker 127.0.0.1:{self.broker.port}; work {self.work}", flush=True)
        self.daemon.start()
        ready = self.daemon.wait_ready(180)
        print(f"  daemon pid {self.daemon.pid} ready in {ready:.1f} s", flush=True)
        self.sampler.start()

    def _probe_faketime(self) -> tuple[bool, str | None]:
        if not FAKETIME_LIB.is_file():
            return False, f"{FAKETIME_LIB} missing: apt-get install libfaketime"
        return True, None

    def teardown(self) -> dict:
        end: dict = {}
        with_present = self.daemon.present
        code = self.daemon.stop()
        end["exit_code"] = code
        end["present_at_stop"] = with_present
        time.sleep(1.0)
        end["retained_status"] = retained_now(self.broker.host, self.broker.port, self.topic("status"))
        end["retained_state"] = retained_now(self.broker.host, self.broker.port, self.topic(f"{self.label}/state"))
        self.sampler.stop()
        self.camera.down()
        self.recorder.close()
        self.commander.close()
        self.broker.stop()
        self.tmpfs.unmount()
        errors = self.broker.persistence_errors()
        if errors:
            self.notes.append(f"mosquitto could not save its database ({errors[0]}): the recorder's session did not "
                              "survive the broker restarts, so events published before it reconnected may be missing")
        return end

    # -- the run --------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        wanted = set(a.faults.split(",")) if a.faults else None
        plan = [(n, m * 60 * self.factor) for n, m in SCHEDULE if wanted is None or n in wanted]
        results: list[dict] = []
        end_at = a.hours * 3600
        settle = 15.0
        for name, at in plan:
            while self.elapsed() < at:
                time.sleep(min(1.0, at - self.elapsed()))
            print(f"[{self.elapsed() / 60:6.1f} min] {name} (planned at {at / 60:.1f} min)", flush=True)
            started = self.elapsed()
            try:
                r = self.throw(name)
            except Exception as exc:  # noqa: BLE001 - one fault's harness error must not end the soak
                r = faults.result(name, "FAIL", f"harness error: {type(exc).__name__}: {exc}")
            if self.daemon.pid is None:
                code = self.daemon.proc.returncode if self.daemon.proc else None
                r["detail"] += f"; the daemon was not running afterwards (exit {code}): restarted"
                r["result"] = "FAIL"
                self.restart()
            r.update(planned_s=round(at, 1), started_s=round(started, 1), took_s=round(self.elapsed() - started, 1))
            results.append(r)
            print(f"    {r['result']}: {r['detail']}", flush=True)
            time.sleep(settle)
        end_at = max(end_at, self.elapsed() + a.tail)
        while self.elapsed() < end_at:
            if self.daemon.pid is None:
                self.notes.append(f"the daemon died on its own at {self.elapsed():.0f} s; restarted")
                self.restart()
            time.sleep(min(5.0, max(0.1, end_at - self.elapsed())))
        return self.summarise(results)

    def throw(self, name: str) -> dict:
        return {
            "broker_down_in_episode": lambda: faults.broker_outage(self, True),
            "broker_down_between_episodes": lambda: faults.broker_outage(self, False),
            "stream_gone": lambda: faults.stream_outage(self),
            "disk_full": lambda: faults.disk_full(self),
            "false_alarm_mid_episode": lambda: faults.false_alarm(self),
            "model_push_mid_episode": lambda: faults.model_push(self),
            "bad_input_burst": lambda: faults.bad_input_burst(self),
            "sigkill_during_bank_write": lambda: faults.kill_bank_write(self),
            "sigkill_during_model_store_write": lambda: faults.kill_model_write(self),
            "clock_back_1h": lambda: faults.clock_step_back(self),
        }[name]()

    def summarise(self, results: list[dict]) -> dict:
        duration = self.elapsed()
        frames = self.frames_so_far()
        tmpfs_mb = self.args.tmpfs_mb if self.tmpfs.mounted else None
        end = self.teardown()
        times = os.times()
        work_bytes = sum(f.stat().st_size for f in self.work.rglob("*") if f.is_file())
        cost = {"harness_cpu_s": round(times.user + times.system, 1),
                "children_cpu_s": round(times.children_user + times.children_system, 1),
                "daemon_cpu_pct_one_core": daemon_cpu_pct(self.sampler.samples),
                "work_dir_mb": round(work_bytes / 1e6, 1)}
        events = self.recorder.events(self.label)
        cmp = compare(self.daemon.decisions, events)
        killed_open = sum(1 for e in self.daemon.exits if e["signal"] == "SIGKILL")
        noisy = [(r["started_s"], r["started_s"] + r["took_s"] + 60.0) for r in results
                 if r["fault"] == "bad_input_burst" and "started_s" in r]
        resources = resource_summary(self.sampler.samples, self.args.warmup, noisy)
        fps = [float(st["fps"]) for _m, _s, st in self.daemon.stats if "fps" in st]
        blind = [(self.t0 + r["started_s"], self.t0 + r["started_s"] + r["took_s"] + 2 * self.stats_interval)
                 for r in results if r["fault"] == "stream_gone" and "started_s" in r]
        fps_seeing = [float(st["fps"]) for m, _s, st in self.daemon.stats
                      if "fps" in st and not any(a <= m <= b for a, b in blind)]
        state_changes = [m.text for m in self.recorder.on(f"{self.label}/state")]
        collapsed = [x for i, x in enumerate(state_changes) if i == 0 or state_changes[i - 1] != x]
        errors = [ln.text[:200] for ln in self.daemon.since(0.0) if ln.level in ("ERROR", "CRITICAL")]
        end_ok = end["exit_code"] == 0 and end["retained_status"] == "offline"
        events_ok = cmp["missing"] == 0 and cmp["out_of_order"] == 0 and cmp["extra"] == 0
        verdict = "PASS" if all(r["result"] in ("PASS", "SKIP", "INFO") for r in results) and events_ok and end_ok \
            else "FAIL"
        return {
            "command": command_line(), "date": today(), "hours": self.args.hours, "fault_times": self.args.fault_times,
            "duration_s": round(duration, 1), "frames": frames,
            "loop_fps": {"median": float(np.median(fps)) if fps else None, "min": min(fps) if fps else None,
                         "min_outside_camera_outage": min(fps_seeing) if fps_seeing else None},
            "model": str(self.args.model), "device_exe": str(self.args.device_exe),
            "device_code": device_code_check(self.args.device_exe),
            "segments": self.daemon.segment, "exits": self.daemon.exits, "faults": results,
            "events": {**cmp, "sigkills": killed_open, "state_publications": len(state_changes),
                       "state_changes": len(collapsed)},
            "episodes": sum(1 for d in self.daemon.decisions if d.kind == "start"),
            "end": end, "resources": resources, "cost": cost, "errors_logged": errors[:30], "notes": self.notes,
            "tmpfs_mb": tmpfs_mb,
            "result": verdict, "work": str(self.work),
            "samples": self.sampler.samples,
        }


def device_code_check(exe: Path) -> str:
    """Which code the device-only install runs (a plain install is a copy, and others edit device/): the same as
    this checkout's HEAD commit, as its working tree, or neither."""
    import subprocess

    python = exe.parent / "python"
    code = "import edge_oneclass.device as d, os; print(os.path.dirname(d.__file__))"
    try:
        installed = Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                        timeout=30).stdout.strip())
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except OSError as exc:
        return f"unknown ({exc})"

    def differ(read) -> list[str]:
        out = []
        names = {p.relative_to(REPO / "device") for p in (REPO / "device").rglob("*.py")}
        names |= {p.relative_to(installed) for p in installed.rglob("*.py")}
        for rel in sorted(names):
            mine = installed / rel
            theirs = read(Path("device") / rel)
            if theirs != (mine.read_bytes() if mine.is_file() else None):
                out.append(str(Path("device") / rel))
        return out

    def at_head(rel: Path) -> bytes | None:
        proc = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=REPO, capture_output=True, timeout=30)
        return proc.stdout if proc.returncode == 0 else None

    def in_tree(rel: Path) -> bytes | None:
        return (REPO / rel).read_bytes() if (REPO / rel).is_file() else None

    if not differ(at_head):
        return f"HEAD {head} (device/ of the working tree differs: {len(differ(in_tree))} file(s))"
    tree = differ(in_tree)
    if not tree:
        return "the working tree's device/ (uncommitted changes included)"
    return f"neither HEAD {head} nor the working tree ({len(tree)} file(s) differ: {', '.join(tree[:4])})"


def daemon_cpu_pct(samples: list[dict]) -> float | None:
    """CPU of the daemon processes (% of one core) over the time they ran, from the sampled utime+stime."""
    cpu = wall = 0.0
    by_seg: dict[int, list[dict]] = {}
    for r in samples:
        if r.get("cpu_s") is not None:
            by_seg.setdefault(r["segment"], []).append(r)
    for rows in by_seg.values():
        cpu += rows[-1]["cpu_s"] - rows[0]["cpu_s"]
        wall += rows[-1]["t"] - rows[0]["t"]
    return round(100.0 * cpu / wall, 1) if wall > 0 else None


def resource_summary(samples: list[dict], warmup: float, noisy: list[tuple[float, float]] = ()) -> dict:
    """Per daemon process (segment): RSS, threads and open files at the start (after `warmup` s) and at the end,
    and the RSS trend (MB per hour, least squares) over its longest stretch of 10 minutes or more outside the
    `noisy` windows (the bad-input burst allocates its oversized payload on purpose)."""
    out: dict = {"segments": []}
    by_seg: dict[int, list[dict]] = {}
    for r in samples:
        by_seg.setdefault(r["segment"], []).append(r)
    for seg, rows in sorted(by_seg.items()):
        t_start = rows[0]["t"]
        warm = [r for r in rows if r["t"] - t_start >= warmup and r["rss_mb"]] or rows[-1:]
        first, last = warm[0], warm[-1]
        stretches: list[list[dict]] = [[]]
        for r in warm:
            if any(a <= r["t"] <= b for a, b in noisy):
                if stretches[-1]:
                    stretches.append([])
                continue
            stretches[-1].append(r)
        quiet = max(stretches, key=lambda x: (x[-1]["t"] - x[0]["t"]) if x else -1)
        slope = None
        if quiet and quiet[-1]["t"] - quiet[0]["t"] >= 600 and len(quiet) >= 10:
            t = np.array([r["t"] for r in quiet]) / 3600.0
            slope = round(float(np.polyfit(t, np.array([r["rss_mb"] for r in quiet]), 1)[0]), 2)
        out["segments"].append({
            "segment": seg, "from_s": first["t"], "to_s": last["t"],
            "rss_mb": [first["rss_mb"], last["rss_mb"]], "rss_peak_mb": max(r["rss_mb"] or 0 for r in rows),
            "threads": [first["threads"], last["threads"]], "threads_peak": max(r["threads"] or 0 for r in rows),
            "fds": [first["fds"], last["fds"]], "fds_peak": max(r["fds"] or 0 for r in rows),
            "rss_mb_per_hour": slope,
            "trend_over_s": [quiet[0]["t"], quiet[-1]["t"]] if slope is not None else None})
    if samples:
        out["snapshots"] = [samples[0].get("snapshots_bytes"), samples[-1].get("snapshots_bytes"),
                            samples[-1].get("snapshots_files")]
        out["feedback"] = [samples[0].get("feedback_bytes"), samples[-1].get("feedback_bytes"),
                           samples[-1].get("feedback_files")]
    return out


def table(r: dict) -> str:
    rows = [["duration", f"{r['duration_s'] / 3600:.2f} h ({r['duration_s']:.0f} s, faults {r['fault_times']})", ""],
            ["frames scored", f"{r['frames']}",
             f"loop fps (stats lines) median {r['loop_fps']['median']}, lowest "
             f"{r['loop_fps']['min_outside_camera_outage']} outside the camera outage "
             f"({r['loop_fps']['min']} with it)"]]
    for f in r["faults"]:
        rows.append([f"{f['fault']} @ {f.get('started_s', 0) / 60:.1f} min", f["result"], f["detail"]])
    e = r["events"]
    rows.append(["events expected / received", f"{e['expected']} / {e['received']}",
                 f"missing {e['missing']}, duplicated {e['duplicates']}, extra {e['extra']}, out of order "
                 f"{e['out_of_order']}; start twice in a row {e['same_type_twice_in_a_row']} (SIGKILLs: "
                 f"{e['sigkills']}); {r['episodes']} episodes; state topic: {e['state_publications']} publications, "
                 f"{e['state_changes']} changes"])
    for s in r["resources"]["segments"]:
        rows.append([f"daemon process {s['segment']} ({s['from_s'] / 60:.0f}-{s['to_s'] / 60:.0f} min)",
                     f"RSS {s['rss_mb'][0]} -> {s['rss_mb'][1]} MB",
                     f"peak {s['rss_peak_mb']} MB, trend {s['rss_mb_per_hour']} MB/h"
                     + (f" (over {s['trend_over_s'][0] / 60:.0f}-{s['trend_over_s'][1] / 60:.0f} min)"
                        if s["trend_over_s"] else " (under 10 quiet minutes)") + f"; threads {s['threads'][0]} -> "
                     f"{s['threads'][1]} (peak {s['threads_peak']}); open files {s['fds'][0]} -> {s['fds'][1]} "
                     f"(peak {s['fds_peak']})"])
    res = r["resources"]
    if "snapshots" in res:
        rows.append(["folders", f"snapshots {res['snapshots'][1]} B ({res['snapshots'][2]} files)",
                     f"feedback {res['feedback'][1]} B ({res['feedback'][2]} files), tmpfs {r['tmpfs_mb']} MB"])
    c = r["cost"]
    rows.append(["cost", f"daemon {c['daemon_cpu_pct_one_core']} % of a core",
                 f"harness {c['harness_cpu_s']} CPU s, reaped children (daemons, broker) {c['children_cpu_s']} CPU s; "
                 f"work folder {c['work_dir_mb']} MB"])
    end = r["end"]
    rows.append(["clean stop (SIGTERM)", f"exit {end['exit_code']}",
                 f"retained status {end['retained_status']}, retained state {end['retained_state']} (present at stop: "
                 f"{end['present_at_stop']})"])
    rows.append(["result", r["result"], f"device code: {r['device_code']}"])
    return markdown_table(["what", "figure", "detail"], rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=6.0, help="frame (= wall) time of the run (default 6)")
    p.add_argument("--model", type=Path, required=True, help="model folder (model.tflite, model.json, "
                   "calibration.npz); copied, never modified")
    p.add_argument("--fault-times", choices=("scaled", "absolute"), default="scaled",
                   help="the 6-hour fault schedule scaled to --hours (default), or at its absolute minutes")
    p.add_argument("--faults", help="comma-separated subset of: " + ", ".join(n for n, _ in SCHEDULE))
    p.add_argument("--outage-seconds", type=float, default=60.0, help="broker and camera outages (default 60)")
    p.add_argument("--fill-seconds", type=float, default=90.0, help="how long the disk stays full (default 90)")
    p.add_argument("--max-wait", type=float, help="longest wait for a fault's situation (default: scaled, 240-900 s)")
    p.add_argument("--tail", type=float, default=60.0, help="seconds after the last fault (default 60)")
    p.add_argument("--fps", type=float, default=5.0, help="camera and daemon frame rate (default 5)")
    p.add_argument("--threads", type=int, default=2, help="[model] threads (default 2)")
    p.add_argument("--stats-interval", type=float, default=10.0, help="[mqtt] stats_interval (default 10 s)")
    p.add_argument("--sample-every", type=float, default=10.0, help="resource sampling period (default 10 s)")
    p.add_argument("--warmup", type=float, default=120.0, help="seconds of each process before 'RSS start' (120)")
    p.add_argument("--tmpfs-mb", type=int, default=64, help="size of the snapshot+feedback tmpfs (default 64 MB)")
    p.add_argument("--push-delta", type=float, default=1.0, help="threshold change of the pushed models (1.0)")
    p.add_argument("--burst-each", type=int, default=20, help="truncated, non-JSON and wrong-hash pushes, each (20)")
    p.add_argument("--burst-oversized", type=int, default=2, help="pushes over MAX_PAYLOAD (default 2)")
    p.add_argument("--burst-gap", type=float, default=0.1, help="seconds between burst messages (default 0.1)")
    p.add_argument("--device-exe", type=Path, default=DEVICE_EXE, help="edge-device of the device-only install")
    p.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    p.add_argument("--work", type=Path, help="work folder, kept (default: a temporary one, removed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("note: not root, the tmpfs cannot be mounted: the disk-full fault will be skipped", file=sys.stderr)
    if not args.device_exe.is_file():
        raise SystemExit(f"{args.device_exe} missing: build it with `bash scripts/test.sh --co -q` or "
                         "`python3 -m venv .venv-device && .venv-device/bin/pip install '.[device]'`")
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, work)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        soak.setup()
        result = soak.run()
    except BaseException:
        for stop in (lambda: soak.daemon.stop(10), soak.camera.down, soak.broker.stop, soak.tmpfs.unmount):
            try:
                stop()
            except Exception:  # noqa: BLE001, S112 - best-effort clean-up on the way out
                continue
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    write_json(args.json, result)
    print()
    print(table(result))
    if args.work or result["result"] != "PASS":
        print(f"\nwrote {args.json}; logs (daemon-N.log, mosquitto.log) in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        print(f"\nwrote {args.json}")
    return 0 if result["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
