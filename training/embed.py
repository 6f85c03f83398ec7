"""Streaming images through the frozen embedder, once per image, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_oneclass.training.dataset import iter_batches
from edge_oneclass.training.views import View


def embed_paths(embedder, paths: Sequence[Path], size: int, desc: str, batch_size: int = 32,
                view: View | None = None) -> np.ndarray:
    """(n, d) float32 embeddings of the images (or of `view(image)`, training/views.py); one batch in memory."""
    out: np.ndarray | None = None
    i = 0
    with tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True) as bar:
        for batch in iter_batches(paths, size, batch_size, view=view):
            e = np.asarray(embedder.predict_on_batch(batch.astype(np.float32)), dtype=np.float32)
            if out is None:
                out = np.empty((len(paths), e.shape[1]), np.float32)
            out[i:i + len(e)] = e
            i += len(e)
            bar.update(len(batch))
    assert out is not None and i == len(paths)
    return out
