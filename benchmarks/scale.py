"""Does `train-edge` scale to a big folder? Peak memory, wall time, model size and per-frame time vs image count.

What is measured, and why:
- A folder of N augmented copies (default 20,000) of the 398 training dogs of the standard dev split is written
  to /tmp: random crop, flip, small rotation, colour jitter and an OpenCV resize, saved as JPEG quality 90. Every
  copy differs in pixels, so train-edge's de-duplication keeps it (model.json `counts.duplicates` proves it).
- `train-edge DIR --out OUT` then runs in a subprocess under `/usr/bin/time -v`: its "Maximum resident set size"
  is the peak memory of the whole job (scan, embedding, autoencoder, int8 export, calibration). Target: < 4 GB.
- The model must not grow with the folder: the bank is a bounded coreset (`counts.bank`), so model.tflite size
  and the int8 time per frame (median of ~100 invokes, one thread, after warm-up) should match the 398-image
  model, which is trained and measured the same way in the same run (the first row).
- The dev test split (170 held-out dogs vs 589 no-dog photos) is scored by both models through the device runner,
  so a reader sees that the big folder does not hurt accuracy either.

Usage (from the repository root):
    .venv/bin/python -m benchmarks.scale --n 2000      # quick check (~5 min on 2 cores)
    .venv/bin/python -m benchmarks.scale               # 20,000 images (~30-40 min on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import (
    REPO,
    RESULTS,
    command_line,
    dev_split,
    fmt,
    frame_timings,
    load_json,
    markdown_table,
    pipeline_model,
    pipeline_settings,
    publish,
    symlink_folder,
    today,
    write_json,
)

TRAIN_EDGE = [sys.executable, "-m", "edge_oneclass.export.workflow"]   # `train-edge` of this checkout
TIME = Path("/usr/bin/time")
MEMORY_TARGET_MB = 4096
LABEL = "dog"


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random variant: crop (60-100 % of each side), flip, rotation within +-12 degrees, colour jitter, resize."""
    h, w = rgb.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = rgb[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    rot = cv2.getRotationMatrix2D((cw / 2, ch / 2), float(rng.uniform(-12, 12)), 1.0)
    img = cv2.warpAffine(np.ascontiguousarray(img), rot, (cw, ch), borderMode=cv2.BORDER_REFLECT_101)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] *= rng.uniform(0.75, 1.25)
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    img = img * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)  # contrast, brightness
    side = int(rng.integers(160, 257))  # longest side, like the dev photos (at most 256 px)
    scale = side / max(img.shape[:2])
    size = (max(8, round(img.shape[1] * scale)), max(8, round(img.shape[0] * scale)))
    img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    return img


def write_augmented(sources: list[Path], n: int, dest: Path, seed: int = 0) -> int:
    """Write `n` distinct augmented JPEGs (quality 90) cycling through `sources`; returns how many were redrawn."""
    from edge_oneclass.device.image_io import load_rgb

    dest.mkdir(parents=True, exist_ok=True)
    originals = [load_rgb(p) for p in sources]
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    redrawn = 0
    for i in range(n):
        while True:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(augment(originals[i % len(originals)], rng), cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            digest = hashlib.sha1(buf.tobytes()).hexdigest()
            if digest not in seen:
                break
            redrawn += 1
        seen.add(digest)
        (dest / f"aug_{i:06d}.jpg").write_bytes(buf.tobytes())
        if (i + 1) % 2000 == 0 or i + 1 == n:
            print(f"    wrote {i + 1}/{n} augmented images", flush=True)
    return redrawn


def peak_rss_mb(time_report: str) -> float | None:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_report)
    return round(int(m.group(1)) / 1024, 1) if m else None


def run_train_edge(images: Path, out: Path, log_file: Path) -> tuple[float, float | None]:
    """train-edge in a subprocess under /usr/bin/time -v; returns (wall seconds, peak RSS in MB)."""
    report = log_file.with_suffix(".time")
    cmd = [str(TIME), "-v", "-o", str(report), *TRAIN_EDGE, str(images), "--out", str(out), "--label", LABEL]
    print(f"    $ train-edge {' '.join(cmd[4 + len(TRAIN_EDGE):])}  (log: {log_file})", flush=True)
    t0 = time.perf_counter()
    with log_file.open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"train-edge failed (exit {proc.returncode}); see {log_file}")
    return wall, peak_rss_mb(report.read_text())


def dev_test_figures(model: Path) -> dict:
    """int8 AUROC and rates at the calibrated threshold on the dev test split, through the device's scorer (the
    `whole` pipeline: the whole view only, as `eval-edge --whole`)."""
    from edge_oneclass.device.detect.scoring import FrameScorer
    from edge_oneclass.export.evaluate import score_folder
    from edge_oneclass.export.metrics import detection_metrics

    split = dev_split()
    running = pipeline_model("whole", model)
    scorer = FrameScorer(pipeline_settings("whole"))
    pos = score_folder(scorer, running, "dev", paths=split.test_pos, desc="dev positives")
    neg = score_folder(scorer, running, "dev", paths=split.test_neg, desc="dev negatives")
    m = detection_metrics(pos.scores, neg.scores, running.thresholds.whole)
    return {"dev_auroc_int8": m.auroc, "dev_recall": m.tpr, "dev_false_alarm_rate": m.fpr}


