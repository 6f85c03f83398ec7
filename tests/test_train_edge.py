"""train-edge / export-edge / eval-edge on the real photos, the way a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dev_names, link_images

from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.confidence import confidence
from edge_oneclass.device.state_files import sha256_file

EVAL_KEYS = {"auroc", "average_precision", "threshold", "tpr", "fpr", "n_positives", "n_negatives"}


def run(module: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_train_export_eval_on_real_photos(trained_model: Path, dev_data: Path, tmp_path: Path) -> None:
    for name in ("model.tflite", "model.json", "model.keras", "calibration.npz", "heads.npz", "report.html",
                 "scores.png", "loss.png"):
        assert (trained_model / name).is_file(), name
    card = ModelCard.load(trained_model / "model.json")
    assert card.sha256 == sha256_file(trained_model / "model.tflite")
    assert card.label == "dog" and card.image_size == 128
    # every photo trains the final model and is scored out of fold for the threshold
    assert card.counts["train"] == 80 and card.counts["validation"] == 0 and card.counts["folds"] == 5
    assert "out-of-fold" in card.calibration["method"] and card.calibration["n_positives"] == 80
    assert card.calibration["recall"] >= card.calibration["target_recall"]
    assert card.threshold_crop is not None and card.calibration["crop"]["recall"] >= 0.5
    assert card.outputs["embedding"]["shape"] == [1, 1000]
    assert card.calibration["sha256"] == sha256_file(trained_model / "calibration.npz")
    calibration = np.load(trained_model / "calibration.npz")
    assert calibration["embedding_whole"].shape == (80, 1000) and calibration["oof_whole"].shape == (80,)
    # the threshold keeps the target share of the out-of-fold scores it was set on
    assert np.mean(calibration["oof_whole"] >= card.threshold) >= card.calibration["target_recall"]
    # confidence: the median label photo (out of fold) maps to 0.95, the threshold to 0.5
    assert card.confidence_scale is not None and card.confidence_scale > 0
    assert confidence(float(np.median(calibration["oof_whole"])), card.threshold, card.confidence_scale) \
        == pytest.approx(0.95, abs=1e-3)
    assert card.parity["spearman_float_vs_int8"] > 0.9
    whole = card.parity["whole"]       # whole views, what the daemon scores: the photos and their corners
    assert whole["n_images"] == 2 * card.counts["train"] and whole["spearman_float_vs_int8"] > 0.9
    assert whole["label_photos_only"] > 0.5

    # Held-out dogs (never seen in training) against a sample of every kind of negative.
    pos = link_images(dev_data / "dog", tmp_path / "pos", dev_names(398, 468))
    every_fourth = sorted(p.name for p in (dev_data / "nodog").glob("*.jpg"))[::4]
    neg = link_images(dev_data / "nodog", tmp_path / "neg", every_fourth)
    out = tmp_path / "eval.json"
    proc = run("edge_oneclass.export.eval_cli", trained_model / "model.tflite", "--positives", pos, "--negatives", neg,
               "--json", out, "--plot", tmp_path / "eval.png")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert EVAL_KEYS <= set(result)
    assert result["n_positives"] == 70 and result["n_negatives"] == len(list(neg.iterdir()))
    assert result["auroc"] > 0.9, result
    assert result["threshold"] == pytest.approx(card.threshold)
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert "AUROC" in proc.stdout
    # one row per image, agreeing with the counts: a user finds the missed photos and the false alarms by name
    rows = result["images"]
    assert len(rows) == result["n_positives"] + result["n_negatives"]
    assert {Path(r["path"]).name for r in rows if r["positive"]} == {p.name for p in pos.iterdir()}
    assert sum(r["detected"] for r in rows if r["positive"]) == result["true_positives"]
    assert sum(r["detected"] for r in rows if not r["positive"]) == result["false_positives"]
    assert all(r["detected"] == (r["score"] >= result["threshold"]) for r in rows)

    assert result["pipeline"] == "whole view"                             # the daemon's default

    # --config with the wide-view crops: crops only ever add detections, so recall cannot be lower
    wide = tmp_path / "wide.toml"
    wide.write_text("[detect]\nregions = true\nsweep = true\n")
    crops_json = tmp_path / "crops.json"
    proc = run("edge_oneclass.export.eval_cli", trained_model / "model.tflite", "--positives", pos, "--negatives", neg,
               "--json", crops_json, "--config", wide)
    assert proc.returncode == 0, proc.stderr
    crops = json.loads(crops_json.read_text())
    assert crops["pipeline"] == "whole view + sweep crops"
    assert crops["threshold_crop"] == pytest.approx(card.threshold_crop)
    assert result["tpr"] <= crops["tpr"] and result["fpr"] <= crops["fpr"]

    # --whole: the whole view alone, whatever the config says
    whole_json = tmp_path / "whole.json"
    proc = run("edge_oneclass.export.eval_cli", trained_model / "model.tflite", "--positives", pos, "--negatives", neg,
               "--json", whole_json, "--whole", "--config", wide)
    assert proc.returncode == 0, proc.stderr
    whole = json.loads(whole_json.read_text())
    assert whole["pipeline"] == "whole view" and whole["threshold"] == pytest.approx(card.threshold)
    assert (whole["tpr"], whole["fpr"]) == (result["tpr"], result["fpr"])


def test_export_edge_runs_alone_and_rewrites_hash(trained_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy" / "model.tflite"
    proc = run("edge_oneclass.export.cli", trained_model, "--out", target)
    assert proc.returncode == 0, proc.stderr
    card = ModelCard.load(target.with_name("model.json"))
    assert card.sha256 == sha256_file(target)
    assert np.isfinite(card.threshold)


def _make_folder_with_bad_files(dev_data: Path, folder: Path) -> dict[str, Path]:
    link_images(dev_data / "dog", folder, dev_names(0, 24))
    good = (dev_data / "dog" / "000030.jpg").read_bytes()
    bad = {
        "truncated": folder / "truncated.jpg",
        "text": folder / "notes.jpg",
        "empty": folder / "empty.png",
    }
    bad["truncated"].write_bytes(good[: len(good) // 2])
    bad["text"].write_text("this is not a picture\n")
    bad["empty"].write_bytes(b"")
    (folder / "duplicate.jpg").write_bytes((dev_data / "dog" / "000001.jpg").read_bytes())
    return bad


def test_bad_files_are_skipped_and_named(dev_data: Path, tmp_path: Path) -> None:
    bad = _make_folder_with_bad_files(dev_data, tmp_path / "pets")
    proc = run("edge_oneclass.export.workflow", tmp_path / "pets", "--out", tmp_path / "m", "--backbone", "none",
               "--image-size", "32", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    for path in bad.values():
        assert str(path) in proc.stderr, f"{path.name} not named in:\n{proc.stderr}"
    assert "skipped 3 unreadable file(s)" in proc.stderr
    card = ModelCard.load(tmp_path / "m" / "model.json")
    assert card.label == "pets"  # defaults to the folder's name
    assert card.counts["skipped"] == 3 and card.counts["duplicates"] == 1
    assert card.counts["train"] + card.counts["validation"] == 24
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "too_few"])
def test_unusable_folder_is_one_clear_error(case: str, dev_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dogs"
    if case == "empty":
        folder.mkdir()
    elif case == "too_few":
        link_images(dev_data / "dog", folder, dev_names(0, 5))
    proc = run("edge_oneclass.export.workflow", folder, "--out", tmp_path / "m", timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train-edge:")]
    assert len(lines) == 1 and str(folder) in lines[0], proc.stderr
    assert not (tmp_path / "m").exists()


def test_background_negatives_calibrate_and_train(dev_data: Path, tmp_path: Path) -> None:
    """--background: half held out for the threshold and the ROC, half used as outlier exposure."""
    dogs = link_images(dev_data / "dog", tmp_path / "dog", dev_names(0, 40))
    # house fronts and rooms: the "empty scene" kind of negative (see ../shared/data/dev/SOURCES.md)
    rows = (dev_data / "MANIFEST.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    scenes = [r.split("\t") for r in rows[1:]]
    names = [Path(r[header.index("file")]).name for r in scenes if "Houses" in r[header.index("path")]][:30]
    bg = link_images(dev_data / "nodog", tmp_path / "empty-scene", names)
    out = tmp_path / "m"
    proc = run("edge_oneclass.export.workflow", dogs, "--out", out, "--background", bg, "--image-size", "128",
               "--epochs", "5")
    assert proc.returncode == 0, proc.stderr
    card = ModelCard.load(out / "model.json")
    assert card.counts["background_train"] == 15 and card.counts["background_validation"] == 15
    assert card.score["background_bank"] == 15 and card.score["w_neg"] > 0
    assert card.calibration["n_negatives"] == 15
    assert card.calibration["recall"] >= 0.95
    assert 0.9 < card.parity["auroc_int8"] <= 1.0 and "auroc_float" in card.parity
    assert (out / "roc.png").is_file()
    assert "false alarms at threshold" in (out / "report.html").read_text()


def test_train_edge_shows_progress_and_results_not_tensorflows_native_log(trained_model: Path) -> None:
    """TensorFlow's C++ logging (oneDNN/CUDA notices at import, a `NodeDef mentions attribute
    use_unbounded_threadpool` error line per autoencoder fit) must not reach the user's terminal."""
    import re

    stderr = (trained_model.parent / "train-edge.stderr").read_text()
    lines = [line for chunk in stderr.splitlines() for line in chunk.split("\r") if line.strip()]
    native = [line for line in lines if re.match(r"^[IWEF]\d{4} ", line) or "NodeDef" in line or "absl::" in line]
    assert not native, native[:3]
    assert any("out-of-fold heads" in line for line in lines)          # the progress bars are still there
