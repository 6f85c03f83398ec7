"""How small a dog does the detector still find? Real subjects pasted into real scenes at shrinking sizes.

The ladder: held-out dev dogs (dog/000398 onwards, never seen by the standard model) and no-dog objects
(every dev/nodog photo that is not a scene: cats, other animals, vehicles, furniture, ...) are pasted, whole
photo as a rectangle, into the dev no-dog scene photos (the Houses dataset: house fronts with yards,
driveways and streets, bedrooms, bathrooms, kitchens), resized to a 640-px-wide frame, at 60, 35, 20 and 10 %
of the frame's width. Dogs and objects get the same sizes, scenes and positions (drawn with a fixed seed), so
the only difference between the classes is what is pasted.

Two measurements, each for the pipelines `whole` (only the whole view: `[detect] regions = false,
sweep = false`) and `default` (the daemon's default config), all through the product's `FrameScorer`:
- stills: one frame per subject, `FrameScorer.score_still` (the whole view and, for `default`, every sweep
  crop, a crop hit checked by its zoomed partners: what `eval-edge` measures);
- moving: a short clip per subject (`--frames`, default 16) in which the subject crosses the scene from one
  side to the other (a random slight slope), scored frame by frame by a fresh `FrameScorer.score` (motion
  regions, the sweep, crop hits confirmed over frames, as the daemon does). The clip's score is its best
  frame margin (frame score minus the whole-view threshold); `events` is the share of clips on which the
  daemon's debounce (`Decider` with the default on_frames of window) turns presence on.
AUROC is dogs vs objects per width; recall and false alarms are at the model's calibrated thresholds.

Usage (from the repository root; ~5 min with the defaults on 2 shared cores, ~2 s per subject and width):
    .venv/bin/python -m benchmarks.ladder --model /tmp/std/model-v3 [--n 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import (
    CAT_MARKERS,
    DATA,
    DEV_TRAIN_DOGS,
    PIPELINES,
    RESULTS,
    command_line,
    fmt,
    markdown_table,
    model_file,
    pipeline_model,
    pipeline_settings,
    today,
    write_json,
)
from edge_oneclass.device.config import DetectConfig
from edge_oneclass.device.detect.debounce import Decider
from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.image_io import load_rgb

WIDTHS = (0.60, 0.35, 0.20, 0.10)
FRAME_WIDTH = 640
SCENE_REPO = "emanhamed/Houses-dataset"


def ladder_sets(root: Path = DATA / "dev") -> tuple[list[Path], list[Path], list[Path], set[Path]]:
    """(scenes, held-out dogs, no-dog objects, the cats among the objects)."""
    with (root / "MANIFEST.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    scenes = [root / r["file"] for r in rows if r["repo"] == SCENE_REPO]
    objects = [root / r["file"] for r in rows if r["file"].startswith("nodog/") and r["repo"] != SCENE_REPO]
    cats = {root / r["file"] for r in rows
            if r["file"].startswith("nodog/") and any(m in r["path"] for m in CAT_MARKERS)}
    dogs = sorted((root / "dog").glob("*.jpg"))[DEV_TRAIN_DOGS:]
    return sorted(scenes), dogs, sorted(objects), cats


def canvas_of(scene: np.ndarray, width: int = FRAME_WIDTH) -> np.ndarray:
    h, w = scene.shape[:2]
    return cv2.resize(scene, (width, int(round(h * width / w))), interpolation=cv2.INTER_LINEAR)


def sized(subject: np.ndarray, frac: float, canvas: np.ndarray) -> np.ndarray:
    """The subject photo resized to `frac` of the canvas width (height kept in proportion, at most the canvas)."""
    H, W = canvas.shape[:2]
    h, w = subject.shape[:2]
    nw = max(4, int(round(frac * W)))
    nh = max(4, int(round(h * nw / w)))
    if nh > H:
        nh, nw = H, max(4, int(round(w * H / h)))
    interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
    return cv2.resize(subject, (nw, nh), interpolation=interp)


def paste(canvas: np.ndarray, sub: np.ndarray, x: int, y: int) -> np.ndarray:
    out = canvas.copy()
    h, w = sub.shape[:2]
    out[y:y + h, x:x + w] = sub
    return out


def path_of(canvas: np.ndarray, sub: np.ndarray, frames: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Positions crossing the frame left to right (or right to left) on a slightly sloped line."""
    H, W = canvas.shape[:2]
    h, w = sub.shape[:2]
    xs = np.linspace(0, W - w, frames)
    if rng.random() < 0.5:
        xs = xs[::-1]
    y0, y1 = (int(rng.integers(0, H - h + 1)) for _ in range(2))
    ys = np.linspace(y0, y1, frames)
    return [(int(round(x)), int(round(y))) for x, y in zip(xs, ys, strict=True)]


