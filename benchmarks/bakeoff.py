"""Backbone bake-off: EfficientNet-Lite0 / Lite1 / Lite2, each at its own input size, three training seeds each.

Every model is `train-edge` on the standard training folder (dev dogs 000000-000397) with `--backbone B --seed S`
(wall time recorded), then measured the way the product runs, side by side in one run:
- dev photos, the daemon's default pipeline (the whole view): AUROC, recall and false alarms at the calibrated
  threshold, cats apart (`benchmarks.accuracy.int8_test_scores`);
- footage: every clip of ../shared/data/video through `Daemon.run()` with the default config (`benchmarks.footage`):
  dog clips with an event, no-dog clips with a false alarm, model runs per frame;
- the scale ladder, whole view, stills and moving (`benchmarks.ladder.measure`, fewer subjects than its own run);
- int8 ms per invoke with 1 and 2 threads, all models timed round-robin in the same run
  (`benchmarks.common.frame_timings`), model size, and the float/int8 parity model.json records.
Footage and photo figures are reported as the range over the seeds: a model trained on another machine differs
in its last bits, and a borderline clip can flip.

    .venv/bin/python -m benchmarks.bakeoff [--work /tmp/bakeoff] [--seeds 0 1 2] [--reuse]

Writes benchmarks/results/bakeoff.json and the `bakeoff` block of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (
    DATA,
    RESULTS,
    cat_false_alarm_rate,
    command_line,
    dev_split,
    fmt,
    frame_timings,
    load_json,
    markdown_table,
    publish,
    symlink_folder,
    today,
    write_json,
)

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LADDER_WIDTHS = (0.35, 0.20, 0.10)
TRAIN_EDGE = [sys.executable, "-m", "edge_oneclass.export.workflow"]   # `train-edge` of this checkout


def train(folder: Path, out: Path, backbone: str, seed: int) -> float:
    """train-edge into `out`; its wall time in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([*TRAIN_EDGE, str(folder), "--out", str(out), "--label", "dog", "--backbone", backbone,
                           "--seed", str(seed)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train-edge {backbone} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def photos(model: Path) -> dict:
    from benchmarks.accuracy import int8_test_scores
    from edge_oneclass.export.metrics import detection_metrics

    split = dev_split()
    pos, neg, neg_paths, threshold = int8_test_scores(model, split, "whole")
    m = detection_metrics(pos, neg, threshold)
    cats, _ = cat_false_alarm_rate(neg, neg_paths, split.cats, threshold)
    return {"auroc": m.auroc, "recall": m.tpr, "false_alarms": m.fpr, "false_alarms_cats": cats}


def footage(model: Path) -> dict:
    from benchmarks.footage import VIDEO, replay, summarise

    clips = sorted(VIDEO.glob("dog/*.mp4")) + sorted(VIDEO.glob("nodog/*.mp4"))
    results = [replay(c, model, 5.0, {}) for c in clips]
    s = summarise("default", {}, results)
    return {k: s[k] for k in ("dog_clips_with_event", "dog_clips", "nodog_clips_with_false_alarm", "nodog_clips",
                              "false_alarm_clips", "invocations_per_frame", "median_first_event_s")} | {
        "dog_clips_without_event": [c.clip for c in results if c.label == "dog" and not c.events],
        "clips": {c.clip: {"events": c.events, "positive_share": c.positive_share, "max_margin": c.max_margin}
                  for c in results}}


def ladder(model: Path, n: int) -> dict:
    from benchmarks.ladder import measure

    r = measure(model, n=n, frames=16, seed=0, widths=LADDER_WIDTHS, pipelines=("whole",))
    return {w: {"stills_auroc": r["stills"][w]["whole"]["auroc"], "moving_auroc": r["moving"][w]["whole"]["auroc"],
                "moving_events_dogs": r["moving"][w]["whole"]["events_dogs"],
                "moving_events_objects": r["moving"][w]["whole"]["events_objects"]} for w in r["stills"]}


def card_figures(model: Path) -> dict:
    import json

    card = json.loads((model / "model.json").read_text())
    parity = card["parity"]
    return {"image_size": card["image_size"], "threshold": card["threshold"],
            "spearman_crop": parity["spearman_float_vs_int8"],
            "spearman_whole": (parity.get("whole") or {}).get("spearman_float_vs_int8"),
            "model_mb": round((model / "model.tflite").stat().st_size / 1e6, 2),
            "sha256": card["sha256"]}


def span(values: list[float], digits: int = 3, pct: bool = False) -> str:
    """'lo-hi (median)' over the seeds, or the one value."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    f = (lambda v: f"{100 * v:.{max(digits - 2, 0)}f} %") if pct else (lambda v: f"{v:.{digits}f}")
    lo, hi, med = min(vals), max(vals), statistics.median(vals)
    return f(med) if lo == hi else f"{f(lo)}–{f(hi)} (median {f(med)})"


def counts(values: list[int], total: int) -> str:
    lo, hi, med = min(values), max(values), statistics.median(values)
    return f"{lo}/{total}" if lo == hi else f"{lo}–{hi}/{total} (median {med:g})"


def table(results: dict) -> str:
    rows = []
    lite0_ms = results["timings"]["efficientnet_lite0"]["int8_ms_1thread"]
    for b in results["backbones"]:
        runs = [r for r in results["runs"] if r["backbone"] == b]
        if not runs:
            continue
        t = results["timings"][b]
        fpf = [r["footage"]["invocations_per_frame"] for r in runs]
        cost = [x * t["int8_ms_1thread"] / lite0_ms for x in fpf]
        ladder20 = [r["ladder"].get("0.20", {}).get("stills_auroc") for r in runs]
        missed = sorted({c.split("/")[1] for r in runs for c in r["footage"]["dog_clips_without_event"]})
        alarms = sorted({c.split("/")[1] for r in runs for c in r["footage"]["false_alarm_clips"]})
        rows.append([
            b.replace("efficientnet_", ""), str(runs[0]["card"]["image_size"]),
            counts([r["footage"]["dog_clips_with_event"] for r in runs], runs[0]["footage"]["dog_clips"])
            + (f" (misses {', '.join(missed)})" if missed else ""),
            counts([r["footage"]["nodog_clips_with_false_alarm"] for r in runs], runs[0]["footage"]["nodog_clips"])
            + (f" ({', '.join(alarms)})" if alarms else ""),
            span([r["photos"]["auroc"] for r in runs], 4), span([r["photos"]["recall"] for r in runs]),
            span([r["photos"]["false_alarms"] for r in runs], 3, pct=True),
            span([r["photos"]["false_alarms_cats"] for r in runs], 3, pct=True),
            span(ladder20, 3), span([r["card"]["spearman_whole"] for r in runs], 4),
            f"{t['int8_ms_1thread']:.1f} / {t['int8_ms_2threads']:.1f}", span(cost, 2),
            fmt(runs[0]["card"]["model_mb"], 2), span([r["train_s"] for r in runs], 0)])
    header = ["backbone", "px", "dog clips with an event", "no-dog clips with a false alarm", "dev AUROC",
              "dev recall", "dev false alarms", "dev false alarms, cats", "ladder 20 % stills AUROC",
              "Spearman float/int8, whole views", "int8 ms, 1 / 2 threads",
              "model runs per frame x invoke, in Lite0 invokes", "model MB", "train-edge s"]
    return markdown_table(header, rows)


def readme_block(results: dict) -> str:
    return (table(results) + "\n\n"
            f"Produced by `{results['command']}` on {results['date']}; `benchmarks/results/bakeoff.json` (per seed, "
            f"per clip). Each backbone is `train-edge` on dev dogs 000000-000397 at its own input size with seeds "
            f"{', '.join(map(str, results['seeds']))}; ranges are over the seeds. Dev: 170 held-out dogs vs 589 "
            "no-dog photos (156 cats), the daemon's default pipeline (whole view), at each model's calibrated "
            "threshold. Footage: the 24 shared clips through `Daemon.run()` with the default config (whole view, "
            "unchanged frames carry the last score), 5 fps. Ladder: "
            f"{results['ladder_n']} held-out dogs vs {results['ladder_n']} objects pasted at 20 % of the frame "
            "width. int8 ms: median of 100 invokes, all models round-robin in this run (x86, 2 shared cores). The "
            "cost column is model runs per frame on the clips times the backbone's 1-thread invoke over Lite0's.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=Path("/tmp/bakeoff"), help="models are trained (and kept) here")
    p.add_argument("--reuse", action="store_true", help="measure models already trained in --work")
    p.add_argument("--ladder-n", type=int, default=20, help="dogs and objects each on the ladder (default 20)")
    p.add_argument("--json", type=Path, default=RESULTS / "bakeoff.json")
    p.add_argument("--readme-only", action="store_true", help="only regenerate the README block from --json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        print(f"wrote {publish('bakeoff', readme_block(load_json(args.json)))}")
        return 0
    split = dev_split()
    folder = symlink_folder(split.train, args.work / "dog")
    runs = []
    for backbone in args.backbones:
        for seed in args.seeds:
            model = args.work / f"{backbone}-seed{seed}"
            train_s = None
            if not (args.reuse and (model / "model.tflite").is_file()):
                print(f"training {backbone} seed {seed} ...", flush=True)
                train_s = round(train(folder, model, backbone, seed), 1)
            elif (model / "train_s.txt").is_file():
                train_s = float((model / "train_s.txt").read_text())
            if train_s is not None:
                (model / "train_s.txt").write_text(f"{train_s}\n")
            print(f"measuring {model.name} ...", flush=True)
            run = {"backbone": backbone, "seed": seed, "model": str(model), "train_s": train_s,
                   "card": card_figures(model), "photos": photos(model / "model.tflite"),
                   "footage": footage(model / "model.tflite"), "ladder": ladder(model / "model.tflite", args.ladder_n)}
            print(f"  {run['footage']['dog_clips_with_event']}/12 dog clips, "
                  f"{run['footage']['nodog_clips_with_false_alarm']}/12 no-dog clips with a false alarm, "
                  f"dev recall {run['photos']['recall']:.3f}, false alarms {run['photos']['false_alarms']:.3f}, "
                  f"cats {run['photos']['false_alarms_cats']:.3f}", flush=True)
            runs.append(run)
    first = {b: args.work / f"{b}-seed{args.seeds[0]}" / "model.tflite" for b in args.backbones}
    if "efficientnet_lite0" not in first:
        raise SystemExit("the cost column is in Lite0 invokes: include efficientnet_lite0 in --backbones")
    print("timing int8 inference of every backbone, round-robin (1 and 2 threads)", flush=True)
    timings = frame_timings(first, split.test_pos)
    results = {"command": command_line(), "date": today(), "backbones": args.backbones, "seeds": args.seeds,
               "ladder_n": args.ladder_n, "timings": timings, "runs": runs,
               "data": str(DATA)}
    write_json(args.json, results)
    print(table(results))
    print(f"\nwrote {args.json} and {publish('bakeoff', readme_block(results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
