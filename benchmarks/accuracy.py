"""Accuracy, size and speed of the one-class detector per backbone and input size, on the standard splits.

What is measured, and why:
- Each configuration is trained by the product's own `training.train.train` with default options (the plain
  `train-edge` run a user gets), and its wall time includes the int8 export and calibration.
- Test images are scored twice: by the int8 model through the device's `Runner` and `score_folder` (what the
  Raspberry Pi runs, so these are the figures that matter) and by the saved float Keras model (to show what
  quantisation costs). Recall and false-alarm rate are read at the threshold calibrated in model.json, and
  the false-alarm rate on cats alone, the hardest negatives of a dog detector, is reported beside the overall.
- int8 time per image is the median of ~100 `score_input` calls on preprocessed images after warm-up, with one
  and with two interpreter threads (the Pi's daemon default is two). The machine is shared: compare figures
  within one run, never across runs.
- One extra row scores the default configuration with `tiles=True` (whole frame + 2x2 grid, best tile wins).

Usage (from the repository root):
    .venv/bin/python benchmarks/accuracy.py                              # everything (~25 min on 2 cores)
    .venv/bin/python benchmarks/accuracy.py --sizes 224 --datasets dev   # one quick configuration

Rows are merged into benchmarks/results/accuracy.json by (dataset, backbone, size); the README block
`results` is regenerated from the JSON.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    RESULTS,
    SPLITS,
    Split,
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

DEFAULT_SIZES = (128, 160, 224)
PIXEL_SIZE = 64  # the `--backbone none` default
DEFAULT_CONFIG = ("efficientnet_lite0", 224)
LABEL = "dog"


@dataclass(frozen=True)
class Config:
    dataset: str
    backbone: str
    size: int
    tiles: bool = False

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.backbone}/{self.size}" + ("/tiles" if self.tiles else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES),
                   help="efficientnet_lite0 input sizes (default 128 160 224)")
    p.add_argument("--no-baseline", action="store_true", help="skip the pixel autoencoder (--backbone none)")
    p.add_argument("--no-tiles", action="store_true", help="skip the tiles row of the default configuration")
    p.add_argument("--reuse", action="store_true", help="measure models already trained in --work instead of "
                   "training again (train s is then not re-measured)")
    p.add_argument("--json", type=Path, default=RESULTS / "accuracy.json")
    p.add_argument("--no-readme", action="store_true", help="do not regenerate the README block")
    p.add_argument("--readme-only", action="store_true", help="only regenerate the README block from the JSON")
    p.add_argument("--work", type=Path, help="keep models here (default: a temporary folder under /tmp)")
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> list[Config]:
    out: list[Config] = []
    for ds in args.datasets:
        out += [Config(ds, "efficientnet_lite0", s) for s in args.sizes]
        if not args.no_baseline:
            out.append(Config(ds, "none", PIXEL_SIZE))
        if not args.no_tiles and ds == "dev" and DEFAULT_CONFIG[1] in args.sizes:
            out.append(Config(ds, *DEFAULT_CONFIG, tiles=True))
    return out


def train_model(split: Split, cfg: Config, work: Path) -> tuple[Path, float]:
    """Train with the product's defaults on a symlink folder of the split's training photos; wall time in s."""
    from training.train import TrainOptions, train

    images = symlink_folder(split.train, work / f"{split.name}-train" / LABEL)
    out = work / f"{cfg.dataset}-{cfg.backbone}-{cfg.size}"
    t0 = time.perf_counter()
    train(TrainOptions(images=images, out=out, label=LABEL, backbone=cfg.backbone, image_size=cfg.size, seed=0))
    return out, time.perf_counter() - t0


def float_test_scores(model_dir: Path, split: Split, size: int) -> tuple[np.ndarray, np.ndarray]:
    import keras

    from export.pipeline import float_scores

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    return (float_scores(model, split.test_pos, size, "float positives"),
            float_scores(model, split.test_neg, size, "float negatives"))


def int8_test_scores(model: Path, split: Split, tiles: bool) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Scores through the device path; also returns the negatives actually scored (unreadable ones are skipped)."""
    from device.runner import Runner
    from export.evaluate import score_folder

    runner = Runner(model, threads=2)
    pos = score_folder(runner, split.name, tiles, "int8 positives", paths=split.test_pos)
    neg = score_folder(runner, split.name, tiles, "int8 negatives", paths=split.test_neg)
    return pos.scores, neg.scores, neg.paths


def cat_false_alarm_rate(neg_scores: np.ndarray, neg_paths: list[Path], cats: set[Path],
                         threshold: float) -> tuple[float | None, int]:
    mask = np.array([p in cats for p in neg_paths], dtype=bool)
    if not mask.any():
        return None, 0
    return float(np.mean(neg_scores[mask] >= threshold)), int(mask.sum())


