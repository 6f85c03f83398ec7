"""The faults benchmarks/soak.py throws at the running daemon, each one a function returning its result line.

Every fault waits (bounded) for the situation it needs (an open episode, or none), does its damage at a recorded
time, and checks what the issue promises: the retained state equals the daemon's own, the events that reached the
broker are the ones the daemon logged, one log line per failure, files either old or new and never half.
A result is PASS, FAIL, SKIP (the situation never came, or this machine cannot do it: the line says why) or INFO.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.soak_mqtt import compare, retained_now

if TYPE_CHECKING:
    from benchmarks.soak import Soak


def result(name: str, status: str, detail: str, **data) -> dict:
    return {"fault": name, "result": status, "detail": detail, **data}


def iso_ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


# -- shared checks --------------------------------------------------------------------------------------------

def state_matches(s: Soak, tries: int = 5) -> tuple[bool, str | None, str]:
    """(retained state == the daemon's state, the retained payload, the daemon's), allowing a decision to land
    between the two reads."""
    retained = want = None
    for _ in range(tries):
        want = "ON" if s.daemon.present else "OFF"
        retained = retained_now(s.broker.host, s.broker.port, s.topic(f"{s.label}/state"))
        if retained == want and want == ("ON" if s.daemon.present else "OFF"):
            return True, retained, want
        time.sleep(1.0)
    return False, retained, want or "?"


def window_compare(s: Soak, m0: float) -> dict:
    """Decisions logged since `m0` against the events that arrived since `m0`."""
    decisions = [d for d in s.daemon.decisions if d.mono >= m0]
    return compare(decisions, s.recorder.events(s.label, m0))


def tracebacks(s: Soak, m0: float) -> int:
    return len(s.daemon.since(m0, r"^Traceback"))


def bank_digest(bank: Path) -> str | None:
    return hashlib.sha256(bank.read_bytes()).hexdigest()[:16] if bank.is_file() else None


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return out


def bank_read(s: Soak, folder: Path | None = None) -> dict:
    """The bank as the device reads it (FeedbackBank.open on a copy, so a corrupt file is not moved aside here)."""
    from edge_oneclass.device.feedback.bank import BANK_FILE, FeedbackBank

    folder = folder or s.feedback_dir
    src = folder / BANK_FILE
    if not src.is_file():
        return {"exists": False, "negatives": 0, "ok": True}
    with tempfile.TemporaryDirectory(prefix="soak-bank-") as tmp:
        shutil.copy2(src, Path(tmp) / BANK_FILE)
        model = s.running_model()
        bank = FeedbackBank.open(tmp, model.path, model.card, model.embedding_dim)
        aside = list(Path(tmp).glob(f"{BANK_FILE}.corrupt-*"))
        return {"exists": True, "ok": not aside, "negatives": len(bank.negatives), "positives": len(bank.positives),
                "sha": bank_digest(src)}


def bank_temps(s: Soak) -> list[str]:
    return sorted(p.name for p in s.feedback_dir.glob(".bank.npz.*.tmp"))


def active_model(s: Soak) -> dict:
    """The model the daemon would start with, by the device's own code (active_model_path + load_verified)."""
    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.errors import EdgeError
    from edge_oneclass.device.model.card import load_verified
    from edge_oneclass.device.update.store import active_model_path

    cfg = load_config(s.config)
    path = active_model_path(cfg)
    try:
        card = load_verified(path)
    except EdgeError as exc:
        return {"path": str(path), "ok": False, "error": str(exc)}
    return {"path": str(path), "ok": True, "threshold": round(float(card.threshold), 4)}


# -- 1, 2. the broker goes away -----------------------------------------------------------------------------

