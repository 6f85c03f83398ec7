"""Helper of scripts/test-arm64.sh, run by the x86 reference venv and inside the arm64 root (device extra only).

  clip SRC OUT --seconds S --every K    cut the first S seconds of a video, keeping every K-th frame (host)
  inputs CLIP MODEL INPUTS.npy FRAMES.npy   the clip's decoded RGB frames, and them through the ONE preprocessing
                                        function, as uint8 (host)
  pixels CLIP FRAMES.npy INPUTS.npy     where the two sides' pixels part: decoding the clip, and preprocessing the
                                        other side's decoded frames (arm64)
  score MODEL INPUTS.npy CLIP OUT.json  the model's score of each tensor, and of each decoded clip frame's whole view
  pngs FRAMES.npy DIR                   write decoded RGB frames as lossless PNGs (an image-folder source)
  events REF.jsonl ARM.jsonl            the two sides' replay events; last line `VERDICT events=PASS|FAIL`
  compare REF.json ARM.json REF.jsonl ARM.jsonl   events and scores of the two sides; last line
                                        `VERDICT tensors=PASS|FAIL events=PASS|FAIL`
  hwcap                                 the CPU features this process sees (under qemu: those of QEMU_CPU)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

PRIOR_TOLERANCE = 1e-9   # |delta| allowed between platforms in a score that includes the class prior's float64 term
HWCAP_BITS = {"asimd": 1, "atomics": 8, "asimdrdm": 12, "asimddp": 20, "sve": 22}


def cut_clip(src: str, out: str, seconds: float, every: int) -> None:
    import cv2

    cap = cv2.VideoCapture(src)
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps / every, (w, h))
    kept = 0
    for i in range(int(round(seconds * fps))):
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            writer.write(frame)
            kept += 1
    writer.release()
    print(f"clip: {kept} frames of {src} ({w}x{h}, {fps / every:.2f} fps) -> {out}")


def frames(clip: str):
    from edge_oneclass.device.sources.opencv import VideoFileSource

    source = VideoFileSource(clip, 10.0)
    source.open()
    try:
        while (frame := source.read()) is not None:
            yield frame.image
    finally:
        source.close()


def dump_inputs(clip: str, model: str, out: str, out_frames: str) -> None:
    import numpy as np

    from edge_oneclass.device.model.preprocess import preprocess
    from edge_oneclass.device.model.runner import Runner

    size = Runner(model, threads=1).input_size
    decoded = np.stack(list(frames(clip)))
    np.save(out_frames, decoded)
    np.save(out, np.stack([preprocess(img, size) for img in decoded]))


def pixels(clip: str, frames_npy: str, inputs_npy: str) -> None:
    import numpy as np

    from edge_oneclass.device.model.preprocess import preprocess

    ref_frames, ref_inputs = np.load(frames_npy), np.load(inputs_npy)

    def diff(a: np.ndarray, b: np.ndarray) -> str:
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        return f"max |diff| {int(d.max())} grey levels, {100.0 * np.count_nonzero(d) / d.size:.2f} % of values differ"

    print(f"  decoding the clip (arm64 vs x86): {diff(np.stack(list(frames(clip))), ref_frames)}")
    mine = np.stack([preprocess(img, ref_inputs.shape[1]) for img in ref_frames])
    print(f"  preprocessing x86's decoded frames (arm64 vs x86): {diff(mine, ref_inputs)}")


def score(model: str, inputs: str, clip: str, out: str) -> None:
    import numpy as np

    from edge_oneclass.device.model.preprocess import preprocess
    from edge_oneclass.device.model.runner import Runner

    runner = Runner(model, threads=2)
    tensors = np.load(inputs)
    prior, runner.prior = runner.prior, None   # the model's own outputs first, without the class prior's numpy math
    raw = [runner.infer(t) for t in tensors]
    runner.prior = prior
    embeddings = [r.embedding for r in raw if r.embedding is not None]
    result = {
        "outputs": [r.score for r in raw],
        "embeddings_sha256": hashlib.sha256(np.stack(embeddings).tobytes()).hexdigest() if embeddings else None,
        "inputs": [runner.infer(t).score for t in tensors],
        "frames": [runner.infer(preprocess(img, runner.input_size)).score for img in frames(clip)],
    }
    Path(out).write_text(json.dumps(result))


def write_pngs(frames_npy: str, out: str) -> None:
    import cv2
    import numpy as np

    Path(out).mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(np.load(frames_npy)):
        cv2.imwrite(str(Path(out) / f"frame_{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def states(path: str) -> list[dict]:
    lines = [json.loads(x) for x in Path(path).read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("kind") == "state"]


def events(ref_events: str, arm_events: str) -> None:
    ev_ref, ev_arm = states(ref_events), states(arm_events)
    same = bool(ev_ref) and ev_ref == ev_arm
    print(f"  lossless frames replay: x86 {len(ev_ref)} events, arm64 {len(ev_arm)}: {'equal' if same else 'DIFFER'}"
          f" ({', '.join(e['state'] + '@' + e['at'] + ' frames ' + str(e['event']['frames']) for e in ev_arm)})")
    for a, b in zip(ev_ref, ev_arm, strict=False):
        if a != b:
            print(f"    x86   {json.dumps(a['event'])}\n    arm64 {json.dumps(b['event'])}")
    print(f"VERDICT events={'PASS' if same else 'FAIL'}")


def compare(ref_scores: str, arm_scores: str, ref_events: str, arm_events: str) -> int:
    ref, arm = json.loads(Path(ref_scores).read_text()), json.loads(Path(arm_scores).read_text())
    ev_ref, ev_arm = states(ref_events), states(arm_events)
    # The int8 model's outputs must be bit-identical. The class prior's term is float64 numpy (exp, log) on each
    # platform: numpy builds may differ in the last bits (seen: 3.6e-15 with Bookworm's numpy 1.24 on arm64).
    same_outputs = ref["outputs"] == arm["outputs"] and ref["embeddings_sha256"] == arm["embeddings_sha256"]
    d_in = max(abs(a - b) for a, b in zip(ref["inputs"], arm["inputs"], strict=True))
    same_inputs = same_outputs and d_in <= PRIOR_TOLERANCE
    print(f"  same input tensors: {len(ref['outputs'])} model outputs (score and embedding) "
          f"{'bit-identical' if same_outputs else 'DIFFER'}; scores with the class prior "
          f"{'bit-identical' if ref['inputs'] == arm['inputs'] else 'differ'} (max |delta| {d_in:.6g}, "
          f"allowed {PRIOR_TOLERANCE:g})")
    ok = bool(ev_ref)
    if not ev_ref:
        print("  x86 replay gave no event: the event comparison would prove nothing (pick another clip or threshold)")
    d_fr = [a - b for a, b in zip(ref["frames"], arm["frames"], strict=True)]
    print(f"  decoded frames: {len(d_fr)} scores, max |delta| {max(map(abs, d_fr)):.6g}"
          f" ({sum(1 for d in d_fr if d != 0)} frames differ)")
    if ev_ref == ev_arm:
        print(f"  video replay events: {len(ev_arm)} equal ({', '.join(e['state'] + '@' + e['at'] for e in ev_arm)})")
    else:
        ok = False
        print(f"  video replay events DIFFER: x86 {len(ev_ref)}, arm64 {len(ev_arm)}")
        for a, b in zip(ev_ref, ev_arm, strict=False):
            if a != b:
                print(f"    x86   {json.dumps(a['event'])}\n    arm64 {json.dumps(b['event'])}")
        print("    per-frame score deltas (x86 - arm64): " + " ".join(f"{i}:{d:+.4f}" for i, d in enumerate(d_fr) if d))
    print(f"VERDICT tensors={'PASS' if same_inputs else 'FAIL'} events={'PASS' if ok else 'FAIL'}")
    return 0


def hwcap() -> None:
    import struct

    raw = Path("/proc/self/auxv").read_bytes()
    pairs = dict(struct.iter_unpack("QQ", raw))
    caps = pairs.get(16, 0)  # AT_HWCAP
    print(" ".join(f"{name}={'yes' if caps >> bit & 1 else 'no'}" for name, bit in HWCAP_BITS.items()))


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "clip":
        cut_clip(args[0], args[1], float(args[args.index("--seconds") + 1]), int(args[args.index("--every") + 1]))
    elif cmd == "inputs":
        dump_inputs(*args)
    elif cmd == "pngs":
        write_pngs(*args)
    elif cmd == "events":
        events(*args)
    elif cmd == "pixels":
        pixels(*args)
    elif cmd == "score":
        score(*args)
    elif cmd == "compare":
        return compare(*args)
    elif cmd == "hwcap":
        hwcap()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
