"""`export-edge`: Keras scorer -> int8 `model.tflite` + `model.json`, with proof that int8 scores like float, and
the thresholds calibrated on the int8 model's own scores (the int8 model is what the device runs).

Calibration (embedding models): every one of the label's photos gets an out-of-fold score, i.e. the score a
head that never saw it gives it. The int8 model scores each photo once (its score and its embedding); the
head trained without the photo's fold is then swapped in for the final head on that same int8 embedding:

    oof_i = int8_score_i - (final_head(e_i) - fold_head(e_i))

so the quantisation of backbone and head stays in the number and only the head's knowledge of the photo is
taken out. The whole-view threshold keeps `target_recall` of these scores; the crop threshold keeps
`CROP_RECALL` of the photos' crop views (training/views.py). With every photo scored this way, the 5 % tail
the threshold sits in holds ~20 photos of 400 instead of ~4 of an 80-photo validation slice.

The class prior (device/class_prior.py) is fitted here, on the int8 embeddings of the label's photos, the ones the
device computes. Its weight is the spread of the out-of-fold scores between their median and the 5th percentile
(`prior_weight`), so the term is on the score's own scale: a view whose share on the label's classes is e times
lower than another's loses that spread; a crop view loses `CROP_PRIOR_SCALE` times as much. Out of fold, each
photo's term comes from the classes of the other folds' photos, as its head does.

`calibration.npz` beside the model keeps the int8 embeddings and out-of-fold scores of the label's photos, so
the device can check that a local feedback bank never costs the label its recall.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from edge_oneclass.device import __version__
from edge_oneclass.device.detect.regions import sweep_boxes
from edge_oneclass.device.errors import DataError
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.card import CALIBRATION_FILE, ModelCard
from edge_oneclass.device.model.class_prior import ClassPrior, fit_class_prior
from edge_oneclass.device.model.confidence import scale_from_scores
from edge_oneclass.device.model.preprocess import preprocess
from edge_oneclass.device.model.runner import Runner
from edge_oneclass.device.state_files import sha256_file
from edge_oneclass.export.convert import convert_int8
from edge_oneclass.export.metrics import auroc
from edge_oneclass.training.backbone.variants import VARIANTS
from edge_oneclass.training.calibrate import calibrate, threshold_for_recall
from edge_oneclass.training.dataset import iter_batches
from edge_oneclass.training.head import load_heads
from edge_oneclass.training.train import HEADS, KERAS_MODEL, TRAINING_META, TrainingMeta
from edge_oneclass.training.views import CROP_VIEW_PX, View, corner_view, crop_view

log = logging.getLogger(__name__)

REPRESENTATIVE_MAX = 150
# Share of the label's crop views a crop must score like to count: the median. Far below the whole view's target
# on purpose: a crop is one of many looks at a subject that stays in view for many frames, while crops are many
# (chance resemblances add up), so each must look like the typical label photo, not like the worst 5 % of them.
# Measured on the shared clips and the scale ladder (research notes in the README): 0.5 kept every dog clip the
# crops found at 0.75 and halved the crop false alarms on stills.
CROP_RECALL = 0.5
# With background frames, crop hits must also stay rare on them: the crop threshold is at least this
# quantile of the background's sweep-crop scores.
BACKGROUND_CROP_QUANTILE = 0.99


def _existing(paths: list[str]) -> list[Path]:
    return [Path(p) for p in paths if Path(p).is_file()]


def float_scores(model, paths: list[Path], size: int, desc: str, view: View | None = None,
                 prior: ClassPrior | None = None, crop: bool = False) -> np.ndarray:
    """The Keras model's scores, plus the class prior's term of its float embeddings (as the device adds it;
    `crop`: the views are crops, with the prior's crop weight)."""
    out = []
    with tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True, leave=False) as bar:
        for batch in iter_batches(paths, size, batch_size=32, view=view):
            y = model.predict_on_batch(batch.astype(np.float32))
            score = np.asarray(y[0] if isinstance(y, (list, tuple)) else y, np.float64).reshape(-1)
            if prior is not None and isinstance(y, (list, tuple)) and len(y) > 1:
                score = score + prior.terms(np.asarray(y[1]), crop)
            out.append(score)
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros(0)


