"""Shared pieces of the benchmarks: the standard splits, symlink folders, timing, and the README blocks.

The photos stay in ../shared/data: the benchmarks only ever build folders of symlinks under /tmp.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"   # every result table, generated from results/*.json

# dev/MANIFEST.tsv `path` markers of a cat (see ../shared/data/README.md, "the cat rule").
CAT_MARKERS = ("cat.", "tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat")
DEV_TRAIN_DOGS = 398  # dev/dog/000000 ... 000397 train; 000398 ... 000567 test
CIFAR_TRAIN_DOGS = 700


@dataclass
class Split:
    """One benchmark dataset: training photos of the label, and the held-out test set."""

    name: str
    train: list[Path]
    test_pos: list[Path]
    test_neg: list[Path]
    cats: set[Path] = field(default_factory=set)  # the subset of test_neg that are cats (hard negatives)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def manifest_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def dev_split(root: Path = DATA / "dev") -> Split:
    """THE STANDARD SPLIT: train on the first 398 dogs, test the other 170 against all of nodog/."""
    dogs = _images(root / "dog")
    cats = {root / r["file"] for r in manifest_rows(root / "MANIFEST.tsv")
            if r["file"].startswith("nodog/") and any(m in r["path"] for m in CAT_MARKERS)}
    return Split("dev", dogs[:DEV_TRAIN_DOGS], dogs[DEV_TRAIN_DOGS:], _images(root / "nodog"), cats)


def cifar_split(root: Path = DATA / "cifar10") -> Split:
    """CIFAR-10 one-class: the first 700 dogs (sorted names) train; the other 300 vs all 999 non-dogs test."""
    dogs = _images(root / "dog")
    cats = {root / r["file"] for r in manifest_rows(root / "MANIFEST.tsv") if r.get("cifar_class") == "cat"}
    return Split("cifar10", dogs[:CIFAR_TRAIN_DOGS], dogs[CIFAR_TRAIN_DOGS:], _images(root / "nodog"), cats)


SPLITS = {"dev": dev_split, "cifar10": cifar_split}

# The scoring pipelines the benchmarks compare, as `[detect]` settings of the daemon:
#   whole    the daemon's default: the whole view (the centre square) alone
#   crops    the whole view + motion regions + the sweep, crop hits confirmed (`regions = true, sweep = true`;
#            the default before the crops had to earn their cost)
#   wide     crops plus what docs/configuration.md tells wide-view users to set: `crop_recall = 0.75`
PIPELINES = ("whole", "crops", "wide")
WIDE_CROP_RECALL = 0.75


def pipeline_settings(name: str):
    """The `ScoringSettings` of a named pipeline (see PIPELINES)."""
    from edge_oneclass.device.detect.settings import ScoringSettings

    if name == "whole":
        return ScoringSettings()
    if name in ("crops", "wide"):
        return ScoringSettings(regions=True, sweep=True)
    raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")


def pipeline_model(name: str, model: Path, threads: int = 2):
    """The RunningModel a named pipeline decides with (`wide` moves the crops' threshold to WIDE_CROP_RECALL)."""
    from edge_oneclass.device.model.running import RunningModel

    return RunningModel.load(model_file(model), threads, crop_recall=WIDE_CROP_RECALL if name == "wide" else None)


def model_file(model: Path) -> Path:
    """`--model` may name the model folder (model.tflite + model.json) or model.tflite itself."""
    model = Path(model)
    return model / "model.tflite" if model.is_dir() else model


def cat_false_alarm_rate(neg_scores: np.ndarray, neg_paths: list[Path], cats: set[Path],
                         threshold: float) -> tuple[float | None, int]:
    """False-alarm rate on the cats among the negatives (the hardest ones for a dog detector), and their count."""
    mask = np.array([p in cats for p in neg_paths], dtype=bool)
    if not mask.any():
        return None, 0
    return float(np.mean(neg_scores[mask] >= threshold)), int(mask.sum())


def symlink_folder(paths: Sequence[Path], dest: Path) -> Path:
    """A folder of symlinks to `paths` (names kept): a training folder without copying a single photo."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        link = dest / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    return dest


def median_invoke_ms(runner, images: Sequence[np.ndarray], n: int = 100, warmup: int = 10) -> float:
    """Median wall time (ms) of `runner.infer` over `n` invokes on preprocessed images, after warm-up."""
    for i in range(warmup):
        runner.infer(images[i % len(images)])
    times = []
    for i in range(n):
        img = images[i % len(images)]
        t0 = time.perf_counter()
        runner.infer(img)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def frame_timings(models: dict[str, Path], paths: Sequence[Path], n: int = 100, rounds: int = 3) -> dict[str, dict]:
    """int8 per-image time (ms) of each model with one and with two interpreter threads.

    The machine is shared, so the models are timed round-robin: each round times every model, and a figure is
    the median over rounds of the median of `n` invokes. Ratios between models are then fair even when the
    load changes during the run.
    """
    from edge_oneclass.device.image_io import load_rgb
    from edge_oneclass.device.model.preprocess import preprocess
    from edge_oneclass.device.model.runner import Runner

    runners = {(key, t): Runner(model, threads=t) for key, model in models.items() for t in (1, 2)}
    frames = [load_rgb(p) for p in paths[:n]]
    inputs = {key: [preprocess(f, runners[key, 1].input_size) for f in frames] for key in models}
    samples: dict[tuple[str, int], list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for (key, threads), runner in runners.items():
            samples[key, threads].append(median_invoke_ms(runner, inputs[key], n))
    return {key: {"int8_ms_1thread": round(statistics.median(samples[key, 1]), 2),
                  "int8_ms_2threads": round(statistics.median(samples[key, 2]), 2)} for key in models}


def command_line() -> str:
    """How this run was started, for the README line."""
    script = Path(sys.argv[0]).resolve()
    try:
        module = ".".join(script.relative_to(REPO).with_suffix("").parts)
    except ValueError:
        return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])
    return shlex.join([".venv/bin/python", "-m", module, *sys.argv[1:]])


def today() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="minutes")


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def fmt(value, digits: int = 3) -> str:
    """A table cell: numbers rounded, missing values as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def replace_block(name: str, body: str, path: Path = README) -> bool:
    """Put `body` between `<!-- name:start -->` and `<!-- name:end -->` in `path`; False if the markers are absent."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if not path.is_file():
        return False
    readme = path.read_text()
    i, j = readme.find(start), readme.find(end)
    if i < 0 or j < i:
        return False
    path.write_text(readme[:i + len(start)] + "\n" + body.strip() + "\n" + readme[j:])
    return True


def publish(name: str, body: str) -> Path:
    """Regenerate the README block `name`, or write benchmarks/results/<NAME>.md when the markers are missing."""
    if replace_block(name, body):
        return README
    fallback = RESULTS / f"{name.upper()}.md"
    fallback.write_text(body.strip() + "\n")
    return fallback
