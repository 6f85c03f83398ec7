"""Accuracy, size and speed of the one-class detector per backbone and input size, on the standard splits.

What is measured, and why:
- Each configuration is trained by the product's own `training.train.train` with default options (the plain
  `train-edge` run a user gets), and its wall time includes the int8 export and calibration.
- Test images are scored by the int8 model through the device's own scorer (`FrameScorer.score_still`, via
  `export.evaluate.score_folder`: what the Raspberry Pi runs, so these are the figures that matter), for the
  pipelines `whole` (only the whole view, `[detect] regions = false, sweep = false`), `default` (the daemon's
  default config: the whole view plus every sweep crop, a crop hit checked by its zoomed partners) and `wide`
  (the default with `[detect] crop_recall = 0.75`, the setting docs/configuration.md gives wide views).
  The `whole` rows are also scored by the saved float Keras model (to show what quantisation costs). Recall
  and false-alarm rate are read at the threshold calibrated in model.json, and the false-alarm rate on cats
  alone, the hardest negatives of a dog detector, is reported beside the overall.
- int8 time per image is the median of ~100 `Runner.infer` calls on preprocessed images after warm-up, with one
  and with two interpreter threads (the Pi's daemon default is two); one invocation, so the same for both
  pipelines (the `default` pipeline runs the model several times per frame). The machine is shared: compare
  figures within one run, never across runs.

Usage (from the repository root):
    .venv/bin/python -m benchmarks.accuracy                              # everything (~30 min on 2 cores)
    .venv/bin/python -m benchmarks.accuracy --sizes 224 --datasets dev   # one quick configuration
    .venv/bin/python -m benchmarks.accuracy --model /tmp/std/model-v3    # measure a trained model (dev split)

Rows are merged into benchmarks/results/accuracy.json by (dataset, backbone, size, pipeline); the block
`results` of benchmarks/README.md is regenerated from the JSON.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import (
    PIPELINES,
    RESULTS,
    SPLITS,
    Split,
    cat_false_alarm_rate,
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

DEFAULT_SIZES = (128, 160, 224)
PIXEL_SIZE = 64  # the `--backbone none` default
LABEL = "dog"


@dataclass(frozen=True)
class Config:
    dataset: str
    backbone: str
    size: int
    pipeline: str = "whole"

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.backbone}/{self.size}/{self.pipeline}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES),
                   help="efficientnet_lite0 input sizes (default 128 160 224)")
    p.add_argument("--no-baseline", action="store_true", help="skip the pixel autoencoder (--backbone none)")
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES),
                   help="scoring pipelines (default: all); `default` is scored on the dev split's "
                        "efficientnet models only (it runs the model ~15x per photo)")
    p.add_argument("--model", type=Path, help="measure this trained model folder (model.tflite, model.json, "
                   "model.keras) on the dev split instead of training (train s is then not measured)")
    p.add_argument("--reuse", action="store_true", help="measure models already trained in --work instead of "
                   "training again (train s is then not re-measured)")
    p.add_argument("--json", type=Path, default=RESULTS / "accuracy.json")
    p.add_argument("--no-readme", action="store_true", help="do not regenerate the block in benchmarks/README.md")
    p.add_argument("--readme-only", action="store_true",
                   help="only regenerate the block in benchmarks/README.md from the JSON")
    p.add_argument("--work", type=Path, help="keep models here (default: a temporary folder under /tmp)")
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> list[Config]:
    out: list[Config] = []
    for ds in args.datasets:
        for s in args.sizes:
            out += [Config(ds, "efficientnet_lite0", s, p) for p in args.pipelines if p == "whole" or ds == "dev"]
        if not args.no_baseline and "whole" in args.pipelines:
            out.append(Config(ds, "none", PIXEL_SIZE))
    return out


def train_model(split: Split, cfg: Config, work: Path) -> tuple[Path, float]:
    """Train with the product's defaults on a symlink folder of the split's training photos; wall time in s."""
    from edge_oneclass.export.pipeline import export_model
    from edge_oneclass.training.train import TrainOptions, train

    images = symlink_folder(split.train, work / f"{split.name}-train" / LABEL)
    out = work / f"{cfg.dataset}-{cfg.backbone}-{cfg.size}"
    t0 = time.perf_counter()
    train(TrainOptions(images=images, out=out, label=LABEL, backbone=cfg.backbone, image_size=cfg.size, seed=0))
    export_model(out)   # what train-edge does after training
    return out, time.perf_counter() - t0


def float_test_scores(model_dir: Path, split: Split, size: int) -> tuple[np.ndarray, np.ndarray]:
    import keras

    from edge_oneclass.device.model.card import ModelCard
    from edge_oneclass.export.pipeline import float_scores

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    prior = ModelCard.load(model_dir / "model.json").prior()   # the device adds it to the int8 scores too
    return (float_scores(model, split.test_pos, size, "float positives", prior=prior),
            float_scores(model, split.test_neg, size, "float negatives", prior=prior))


def int8_test_scores(model: Path, split: Split, pipeline: str,
                     transform: Callable[[np.ndarray], np.ndarray] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, list[Path], float]:
    """Scores through the device path (`FrameScorer.score_still` with the pipeline's settings); also returns the
    negatives actually scored (unreadable ones are skipped) and the whole-view threshold the frame scores are on.
    `transform`: a camera condition applied to each decoded image (benchmarks/greyscale.py)."""
    from edge_oneclass.device.detect.scoring import FrameScorer
    from edge_oneclass.export.evaluate import score_folder

    running = pipeline_model(pipeline, model)
    scorer = FrameScorer(pipeline_settings(pipeline))
    pos = score_folder(scorer, running, split.name, f"int8 {pipeline} positives", paths=split.test_pos,
                       transform=transform)
    neg = score_folder(scorer, running, split.name, f"int8 {pipeline} negatives", paths=split.test_neg,
                       transform=transform)
    return pos.scores, neg.scores, neg.paths, running.thresholds.whole


def crop_threshold_of(pipeline: str, model: Path) -> float:
    return pipeline_model(pipeline, model).thresholds.crop


def measure(split: Split, cfg: Config, model_dir: Path, train_s: float | None) -> dict:
    """Every figure of one row: int8 and float accuracy, cats, parity, size and speed."""
    from edge_oneclass.device.model.card import ModelCard
    from edge_oneclass.export.metrics import auroc, detection_metrics

    model = model_dir / "model.tflite"
    card = ModelCard.from_dict(load_json(model_dir / "model.json"))
    t0 = time.perf_counter()
    pos_q, neg_q, neg_paths, threshold = int8_test_scores(model, split, cfg.pipeline)
    score_s = time.perf_counter() - t0
    m = detection_metrics(pos_q, neg_q, threshold)
    cat_fpr, n_cats = cat_false_alarm_rate(neg_q, neg_paths, split.cats, threshold)
    row = {
        "dataset": cfg.dataset, "backbone": cfg.backbone, "image_size": cfg.size, "pipeline": cfg.pipeline,
        "model": str(model_dir),
        "auroc_int8": m.auroc, "average_precision_int8": m.average_precision,
        "threshold": threshold, "threshold_crop": crop_threshold_of(cfg.pipeline, model),
        "recall": m.tpr, "false_alarm_rate": m.fpr,
        "false_alarm_rate_cats": cat_fpr, "n_cats": n_cats,
        "n_positives": m.n_positives, "n_negatives": m.n_negatives,
        "true_positives": m.true_positives, "false_positives": m.false_positives,
        "spearman_float_vs_int8": card.parity.get("spearman_float_vs_int8"),
        "spearman_float_vs_int8_whole": (card.parity.get("whole") or {}).get("spearman_float_vs_int8"),
        "model_mb": round(model.stat().st_size / 1e6, 3),
        "bank": card.counts.get("bank"),
        "train_images": card.counts.get("train"), "validation_images": card.counts.get("validation"),
        "int8_scoring_s": round(score_s, 1),
        "measured_at": today(),
    }
    if cfg.pipeline == "whole" and (model_dir / "model.keras").is_file():
        from scipy.stats import spearmanr

        pos_f, neg_f = float_test_scores(model_dir, split, cfg.size)
        row["auroc_float"] = auroc(pos_f, neg_f)
        if len(pos_f) == len(pos_q) and len(neg_f) == len(neg_q):
            # model.json's parity figure is on the calibration views; this one is on the test photos' whole view
            both_f, both_q = np.concatenate([pos_f, neg_f]), np.concatenate([pos_q, neg_q])
            row["spearman_float_vs_int8_test"] = float(spearmanr(both_f, both_q).statistic)
        row["train_wall_s"] = None if train_s is None else round(train_s, 1)
    return row


def run(args: argparse.Namespace, work: Path) -> dict:
    results = load_json(args.json) or {"rows": {}, "runs": []}
    # rows of the removed pipelines (squashed frames, tiles) and old model cards are not comparable: drop them
    results["rows"] = {k: r for k, r in results["rows"].items() if "pipeline" in r}
    trained: dict[tuple[str, str, int], tuple[Path, float]] = {}
    todo = configs(args)
    if args.model is not None:
        card = load_json(args.model / "model.json")
        todo = [Config("dev", card["backbone"], card["image_size"], p) for p in args.pipelines]
        trained["dev", card["backbone"], card["image_size"]] = (args.model, float("nan"))
    for i, cfg in enumerate(todo, 1):
        split = SPLITS[cfg.dataset]()
        trained_on = f"model {args.model}" if args.model else f"{len(split.train)} train"
        print(f"[{i}/{len(todo)}] {cfg.key}: {trained_on}, {len(split.test_pos)} positives vs "
              f"{len(split.test_neg)} negatives ({len(split.cats)} cats)", flush=True)
        base = (cfg.dataset, cfg.backbone, cfg.size)
        reuse = work / f"{cfg.dataset}-{cfg.backbone}-{cfg.size}"
        if base not in trained and args.reuse and (reuse / "model.json").is_file():
            trained[base] = (reuse, float("nan"))
            print(f"    reusing the model in {reuse}", flush=True)
        if base not in trained:
            trained[base] = train_model(split, cfg, work)
            print(f"    trained in {trained[base][1]:.0f} s", flush=True)
        model_dir, train_s = trained[base]
        row = measure(split, cfg, model_dir, None if cfg.pipeline != "whole" or train_s != train_s else train_s)
        row["command"] = command_line()
        previous = results["rows"].get(cfg.key, {})
        if row.get("train_wall_s") is None and previous.get("train_wall_s") is not None:
            row["train_wall_s"] = previous["train_wall_s"]  # --reuse: keep the time measured when it was trained
        results["rows"][cfg.key] = row
        print("    " + ", ".join(f"{k} {fmt(row.get(k))}" for k in
                                 ("auroc_float", "auroc_int8", "recall", "false_alarm_rate",
                                  "false_alarm_rate_cats", "int8_scoring_s")), flush=True)
        write_json(args.json, results)  # after every row: a crash keeps what was measured
    print("timing int8 inference of every model, round-robin (1 and 2 threads)", flush=True)
    models = {(c.dataset, c.backbone, c.size): trained[c.dataset, c.backbone, c.size][0] / "model.tflite"
              for c in todo}
    dev = dev_split()
    timings = frame_timings({"/".join(map(str, k)): v for k, v in models.items()}, dev.test_pos + dev.test_neg)
    for c in todo:
        results["rows"][c.key].update(timings["/".join(map(str, (c.dataset, c.backbone, c.size)))])
    results["runs"].append({"command": command_line(), "date": today(), "configs": [c.key for c in todo]})
    write_json(args.json, results)
    return results


COLUMNS = (
    ("dataset", "dataset", None), ("backbone", "backbone", None), ("size", "image_size", None),
    ("pipeline", "pipeline", None),
    ("AUROC float", "auroc_float", 4), ("AUROC int8", "auroc_int8", 4), ("AP int8", "average_precision_int8", 4),
    ("recall", "recall", 3), ("false alarms", "false_alarm_rate", 3),
    ("false alarms, cats", "false_alarm_rate_cats", 3),
    ("Spearman float/int8, crop views", "spearman_float_vs_int8", 4),
    ("Spearman float/int8, whole views (model.json)", "spearman_float_vs_int8_whole", 4),
    ("Spearman float/int8, test photos", "spearman_float_vs_int8_test", 4), ("train s", "train_wall_s", 0),
    ("model MB", "model_mb", 2), ("int8 ms, 1 thread", "int8_ms_1thread", 1),
    ("int8 ms, 2 threads", "int8_ms_2threads", 1),
)


def table(results: dict) -> str:
    order = {"dev": 0, "cifar10": 1}
    rows = sorted(results["rows"].values(),
                  key=lambda r: (order.get(r["dataset"], 9), r["backbone"] == "none", r["image_size"],
                                 r.get("pipeline") != "whole"))
    cells = []
    for r in rows:
        line = []
        for _, key, digits in COLUMNS:
            v = r.get(key)
            line.append(fmt(round(v) if digits == 0 and v is not None else v, digits or 3))
        cells.append(line)
    return markdown_table([c[0] for c in COLUMNS], cells)


def readme_block(results: dict) -> str:
    runs = results.get("runs", [])
    last = runs[-1] if runs else {"command": "?", "date": "?"}
    commands = sorted({r["command"] for r in results["rows"].values()})
    note = (f"Produced by `{last['command']}` on {last['date']}"
            + (f" (rows merged from: {'; '.join(f'`{c}`' for c in commands)})" if len(commands) > 1 else "")
            + "; figures from `benchmarks/results/accuracy.json`. Dev: train on dogs 000000-000397, test the other "
              "170 dogs vs 589 no-dog photos (156 cats); CIFAR-10: train on the first 700 dogs, test the other 300 vs "
              "999 non-dogs (111 cats). int8 = `model.tflite` scored by the device's `FrameScorer.score_still`; "
              "pipeline `whole` = the daemon's default (the whole view), `crops` = the whole view + every sweep "
              "crop, crop hits checked by their zoomed partners, crops at `threshold_crop` (the wide-view crops, "
              "the default before this version), `wide` = crops with `[detect] crop_recall = 0.75`; recall and false "
              "alarms at the threshold calibrated in `model.json`; Spearman = float vs int8 on the crop views and on "
              "the whole views export records in `model.json`, and on the test photos' whole view (the `whole` "
              "rows); train s = wall "
              "time of `train()` including int8 export, on a shared 2-core machine; "
              "int8 ms = median of 100 invokes per model, all models timed round-robin in the same run.")
    return table(results) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        print(f"wrote {publish('results', readme_block(load_json(args.json)))}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from edge_oneclass.training.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras  # noqa: F401  (imported before the first timed training, so no row pays for it)

    if args.work:
        results = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="edge-bench-accuracy-") as tmp:
            results = run(args, Path(tmp))
    print()
    print(table(results))
    if not args.no_readme:
        print(f"\nwrote {args.json} and {publish('results', readme_block(results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