def out_of_fold_prior_terms(fit: Callable[[np.ndarray], ClassPrior], fit_on: np.ndarray, folds: np.ndarray,
                            *views: np.ndarray, crop: tuple[bool, ...] = ()) -> list[np.ndarray]:
    """For each of `views` (embeddings row-aligned with `fit_on`), every row's class-prior term from a prior fitted on
    the other folds' rows of `fit_on`: the prior's share of an out-of-fold score. `crop[i]`: views[i] are crops
    (the prior's crop weight); missing entries are whole views."""
    flags = tuple(crop) + (False,) * (len(views) - len(crop))
    out = [np.empty(len(v)) for v in views]
    for k in np.unique(folds):
        rows = folds == k
        prior = fit(fit_on[~rows])
        for terms, view, is_crop in zip(out, views, flags, strict=True):
            terms[rows] = prior.terms(view[rows], is_crop)
    return out


def prior_weight(oof_scores: np.ndarray) -> float:
    """The class prior's weight: the out-of-fold scores' spread from the median down to the 5th percentile."""
    return float(max(np.percentile(oof_scores, 50) - np.percentile(oof_scores, 5), 1e-6))


# The prior's weight on crop views, as a multiple of the whole view's (device/class_prior.py says why, and how
# it was chosen: benchmarks/class_prior.py, `crop_scale` rows).
CROP_PRIOR_SCALE = 2.0


@dataclass
class Int8Views:
    """The int8 model's score and embedding of each photo, whole and as a crop view."""

    whole: np.ndarray
    crop: np.ndarray
    emb_whole: np.ndarray | None
    emb_crop: np.ndarray | None


def int8_views(runner: Runner, paths: list[Path], desc: str) -> Int8Views:
    """Scores through the device's own runner and preprocessing (the daemon's path), decoding each image once."""
    size = runner.input_size
    whole, crop, ew, ec = [], [], [], []
    for p in tqdm(paths, desc=desc, unit="img", dynamic_ncols=True, leave=False):
        image = load_rgb(p)
        a = runner.infer(preprocess(image, size))
        b = runner.infer(preprocess(crop_view(image), size), crop=True)
        whole.append(a.score)
        crop.append(b.score)
        ew.append(a.embedding)
        ec.append(b.embedding)
    has_emb = bool(ew) and ew[0] is not None
    return Int8Views(np.array(whole), np.array(crop), np.stack(ew) if has_emb else None,
                     np.stack(ec) if has_emb else None)


def sweep_crop_scores(runner: Runner, paths: list[Path], desc: str) -> np.ndarray:
    """Every sweep crop of every image (what the daemon's sweep looks at on that scene)."""
    out = []
    for p in tqdm(paths, desc=desc, unit="img", dynamic_ncols=True, leave=False):
        image = load_rgb(p)
        h, w = image.shape[:2]
        out += [runner.infer(preprocess(image, runner.input_size, box), crop=True).score for box in sweep_boxes(w, h)]
    return np.array(out)


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
        if i % 3 == 1:
            yield preprocess(crop_view(rgb), size)
        if i % 10 == 0:
            flat = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
            noise = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
            yield flat
            yield noise


@dataclass
class Calibrated:
    prior: ClassPrior | None
    threshold: float
    threshold_crop: float
    calibration: dict
    parity: dict
    pos_scores: np.ndarray      # the scores the whole-view threshold was set on (for the report)
    neg_scores: np.ndarray      # held-out background, whole view (may be empty)
    arrays: dict[str, np.ndarray]   # calibration.npz


