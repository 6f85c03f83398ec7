"""The score head on the frozen backbone's embeddings, as plain arrays: fitted here, scored in numpy for
calibration, and folded into the Keras graph by `training.model.build_scorer` for the device.

    score(e) = w_knn * max_i <e, bank_i>  -  w_ae * mean((AE(e) - e)^2)  [ - w_neg * max_j <e, neg_j> ]  +  bias

Out-of-fold heads: the label's photos are split into k folds (near-duplicate shots kept in one fold); each
fold head is fitted without its fold, with the final head's weights so every score is on the final scale,
and scores only its own fold. Every photo then has a score from a head that never saw it, and the threshold
is calibrated on all of them instead of on a small validation slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_oneclass.device.model.coreset import greedy_coreset

if TYPE_CHECKING:
    import keras

Layer = tuple[np.ndarray, np.ndarray]   # dense kernel (in, out), bias (out,)


@dataclass
class ScoreWeights:
    """Constants of the final combination; recorded in model.json so a score can be explained."""

    w_knn: float
    w_ae: float
    bias: float
    w_neg: float = 0.0  # outlier exposure: weight of the similarity to the nearest background embedding

    def as_dict(self) -> dict[str, float]:
        return {"w_knn": self.w_knn, "w_ae": self.w_ae, "w_neg": self.w_neg, "bias": self.bias}


@dataclass
class Head:
    bank: np.ndarray                       # (n, d) label embeddings
    ae: list[Layer]                        # ReLU between layers, linear output
    weights: ScoreWeights
    neg_bank: np.ndarray | None = None     # (m, d) background embeddings (outlier exposure)
    bank_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows of the photo list

    def ae_error(self, e: np.ndarray) -> np.ndarray:
        x = e
        for i, (kernel, bias) in enumerate(self.ae):
            x = x @ kernel + bias
            if i < len(self.ae) - 1:
                x = np.maximum(x, 0.0)
        return np.mean((x - e) ** 2, axis=1)

    def score(self, e: np.ndarray) -> np.ndarray:
        e = np.atleast_2d(np.asarray(e, np.float32))
        w = self.weights
        s = w.w_knn * nearest_similarity(e, self.bank) - w.w_ae * self.ae_error(e) + w.bias
        if self.neg_bank is not None and len(self.neg_bank):
            s -= w.w_neg * nearest_similarity(e, self.neg_bank)
        return s


def nearest_similarity(e: np.ndarray, bank: np.ndarray, exclude_self: bool = False, block: int = 2048) -> np.ndarray:
    """max_i <e, b_i> for each row of e; with exclude_self, rows of e are the bank and self-matches are skipped.

    Computed in row blocks so memory stays O(block * len(bank)), not O(n^2), for big folders.
    """
    out = np.empty(len(e), np.float32)
    for start in range(0, len(e), block):
        sims = e[start:start + block] @ bank.T
        if exclude_self:
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf
        out[start:start + block] = sims.max(axis=1)
    return out


# Outlier exposure strength relative to the label's own similarity term. In a float experiment on the dev
# split's embeddings (kNN term only, 150 random no-dog photos as background, the other 439 as test),
# 0.25 / 0.5 / 1.0 gave AUROC 0.9979 / 0.9983 / 0.9974 (no background: 0.9947), so the middle value is the default.
NEG_WEIGHT = 0.5


def fit_weights(knn_train: np.ndarray, err_train: np.ndarray, neg_train: np.ndarray | None = None) -> ScoreWeights:
    """Standardise each term on the training images (leave-one-out similarity, reconstruction error)."""
    sk = float(np.std(knn_train)) or 1.0
    se = float(np.std(err_train)) or 1.0
    w_knn, w_ae = 1.0 / sk, 1.0 / se
    w_neg = NEG_WEIGHT * w_knn if neg_train is not None else 0.0
    neg_mean = float(np.mean(neg_train)) if neg_train is not None else 0.0
    bias = -(w_knn * float(np.mean(knn_train)) - w_ae * float(np.mean(err_train)) - w_neg * neg_mean)
    return ScoreWeights(w_knn=w_knn, w_ae=w_ae, bias=bias, w_neg=w_neg)


def build_embedding_autoencoder(dim: int, hidden: int = 256, code: int = 32, seed: int = 0) -> keras.Model:
    """Small dense autoencoder over embeddings; trained on the label only. Keras is imported here, on use."""
    import keras

    init = keras.initializers.GlorotUniform(seed=seed)
    inp = keras.Input((dim,), name="embedding_in")
    x = keras.layers.Dense(hidden, activation="relu", kernel_initializer=init, name="ae_enc1")(inp)
    x = keras.layers.Dense(code, activation="relu", kernel_initializer=init, name="ae_code")(x)
    x = keras.layers.Dense(hidden, activation="relu", kernel_initializer=init, name="ae_dec1")(x)
    out = keras.layers.Dense(dim, kernel_initializer=init, name="ae_out")(x)
    return keras.Model(inp, out, name="embedding_autoencoder")


def fit_autoencoder(x: np.ndarray, epochs: int, seed: int, desc: str | None = None) -> tuple[list[Layer], list[float]]:
    """Train the small dense autoencoder on embeddings; returns its layers and the loss per epoch."""
    import keras

    keras.utils.set_random_seed(seed)
    ae = build_embedding_autoencoder(x.shape[1], seed=seed)
    # Same maths as one step per call; fewer Python round trips make a fit about 1.4x faster on a CPU.
    ae.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", steps_per_execution=64)
    callbacks = []
    if desc is not None:
        from edge_oneclass.training.progress import EpochBar

        callbacks.append(EpochBar(epochs, desc))
    hist = ae.fit(x, x, epochs=epochs, batch_size=32, shuffle=True, verbose=0, callbacks=callbacks)
    layers = [(np.asarray(k, np.float32), np.asarray(b, np.float32))
              for k, b in (layer.get_weights() for layer in ae.layers if layer.get_weights())]
    return layers, [float(v) for v in hist.history["loss"]]


def bank_rows(emb: np.ndarray, bank_size: int, seed: int) -> np.ndarray:
    """Rows of `emb` kept in the memory bank: all of them, or a greedy k-centre coreset when there are more."""
    return greedy_coreset(emb, min(bank_size, len(emb)), seed=seed)


def group_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold id per photo: whole near-duplicate groups per fold, folds as equal in size as groups allow."""
    rng = np.random.default_rng(seed)
    ids, sizes = np.unique(groups, return_counts=True)
    order = rng.permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]   # biggest groups first, ties in random order
    load = np.zeros(k, np.int64)
    fold_of_group: dict[int, int] = {}
    for gi in order:
        f = int(np.argmin(load))
        fold_of_group[int(ids[gi])] = f
        load[f] += sizes[gi]
    return np.array([fold_of_group[int(g)] for g in groups], np.int64)