def measure(split: Split, cfg: Config, model_dir: Path, train_s: float | None) -> dict:
    """Every figure of one row: int8 and float accuracy, cats, parity, size and speed."""
    from device.model_card import ModelCard
    from export.metrics import auroc, detection_metrics

    model = model_dir / "model.tflite"
    card = ModelCard.from_dict(load_json(model_dir / "model.json"))
    pos_q, neg_q, neg_paths = int8_test_scores(model, split, cfg.tiles)
    threshold = card.threshold_for(tiles=cfg.tiles)  # what the daemon would decide with
    m = detection_metrics(pos_q, neg_q, threshold)
    cat_fpr, n_cats = cat_false_alarm_rate(neg_q, neg_paths, split.cats, threshold)
    row = {
        "dataset": cfg.dataset, "backbone": cfg.backbone, "image_size": cfg.size, "tiles": cfg.tiles,
        "auroc_int8": m.auroc, "average_precision_int8": m.average_precision,
        "threshold": threshold, "recall": m.tpr, "false_alarm_rate": m.fpr,
        "false_alarm_rate_cats": cat_fpr, "n_cats": n_cats,
        "n_positives": m.n_positives, "n_negatives": m.n_negatives,
        "true_positives": m.true_positives, "false_positives": m.false_positives,
        "spearman_float_vs_int8": card.parity.get("spearman_float_vs_int8"),
        "model_mb": round(model.stat().st_size / 1e6, 3),
        "bank": card.counts.get("bank"),
        "train_images": card.counts.get("train"), "validation_images": card.counts.get("validation"),
        "measured_at": today(),
    }
    if not cfg.tiles:
        pos_f, neg_f = float_test_scores(model_dir, split, cfg.size)
        row["auroc_float"] = auroc(pos_f, neg_f)
        row["train_wall_s"] = None if train_s is None else round(train_s, 1)
    return row


def run(args: argparse.Namespace, work: Path) -> dict:
    results = load_json(args.json) or {"rows": {}, "runs": []}
    trained: dict[tuple[str, str, int], tuple[Path, float]] = {}
    todo = configs(args)
    for i, cfg in enumerate(todo, 1):
        split = SPLITS[cfg.dataset]()
        print(f"[{i}/{len(todo)}] {cfg.key}: {len(split.train)} train, {len(split.test_pos)} positives vs "
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
        row = measure(split, cfg, model_dir, None if cfg.tiles or train_s != train_s else train_s)
        row["command"] = command_line()
        previous = results["rows"].get(cfg.key, {})
        if row.get("train_wall_s") is None and previous.get("train_wall_s") is not None:
            row["train_wall_s"] = previous["train_wall_s"]  # --reuse: keep the time measured when it was trained
        results["rows"][cfg.key] = row
        print("    " + ", ".join(f"{k} {fmt(row.get(k))}" for k in
                                 ("auroc_float", "auroc_int8", "recall", "false_alarm_rate",
                                  "false_alarm_rate_cats", "int8_ms_1thread")), flush=True)
        write_json(args.json, results)  # after every row: a crash keeps what was measured
    print("timing int8 inference of every model, round-robin (1 and 2 threads)", flush=True)
    models = {c.key: trained[c.dataset, c.backbone, c.size][0] / "model.tflite" for c in todo if not c.tiles}
    dev = dev_split()
    for key, times in frame_timings(models, dev.test_pos + dev.test_neg).items():
        results["rows"][key].update(times)
    results["runs"].append({"command": command_line(), "date": today(), "configs": [c.key for c in todo]})
    write_json(args.json, results)
    return results


COLUMNS = (
    ("dataset", "dataset", None), ("backbone", "backbone", None), ("size", "image_size", None),
    ("AUROC float", "auroc_float", 4), ("AUROC int8", "auroc_int8", 4), ("AP int8", "average_precision_int8", 4),
    ("recall", "recall", 3), ("false alarms", "false_alarm_rate", 3),
    ("false alarms, cats", "false_alarm_rate_cats", 3),
    ("Spearman float/int8", "spearman_float_vs_int8", 4), ("train s", "train_wall_s", 0),
    ("model MB", "model_mb", 2), ("int8 ms, 1 thread", "int8_ms_1thread", 1),
    ("int8 ms, 2 threads", "int8_ms_2threads", 1),
)


def table(results: dict) -> str:
    order = {"dev": 0, "cifar10": 1}
    rows = sorted(results["rows"].values(),
                  key=lambda r: (order.get(r["dataset"], 9), r["backbone"] == "none", r["image_size"], r["tiles"]))
    cells = []
    for r in rows:
        line = []
        for _, key, digits in COLUMNS:
            v = r.get(key)
            if key == "image_size" and r["tiles"]:
                v = f"{v} + tiles"
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
              "999 non-dogs (111 cats). int8 = `model.tflite` scored by the device's runner; recall and false alarms "
              "at the threshold calibrated in `model.json` (the `+ tiles` row: whole frame + 2x2 grid, best tile wins, "
              "at the tiles threshold `model.json` calibrates for it); Spearman = float vs int8 on the validation "
              "images, from `model.json`; train s = wall time of `train()` including int8 export, on a shared 2-core "
              "machine; "
              "int8 ms = median of 100 invokes per model, all models timed round-robin in the same run.")
    return table(results) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        print(f"wrote {publish('results', readme_block(load_json(args.json)))}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from training.tf_quiet import import_tensorflow_quietly

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