def _parity(float_s: np.ndarray, int8_s: np.ndarray, images: str) -> dict:
    return {"spearman_float_vs_int8": float(spearmanr(float_s, int8_s).statistic), "n_images": len(float_s),
            "images": images, "mean_abs_diff": float(np.mean(np.abs(float_s - int8_s)))}


def _whole_parity(keras_model, runner: Runner, photos: list[Path], int8_whole: np.ndarray, prior: ClassPrior | None,
                  bg_val: list[Path], bg_float: np.ndarray | None, bg_int8: np.ndarray) -> dict:
    """Float vs int8 on whole views, what the daemon scores by default: the label photos' whole views and a corner
    view of each (the scene without the subject; training/views.py), plus any held-out background. The photos are
    in the bank, so alone they only span the top of the score range; their ranking alone is kept beside it."""
    size = runner.input_size
    whole_f = float_scores(keras_model, photos, size, "float scores (whole views)", prior=prior)
    corner_f = float_scores(keras_model, photos, size, "float scores (corner views)", view=corner_view, prior=prior)
    corner_q = np.array([runner.infer(preprocess(corner_view(load_rgb(p)), size)).score
                         for p in tqdm(photos, desc="int8 scores (corner views)", unit="img", dynamic_ncols=True,
                                       leave=False)])
    float_s, int8_s = np.r_[whole_f, corner_f], np.r_[int8_whole, corner_q]
    images = f"whole and corner views of the {len(photos)} label photos"
    if bg_float is not None and len(bg_val):
        float_s, int8_s = np.r_[float_s, bg_float], np.r_[int8_s, bg_int8]
        images += f" and {len(bg_val)} held-out background images"
    out = _parity(float_s, int8_s, images)
    out["label_photos_only"] = float(spearmanr(whole_f, int8_whole).statistic)
    return out


