"""The class prior: a view the backbone's classifier puts on other classes than the label's scores lower.

The runner tests use the colour fixture (score = brightness, embedding = L2-normalised mean colour, 3 "classes":
red, green, blue), so what the prior adds is known exactly. The real-photo test uses the session's trained model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import link_images

from edge_oneclass.device.detect.scoring import WHOLE, FrameScorer
from edge_oneclass.device.detect.settings import ScoringSettings
from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.image_io import load_rgb
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.class_prior import ClassPrior, fit_class_prior
from edge_oneclass.device.model.preprocess import preprocess
from edge_oneclass.device.model.runner import Runner
from edge_oneclass.device.model.running import RunningModel
from edge_oneclass.device.model.thresholds import Thresholds
from edge_oneclass.export.pipeline import CROP_PRIOR_SCALE

COLOUR = Path(__file__).resolve().parent / "fixtures" / "colour" / "model.tflite"
# the cat rule of ../shared/data/README.md (benchmarks/common.py uses the same markers)
CAT_MARKERS = ("cat.", "tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat")


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def test_fit_keeps_the_classes_that_carry_the_label_photos() -> None:
    # label photos: mostly class 2, some class 0; class 1 never comes first or second
    photos = np.stack([unit(0.1, 0.0, 1.0)] * 8 + [unit(1.0, 0.0, 0.1)] * 2)
    prior = fit_class_prior(photos, temperature=10.0, weight=2.0, top=2)
    assert prior.classes == (0, 2)
    assert fit_class_prior(photos, temperature=10.0, weight=2.0, top=1).classes == (0, 2)
    assert fit_class_prior(photos[:8], temperature=10.0, weight=2.0, top=1).classes == (2,)
    # a view like the label's photos loses almost nothing; one the classifier puts on class 1 loses a lot
    assert prior.term(unit(0.1, 0.0, 1.0)) > -0.01
    assert prior.term(unit(0.0, 1.0, 0.0)) < -10.0
    # the term is weight x log share: twice the weight, twice the term
    twice = ClassPrior(prior.classes, prior.temperature, 4.0, prior.top)
    assert twice.term(unit(0.3, 1.0, 0.2)) == pytest.approx(2 * prior.term(unit(0.3, 1.0, 0.2)))


def test_prior_round_trips_through_model_json_and_a_broken_one_is_named() -> None:
    for prior in (ClassPrior((3, 7, 151), 35.0, 8.5, 5), ClassPrior((3, 7, 151), 35.0, 8.5, 5, crop_weight=17.0)):
        assert ClassPrior.from_dict(json.loads(json.dumps(prior.to_dict()))) == prior
    with pytest.raises(ModelError, match="model.json: unreadable class_prior"):
        ClassPrior.from_dict({"classes": [1, 2], "weight": 1.0})   # no temperature


def _colour_model_with(tmp_path: Path, prior: ClassPrior | None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("model.tflite", "model.json"):
        shutil.copy(COLOUR.with_name(name), tmp_path / name)
    card = ModelCard.load(tmp_path / "model.json")
    card.class_prior = prior.to_dict() if prior else None
    card.save(tmp_path / "model.json")
    return tmp_path / "model.tflite"


def test_runner_adds_the_cards_class_prior_to_every_score(tmp_path: Path) -> None:
    plain = Runner(_colour_model_with(tmp_path / "plain", None))
    prior = ClassPrior((2,), 10.0, 3.0)   # the label's "class" is blue
    with_prior = Runner(_colour_model_with(tmp_path / "prior", prior))
    assert plain.prior is None and with_prior.prior == prior
    for rgb in ((200, 40, 30), (30, 40, 200), (90, 90, 90)):
        image = np.full((plain.input_size, plain.input_size, 3), rgb, np.uint8)
        a, b = plain.infer(image), with_prior.infer(image)
        np.testing.assert_array_equal(a.embedding, b.embedding)
        assert b.score == pytest.approx(a.score + prior.term(a.embedding))
    red = np.full((plain.input_size, plain.input_size, 3), (200, 40, 30), np.uint8)
    blue = np.full((plain.input_size, plain.input_size, 3), (30, 40, 200), np.uint8)
    # a red frame, as bright as a blue one, now scores lower: the classifier calls it another class
    assert with_prior.infer(red).score - plain.infer(red).score < with_prior.infer(blue).score - plain.infer(blue).score


def test_crop_views_carry_the_crop_weight_and_a_schema_3_prior_weighs_them_as_whole_views(tmp_path: Path) -> None:
    """Crops (of the daemon's frames, export's crop views) get `crop_weight`; a card from before it existed
    (schema 3, no crop_weight) was calibrated with one weight, so its crops keep the whole view's."""
    plain = Runner(_colour_model_with(tmp_path / "plain", None))
    heavy = Runner(_colour_model_with(tmp_path / "heavy", ClassPrior((2,), 10.0, 3.0, crop_weight=6.0)))
    old = Runner(_colour_model_with(tmp_path / "old", ClassPrior((2,), 10.0, 3.0)))
    red = np.full((plain.input_size, plain.input_size, 3), (200, 40, 30), np.uint8)
    base = plain.infer(red).score
    whole_loss = base - heavy.infer(red).score
    assert whole_loss > 1.0   # red is not the label's class: a real penalty to scale
    assert base - heavy.infer(red, crop=True).score == pytest.approx(2 * whole_loss)
    assert base - old.infer(red, crop=True).score == pytest.approx(whole_loss)
    assert base - old.infer(red).score == pytest.approx(whole_loss)