def save_heads(path: Path, final: Head, folds: np.ndarray, fold_heads: list[Head]) -> None:
    """Everything export needs to score the label's photos out of fold: the final head and one per fold."""
    arrays: dict[str, np.ndarray] = {"folds": folds}

    def put(prefix: str, head: Head) -> None:
        arrays[f"{prefix}bank_rows"] = head.bank_rows
        arrays[f"{prefix}weights"] = np.array([head.weights.w_knn, head.weights.w_ae, head.weights.bias,
                                               head.weights.w_neg], np.float64)
        for i, (kernel, bias) in enumerate(head.ae):
            arrays[f"{prefix}ae{i}_kernel"], arrays[f"{prefix}ae{i}_bias"] = kernel, bias
        if head.neg_bank is not None:
            arrays[f"{prefix}neg_bank"] = head.neg_bank

    put("final_", final)
    arrays["final_bank"] = final.bank
    for k, head in enumerate(fold_heads):
        put(f"fold{k}_", head)
    np.savez_compressed(path, **arrays)


def load_heads(path: Path) -> tuple[Head, np.ndarray, list[Head]]:
    """The heads `save_heads` wrote; fold banks are the final bank minus the fold's own photos."""
    data = np.load(path)
    final_bank = data["final_bank"]
    final_rows = data["final_bank_rows"]

    def get(prefix: str) -> Head:
        w = data[f"{prefix}weights"]
        ae: list[Layer] = []
        while f"{prefix}ae{len(ae)}_kernel" in data:
            ae.append((data[f"{prefix}ae{len(ae)}_kernel"], data[f"{prefix}ae{len(ae)}_bias"]))
        rows = data[f"{prefix}bank_rows"]
        keep = np.isin(final_rows, rows)
        neg = data[f"{prefix}neg_bank"] if f"{prefix}neg_bank" in data else None
        return Head(final_bank[keep], ae, ScoreWeights(float(w[0]), float(w[1]), float(w[2]), float(w[3])), neg, rows)

    folds = data["folds"]
    fold_heads = []
    while f"fold{len(fold_heads)}_weights" in data:
        fold_heads.append(get(f"fold{len(fold_heads)}_"))
    return get("final_"), folds, fold_heads
