"""Night vision: does a model trained on colour photos still work when the camera switches to greyscale (IR)?

Many security and pet cameras switch to infrared at night and then deliver greyscale frames (equal R, G and B).
The label's photos are usually colour; `train-edge` therefore puts a greyscale copy of each photo in the bank and
the autoencoder (training/views.py `grey`). This benchmark measures what is left: it scores the dev split's test
photos (170 held-out dogs vs 589 no-dog photos, 156 of them cats) twice through the device's own scorer
(`FrameScorer.score_still`, the `whole` and `default` pipelines of benchmarks/common.py): as they are, and
converted to greyscale with that same `grey` view (luma in all three channels, in memory, no re-encoding).
Recall and false alarms at the model's calibrated thresholds, false alarms on cats, AUROC.

It was written to settle one question about the shared clip dog/02 (an overhead greyscale fisheye view that no
configuration finds): is greyscale the cause? If greyscale copies of the test photos score about as well as the
colour ones, the cause is the view (overhead, small, a black-and-white dog), not the missing colour.

    .venv/bin/python -m benchmarks.greyscale --model /tmp/std/model-v6

Writes benchmarks/results/greyscale.json and the block `greyscale` of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import (
    PIPELINES,
    RESULTS,
    cat_false_alarm_rate,
    command_line,
    dev_split,
    fmt,
    markdown_table,
    model_file,
    publish,
    today,
    write_json,
)

CONDITIONS = ("colour", "greyscale")


def measure(model: Path, pipeline: str, condition: str) -> dict:
    from benchmarks.accuracy import crop_threshold_of, int8_test_scores
    from edge_oneclass.export.metrics import detection_metrics
    from edge_oneclass.training.views import grey  # the same greyscale view train-edge puts in the bank

    split = dev_split()
    pos, neg, neg_paths, threshold = int8_test_scores(model, split, pipeline,
                                                      grey if condition == "greyscale" else None)
    m = detection_metrics(pos, neg, threshold)
    cats, n_cats = cat_false_alarm_rate(neg, neg_paths, split.cats, threshold)
    return {"pipeline": pipeline, "condition": condition, "model": str(model), "auroc": m.auroc,
            "recall": m.tpr, "false_alarm_rate": m.fpr, "false_alarm_rate_cats": cats, "n_cats": n_cats,
            "n_positives": m.n_positives, "n_negatives": m.n_negatives, "threshold": threshold,
            "threshold_crop": crop_threshold_of(pipeline, model)}


def readme_block(result: dict) -> str:
    cells = [[r["pipeline"], r["condition"], fmt(r["auroc"], 4), fmt(r["recall"]), fmt(r["false_alarm_rate"]),
              fmt(r["false_alarm_rate_cats"])] for r in result["rows"]]
    table = markdown_table(("pipeline", "test photos", "AUROC", "recall", "false alarms", "false alarms, cats"),
                           cells)
    return (table + f"\n\nProduced by `{result['command']}` on {result['date']}; "
            "`benchmarks/results/greyscale.json`. Dev test split (170 held-out dogs vs 589 no-dog photos, 156 cats), "
            "scored as they are and as greyscale copies (luma in all three channels, as an IR camera delivers "
            "them), at the model's calibrated thresholds.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model folder or model.tflite (model.json beside it)")
    p.add_argument("--pipelines", nargs="+", default=["whole", "crops"], choices=list(PIPELINES))
    p.add_argument("--json", type=Path, default=RESULTS / "greyscale.json")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    model = model_file(args.model)
    rows = []
    for pipeline in args.pipelines:
        for condition in CONDITIONS:
            rows.append(measure(model, pipeline, condition))
            r = rows[-1]
            print(f"{pipeline:8s} {condition:9s} AUROC {r['auroc']:.4f}  recall {r['recall']:.3f}  "
                  f"false alarms {r['false_alarm_rate']:.3f}  cats {fmt(r['false_alarm_rate_cats'])}", flush=True)
    result = {"command": command_line(), "date": today(), "rows": rows}
    write_json(args.json, result)
    if not args.no_readme:
        print(f"wrote {args.json} and {publish('greyscale', readme_block(result))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
