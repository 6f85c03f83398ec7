"""How the class prior (device/class_prior.py) picks its classes and weight: the alternatives, measured.

For each model (dev standard split, and both leave-one-source-out models of `benchmarks.loso`) the int8
model scores the test dogs and the 589 dev no-dog photos on the whole view, without the prior (raw scores and
embeddings). Each rule is then calibrated exactly as export does (out-of-fold: photo i's term comes from the
classes of the other folds' photos; threshold at the card's target recall) and measured at its threshold:

    none         no prior
    mass M       the fewest classes holding M of the label photos' mean softmax (tried first)
    top K        every class some label photo ranks among its K likeliest (K = 5 is what export uses)
and the weight is 1x or 2x the spread of the raw out-of-fold scores (median minus 5th percentile; 1x is used).

`crop_scale` rows (dev model only): the prior's weight on crop views (`crop_weight`) at 1x, 1.5x, 2x and 3x the
whole view's, with the crop threshold recalibrated out of fold as export does, measured on the test photos through
the daemon's default still pipeline (`FrameScorer.score_still`: whole view, sweep crops checked by partners).
Export uses `export.pipeline.CROP_PRIOR_SCALE`.

The raw out-of-fold scores are the card's (calibration.npz `oof_whole`) minus the fold priors' terms, which
the embeddings, folds and the card's prior determine. Whole view only: the footage and ladder benchmarks measure
the chosen rule on crops and clips.

Usage (from the repository root, after `benchmarks.loso` has trained its models):
    .venv/bin/python -m benchmarks.class_prior --dev /tmp/std/model-v6 --loso /tmp/edge-bench-loso
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DATA,
    RESULTS,
    cat_false_alarm_rate,
    command_line,
    dev_split,
    markdown_table,
    today,
    write_json,
)
from edge_oneclass.device.detect.scoring import FrameScorer
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.calibration import read_calibration
from edge_oneclass.device.model.class_prior import ClassPrior, fit_class_prior, softmax
from edge_oneclass.device.model.preprocess import preprocess
from edge_oneclass.device.model.runner import Inference, Runner
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.model.thresholds import Thresholds, threshold_for_recall
from edge_oneclass.export.pipeline import CROP_RECALL, out_of_fold_prior_terms, prior_weight

RULES = (("none", None), ("mass 0.9", 0.9), ("top 1", 1), ("top 3", 3), ("top 5", 5), ("top 10", 10))
WEIGHTS = (1.0, 2.0)
CROP_SCALES = (1.0, 1.5, 2.0, 3.0)


class RawOnce:
    """The runner's interface for FrameScorer, running the model once per distinct view and adding `prior` itself,
    so every crop scale is measured on the same model outputs (the int8 model is deterministic). Takes over
    `runner`: its own prior is switched off."""

    def __init__(self, runner: Runner) -> None:
        runner.prior = None
        self.runner, self.input_size, self.last_inference_ms = runner, runner.input_size, 0.0
        self.prior: ClassPrior | None = None
        self._raw: dict[bytes, Inference] = {}

    def infer(self, image: np.ndarray, crop: bool = False) -> Inference:
        key = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        if key not in self._raw:
            self._raw[key] = self.runner.infer(image)
        raw = self._raw[key]
        assert self.prior is not None and raw.embedding is not None
        return Inference(raw.score + self.prior.term(raw.embedding, crop), raw.embedding)


def fit_by_mass(embeddings: np.ndarray, temperature: float, weight: float, mass: float) -> ClassPrior:
    """The rejected rule: the fewest classes that hold `mass` of the photos' mean softmax."""
    q = softmax(temperature * np.asarray(embeddings, dtype=np.float64)).mean(axis=0)
    order = np.argsort(-q, kind="stable")
    n = int(np.searchsorted(np.cumsum(q[order]), mass)) + 1
    return ClassPrior(tuple(sorted(int(c) for c in order[:n])), temperature, weight)


def fit(emb: np.ndarray, rule: float | int, temperature: float, weight: float) -> ClassPrior:
    if isinstance(rule, float):
        return fit_by_mass(emb, temperature, weight, rule)
    return fit_class_prior(emb, temperature, weight, top=rule)