def broker_outage(s: Soak, in_episode: bool) -> dict:
    name = "broker_down_in_episode" if in_episode else "broker_down_between_episodes"
    where = "during an episode" if in_episode else "between episodes"
    ok = s.wait_present(s.max_wait, 2.0) if in_episode else s.wait_absent(s.max_wait, 5.0)
    if not ok:
        return result(name, "SKIP", f"no {'episode' if in_episode else 'quiet spell'} came within {s.max_wait:.0f} s")
    was = "ON" if s.daemon.present else "OFF"
    m0 = time.monotonic()
    t_fault = s.elapsed()
    s.broker.stop()
    time.sleep(s.args.outage_seconds)
    during = [d for d in s.daemon.decisions if d.mono >= m0]
    s.broker.start()
    m1 = time.monotonic()
    back = s.daemon.wait_line(r"^mqtt: connected", m1, 90)
    time.sleep(3.0)
    same, retained, want = state_matches(s)
    cmp = window_compare(s, m0 - 0.5)
    dropped = s.daemon.since(m0, r"event dropped")
    kinds = ", ".join(d.kind for d in during) or "none"
    reconnect = f"{back.mono - m1:.1f} s" if back else "NEVER (90 s)"
    good = bool(back) and same and cmp["missing"] == 0 and cmp["out_of_order"] == 0 and cmp["extra"] == 0
    detail = (f"broker stopped {s.args.outage_seconds:.0f} s {where} (state {was}); decisions while it was down: "
              f"{kinds}; daemon reconnected {reconnect} after the broker came back; retained state {retained} vs "
              f"daemon {want}; events since the stop: {cmp['expected']} logged, {cmp['received']} arrived, "
              f"missing {cmp['missing']}, out of order {cmp['out_of_order']}, duplicates {cmp['duplicates']}"
              + (f"; {len(dropped)} 'event dropped' line(s)" if dropped else ""))
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), state_before=was,
                  decisions_while_down=[d.kind for d in during],
                  reconnect_s=round(back.mono - m1, 1) if back else None, retained=retained, daemon_state=want,
                  events=cmp)


# -- 3. the camera stream goes away ---------------------------------------------------------------------------

def stream_outage(s: Soak) -> dict:
    name = "stream_gone"
    was = "ON" if s.daemon.present else "OFF"
    t_fault = s.elapsed()
    m0 = time.monotonic()
    s.camera.down()
    time.sleep(s.args.outage_seconds)
    held = "ON" if s.daemon.present else "OFF"
    decided_blind = [d.kind for d in s.daemon.decisions if d.mono >= m0]
    s.camera.up()
    m1 = time.monotonic()
    failed = s.daemon.wait_line(r"^camera failed", m0, 5)
    back = s.daemon.wait_line(r"^camera \S+ is back", m1, 60)
    retries = len(s.daemon.since(m0, r"^camera still unavailable"))
    stats = None
    if back:
        deadline = time.monotonic() + 4 * s.stats_interval + 5
        while time.monotonic() < deadline and stats is None:
            later = [st for m, seg, st in s.daemon.stats if m > back.mono]
            stats = later[1] if len(later) > 1 else None     # the first one's period includes the outage
            time.sleep(0.2)
    fps = float(stats["fps"]) if stats and "fps" in stats else None
    good = bool(failed) and bool(back) and fps is not None and fps > 0 and s.daemon.pid is not None
    detail = (f"stream server closed {s.args.outage_seconds:.0f} s (state {was}); daemon logged 'camera failed' "
              f"{f'{failed.mono - m0:.1f} s' if failed else 'NEVER'} after, {retries} retry line(s), 'is back' "
              f"{f'{back.mono - m1:.1f} s after the stream returned' if back else 'NEVER (60 s)'}; loop fps after: "
              f"{fps}; presence while blind: held {held} (decisions while blind: {', '.join(decided_blind) or 'none'})")
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1),
                  noticed_s=round(failed.mono - m0, 1) if failed else None,
                  recovered_s=round(back.mono - m1, 1) if back else None, retries=retries, fps_after=fps,
                  state_held=held)


# -- 4. the disk fills up -------------------------------------------------------------------------------------