def measure(images: Path, n_images: int, work: Path, name: str) -> dict:
    out = work / f"{name}-model"
    wall, rss = run_train_edge(images, out, work / f"{name}.log")
    card = load_json(out / "model.json")
    model = out / "model.tflite"
    row = {
        "images": n_images, "train_images": card["counts"]["train"], "validation_images": card["counts"]["validation"],
        "duplicates_dropped": card["counts"]["duplicates"], "bank": card["counts"]["bank"],
        "peak_rss_mb": rss, "under_4gb": None if rss is None else rss < MEMORY_TARGET_MB,
        "train_wall_s": round(wall, 1), "model_mb": round(model.stat().st_size / 1e6, 3),
        "spearman_float_vs_int8": card["parity"].get("spearman_float_vs_int8"),
        **dev_test_figures(model),
        "measured_at": today(),
    }
    print("    " + ", ".join(f"{k} {fmt(v)}" for k, v in row.items()), flush=True)
    return row


def run(n: int, work: Path) -> dict:
    split = dev_split()
    print(f"[1/2] baseline: the {len(split.train)} training dogs of the dev split", flush=True)
    base = measure(symlink_folder(split.train, work / "base" / LABEL), len(split.train), work, "base")
    print(f"[2/2] {n} augmented copies of them", flush=True)
    folder = work / "augmented" / LABEL
    t0 = time.perf_counter()
    redrawn = write_augmented(split.train, n, folder)
    print(f"    written in {time.perf_counter() - t0:.0f} s ({redrawn} identical draws replaced)", flush=True)
    big = measure(folder, n, work, f"n{n}")
    print("timing int8 inference of both models, round-robin", flush=True)
    times = frame_timings({"base": work / "base-model" / "model.tflite", "big": work / f"n{n}-model" / "model.tflite"},
                          split.test_pos + split.test_neg)
    base.update(times["base"])
    big.update(times["big"])
    return {"command": command_line(), "date": today(), "rows": [base, big],
            "ratios": {"model_mb": big["model_mb"] / base["model_mb"],
                       "int8_ms_1thread": big["int8_ms_1thread"] / base["int8_ms_1thread"]}}


COLUMNS = (
    ("run", None, None), ("training folder", "images", None), ("train / val", None, None),
    ("duplicates", "duplicates_dropped", None), ("bank", "bank", None), ("peak RSS MB", "peak_rss_mb", 0),
    ("train-edge wall s", "train_wall_s", 0), ("model MB", "model_mb", 2), ("int8 ms, 1 thread", "int8_ms_1thread", 1),
    ("int8 ms, 2 threads", "int8_ms_2threads", 1), ("dev AUROC int8", "dev_auroc_int8", 4),
    ("dev recall", "dev_recall", 3), ("dev false alarms", "dev_false_alarm_rate", 3),
)


def _cell(row: dict, key: str | None, header: str, digits: int | None, run: str, base: bool) -> str:
    if header == "run":
        return run
    if header == "train / val":
        return f"{row['train_images']} / {row['validation_images']}"
    if key == "images":
        return f"{row['images']:,} " + ("dev dogs" if base else "augmented")
    v = row.get(key) if key else None
    return fmt(round(v) if digits == 0 and v is not None else v, digits or 3)


def table(runs: list[dict]) -> str:
    """Both rows of each run (the 398-image model and the big one) side by side: compare within a run."""
    cells = [[_cell(r, key, header, digits, run["date"][:16], base=i == 0) for header, key, digits in COLUMNS]
             for run in runs for i, r in enumerate(run["rows"])]
    return markdown_table([c[0] for c in COLUMNS], cells)


def latest_runs(data: dict) -> list[dict]:
    """The latest run for each folder size, smallest first."""
    by_n = {run["rows"][-1]["images"]: run for run in data["runs"]}
    return [by_n[n] for n in sorted(by_n)]


def readme_block(data: dict) -> str:
    runs = latest_runs(data)
    ratios = "; ".join(f"{run['rows'][-1]['images']:,} vs 398: model size x{run['ratios']['model_mb']:.2f}, "
                       f"1-thread time x{run['ratios']['int8_ms_1thread']:.2f}" for run in runs)
    commands = "; ".join(f"`{run['command']}` ({run['date'][:16]})" for run in runs)
    return (table(runs) + "\n\n"
            f"Same-run ratios: {ratios}. Scale = `train-edge` on augmented copies (crop, flip, rotation, colour "
            "jitter, resize; JPEG q90) of the 398 training dogs; peak RSS of the whole `train-edge` process from "
            "`/usr/bin/time -v` (target < 4 GB); each run retrains the 398-image model and times both models "
            "round-robin (median of 100 int8 invokes), so compare rows of one run; wall times depend on what else "
            "the shared 2-core machine ran. Dev figures: the 170 held-out dogs vs 589 no-dog photos at each model's "
            "own calibrated threshold, whole view only (`eval-edge --whole`). The augmented copies of one photo are "
            "near-duplicates: `train-edge` keeps each "
            "such group on one side of its validation split (train / val shows the split it made); where copies "
            "still straddle it, validation looks easier than new photos and the threshold comes out stricter "
            f"(lower dev recall). Produced by {commands}; figures from "
            "`benchmarks/results/scale.json`.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="augmented images to train on (default 20,000)")
    p.add_argument("--json", type=Path, default=RESULTS / "scale.json")
    p.add_argument("--no-readme", action="store_true", help="do not regenerate the block in benchmarks/README.md")
    p.add_argument("--readme-only", action="store_true",
                   help="only regenerate the block in benchmarks/README.md from the JSON")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary folder)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        print(f"wrote {publish('scale', readme_block(load_json(args.json)))}")
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="edge-bench-scale-"))
    try:
        result = run(args.n, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    data = load_json(args.json) or {"runs": []}
    data["runs"].append(result)
    write_json(args.json, data)
    print()
    print(table([result]))
    print(f"model size ratio {result['ratios']['model_mb']:.3f}, per-frame time ratio "
          f"{result['ratios']['int8_ms_1thread']:.3f} ({args.n} vs 398 images, same run)")
    if not args.no_readme:
        print(f"\nwrote {args.json} and {publish('scale', readme_block(data))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
