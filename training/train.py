"""`train-edge`: a folder of one label's photos in, a calibrated int8 model directory out."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from device.errors import DataError
from training.dataset import ImageSet, iter_batches, scan_folder, split
from training.tf_quiet import import_tensorflow_quietly

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = {"efficientnet_lite0": 224, "none": 64}
TRAINING_META = "training.json"
MIRROR_LIMIT = 2000
KERAS_MODEL = "model.keras"


@dataclass
class TrainOptions:
    images: Path
    out: Path | None = None
    label: str | None = None
    background: Path | None = None
    backbone: str = "efficientnet_lite0"
    image_size: int | None = None
    epochs: int | None = None
    target_recall: float = 0.95
    seed: int = 0
    val_fraction: float = 0.2
    bank_size: int = 1024
    augment: bool = True

    def resolved(self) -> TrainOptions:
        label = self.label or Path(self.images).resolve().name
        return TrainOptions(**{**asdict(self),
                               "label": label,
                               "out": Path(self.out) if self.out else Path(f"./{label}-model"),
                               "image_size": self.image_size or DEFAULT_IMAGE_SIZE[self.backbone],
                               "epochs": self.epochs or (60 if self.backbone != "none" else 30)})


@dataclass
class TrainingMeta:
    """Everything export-edge needs to run alone: which files trained, which validate, how."""

    label: str
    backbone: str
    image_size: int
    target_recall: float
    seed: int
    train: list[str]
    val: list[str]
    background_train: list[str] = field(default_factory=list)
    background_val: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duplicates: int = 0
    loss: list[float] = field(default_factory=list)
    score_terms: dict = field(default_factory=dict)
    bank_size: int = 0
    train_seconds: float = 0.0
    created_at: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainingMeta:
        return cls(**json.loads(Path(path).read_text()))


def _fit_embedding_model(opts: TrainOptions, embedder, train: list[Path], originals: np.ndarray,
                         bg_train: list[Path]):
    """`originals`: the float embeddings of `train`, already computed for the near-duplicate split."""
    import keras

    from training.coreset import greedy_coreset
    from training.embed import embed_paths
    from training.model import (
        build_embedding_autoencoder,
        build_scorer,
        fit_weights,
        nearest_similarity,
        reconstruction_error,
    )
    from training.progress import EpochBar

    # Mirrors help a small folder (the autoencoder sees both); past MIRROR_LIMIT they only double the time.
    emb = originals
    if opts.augment and len(train) <= MIRROR_LIMIT:
        emb = np.concatenate([originals, embed_paths(embedder, train, opts.image_size, "embedding mirrors",
                                                     mirror=True)])
    # The bank holds original images only; a coreset bounds its size.
    bank = originals[greedy_coreset(originals, min(opts.bank_size, len(originals)), seed=opts.seed)]
    ae = build_embedding_autoencoder(emb.shape[1], seed=opts.seed)
    ae.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    hist = ae.fit(emb, emb, epochs=opts.epochs, batch_size=32, shuffle=True, verbose=0,
                  callbacks=[EpochBar(opts.epochs, "training autoencoder")])
    knn_train = nearest_similarity(originals, originals, exclude_self=True)
    err_train = reconstruction_error(ae, originals)
    neg_bank = None
    neg_train = None
    formula = "w_knn * max_i <e, bank_i> - w_ae * mean((AE(e) - e)^2) + bias"
    if bg_train:
        # Outlier exposure: the background's embeddings form a second bank that pulls scores down.
        bg = embed_paths(embedder, bg_train, opts.image_size, desc="embedding background")
        neg_bank = bg[greedy_coreset(bg, min(opts.bank_size, len(bg)), seed=opts.seed)]
        neg_train = nearest_similarity(originals, neg_bank)
        formula += " - w_neg * max_j <e, background_j>"
    weights = fit_weights(knn_train, err_train, neg_train=neg_train)
    scorer = build_scorer(embedder, bank, ae, weights, neg_bank=neg_bank)
    terms = {"formula": formula, "embedding": "L2-normalised ImageNet logits of the backbone",
             **weights.as_dict(), "background_bank": 0 if neg_bank is None else len(neg_bank)}
    return scorer, [float(v) for v in hist.history["loss"]], terms, len(bank)


def _fit_pixel_model(opts: TrainOptions, train: list[Path]):
    import keras

    from training.model import build_pixel_autoencoder
    from training.progress import EpochBar

    keras.utils.set_random_seed(opts.seed)
    ae, scorer = build_pixel_autoencoder(opts.image_size, seed=opts.seed)
    # 64 px images are small: the batches of one epoch fit easily (20,000 images = 245 MB).
    batches = list(iter_batches(train, opts.image_size))
    if opts.augment and len(train) <= MIRROR_LIMIT:
        batches += list(iter_batches(train, opts.image_size, mirror=True))
    x = np.concatenate(batches).astype(np.float32) / 255.0
    ae.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    hist = ae.fit(x, x, epochs=opts.epochs, batch_size=32, shuffle=True, verbose=0,
                  callbacks=[EpochBar(opts.epochs, "training pixel autoencoder")])
    terms = {"formula": "-mean((AE(x) - x)^2) over pixels in [0, 1]"}
    return scorer, [float(v) for v in hist.history["loss"]], terms, 0


def _log_split(opts: TrainOptions, train: list[Path], val: list[Path], bg: list[Path], groups: int | None) -> None:
    n = len(train) + len(val)
    shots = "" if groups is None or groups == n else f" ({groups} distinct shots: near-duplicates kept together)"
    log.info("%d %s images%s: %d train, %d validation; %d background", n, opts.label, shots, len(train), len(val),
             len(bg))


def train(opts: TrainOptions) -> Path:
    """Run the whole workstation job; returns the output directory."""
    opts = opts.resolved()
    assert opts.out is not None and opts.image_size is not None
    if opts.backbone not in DEFAULT_IMAGE_SIZE:
        raise DataError(f"--backbone {opts.backbone}: unknown; choose one of {', '.join(DEFAULT_IMAGE_SIZE)}")
    t0 = time.perf_counter()
    images: ImageSet = scan_folder(opts.images, what=f"{opts.label} images")
    bg_paths: list[Path] = []
    skipped = [str(p) for p, _ in images.skipped]
    if opts.background:
        bg = scan_folder(opts.background, min_images=4, what="background images")
        bg_paths = bg.paths
        skipped += [str(p) for p, _ in bg.skipped]
    import_tensorflow_quietly()  # only now: a bad folder fails in a second, not after TensorFlow's start-up
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # same folder + seed -> same model
    bg_train, bg_val = split(bg_paths, 0.5, opts.seed, min_val=2) if bg_paths else ([], [])

    if opts.backbone == "none":
        train_paths, val_paths = split(images.paths, opts.val_fraction, opts.seed)
        _log_split(opts, train_paths, val_paths, bg_paths, None)
        scorer, loss, terms, bank_size = _fit_pixel_model(opts, train_paths)
    else:
        import keras

        from training.embed import embed_paths
        from training.model import build_embedder
        from training.near_duplicates import group_near_duplicates

        keras.utils.set_random_seed(opts.seed)
        embedder = build_embedder(opts.backbone, opts.image_size)
        emb = embed_paths(embedder, images.paths, opts.image_size, desc=f"embedding {opts.label}")
        groups = group_near_duplicates(emb)
        train_paths, val_paths = split(images.paths, opts.val_fraction, opts.seed, groups=groups)
        _log_split(opts, train_paths, val_paths, bg_paths, len(set(groups.tolist())))
        index_of = {p: i for i, p in enumerate(images.paths)}
        originals = emb[[index_of[p] for p in train_paths]]
        scorer, loss, terms, bank_size = _fit_embedding_model(opts, embedder, train_paths, originals, bg_train)

    opts.out.mkdir(parents=True, exist_ok=True)
    scorer.save(opts.out / KERAS_MODEL)
    meta = TrainingMeta(
        label=opts.label, backbone=opts.backbone, image_size=opts.image_size, target_recall=opts.target_recall,
        seed=opts.seed, train=[str(p.resolve()) for p in train_paths], val=[str(p.resolve()) for p in val_paths],
        background_train=[str(p.resolve()) for p in bg_train], background_val=[str(p.resolve()) for p in bg_val],
        skipped=skipped, duplicates=len(images.duplicates), loss=loss, score_terms=terms, bank_size=bank_size,
        train_seconds=round(time.perf_counter() - t0, 1),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    meta.save(opts.out / TRAINING_META)

    from export.pipeline import export_model

    export_model(opts.out, keras_model=scorer)
    return opts.out