def disk_full(s: Soak) -> dict:
    name = "disk_full"
    if not s.tmpfs.mounted:
        return result(name, "SKIP", f"no tmpfs on this machine ({s.tmpfs.error}); the folders are on the main disk, "
                      "which the harness will not fill")
    t_fault = s.elapsed()
    m0 = time.monotonic()
    frames0 = s.frames_so_far()
    taken = s.tmpfs.fill()
    try:
        used, free = s.tmpfs.usage()
        # an episode start while full (its snapshot cannot be written), and a false alarm (the bank cannot be written)
        deadline = time.monotonic() + s.max_wait
        while time.monotonic() < deadline and not any(d.mono >= m0 and d.kind == "start" for d in s.daemon.decisions):
            time.sleep(0.5)
        flagged = False
        if s.daemon.present:
            time.sleep(2.0)
            flagged = s.commander.send(s.topic(f"{s.label}/feedback"), "false_alarm")
            s.daemon.wait_line(r"^feedback: ", time.monotonic() - 3, 15)
        while time.monotonic() - m0 < s.args.fill_seconds:
            time.sleep(0.5)
        frames1 = s.frames_so_far()
    finally:
        s.tmpfs.free()
    m1 = time.monotonic()
    snap_fail = s.daemon.since(m0, r"^snapshot: cannot write")
    bank_fail = s.daemon.since(m0, r"not learnt: cannot write the bank")
    frame_fail = s.daemon.since(m0, r"^feedback: cannot keep the frame")
    starts = sum(1 for d in s.daemon.decisions if m0 <= d.mono <= m1 and d.kind == "start")
    tb = tracebacks(s, m0)
    saved_after = s.daemon.wait_line(r"^snapshot: saved", m1, min(s.max_wait, 300.0))
    went_on = frames1 > frames0 and s.daemon.pid is not None
    good = went_on and tb == 0 and len(snap_fail) == starts and (not flagged or len(bank_fail) <= 1)
    detail = (f"tmpfs {s.tmpfs.mb} MB filled ({taken // 1024} KB taken, {free} B left) for "
              f"{m1 - m0:.0f} s: {starts} episode start(s) -> {len(snap_fail)} 'snapshot: cannot write' line(s); "
              f"false_alarm {'sent' if flagged else 'not sent (no episode open)'} -> {len(bank_fail)} bank "
              f"'not learnt' line(s), {len(frame_fail)} 'cannot keep the frame' line(s); {tb} traceback(s); "
              f"frames {frames0} -> {frames1} while full (detection went on: {went_on}); next snapshot after freeing: "
              f"{'saved' if saved_after else 'none within the wait'}")
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), starts_while_full=starts,
                  snapshot_fail_lines=len(snap_fail), bank_fail_lines=len(bank_fail),
                  frame_fail_lines=len(frame_fail), tracebacks=tb, frames_while_full=frames1 - frames0)


# -- 5. "not a dog" mid-episode -------------------------------------------------------------------------------

def false_alarm(s: Soak) -> dict:
    name = "false_alarm_mid_episode"
    if not s.wait_present(s.max_wait, 2.0):
        return result(name, "SKIP", f"no episode within {s.max_wait:.0f} s")
    t_fault = s.elapsed()
    before = bank_read(s)
    m0 = time.monotonic()
    sent = s.commander.send(s.topic(f"{s.label}/feedback"), "false_alarm")
    learnt = s.daemon.wait_line(r"^feedback: (false alarm of|false_alarm:)", m0, 15)
    ended = s.daemon.wait_line(r"flagged episode ends now", m0, 45)
    end = next((d for d in s.daemon.decisions if d.mono >= m0 and d.kind == "end"), None)
    if end is None:
        deadline = time.monotonic() + s.max_wait
        while end is None and time.monotonic() < deadline:
            time.sleep(0.5)
            end = next((d for d in s.daemon.decisions if d.mono >= m0 and d.kind == "end"), None)
    after = bank_read(s)
    cmp = window_compare(s, m0 - 0.5)
    good = sent and bool(learnt) and after["ok"] and cmp["missing"] == 0
    detail = (f"false_alarm sent during an episode: daemon said "
              f"'{learnt.text[10:140] if learnt else 'NOTHING'}'; bank {before['negatives']} -> {after['negatives']} "
              f"negatives; episode {'ended at once (flagged)' if ended else 'not ended early'}"
              f"{f', end event {end.mono - m0:.1f} s after the flag' if end else ', no end within the wait'}; "
              f"events since: missing {cmp['missing']}, out of order {cmp['out_of_order']}")
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), bank_before=before,
                  bank_after=after, ended_early=bool(ended), end_after_s=round(end.mono - m0, 1) if end else None)


