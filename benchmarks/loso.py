"""Leave-one-source-out: does the calibrated threshold hold on dog photos from a source it never saw?

dev/MANIFEST.tsv's `dataset` column names each photo's source (Kaggle Dogs vs. Cats, or one ImageNet class per
photo: grouped as "ImageNet"). For each source: `train-edge` on the dogs of the other sources, then `eval-edge
--whole` with the left-out source's dogs as positives and all dev no-dog photos as negatives; the recall at the
model's threshold is compared with its target recall. Also, for every threshold that would put the left-out recall
within 0.03 of the target, the recall the training photos' own out-of-fold scores have there (`own_recall_range`):
when that range excludes the target, no threshold set from the training photos alone can meet 0.03 there.
Writes benchmarks/results/loso.json and prints a table.

    .venv/bin/python -m benchmarks.loso [--work DIR] [--reuse]

--reuse evaluates models already trained in --work by an earlier run (same commands) instead of retraining.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, RESULTS, manifest_rows, symlink_folder

BIN = Path(sys.executable).parent
TOLERANCE = 0.03   # issue 6: the left-out recall within 0.03 of the target


def own_recall_range(left_out: np.ndarray, oof: np.ndarray, target: float,
                     tolerance: float = TOLERANCE) -> tuple[float, float] | None:
    """Over every threshold that puts the left-out source's recall within `tolerance` of `target`, the lowest and
    highest recall the training photos' own out-of-fold scores have there (None: no such threshold).

    A threshold set from the training photos alone sits where their out-of-fold recall is the target; if the target
    lies outside this range, no such rule can meet the tolerance on the left-out source, whatever it does."""
    left_out, oof = np.sort(np.asarray(left_out, dtype=np.float64)), np.asarray(oof, dtype=np.float64)
    # the left-out recall only changes at its own scores: t in (s[k-1], s[k]] has recall mean(s >= s[k])
    lows = np.concatenate([[-np.inf], left_out[:-1]])
    inside = np.abs((len(left_out) - np.arange(len(left_out))) / len(left_out) - target) <= tolerance + 1e-12
    if not inside.any():
        return None
    highest = max(float(np.mean(oof > lo)) for lo in lows[inside])
    lowest = min(float(np.mean(oof >= hi)) for hi in left_out[inside])
    return lowest, highest


def source_of(dataset: str) -> str:
    """ImageNet rows name one class each; all of them are one source."""
    return "imagenet" if dataset.startswith("ImageNet") else "kaggle" if dataset.startswith("Kaggle") else "other"


def dog_sources(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for r in manifest_rows(root / "MANIFEST.tsv"):
        if r["file"].startswith("dog/"):
            out.setdefault(source_of(r["dataset"]), []).append(root / r["file"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench-loso"))
    ap.add_argument("--reuse", action="store_true", help="evaluate models an earlier run left in --work")
    args = ap.parse_args(argv)
    dev = DATA / "dev"
    sources = dog_sources(dev)
    rows = []
    for left_out in sorted(sources):
        train = [p for s, ps in sources.items() if s != left_out for p in ps]
        test = symlink_folder(sources[left_out], args.work / left_out)
        train_dir = symlink_folder(train, args.work / f"not-{left_out}" / "dog")
        model = args.work / f"model-not-{left_out}"
        train_s = None
        if not (args.reuse and (model / "model.tflite").is_file()):
            t0 = time.monotonic()
            subprocess.run([BIN / "train-edge", train_dir, "--label", "dog", "--out", model], check=True)
            train_s = round(time.monotonic() - t0, 1)
        out = model / f"eval-on-{left_out}.json"
        subprocess.run([BIN / "eval-edge", model / "model.tflite", "--positives", test, "--negatives", dev / "nodog",
                        "--whole", "--json", out], check=True, stdout=subprocess.DEVNULL)
        ev = json.loads(out.read_text())
        card = json.loads((model / "model.json").read_text())
        target = card["calibration"]["target_recall"]
        scores = [r["score"] for r in ev["images"] if r["positive"]]
        with np.load(model / "calibration.npz") as cal:
            own = own_recall_range(np.asarray(scores), cal["oof_whole"], target)
        rows.append({"left_out": left_out, "n_train": len(train), "n_test": len(sources[left_out]),
                     "target_recall": target, "oof_recall": card["calibration"]["recall"],
                     "recall_left_out": ev["tpr"], "gap": ev["tpr"] - target, "auroc": ev["auroc"],
                     "false_alarms_dev_nodog": ev["fpr"], "threshold": ev["threshold"], "train_s": train_s,
                     "own_oof_recall_where_within_tolerance": own, "tolerance": TOLERANCE})
    print("| left out | train dogs | test dogs | target | out-of-fold recall | recall on left-out | gap | AUROC "
          f"| false alarms (dev no-dog) | own out-of-fold recall wherever the left-out recall is within {TOLERANCE} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        own = r["own_oof_recall_where_within_tolerance"]
        print(f"| {r['left_out']} | {r['n_train']} | {r['n_test']} | {r['target_recall']:.2f} | "
              f"{r['oof_recall']:.3f} | {r['recall_left_out']:.3f} | {r['gap']:+.3f} | {r['auroc']:.4f} | "
              f"{r['false_alarms_dev_nodog']:.3f} | {'none' if own is None else f'{own[0]:.3f}-{own[1]:.3f}'} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loso.json").write_text(json.dumps(
        {"produced_at": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
