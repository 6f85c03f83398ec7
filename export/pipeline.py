"""`export-edge`: Keras scorer -> int8 `model.tflite` + `model.json`, with proof that int8 scores like float.

The threshold is calibrated here, on the int8 model's own scores of the held-out images, because the
int8 model is what the device runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

import device
from device.errors import DataError
from device.image_io import load_rgb
from device.model_card import ModelCard, sha256_file
from device.preprocess import preprocess
from device.runner import Runner
from export.convert import convert_int8
from export.metrics import auroc
from training.calibrate import calibrate, threshold_for_recall
from training.dataset import iter_batches
from training.train import KERAS_MODEL, TRAINING_META, TrainingMeta

log = logging.getLogger(__name__)

REPRESENTATIVE_MAX = 150


def _existing(paths: list[str]) -> list[Path]:
    return [Path(p) for p in paths if Path(p).is_file()]


def float_scores(model, paths: list[Path], size: int, desc: str) -> np.ndarray:
    out = []
    with tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True, leave=False) as bar:
        for batch in iter_batches(paths, size, batch_size=32):
            out.append(np.asarray(model.predict_on_batch(batch.astype(np.float32))).reshape(-1))
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros(0)


def int8_scores(runner: Runner, paths: list[Path], desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Whole-frame and best-tile scores through the device's own runner and preprocessing (the daemon's path),
    decoding each image once."""
    whole, tiles = [], []
    for p in tqdm(paths, desc=desc, unit="img", dynamic_ncols=True, leave=False):
        frame = load_rgb(p)
        whole.append(runner.score_frame(frame))
        tiles.append(runner.score_frame(frame, tiles=True))
    return np.array(whole), np.array(tiles)


def _representative(paths: list[Path], size: int, seed: int):
    """Training images, plus random small crops and flat/noise frames.

    The calibration images are in the memory bank, so alone they would only show the top of the score
    range and the int8 output would clip everything below it; crops that lose the subject and empty
    frames show the converter the low end where unseen scenes score.
    """
    rng = np.random.default_rng(seed + 1)
    for i, p in enumerate(tqdm(paths, desc="int8 calibration", unit="img", dynamic_ncols=True, leave=False)):
        rgb = load_rgb(p)
        yield preprocess(rgb, size)
        if i % 3 == 0:
            h, w = rgb.shape[:2]
            ch, cw = max(8, h // 4), max(8, w // 4)
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            yield preprocess(np.ascontiguousarray(rgb[y:y + ch, x:x + cw]), size)
        if i % 10 == 0:
            flat = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
            noise = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
            yield flat
            yield noise


def export_model(model_dir: str | Path, out_file: str | Path | None = None, keras_model=None) -> ModelCard:
    """Convert, prove parity, calibrate, and write model.tflite + model.json (+ report)."""
    import keras
    import tensorflow as tf

    model_dir = Path(model_dir)
    meta_path = model_dir / TRAINING_META
    if not meta_path.is_file():
        raise DataError(f"{model_dir}: no {TRAINING_META} here; pass the folder train-edge wrote")
    meta = TrainingMeta.load(meta_path)
    if keras_model is None:
        keras_model = keras.models.load_model(model_dir / KERAS_MODEL, compile=False)
    out_file = Path(out_file) if out_file else model_dir / "model.tflite"
    size = meta.image_size

    train, val = _existing(meta.train), _existing(meta.val)
    bg_train, bg_val = _existing(meta.background_train), _existing(meta.background_val)
    if len(val) < 5:
        raise DataError(f"{meta_path}: validation images are missing (moved or deleted?); run train-edge again")
    rng = np.random.default_rng(meta.seed)
    rep_paths = list(rng.permutation(np.array(train + bg_train, dtype=object))[:REPRESENTATIVE_MAX])

    def representative():
        yield from _representative(rep_paths, size, meta.seed)

    convert_int8(keras_model, representative, out_file)
    runner = Runner(out_file, threads=2, verify=False)

    pos_f = float_scores(keras_model, val, size, "float scores")
    pos_q, pos_t = int8_scores(runner, val, "int8 scores")
    neg_f = float_scores(keras_model, bg_val, size, "float scores (background)") if bg_val else np.zeros(0)
    neg_q, neg_t = int8_scores(runner, bg_val, "int8 scores (background)") if bg_val else (np.zeros(0),) * 2
    all_f, all_q = np.r_[pos_f, neg_f], np.r_[pos_q, neg_q]
    parity = {
        "spearman_float_vs_int8": float(spearmanr(all_f, all_q).statistic),
        "n_images": len(all_f),
        "mean_abs_diff": float(np.mean(np.abs(all_f - all_q))),
    }
    if len(neg_q):
        parity["auroc_float"] = auroc(pos_f, neg_f)
        parity["auroc_int8"] = auroc(pos_q, neg_q)

    cal = calibrate(pos_q, meta.target_recall, neg_q if len(neg_q) else None)
    # The daemon's tiling option keeps the best of 5 crops: calibrate that mode on the same held-out images.
    cal_tiles = calibrate(pos_t, meta.target_recall, neg_t if len(neg_t) else None)
    card = ModelCard(
        label=meta.label,
        image_size=size,
        threshold=cal.threshold,
        threshold_tiles=cal_tiles.threshold,
        sha256=sha256_file(out_file),
        backbone=meta.backbone,
        calibration={**cal.as_dict(), "scores": "int8 model, held-out validation images",
                     "float_threshold_same_recall": threshold_for_recall(pos_f, meta.target_recall),
                     "tiles": cal_tiles.as_dict()},
        counts={"train": len(train), "validation": len(val), "background_train": len(bg_train),
                "background_validation": len(bg_val), "skipped": len(meta.skipped), "duplicates": meta.duplicates,
                "bank": meta.bank_size},
        parity=parity,
        score={"direction": "higher means more like the label; present when score >= threshold",
               **meta.score_terms},
        versions={"edge_oneclass": device.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                  "python": platform.python_version()},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    card.save(out_file.with_name("model.json"))
    log.info("int8 vs float: Spearman %.4f on %d images; threshold %.4f (recall %.3f on validation)",
             parity["spearman_float_vs_int8"], parity["n_images"], cal.threshold, cal.recall)

    from training.report import write_report

    write_report(model_dir, meta, card, pos_q, neg_q)
    return card