# -- 6. a model push mid-episode ------------------------------------------------------------------------------

def model_push(s: Soak) -> dict:
    name = "model_push_mid_episode"
    if not s.wait_present(s.max_wait, 2.0):
        return result(name, "SKIP", f"no episode within {s.max_wait:.0f} s")
    t_fault = s.elapsed()
    threshold = s.factory_threshold + s.args.push_delta
    payload, push_id = s.model_payload(threshold)
    frames0 = s.frames_so_far()
    m0 = time.monotonic()
    s.commander.send(s.topic("model/set"), payload)
    swapped = s.daemon.wait_line(r"^model swapped \(push\)", m0, 60)
    refused = s.daemon.since(m0, r"^model update refused")
    time.sleep(2.0)
    status = None
    for m in reversed(s.recorder.on("model", m0)):
        try:
            doc = json.loads(m.text or "")
        except ValueError:
            continue
        if doc.get("push_id") == push_id:
            status = doc
            break
    stored = active_model(s)
    around = [d.kind for d in s.daemon.decisions if swapped and abs(d.mono - swapped.mono) < 1.0]
    # the episode goes on across the swap (same label): the user can still flag it
    flag = None
    same_episode = s.daemon.present and not [d for d in s.daemon.decisions if d.mono >= m0]
    if swapped and same_episode:
        m2 = time.monotonic()
        s.commander.send(s.topic(f"{s.label}/feedback"), "false_alarm")
        answer = s.daemon.wait_line(r"^feedback: (false alarm of|false_alarm)", m2, 15)
        flag = answer.text[10:130] if answer else "no answer"
    flag_lost = flag is not None and "false alarm of" not in flag
    n_stats = len(s.daemon.stats)
    deadline = time.monotonic() + s.stats_interval + 3
    while len(s.daemon.stats) == n_stats and time.monotonic() < deadline:
        time.sleep(0.2)
    frames1 = s.frames_so_far()
    good = (bool(swapped) and not refused and status is not None and status.get("status") == "ok"
            and abs(stored.get("threshold", 0) - round(threshold, 4)) < 1e-3 and not around and not flag_lost)
    detail = (f"push of the same model with threshold {threshold:.4f} ({len(payload) // 1024} KB payload) during "
              f"an episode: {'swapped ' + f'{swapped.mono - m0:.1f} s after sending' if swapped else 'NOT swapped'}"
              f"{'; refused: ' + refused[0].text[:120] if refused else ''}; retained status "
              f"{status.get('status') if status else 'missing'}; store current/ threshold {stored.get('threshold')}; "
              f"state changes within 1 s of the swap: {', '.join(around) or 'none'}; frames kept coming "
              f"({frames0} -> {frames1}); false_alarm in the same episode after the swap: "
              f"{flag if flag is not None else 'not tried (the episode had ended)'}")
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), push_id=push_id,
                  swap_s=round(swapped.mono - m0, 2) if swapped else None, model_status=status, stored=stored,
                  false_alarm_after_swap=flag)


# -- 7. junk on the command topics ----------------------------------------------------------------------------

