"""Bounded memory banks: greedy k-center (PatchCore-style) selection keeps a bank small and spread out, so model
size and per-frame time stay flat however many images the user has (training's bank, the device's feedback bank)."""

from __future__ import annotations

import numpy as np


def greedy_coreset(x: np.ndarray, k: int, seed: int = 0, projection_dim: int = 128) -> np.ndarray:
    """Indices of `k` rows of `x` chosen by farthest-point sampling.

    Distances are computed on a random projection (Johnson-Lindenstrauss), as PatchCore does, so the
    selection costs O(n*k*projection_dim) instead of O(n*k*d).
    """
    n = len(x)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1] > projection_dim:
        proj = rng.standard_normal((x.shape[1], projection_dim)).astype(np.float32) / np.sqrt(projection_dim)
        z = x @ proj
    else:
        z = x
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    d = np.sum((z - z[chosen[0]]) ** 2, axis=1)
    for i in range(1, k):
        nxt = int(np.argmax(d))
        chosen[i] = nxt
        d = np.minimum(d, np.sum((z - z[nxt]) ** 2, axis=1))
    return np.sort(chosen)