def raw_scores(runner: Runner, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    prior, runner.prior = runner.prior, None
    try:
        out = [runner.infer(preprocess(load_rgb(p), runner.input_size)) for p in paths]
    finally:
        runner.prior = prior
    return np.array([o.score for o in out]), np.stack([o.embedding for o in out])


def measure(name: str, model_dir: Path, pos: list[Path], neg: list[Path], cats: set[Path]) -> list[dict]:
    runner = Runner(model_dir / "model.tflite", threads=2)
    card = runner.card
    assert card is not None and runner.prior is not None, f"{model_dir}: export it with this version first"
    cal = read_calibration(runner.model_path, card.calibration, required=("embedding_whole", "oof_whole", "folds"))
    emb = cal["embedding_whole"].astype(np.float32)
    folds = cal["folds"].astype(int)
    card_prior = runner.prior
    raw_oof = cal["oof_whole"].astype(np.float64) - out_of_fold_prior_terms(card_prior.with_classes_of, emb, folds,
                                                                            emb)[0]
    spread = prior_weight(raw_oof)
    target = float(card.calibration["target_recall"])
    pos_s, pos_e = raw_scores(runner, pos)
    neg_s, neg_e = raw_scores(runner, neg)
    rows_out = []
    for label, rule in RULES:
        for mult in WEIGHTS if rule is not None else (0.0,):
            oof, p, n, n_classes = raw_oof.copy(), pos_s.copy(), neg_s.copy(), 0
            if rule is not None:
                prior = fit(emb, rule, card_prior.temperature, mult * spread)
                fit_rule = partial(fit, rule=rule, temperature=prior.temperature, weight=prior.weight)
                oof += out_of_fold_prior_terms(fit_rule, emb, folds, emb)[0]
                p, n, n_classes = p + prior.terms(pos_e), n + prior.terms(neg_e), len(prior.classes)
            t = threshold_for_recall(oof, target)
            cat_rate, _ = cat_false_alarm_rate(n, neg, cats, t)
            rows_out.append({"case": name, "rule": label, "weight_x_spread": mult, "classes": n_classes,
                             "recall": float(np.mean(p >= t)), "false_alarms": float(np.mean(n >= t)),
                             "false_alarms_cats": cat_rate, "n_pos": len(p), "n_neg": len(n)})
            print(f"{name}: {label}, weight x{mult:g}: recall {rows_out[-1]['recall']:.3f}, "
                  f"false alarms {rows_out[-1]['false_alarms']:.3f}", flush=True)
    return rows_out


def measure_crop_scales(model_dir: Path, pos: list[Path], neg: list[Path], cats: set[Path]) -> list[dict]:
    runner = Runner(model_dir / "model.tflite", threads=2)
    card, card_prior = runner.card, runner.prior
    assert card is not None and card_prior is not None, f"{model_dir}: export it with this version first"
    cal = read_calibration(runner.model_path, card.calibration,
                           required=("embedding_whole", "embedding_crop", "oof_crop", "folds"))
    emb, emb_crop = cal["embedding_whole"].astype(np.float32), cal["embedding_crop"].astype(np.float32)
    folds = cal["folds"].astype(int)
    raw_oof_crop = cal["oof_crop"].astype(np.float64) - out_of_fold_prior_terms(
        card_prior.with_classes_of, emb, folds, emb_crop, crop=(True,))[0]
    images = {p: load_rgb(p) for p in [*pos, *neg]}
    model = RawOnce(runner)
    rows_out = []
    for scale in CROP_SCALES:
        prior = dataclasses.replace(card_prior, crop_weight=scale * card_prior.weight)
        oof_crop = raw_oof_crop + out_of_fold_prior_terms(prior.with_classes_of, emb, folds, emb_crop,
                                                          crop=(True,))[0]
        model.prior = prior
        running = RunningModel(model, card, Thresholds(card.threshold, threshold_for_recall(oof_crop, CROP_RECALL)),
                               runner.model_path)
        scorer = FrameScorer()
        p = np.array([scorer.score_still(images[x], running).margin for x in pos])
        n = np.array([scorer.score_still(images[x], running).margin for x in neg])
        cat_rate, _ = cat_false_alarm_rate(n, neg, cats, 0.0)
        rows_out.append({"case": "dev, default still pipeline (whole view + sweep crops)", "rule": "top 5",
                         "weight_x_spread": 1.0, "crop_scale": scale, "classes": len(prior.classes),
                         "recall": float(np.mean(p >= 0)), "false_alarms": float(np.mean(n >= 0)),
                         "false_alarms_cats": cat_rate, "n_pos": len(p), "n_neg": len(n)})
        print(f"crop weight x{scale:g}: recall {rows_out[-1]['recall']:.3f}, false alarms "
              f"{rows_out[-1]['false_alarms']:.4f}, cats {cat_rate:.3f}", flush=True)
    return rows_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", type=Path, required=True, help="model folder trained on the dev split's 398 dogs")
    ap.add_argument("--loso", type=Path, help="benchmarks.loso --work folder (model-not-* and test folders)")
    ap.add_argument("--json", type=Path, default=RESULTS / "class_prior_choice.json")
    args = ap.parse_args(argv)
    split = dev_split()
    neg = split.test_neg
    rows = measure("dev (398 dogs; 170 new dogs)", args.dev, split.test_pos, neg, split.cats)
    rows += measure_crop_scales(args.dev, split.test_pos, neg, split.cats)
    if args.loso:
        for left_out in ("imagenet", "kaggle"):
            model = args.loso / f"model-not-{left_out}"
            test = sorted((args.loso / left_out).iterdir())
            rows += measure(f"trained without {left_out}, tested on its dogs", model, test, neg, split.cats)
    header = ("case", "rule", "weight (x spread)", "crop weight (x weight)", "classes", "recall", "false alarms",
              "false alarms, cats")
    table = markdown_table(header, [(r["case"], r["rule"], f"{r['weight_x_spread']:g}",
                                     f"{r['crop_scale']:g}" if "crop_scale" in r else "", str(r["classes"]),
                                     f"{r['recall']:.3f}", f"{r['false_alarms']:.3f}",
                                     f"{r['false_alarms_cats']:.3f}") for r in rows])
    print()
    print(table)
    write_json(args.json, {"command": command_line(), "date": today(), "negatives": str(DATA / "dev" / "nodog"),
                           "rows": rows})
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