def bad_input_burst(s: Soak) -> dict:
    from edge_oneclass.device.update.payload import MAX_PAYLOAD, encode, read_model_dir

    name = "bad_input_burst"
    t_fault = s.elapsed()
    files = read_model_dir(s.factory)
    good_payload, _ = encode(files)
    wrong = dict(files)
    tfl = bytearray(wrong["model.tflite"])
    tfl[len(tfl) // 2] ^= 0xFF
    wrong["model.tflite"] = bytes(tfl)
    wrong_payload, _ = encode(wrong)
    model_msgs: list[tuple[str, bytes]] = [("oversized", b"x" * (MAX_PAYLOAD + 1))] * s.args.burst_oversized
    for i in range(s.args.burst_each):
        model_msgs += [("truncated", good_payload[: len(good_payload) * (i + 1) // (s.args.burst_each + 2)]),
                       ("non-JSON", os.urandom(64 + 37 * i)), ("wrong hash", wrong_payload)]
    feedback_msgs = [b"", b"FALSE ALARM please", b"true", b"\xff\xfe\x00", b"false_alarm_x", b"{\"cmd\":1}",
                     b"missed!", b"x" * 5000] * max(1, s.args.burst_each * 2 // 8 + 1)
    feedback_msgs = feedback_msgs[: s.args.burst_each * 2]
    store0, bank0 = tree_digest(s.store_dir), bank_digest(s.feedback_dir / "bank.npz")
    fps_before = [float(st["fps"]) for m, seg, st in s.daemon.stats[-6:] if "fps" in st]
    rss_before = (s.sampler.sample() or {}).get("rss_mb")
    s.sampler.burst.set()
    m0 = time.monotonic()
    n0 = len(s.sampler.samples)
    model_topic, fb_topic = s.topic("model/set"), s.topic(f"{s.label}/feedback")
    sent_model = sent_fb = 0
    for i in range(max(len(model_msgs), len(feedback_msgs))):
        if i < len(model_msgs):
            sent_model += s.commander.send(model_topic, model_msgs[i][1], timeout=120)
        if i < len(feedback_msgs):
            sent_fb += s.commander.send(fb_topic, feedback_msgs[i])
        time.sleep(s.args.burst_gap)
    m_sent = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (len(s.daemon.since(m0, r"^model update refused")) >= sent_model
                and len(s.daemon.since(m0, r"^feedback: unknown payload")) >= sent_fb):
            break
        time.sleep(0.5)
    time.sleep(max(2.0, s.stats_interval + 1))
    m1 = time.monotonic()
    s.sampler.burst.clear()
    refused = s.daemon.since(m0, r"^model update refused")
    unknown = s.daemon.since(m0, r"^feedback: unknown payload")
    other_warn = [ln for ln in s.daemon.since(m0) if ln.level in ("WARNING", "ERROR")
                  and not ln.text.startswith(("model update refused", "feedback: unknown payload"))]
    fps_during = [float(st["fps"]) for m, seg, st in s.daemon.stats if m0 <= m <= m1 and "fps" in st]
    window = s.sampler.samples[n0:]
    peak_threads = max((r["threads"] or 0 for r in window), default=None)
    peak_rss = max((r["rss_mb"] or 0 for r in window), default=None)
    store1, bank1 = tree_digest(s.store_dir), bank_digest(s.feedback_dir / "bank.npz")
    time.sleep(10.0)
    rss_after = (s.sampler.sample() or {}).get("rss_mb")
    reasons: dict[str, int] = {}
    for ln in refused:
        key = ln.text.split(": ", 1)[1][:48] if ": " in ln.text else ln.text
        reasons[key] = reasons.get(key, 0) + 1
    good = (len(refused) == sent_model and len(unknown) == sent_fb and store0 == store1 and bank0 == bank1
            and tracebacks(s, m0) == 0 and (min(fps_during) if fps_during else 0) >= 0.8 * s.args.fps)
    detail = (f"{sent_model} bad model pushes ({s.args.burst_oversized} over MAX_PAYLOAD, {s.args.burst_each} each "
              f"truncated/non-JSON/wrong-hash) + {sent_fb} unknown feedback payloads in {m_sent - m0:.0f} s: "
              f"{len(refused)} 'model update refused' and {len(unknown)} 'unknown payload' line(s) "
              f"(one per message: {len(refused) == sent_model and len(unknown) == sent_fb}), {len(other_warn)} other "
              f"warning(s); loop fps during {fps_during} (before {fps_before[-3:]}); threads peak {peak_threads}, "
              f"RSS {rss_before} -> peak {peak_rss} -> {rss_after} MB 10 s after; model store unchanged "
              f"{store0 == store1}, bank unchanged {bank0 == bank1}")
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), sent_model=sent_model,
                  sent_feedback=sent_fb, refused_lines=len(refused), unknown_lines=len(unknown),
                  refusal_reasons=reasons, fps_during=fps_during, fps_before=fps_before, peak_threads=peak_threads,
                  rss_before_mb=rss_before, peak_rss_mb=peak_rss, rss_after_mb=rss_after,
                  store_unchanged=store0 == store1, bank_unchanged=bank0 == bank1,
                  other_warnings=[ln.text[:160] for ln in other_warn[:5]])


# -- 8, 9. SIGKILL in the middle of writing state ---------------------------------------------------------------

# The moment to kill is watched for by a separate little process: in the harness, its other threads would hold the
# GIL for milliseconds, longer than a bank write on tmpfs takes. It polls the folder and SIGKILLs the daemon the
# moment it sees (inotify for the bank, polling otherwise): a new `.bank.npz.*.tmp` ("bank"; "late" if bank.npz
# changed without one being seen), a new
# `.incoming-*` folder ("staging": stage() is writing it), a complete one ("staged": the daemon is loading it), or
# a `.trash-*` folder or current/ gone ("promote": the renames). It ends at once if `abort` appears.
KILLER = r"""
import os, signal, sys, time
pid, folder, mode, timeout, abort = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
before = set(os.listdir(folder))
bank = os.path.join(folder, "bank.npz")
def stat(p):
    try:
        st = os.stat(p)
        return st.st_mtime_ns, st.st_ino
    except OSError:
        return None
bank0 = stat(bank)
def seen():
    names = os.listdir(folder)
    if mode == "bank":
        if any(n.startswith(".bank.npz.") and n.endswith(".tmp") and n not in before for n in names):
            return "hit"
        return "late" if stat(bank) != bank0 else None
    if mode == "promote":
        return "hit" if any(n.startswith(".trash-") for n in names) or "current" not in names else None
    inc = [n for n in names if n.startswith(".incoming-") and n not in before]
    if mode == "staging":
        return "hit" if inc else None
    for n in inc:
        try:
            sub = os.listdir(os.path.join(folder, n))
        except OSError:
            continue
        if {"model.tflite", "model.json", "calibration.npz"} <= set(sub) and not any(x.endswith(".tmp") for x in sub):
            return "hit"
    return None
def bank_by_inotify():
    # A bank write on tmpfs takes ~0.1 ms, less than one poll: wait for the kernel's IN_CREATE instead.
    import ctypes, select, struct
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0 or libc.inotify_add_watch(fd, folder.encode(), 0x100) < 0:    # IN_CREATE
        return False
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(abort):
            print("aborted", flush=True)
            sys.exit(0)
        if not select.select([fd], [], [], 0.05)[0]:
            if stat(bank) != bank0:
                os.kill(pid, signal.SIGKILL)
                print("late", flush=True)
                sys.exit(0)
            continue
        buf, i = os.read(fd, 65536), 0
        while i < len(buf):
            _wd, _mask, _cookie, size = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + size].rstrip(b"\0").decode(errors="replace")
            i += 16 + size
            if name.startswith(".bank.npz.") and name.endswith(".tmp"):
                os.kill(pid, signal.SIGKILL)
                print("hit", flush=True)
                sys.exit(0)
    os.kill(pid, signal.SIGKILL)
    print("timeout", flush=True)
    sys.exit(0)
if mode == "bank":
    bank_by_inotify()
print("ready", flush=True)
deadline, n = time.monotonic() + timeout, 0
while time.monotonic() < deadline:
    try:
        what = seen()
    except OSError:
        what = None
    if what:
        os.kill(pid, signal.SIGKILL)
        print(what, flush=True)
        sys.exit(0)
    n += 1
    if n % 500 == 0 and os.path.exists(abort):
        print("aborted", flush=True)
        sys.exit(0)
os.kill(pid, signal.SIGKILL)
print("timeout", flush=True)
"""


def killer(s: Soak, folder: Path, mode: str, timeout: float) -> tuple[subprocess.Popen, Path]:
    abort = s.work / f"killer-{mode}.abort"
    abort.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(s.daemon.proc.pid), str(folder), mode, str(timeout),
                             str(abort)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, abort


def killer_outcome(s: Soak, proc: subprocess.Popen, abort: Path, give_up=None) -> str:
    """Wait for the killer: "hit", "late", "timeout" or "aborted" (when `give_up()` became true first)."""
    while proc.poll() is None:
        if give_up is not None and give_up():
            abort.touch()
        time.sleep(0.05)
    out = (proc.stdout.read() if proc.stdout else "").strip() or "?"
    if out != "aborted":
        s.daemon.kill(signal.SIGKILL)       # already dead: reap it, record the exit
    return out


def kill_bank_write(s: Soak) -> dict:
    name = "sigkill_during_bank_write"
    refusals: list[str] = []
    for _ in range(3):      # a false alarm needs an episode the feedback controller knows of
        if not s.wait_present(s.max_wait, 3.0):
            return result(name, "SKIP", f"no episode within {s.max_wait:.0f} s (a false alarm needs one)"
                          + (f"; earlier tries: {refusals}" if refusals else ""))
        t_fault = s.elapsed()
        before = bank_read(s)
        temps0 = set(bank_temps(s))
        n0 = len(s.daemon.lines)
        proc, abort = killer(s, s.feedback_dir, "bank", 15.0)
        s.commander.send(s.topic(f"{s.label}/feedback"), "false_alarm")
        how = killer_outcome(s, proc, abort, lambda n0=n0: any(
            ln.text.startswith("feedback: false_alarm: ") for ln in s.daemon.lines[n0:]))
        if how == "aborted":                  # the daemon answered without writing: try the next episode
            answered = [ln.text for ln in s.daemon.lines[n0:] if ln.text.startswith("feedback: false_alarm: ")]
            refusals.append(answered[0][10:90] if answered else "?")
            s.wait_absent(s.max_wait, 1.0)
            continue
        break
    else:
        return result(name, "FAIL", f"three false alarms during episodes and none was learnt: {refusals}")
    temps1 = set(bank_temps(s))
    mid_write = bool(temps1 - temps0)
    after = bank_read(s)
    kind = ("old" if after.get("sha") == before.get("sha") else "new" if after["ok"] else "HALF (set aside)")
    restart = s.restart()
    describe = s.daemon.wait_line(r"^feedback: \d+ negative", s.daemon.started_at, 5)
    temps2 = set(bank_temps(s))
    good = after["ok"] and restart is not None and kind in ("old", "new")
    moment = ("while the bank was being written (its temp file is left)" if mid_write
              else {"hit": "just after the temp file appeared, but the write had finished",
                    "late": "just after the write (the temp file was never seen)",
                    "timeout": "after 15 s (no write seen)"}.get(how, how))
    said = describe.text[10:60] if describe else "?"
    cleaned = "never cleaned" if temps2 and temps2 >= (temps1 - temps0) else "cleaned"
    detail = (f"SIGKILL {moment}: bank on disk is the {kind} one ({before['negatives']} -> {after['negatives']} "
              f"negatives, read by FeedbackBank.open); restarted in {restart if restart is not None else 'NEVER'} s, "
              f"daemon says '{said}'; temp files: {len(temps0)} before, {len(temps1)} after the kill, {len(temps2)} "
              f"after the restart ({cleaned})")
    if refusals:
        detail += f"; earlier false alarm(s) not learnt: {refusals}"
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), mid_write=mid_write,
                  killer=how, bank=kind, bank_before=before, bank_after=after, restart_s=restart,
                  temp_files_after_kill=sorted(temps1), temp_files_after_restart=sorted(temps2))


