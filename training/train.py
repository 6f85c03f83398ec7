"""`train-edge`: a folder of one label's photos in, a calibrated int8 model directory out."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_oneclass.device.errors import DataError
from edge_oneclass.device.model.coreset import greedy_coreset
from edge_oneclass.training.backbone.variants import VARIANTS
from edge_oneclass.training.dataset import ImageSet, iter_batches, scan_folder, split
from edge_oneclass.training.head import (
    Head,
    ScoreWeights,
    bank_rows,
    fit_autoencoder,
    fit_weights,
    group_folds,
    nearest_similarity,
    save_heads,
)
from edge_oneclass.training.tf_quiet import import_tensorflow_quietly

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = {**{name: v.image_size for name, v in VARIANTS.items()}, "none": 64}  # 224 / 240 / 260, 64
TRAINING_META = "training.json"
HEADS = "heads.npz"
MIRROR_LIMIT = 2000
KERAS_MODEL = "model.keras"
FOLDS = 5


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
    val: list[str]                          # only the pixel baseline holds out a validation split
    folds: list[int] = field(default_factory=list)   # embedding models: the out-of-fold id of each train photo
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


def _fit_head(ae_x: np.ndarray, candidates: np.ndarray, rows: np.ndarray, photos: np.ndarray, opts: TrainOptions,
              neg_bank: np.ndarray | None, weights: ScoreWeights | None, desc: str | None) -> tuple[Head, list[float]]:
    """Fit the autoencoder on `ae_x`; the bank is `candidates[rows]`. `weights=None` standardises the terms on
    `photos` (the original photos' embeddings): the final head. Fold heads reuse the final weights."""
    assert opts.epochs is not None
    layers, loss = fit_autoencoder(ae_x, opts.epochs, opts.seed, desc)
    head = Head(candidates[rows], layers, weights or ScoreWeights(1.0, 1.0, 0.0), neg_bank, rows)
    if weights is None:
        knn = nearest_similarity(photos, photos, exclude_self=True)
        neg = nearest_similarity(photos, neg_bank) if neg_bank is not None else None
        head.weights = fit_weights(knn, head.ae_error(photos), neg_train=neg)
    return head, loss


def _fit_embedding_model(opts: TrainOptions, embedder, paths: list[Path], emb: np.ndarray, folds: np.ndarray,
                         bg_train: list[Path]):
    """The final head on every photo, and one head per fold for out-of-fold calibration (at export).

    The bank holds each photo in colour and in grey (rows i and n + i); the autoencoder also learns the
    mirrored copies (up to MIRROR_LIMIT photos: past that they only double the time).
    """
    from edge_oneclass.training.embed import embed_paths
    from edge_oneclass.training.model import build_scorer
    from edge_oneclass.training.views import grey, grey_mirror, mirror

    n = len(paths)
    views = [emb]
    if opts.augment:
        views.append(embed_paths(embedder, paths, opts.image_size, "embedding grey copies", view=grey))
    candidates = np.concatenate(views)                 # bank candidates: colour, then grey
    if opts.augment and n <= MIRROR_LIMIT:
        views.append(embed_paths(embedder, paths, opts.image_size, "embedding mirrors", view=mirror))
        views.append(embed_paths(embedder, paths, opts.image_size, "embedding grey mirrors", view=grey_mirror))
    photo_of_view = np.tile(np.arange(n), len(views))
    ae_x = np.concatenate(views)
    neg_bank = None
    formula = "w_knn * max_i <e, bank_i> - w_ae * mean((AE(e) - e)^2) + bias"
    if bg_train:
        # Outlier exposure: the background's embeddings form a second bank that pulls scores down.
        bg = embed_paths(embedder, bg_train, opts.image_size, desc="embedding background")
        neg_bank = bg[greedy_coreset(bg, min(opts.bank_size, len(bg)), seed=opts.seed)]
        formula += " - w_neg * max_j <e, background_j>"
    rows = bank_rows(candidates, opts.bank_size, opts.seed)
    final, loss = _fit_head(ae_x, candidates, rows, emb, opts, neg_bank, None, "training autoencoder")
    fold_heads = []
    for k in tqdm(range(int(folds.max()) + 1), desc="out-of-fold heads", unit="fold", dynamic_ncols=True):
        # Same weights as the final head (the same scale); the bank is the final bank without the fold's photos.
        keep = folds[photo_of_view] != k
        fold_rows = rows[keep[: len(candidates)][rows]]
        head, _ = _fit_head(ae_x[keep], candidates, fold_rows, emb, opts, neg_bank, final.weights, None)
        fold_heads.append(head)
    scorer = build_scorer(embedder, final)
    terms = {"formula": formula, "embedding": "L2-normalised ImageNet logits of the backbone",
             "bank_views": "each photo in colour and in grey" if opts.augment else "each photo",
             **final.weights.as_dict(), "background_bank": 0 if neg_bank is None else len(neg_bank)}
    return scorer, final, fold_heads, loss, terms


def _fit_pixel_model(opts: TrainOptions, train: list[Path]):
    import keras

    from edge_oneclass.training.model import build_pixel_autoencoder
    from edge_oneclass.training.progress import EpochBar
    from edge_oneclass.training.views import mirror

    keras.utils.set_random_seed(opts.seed)
    ae, scorer = build_pixel_autoencoder(opts.image_size, seed=opts.seed)
    # 64 px images are small: the batches of one epoch fit easily (20,000 images = 245 MB).
    batches = list(iter_batches(train, opts.image_size))
    if opts.augment and len(train) <= MIRROR_LIMIT:
        batches += list(iter_batches(train, opts.image_size, view=mirror))
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
    """Fit the model and write model.keras, heads.npz and training.json into `opts.out`; returns it.

    The int8 export and the threshold calibration follow in `export.pipeline.export_model` (train-edge runs
    both), because the threshold is set on the int8 model's own scores.
    """
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

    opts.out.mkdir(parents=True, exist_ok=True)
    folds = np.zeros(0, np.int64)
    if opts.backbone == "none":
        train_paths, val_paths = split(images.paths, opts.val_fraction, opts.seed)
        _log_split(opts, train_paths, val_paths, bg_paths, None)
        scorer, loss, terms, bank_size = _fit_pixel_model(opts, train_paths)
    else:
        import keras

        from edge_oneclass.training.embed import embed_paths
        from edge_oneclass.training.model import build_embedder
        from edge_oneclass.training.near_duplicates import group_near_duplicates

        keras.utils.set_random_seed(opts.seed)
        embedder = build_embedder(opts.backbone, opts.image_size)
        train_paths, val_paths = list(images.paths), []
        emb = embed_paths(embedder, train_paths, opts.image_size, desc=f"embedding {opts.label}")
        groups = group_near_duplicates(emb)
        folds = group_folds(groups, min(FOLDS, len(set(groups.tolist()))), opts.seed)
        log.info("%d %s images (%d distinct shots), scored out of fold in %d folds; %d background",
                 len(train_paths), opts.label, len(set(groups.tolist())), int(folds.max()) + 1, len(bg_paths))
        scorer, final, fold_heads, loss, terms = _fit_embedding_model(opts, embedder, train_paths, emb, folds,
                                                                      bg_train)
        save_heads(opts.out / HEADS, final, folds, fold_heads)
        bank_size = len(final.bank)

    scorer.save(opts.out / KERAS_MODEL)
    meta = TrainingMeta(
        label=opts.label, backbone=opts.backbone, image_size=opts.image_size, target_recall=opts.target_recall,
        seed=opts.seed, train=[str(p.resolve()) for p in train_paths], val=[str(p.resolve()) for p in val_paths],
        folds=[int(f) for f in folds],
        background_train=[str(p.resolve()) for p in bg_train], background_val=[str(p.resolve()) for p in bg_val],
        skipped=skipped, duplicates=len(images.duplicates), loss=loss, score_terms=terms, bank_size=bank_size,
        train_seconds=round(time.perf_counter() - t0, 1),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    meta.save(opts.out / TRAINING_META)
    return opts.out
