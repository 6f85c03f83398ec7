"""Streaming images through the frozen embedder, once per image, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.dataset import iter_batches


def embed_paths(embedder, paths: Sequence[Path], size: int, desc: str, batch_size: int = 32,
                augment: bool = False) -> np.ndarray:
    """(n, d) float32 embeddings; only one batch of pixels is in memory at a time."""
    n_out = len(paths) * (2 if augment else 1)
    out: np.ndarray | None = None
    i = 0
    with tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True) as bar:
        for batch in iter_batches(paths, size, batch_size, augment=augment):
            e = np.asarray(embedder.predict_on_batch(batch.astype(np.float32)), dtype=np.float32)
            if out is None:
                out = np.empty((n_out, e.shape[1]), np.float32)
            out[i:i + len(e)] = e
            i += len(e)
            bar.update(len(batch) // (2 if augment else 1))
    assert out is not None and i == n_out
    return out
