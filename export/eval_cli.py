"""`eval-edge MODEL.tflite --positives DIR --negatives DIR`: accuracy measured on the device's code path."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_oneclass.device.console import run_main, setup_logging
from edge_oneclass.device.errors import require_modules

# eval-edge scores with the device's runner, so beyond the `device` extra it needs only these (of the `train` extra).
EVAL_MODULES = {"sklearn": "scikit-learn", "tqdm": "tqdm"}
PLOT_MODULES = {"matplotlib": "matplotlib"}

if TYPE_CHECKING:   # edge_oneclass.export.evaluate needs tqdm, which is checked for (with a hint) before it is imported
    from edge_oneclass.export.evaluate import ScoredFolder


def image_rows(folder: ScoredFolder, positive: bool, threshold: float) -> list[dict[str, Any]]:
    """One row per scored image, so a user can see which photos were missed or raised a false alarm."""
    return [{"path": str(p), "positive": positive, "score": float(s), "detected": bool(s >= threshold)}
            for p, s in zip(folder.paths, folder.scores, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eval-edge", description="Score folders of positives and negatives with the "
                                "device's runner and report AUROC, average precision, recall and false alarms.")
    p.add_argument("model", type=Path, metavar="MODEL.tflite", help="model.json must sit beside it")
    p.add_argument("--positives", type=Path, required=True, metavar="DIR")
    p.add_argument("--negatives", type=Path, required=True, metavar="DIR")
    p.add_argument("--threshold", type=float, help="override the model's calibrated threshold (crops move with it, "
                   "as with the daemon's [model] threshold)")
    p.add_argument("--config", type=Path, metavar="FILE", help="score as the daemon with this config.toml does "
                   "([detect] and [model] threshold); default: the daemon's default config")
    p.add_argument("--whole", action="store_true", help="score the whole view only, even where --config turns the "
                   "wide-view crops on (the daemon's default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write a score histogram and ROC curve")
    args = p.parse_args(argv)
    setup_logging("WARNING")

    def job() -> int:
        modules = {**EVAL_MODULES, **(PLOT_MODULES if args.plot else {})}
        require_modules(modules, f"beyond the device extra eval-edge needs only {', '.join(modules.values())}: "
                                 f"pip install {' '.join(modules.values())}, or the whole workstation extra: "
                                 "pip install 'edge-oneclass[train]' (from the repository: pip install -e '.[train]')")
        from edge_oneclass.device.config import load_config
        from edge_oneclass.device.detect.scoring import FrameScorer
        from edge_oneclass.device.detect.settings import ScoringSettings
        from edge_oneclass.device.model.running import RunningModel
        from edge_oneclass.export.evaluate import score_folder
        from edge_oneclass.export.metrics import detection_metrics

        settings, override, crop_recall = ScoringSettings(), args.threshold, None
        if args.config is not None:
            cfg = load_config(args.config, require_model=False)
            settings, crop_recall = cfg.detect, cfg.detect.crop_recall
            override = override if override is not None else cfg.model.threshold
        if args.whole:
            settings = ScoringSettings(regions=False, sweep=False, max_crops=0)
        model = RunningModel.load(args.model, args.threads, override, crop_recall)
        thresholds = model.thresholds
        scorer = FrameScorer(settings)
        pos = score_folder(scorer, model, args.positives, "positives")
        neg = score_folder(scorer, model, args.negatives, "negatives")
        threshold = thresholds.whole
        m = detection_metrics(pos.scores, neg.scores, threshold)
        label = model.label
        pipeline = "whole view + sweep crops" if settings.sweep else "whole view"
        print(f"model      {args.model} ({label}, {model.card.backbone} {model.card.image_size}px, {pipeline})")
        print(f"AUROC      {m.auroc:.4f}")
        print(f"avg prec.  {m.average_precision:.4f}")
        print(f"threshold  {m.threshold:.5g}")
        print(f"recall     {m.tpr:.3f}  ({m.true_positives}/{m.n_positives} {label} images detected)")
        print(f"false alarm {m.fpr:.3f}  ({m.false_positives}/{m.n_negatives} negatives over threshold)")
        if pos.skipped or neg.skipped:
            print(f"skipped    {len(pos.skipped) + len(neg.skipped)} unreadable file(s)")
        result = {**m.as_dict(), "label": label, "model": str(args.model), "pipeline": pipeline,
                  "threshold_crop": thresholds.crop, "skipped": pos.skipped + neg.skipped,
                  "images": image_rows(pos, True, threshold) + image_rows(neg, False, threshold)}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        if args.plot:
            from edge_oneclass.export.plots import score_plot

            score_plot(args.plot, pos.scores, neg.scores, threshold, label)
        return 0

    return run_main("eval-edge", job)


if __name__ == "__main__":
    sys.exit(main())