def auroc(pos: list[float], neg: list[float]) -> float:
    from edge_oneclass.export.metrics import auroc as _auroc

    return float(_auroc(np.asarray(pos), np.asarray(neg)))


def measure(model: Path, n: int, frames: int, seed: int, widths: tuple[float, ...],
            pipelines: tuple[str, ...] = PIPELINES) -> dict:
    from tqdm import tqdm

    scenes, dogs, objects, cats = ladder_sets()
    rng = np.random.default_rng(seed)
    dogs = [dogs[i] for i in sorted(rng.choice(len(dogs), min(n, len(dogs)), replace=False))]
    objects = [objects[i] for i in sorted(rng.choice(len(objects), min(n, len(objects)), replace=False))]
    models = {pipeline: pipeline_model(pipeline, model) for pipeline in pipelines}
    thresholds = next(iter(models.values())).card.thresholds()
    detect = DetectConfig()
    pictures = {p: load_rgb(p) for p in [*dogs, *objects]}
    scene_pics: dict[Path, np.ndarray] = {}

    # The same draws (scene, position, path) for the i-th dog and the i-th object at every width.
    plans = [(scenes[int(rng.integers(len(scenes)))], int(rng.integers(1 << 31)))
             for _ in range(max(len(dogs), len(objects)))]
    subjects = ([("dog", p, plans[i]) for i, p in enumerate(dogs)]
                + [("obj", p, plans[i]) for i, p in enumerate(objects)])

    results: dict = {"stills": {}, "moving": {}}
    t_stills = t_moving = 0.0
    with tqdm(total=len(widths) * len(subjects), unit="subject", dynamic_ncols=True) as bar:
        for frac in widths:
            rows = []
            for label, path, (scene_path, sub_seed) in subjects:
                bar.set_description(f"width {frac:.0%}")
                r = np.random.default_rng(sub_seed)
                if scene_path not in scene_pics:
                    scene_pics[scene_path] = canvas_of(load_rgb(scene_path))
                canvas = scene_pics[scene_path]
                sub = sized(pictures[path], frac, canvas)
                H, W = canvas.shape[:2]
                h, w = sub.shape[:2]
                still = paste(canvas, sub, int(r.integers(0, W - w + 1)), int(r.integers(0, H - h + 1)))
                clip = [paste(canvas, sub, x, y) for x, y in path_of(canvas, sub, frames, r)]
                row = {"label": label, "path": str(path), "cat": path in cats, "scene": str(scene_path),
                       "size": [w, h], "frame": [W, H]}
                t0 = time.perf_counter()
                for pipeline in pipelines:
                    scorer = FrameScorer(pipeline_settings(pipeline))
                    row[f"still_{pipeline}"] = scorer.score_still(still, models[pipeline]).margin
                t1 = time.perf_counter()
                for pipeline in pipelines:
                    scorer = FrameScorer(pipeline_settings(pipeline))
                    decider = Decider("dog", detect.on_frames, detect.window, detect.off_delay)
                    margins, event, calls = [], False, 0
                    for k, frame in enumerate(clip):
                        scored = scorer.score(frame, models[pipeline])
                        margins.append(scored.margin)
                        calls += scored.invocations
                        event |= decider.update(scored.margin, k / 5.0, scored.score) is not None
                    row[f"moving_{pipeline}"] = max(margins)
                    row[f"moving_{pipeline}_event"] = event
                    row[f"moving_{pipeline}_calls"] = calls / len(clip)
                t_stills += t1 - t0
                t_moving += time.perf_counter() - t1
                rows.append(row)
                bar.update(1)
            for kind in ("stills", "moving"):
                results[kind][f"{frac:.2f}"] = summarise(rows, kind, pipelines)
            results.setdefault("rows", {})[f"{frac:.2f}"] = rows
    results.update({"pipelines": list(pipelines), "n_dogs": len(dogs), "n_objects": len(objects),
                    "n_cats": sum(p in cats for p in objects),
                    "frames": frames, "seed": seed, "threshold": thresholds.whole, "threshold_crop": thresholds.crop,
                    "stills_s": round(t_stills, 1), "moving_s": round(t_moving, 1)})
    return results


