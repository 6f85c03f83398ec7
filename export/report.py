"""The training report: an HTML page with PNG plots that says honestly how well the model works."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.export.metrics import detection_metrics
from edge_oneclass.export.plots import histogram, loss_curve, roc


def write_report(model_dir: Path, meta, card: ModelCard, pos: np.ndarray, neg: np.ndarray) -> Path:
    """report.html + PNGs in `model_dir`. `pos` are the scores the threshold was set on (out-of-fold int8
    scores of the label's photos, or held-out ones for the pixel baseline); `neg` held-out background."""
    model_dir = Path(model_dir)
    out_of_fold = "crop" in card.calibration
    histogram(model_dir / "scores.png", pos, neg, card.threshold,
              f"{card.label}, {'out of fold' if out_of_fold else 'validation'}")
    if meta.loss:
        loss_curve(model_dir / "loss.png", meta.loss)
    rows = [
        ("label", card.label),
        ("backbone", f"{card.backbone} at {card.image_size} px"),
        ("images", f"{card.counts['train']} train, {card.counts['validation']} validation, "
                   f"{card.counts['background_train'] + card.counts['background_validation']} background, "
                   f"{card.counts['skipped']} skipped, {card.counts['duplicates']} duplicates dropped"),
        ("threshold", f"{card.threshold:.5g} ({card.calibration['method']})"),
        ("recall at the threshold", f"{card.calibration['recall']:.3f} (target {card.calibration['target_recall']})"),
    ]
    if out_of_fold:
        crop = card.calibration["crop"]
        rows.append(("crop threshold", f"{card.threshold_crop:.5g}: keeps {crop['recall']:.0%} of the photos' crop "
                                       f"views ({crop['view']}); motion regions and sweep crops use it"))
    rows += [
        ("int8 vs float Spearman", f"{card.parity['spearman_float_vs_int8']:.4f} on {card.parity['n_images']} "
                                   f"{card.parity['images']}"),
    ]
    imgs = ['<img src="scores.png" alt="score histogram">']
    if len(neg):
        m = detection_metrics(pos, neg, card.threshold)
        rows += [
            ("AUROC vs background (int8 / float)",
             f"{card.parity['auroc_int8']:.4f} / {card.parity['auroc_float']:.4f}"),
            ("false alarms at threshold", f"{m.false_positives} of {m.n_negatives} ({m.fpr:.1%})"),
        ]
        roc(model_dir / "roc.png", pos, neg)
        imgs.append('<img src="roc.png" alt="ROC curve">')
    else:
        rows.append(("negatives", "none given: accuracy against non-label images is unknown; run eval-edge "
                                  "with --negatives, or train with --background"))
    if meta.loss:
        imgs.append('<img src="loss.png" alt="training loss">')
    if meta.skipped:
        rows.append(("skipped files", ", ".join(html.escape(s) for s in meta.skipped[:20])))
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(card.label)} model report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}th{{text-align:left;padding-right:1em}}
img{{max-width:100%;margin:1em 0}}</style></head>
<body><h1>{html.escape(card.label)} detector</h1>
<table>{table}</table>
{''.join(imgs)}
<p>Scores are from the int8 <code>model.tflite</code>; each photo of the label is scored by a head that was
trained without it (out of fold). Higher scores mean more like <em>{html.escape(card.label)}</em>.</p>
</body></html>
"""
    path = model_dir / "report.html"
    path.write_text(page)
    return path