def kill_model_write(s: Soak) -> dict:
    name = "sigkill_during_model_store_write"
    t_fault = s.elapsed()
    attempts = []
    modes = ("staging", "staged", "promote")
    for i, mode in enumerate(modes):
        old = active_model(s)
        new_threshold = s.factory_threshold + s.args.push_delta * (2 + i)
        payload, _ = s.model_payload(new_threshold)
        s.store_dir.mkdir(parents=True, exist_ok=True)
        m0 = time.monotonic()
        proc, abort = killer(s, s.store_dir, mode, 30.0)
        s.commander.send(s.topic("model/set"), payload)
        how = killer_outcome(s, proc, abort)
        left = sorted(os.listdir(s.store_dir))
        on_disk = active_model(s)
        which = ("old" if on_disk.get("threshold") == old.get("threshold") else
                 "new" if on_disk.get("threshold") == round(new_threshold, 4) else
                 "factory ([model] path)" if on_disk.get("threshold") == round(s.factory_threshold, 4) else "OTHER")
        restart = s.restart(faketime=i == len(modes) - 1 and s.faketime_ok)
        loaded = s.daemon.wait_line(r"^model \S+: label", s.daemon.started_at, 5)
        left2 = sorted(os.listdir(s.store_dir))
        runs = re.search(r"^model (\S+): label .*?threshold (-?[\d.]+)", loaded.text) if loaded else None
        agrees = bool(runs) and runs.group(1) == on_disk.get("path") and \
            abs(float(runs.group(2)) - on_disk.get("threshold", float("nan"))) < 1e-3
        attempts.append({"daemon_runs_it": agrees, "when": mode, "killer": how,
                         "kill_after_s": round(time.monotonic() - m0, 2),
                         "store_after_kill": left, "store_after_restart": left2, "old": old,
                         "new_threshold": round(new_threshold, 4), "on_disk": on_disk, "which": which,
                         "restart_s": restart, "daemon_loaded": loaded.text[:160] if loaded else None})
    good = all(a["on_disk"]["ok"] and a["which"] in ("old", "new") and a["restart_s"] is not None
               and a["daemon_runs_it"] for a in attempts)
    detail = "; ".join(
        f"kill at {a['when']} ({a['killer']}): store had {[n for n in a['store_after_kill']]}, the model to start "
        f"is the {a['which']} one (threshold {a['on_disk'].get('threshold')}, verified {a['on_disk']['ok']}, the "
        f"restarted daemon runs it: {a['daemon_runs_it']}), "
        f"restarted in {a['restart_s']} s, temp folders after restart "
        f"{[n for n in a['store_after_restart'] if n.startswith('.')] or 'none'}" for a in attempts)
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), attempts=attempts)