def _calibrate_out_of_fold(model_dir: Path, meta: TrainingMeta, keras_model, runner: Runner,
                           bg_val: list[Path]) -> Calibrated:
    photos = [Path(p) for p in meta.train]
    missing = [p for p in photos if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: a training photo is missing ({len(missing)} in all; moved or deleted?); "
                        f"run train-edge again")
    final, folds, fold_heads = load_heads(model_dir / HEADS)
    if len(folds) != len(photos):
        raise DataError(f"{model_dir / HEADS}: made for {len(folds)} photos, training.json lists {len(photos)}; "
                        "run train-edge again")
    size = runner.input_size
    q = int8_views(runner, photos, "int8 scores")
    assert q.emb_whole is not None and q.emb_crop is not None

    def out_of_fold(scores: np.ndarray, emb: np.ndarray) -> np.ndarray:
        oof = np.empty(len(scores))
        for k, head in enumerate(fold_heads):
            rows = folds == k
            oof[rows] = scores[rows] - (final.score(emb[rows]) - head.score(emb[rows]))
        return oof

    oof_whole = out_of_fold(q.whole, q.emb_whole)
    oof_crop = out_of_fold(q.crop, q.emb_crop)
    prior: ClassPrior | None = None
    if meta.backbone in VARIANTS:   # every EfficientNet-Lite: its embedding is the ImageNet logits the prior reads
        weight = prior_weight(oof_whole)
        prior = fit_class_prior(q.emb_whole, VARIANTS[meta.backbone].logit_norm, weight,
                                crop_weight=CROP_PRIOR_SCALE * weight)
        log.info("class prior: %d classes among the label photos' top %d; weight %.3f, on crops %.3f",
                 len(prior.classes), prior.top, prior.weight, prior.crop_weight)
        terms_whole, terms_crop = out_of_fold_prior_terms(prior.with_classes_of, q.emb_whole, folds,
                                                          q.emb_whole, q.emb_crop, crop=(False, True))
        oof_whole, oof_crop = oof_whole + terms_whole, oof_crop + terms_crop
        q.whole, q.crop = q.whole + prior.terms(q.emb_whole), q.crop + prior.terms(q.emb_crop, crop=True)
        runner.prior = prior   # every later int8 score (background, sweep crops) includes the term
    # Parity on inputs the bank does not hold (crop views), plus any held-out background.
    crop_f = float_scores(keras_model, photos, size, "float scores (crop views)", view=crop_view, prior=prior,
                          crop=True)
    neg_q = np.zeros(0)
    float_s, int8_s = crop_f, q.crop
    parity_images = f"crop views ({CROP_VIEW_PX} px) of the {len(photos)} label photos"
    if bg_val:
        neg_f = float_scores(keras_model, bg_val, size, "float scores (background)", prior=prior)
        neg_q = int8_views(runner, bg_val, "int8 scores (background)").whole
        float_s, int8_s = np.r_[crop_f, neg_f], np.r_[q.crop, neg_q]
        parity_images += f" and {len(bg_val)} held-out background images"
    parity = _parity(float_s, int8_s, parity_images)
    if len(neg_q):
        # the label's crop views against the held-out background, scored by both models
        parity["auroc_float"], parity["auroc_int8"] = auroc(crop_f, neg_f), auroc(q.crop, neg_q)
    parity["whole"] = _whole_parity(keras_model, runner, photos, q.whole, prior, bg_val,
                                    neg_f if bg_val else None, neg_q)

    whole = calibrate(oof_whole, meta.target_recall, neg_q if len(neg_q) else None)
    crop_t = threshold_for_recall(oof_crop, CROP_RECALL)
    crop_info: dict = {"target_recall": CROP_RECALL, "view": f"centre square shrunk to {CROP_VIEW_PX} px",
                       "recall": float(np.mean(oof_crop >= crop_t)), "from_label": crop_t}
    if bg_val:
        bg_crops = sweep_crop_scores(runner, bg_val, "int8 sweep crops (background)")
        floor = float(np.quantile(bg_crops, BACKGROUND_CROP_QUANTILE))
        crop_info.update(background_crops=len(bg_crops), background_quantile=BACKGROUND_CROP_QUANTILE,
                         from_background=floor,
                         background_false_alarm_rate=float(np.mean(bg_crops >= max(crop_t, floor))))
        if floor > crop_t:
            log.info("crop threshold raised from %.3f to %.3f so that %.0f %% of the background's crops stay below",
                     crop_t, floor, 100 * BACKGROUND_CROP_QUANTILE)
            crop_t = floor
            crop_info["recall"] = float(np.mean(oof_crop >= crop_t))
    calibration = {**whole.as_dict(), "method": f"out-of-fold int8 scores of all {len(photos)} label photos "
                   f"({len(fold_heads)} folds, near-duplicates kept in one fold)", "crop": crop_info,
                   "file": CALIBRATION_FILE}
    arrays = {"embedding_whole": q.emb_whole.astype(np.float16), "embedding_crop": q.emb_crop.astype(np.float16),
              "oof_whole": oof_whole.astype(np.float32), "oof_crop": oof_crop.astype(np.float32),
              "folds": folds.astype(np.int16)}
    return Calibrated(prior, whole.threshold, crop_t, calibration, parity, oof_whole, neg_q, arrays)


def _calibrate_holdout(meta: TrainingMeta, keras_model, runner: Runner, bg_val: list[Path]) -> Calibrated:
    """The pixel baseline has no embedding: calibrate on its held-out validation photos."""
    val = _existing(meta.val)
    if len(val) < 5:
        raise DataError(f"{TRAINING_META}: validation images are missing (moved or deleted?); run train-edge again")
    size = runner.input_size
    pos_f = float_scores(keras_model, val, size, "float scores")
    pos_q = int8_views(runner, val, "int8 scores").whole
    neg_f = float_scores(keras_model, bg_val, size, "float scores (background)") if bg_val else np.zeros(0)
    neg_q = int8_views(runner, bg_val, "int8 scores (background)").whole if bg_val else np.zeros(0)
    parity = _parity(np.r_[pos_f, neg_f], np.r_[pos_q, neg_q], "held-out validation (and background) images")
    if len(neg_q):
        parity["auroc_float"], parity["auroc_int8"] = auroc(pos_f, neg_f), auroc(pos_q, neg_q)
    cal = calibrate(pos_q, meta.target_recall, neg_q if len(neg_q) else None)
    calibration = {**cal.as_dict(), "method": "held-out validation photos (int8 scores)"}
    return Calibrated(None, cal.threshold, cal.threshold, calibration, parity, pos_q, neg_q, {})