def summarise(rows: list[dict], kind: str, pipelines: tuple[str, ...] = PIPELINES) -> dict:
    out = {}
    for pipeline in pipelines:
        key = f"{'still' if kind == 'stills' else 'moving'}_{pipeline}"
        pos = [r[key] for r in rows if r["label"] == "dog"]
        neg = [r[key] for r in rows if r["label"] == "obj"]
        cats = [r[key] for r in rows if r["label"] == "obj" and r["cat"]]
        fig = {"auroc": round(auroc(pos, neg), 4),
               "recall": round(float(np.mean(np.asarray(pos) >= 0)), 4),
               "false_alarms": round(float(np.mean(np.asarray(neg) >= 0)), 4),
               "false_alarms_cats": round(float(np.mean(np.asarray(cats) >= 0)), 4) if cats else None}
        if kind == "moving":
            ev = f"{key}_event"
            fig["events_dogs"] = round(float(np.mean([r[ev] for r in rows if r["label"] == "dog"])), 4)
            fig["events_objects"] = round(float(np.mean([r[ev] for r in rows if r["label"] == "obj"])), 4)
            fig["invocations_per_frame"] = round(float(np.mean([r[f"{key}_calls"] for r in rows])), 3)
        out[pipeline] = fig
    return out


def tables(results: dict) -> str:
    widths = list(results["stills"])
    pipelines = results.get("pipelines", PIPELINES)
    still_rows = [[f"{float(w):.0%}"] + [fmt(results["stills"][w][p][k], 3) for p in pipelines
                                         for k in ("auroc", "recall", "false_alarms", "false_alarms_cats")]
                  for w in widths]
    head = ["width"] + [f"{p} {k}" for p in pipelines for k in ("AUROC", "recall", "false alarms", "FA cats")]
    moving_rows = [[f"{float(w):.0%}"] + [fmt(results["moving"][w][p][k], 3) for p in pipelines
                                          for k in ("auroc", "events_dogs", "events_objects", "invocations_per_frame")]
                   for w in widths]
    head_m = ["width"] + [f"{p} {k}" for p in pipelines for k in ("AUROC", "dog clips with event",
                                                                   "object clips with event", "calls/frame")]
    return (f"Stills (FrameScorer.score_still), {results['n_dogs']} dogs vs {results['n_objects']} objects "
            f"({results['n_cats']} cats):\n\n" + markdown_table(head, still_rows)
            + f"\n\nMoving, {results['frames']}-frame clips (FrameScorer.score, fresh per clip; AUROC on the best "
              "frame margin; events = Decider with the default debounce):\n\n" + markdown_table(head_m, moving_rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder (model.tflite + model.json) or .tflite")
    p.add_argument("--n", type=int, default=20, help="dogs and objects each, drawn with --seed (default 20)")
    p.add_argument("--frames", type=int, default=16, help="frames per moving clip (default 16)")
    p.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS), help="subject widths, fractions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=RESULTS / "ladder.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    model = model_file(args.model)
    t0 = time.perf_counter()
    results = measure(model, args.n, args.frames, args.seed, tuple(args.widths))
    results = {"command": command_line(), "date": today(), "model": str(model),
               "wall_s": round(time.perf_counter() - t0, 1), **results}
    write_json(args.json, results)
    print()
    print(tables(results))
    print(f"\nwrote {args.json} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