# -- 10. the clock steps back an hour -----------------------------------------------------------------------------

def clock_step_back(s: Soak) -> dict:
    name = "clock_back_1h"
    if not s.faketime_ok:
        return result(name, "SKIP", f"libfaketime not usable here ({s.faketime_error})")
    if s.daemon.faketime_file is None:
        return result(name, "SKIP", "the daemon running now was not started under libfaketime")
    if not s.wait_present(s.max_wait, 2.0):
        return result(name, "SKIP", f"no episode within {s.max_wait:.0f} s")
    t_fault = s.elapsed()
    m0 = time.monotonic()
    s.faketime_file.write_text("-3600\n")
    # the episode across the step ends, then a whole one after it
    deadline = time.monotonic() + 3 * s.max_wait
    while time.monotonic() < deadline:
        after = [d.kind for d in s.daemon.decisions if d.mono >= m0]
        if after[:3] == ["end", "start", "end"]:
            break
        time.sleep(0.5)
    time.sleep(2.0)
    events = s.recorder.events(s.label, m0 - 0.5)
    cmp = window_compare(s, m0 - 0.5)
    episodes = []
    for ev in events:
        if ev.get("type") == "end":
            start, end = iso_ts(ev.get("started_at")), iso_ts(ev.get("ended_at"))
            if start is not None and end is not None:
                episodes.append(round(end - start, 1))
    types = [ev.get("type") for ev in events]
    alternate = all(a != b for a, b in zip(types, types[1:], strict=False))
    sensible = all(0 <= d < 1800 for d in episodes)
    tb = tracebacks(s, m0)
    alive = s.daemon.pid is not None
    good = alternate and sensible and tb == 0 and alive and cmp["missing"] == 0
    detail = (f"wall clock stepped back 1 h (libfaketime, daemon only) during an episode: events since "
              f"{types}; episode durations (ended_at - started_at) {episodes} s; start/end alternate {alternate}; "
              f"{tb} traceback(s); daemon alive {alive}; missing {cmp['missing']}")
    return result(name, "PASS" if good else "FAIL", detail, at_s=round(t_fault, 1), durations_s=episodes,
                  event_types=types, alternate=alternate)
