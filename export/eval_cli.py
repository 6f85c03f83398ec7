"""`eval-edge MODEL.tflite --positives DIR --negatives DIR`: accuracy measured on the device's code path."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device.cli_main import run_main, setup_logging
from device.errors import require_modules

# eval-edge scores with the device's runner, so beyond the `device` extra it needs only these (of the `train` extra).
EVAL_MODULES = {"sklearn": "scikit-learn", "tqdm": "tqdm"}
PLOT_MODULES = {"matplotlib": "matplotlib"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eval-edge", description="Score folders of positives and negatives with the "
                                "device's runner and report AUROC, average precision, recall and false alarms.")
    p.add_argument("model", type=Path, metavar="MODEL.tflite", help="model.json must sit beside it")
    p.add_argument("--positives", type=Path, required=True, metavar="DIR")
    p.add_argument("--negatives", type=Path, required=True, metavar="DIR")
    p.add_argument("--threshold", type=float, help="override the model's calibrated threshold (with --tiles, the "
                   "tiles threshold)")
    p.add_argument("--tiles", action="store_true", help="score like the daemon's tiling option (whole frame + 2x2)")
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
        from device.runner import Runner
        from export.evaluate import score_folder
        from export.metrics import detection_metrics

        runner = Runner(args.model, threads=args.threads)
        assert runner.card is not None
        pos = score_folder(runner, args.positives, args.tiles, "positives")
        neg = score_folder(runner, args.negatives, args.tiles, "negatives")
        threshold = runner.card.threshold_for(args.tiles, args.threshold)
        m = detection_metrics(pos.scores, neg.scores, threshold)
        label = runner.card.label
        print(f"model      {args.model} ({label}, {runner.card.backbone} {runner.card.image_size}px"
              f"{', tiles' if args.tiles else ''})")
        print(f"AUROC      {m.auroc:.4f}")
        print(f"avg prec.  {m.average_precision:.4f}")
        print(f"threshold  {m.threshold:.5g}")
        print(f"recall     {m.tpr:.3f}  ({m.true_positives}/{m.n_positives} {label} images detected)")
        print(f"false alarm {m.fpr:.3f}  ({m.false_positives}/{m.n_negatives} negatives over threshold)")
        if pos.skipped or neg.skipped:
            print(f"skipped    {len(pos.skipped) + len(neg.skipped)} unreadable file(s)")
        result = {**m.as_dict(), "label": label, "model": str(args.model), "tiles": args.tiles,
                  "skipped": pos.skipped + neg.skipped}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        if args.plot:
            from export.plots import score_plot

            score_plot(args.plot, pos.scores, neg.scores, threshold, label)
        return 0

    return run_main("eval-edge", job)


if __name__ == "__main__":
    sys.exit(main())