def export_model(model_dir: str | Path, out_file: str | Path | None = None, keras_model=None) -> ModelCard:
    """Convert, prove parity, calibrate, and write model.tflite + model.json (+ calibration.npz, report)."""
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

    train = _existing(meta.train)
    bg_train, bg_val = _existing(meta.background_train), _existing(meta.background_val)
    rng = np.random.default_rng(meta.seed)
    rep_paths = list(rng.permutation(np.array(train + bg_train, dtype=object))[:REPRESENTATIVE_MAX])

    def representative():
        yield from _representative(rep_paths, size, meta.seed)

    convert_int8(keras_model, representative, out_file)
    runner = Runner(out_file, threads=2, verify=False)
    if (model_dir / HEADS).is_file():
        cal = _calibrate_out_of_fold(model_dir, meta, keras_model, runner, bg_val)
    else:
        cal = _calibrate_holdout(meta, keras_model, runner, bg_val)

    outputs: dict = {"score": {"shape": [1, 1], "dtype": "float32", "meaning": "higher = more like the label"}}
    if runner.embedding_dim:
        outputs["embedding"] = {"shape": [1, runner.embedding_dim], "dtype": "float32",
                                "meaning": "L2-normalised ImageNet logits the score is built on"}
    calibration_path = out_file.with_name(CALIBRATION_FILE)
    if cal.arrays:
        np.savez_compressed(calibration_path, **cal.arrays)
        cal.calibration["sha256"] = sha256_file(calibration_path)
    elif calibration_path.exists():
        calibration_path.unlink()
    card = ModelCard(
        label=meta.label,
        image_size=size,
        threshold=cal.threshold,
        threshold_crop=cal.threshold_crop,
        sha256=sha256_file(out_file),
        backbone=meta.backbone,
        outputs=outputs,
        calibration=cal.calibration,
        counts={"photos": len(train) + len(_existing(meta.val)), "train": len(train),
                "validation": len(_existing(meta.val)), "folds": len(set(meta.folds)),
                "background_train": len(bg_train), "background_validation": len(bg_val),
                "skipped": len(meta.skipped), "duplicates": meta.duplicates, "bank": meta.bank_size},
        parity=cal.parity,
        score={"direction": "higher means more like the label; present when score >= threshold",
               **meta.score_terms,
               **({"class_prior": "+ weight * log(share of softmax(temperature * embedding) on the label's "
                                  "classes), crop_weight on crop views, added by the device (class_prior)"}
                  if cal.prior else {})},
        versions={"edge_oneclass": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                  "python": platform.python_version()},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        confidence_scale=scale_from_scores(cal.pos_scores, cal.threshold),
        class_prior=cal.prior.to_dict() if cal.prior else None,
    )
    card.save(out_file.with_name("model.json"))
    whole = cal.parity.get("whole")
    log.info("int8 vs float: Spearman %.4f on %d crop views%s; threshold %.4f (recall %.3f, %s), crops %.4f",
             cal.parity["spearman_float_vs_int8"], cal.parity["n_images"],
             f", {whole['spearman_float_vs_int8']:.4f} on {whole['n_images']} whole views" if whole else "",
             cal.threshold, cal.calibration["recall"], cal.calibration["method"], cal.threshold_crop)

    from edge_oneclass.export.report import write_report

    write_report(model_dir, meta, card, cal.pos_scores, cal.neg_scores)
    return card