def test_the_daemons_scorer_weighs_crops_with_the_crop_weight(tmp_path: Path) -> None:
    """Every crop the daemon and eval-edge score (sweep, partners) carries the crop weight; the whole view does not."""
    plain = Runner(_colour_model_with(tmp_path / "plain", None))
    prior = ClassPrior((2,), 10.0, 3.0, crop_weight=6.0)
    heavy = Runner(_colour_model_with(tmp_path / "heavy", prior))
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :160] = (200, 40, 30)
    frame[:, 160:] = (30, 90, 200)
    thresholds = Thresholds(0.0, 0.0)
    crops = ScoringSettings(regions=True, sweep=True)        # the wide-view option: crops on
    a = FrameScorer(crops).score_still(frame, RunningModel.of(plain, thresholds)).views
    b = FrameScorer(crops).score_still(frame, RunningModel.of(heavy, thresholds)).views
    assert [v.box for v in a] == [v.box for v in b] and len(b) > 3
    for va, vb in zip(a, b, strict=True):
        weight = prior.weight if vb.kind == WHOLE else prior.crop_weight
        assert vb.score == pytest.approx(va.score + weight * prior.log_share(va.embedding), abs=1e-5), vb.kind


def test_a_prior_that_does_not_fit_the_embedding_is_refused_at_load(tmp_path: Path) -> None:
    model = _colour_model_with(tmp_path, ClassPrior((2, 500), 10.0, 3.0))   # the embedding has 3 dims
    with pytest.raises(ModelError, match="class_prior does not fit"):
        Runner(model)


def test_trained_prior_holds_the_label_photos_and_marks_cats(trained_model: Path, dev_data: Path,
                                                              tmp_path: Path) -> None:
    """On real photos: export fits the prior on the label's photos (no class list is given); held-out dogs lose
    little to it, the dev cats lose much more."""
    import csv

    card = ModelCard.load(trained_model / "model.json")
    prior = card.prior()
    assert prior is not None and 0 < prior.weight and prior.temperature > 0
    assert prior.crop_weight == pytest.approx(CROP_PRIOR_SCALE * prior.weight)   # crops: the heavier term
    calibration = np.load(trained_model / "calibration.npz")
    # the classes come from the label photos: each photo's likeliest class is one of them
    top1 = np.argmax(calibration["embedding_whole"].astype(np.float32), axis=1)
    assert set(top1.tolist()) <= set(prior.classes)
    with (dev_data / "MANIFEST.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    cats = sorted(r["file"] for r in rows
                  if r["file"].startswith("nodog/") and any(m in r["path"] for m in CAT_MARKERS))
    assert len(cats) >= 20
    dogs = link_images(dev_data / "dog", tmp_path / "dogs", [f"{i:06d}.jpg" for i in range(398, 438)])
    runner = Runner(trained_model / "model.tflite")

    def terms(paths: list[Path]) -> np.ndarray:
        return np.array([prior.term(runner.infer(preprocess(load_rgb(p), runner.input_size)).embedding)
                         for p in paths])

    dog_terms = terms(sorted(dogs.iterdir()))
    cat_terms = terms([dev_data / c for c in cats[:40]])
    # a held-out dog keeps most of its share (> e^-0.5); a cat keeps e times less than that
    # (measured: dogs -0.18 / -0.07 x weight, cats -2.5 / -1.6 x weight, 128 px 80-dog / 224 px 398-dog models)
    assert np.median(dog_terms) > -0.5 * prior.weight
    assert np.median(cat_terms) < np.median(dog_terms) - prior.weight
