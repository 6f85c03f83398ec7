"""`bank.npz`: what the feedback bank keeps on disk, and every version of it this device reads.

Version 2 (this one) holds three sets of embeddings (L2-normalised, float16), each with when and where from:
- `negatives`: views the user said were not the label (they push similar views down);
- `positives` and `pos_margins`: views the user said were the label but were missed, with the margin (score minus
  threshold) each had when it was taught (they lift similar views up);
- `scene` and `scene_margins`, `scene_user`: views known to be empty of the label, with their margins: the
  camera's own quiet frames the daemon keeps (`scene_user` false) and background photos the user taught
  (`teach --background`, true). They act on no score; they keep positives from lifting what they show.
Gates are not stored: they depend on the model in use and are recomputed at load.
Version 1 (before positives lifted scores) has no margins and no scene: its positives load as protection only
(a margin of NaN lifts nothing), its negatives as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from edge_oneclass.device.state_files import atomic_write

BANK_FILE = "bank.npz"
BANK_VERSION = 2


def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), np.float32)


@dataclass
class BankState:
    """The bank's contents; each set's arrays are row-aligned. Replaced, never changed in place, so a failed save
    can put the previous state back."""

    dim: int
    negatives: np.ndarray = field(default=None)      # type: ignore[assignment]
    neg_added: np.ndarray = field(default=None)      # type: ignore[assignment]
    neg_sources: tuple[str, ...] = ()
    positives: np.ndarray = field(default=None)      # type: ignore[assignment]
    pos_margins: np.ndarray = field(default=None)    # type: ignore[assignment]
    pos_added: np.ndarray = field(default=None)      # type: ignore[assignment]
    pos_sources: tuple[str, ...] = ()
    scene: np.ndarray = field(default=None)          # type: ignore[assignment]
    scene_margins: np.ndarray = field(default=None)  # type: ignore[assignment]
    scene_added: np.ndarray = field(default=None)    # type: ignore[assignment]
    scene_user: np.ndarray = field(default=None)     # type: ignore[assignment]
    scene_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, empty in (("negatives", _empty(self.dim)), ("positives", _empty(self.dim)),
                            ("scene", _empty(self.dim)), ("neg_added", np.zeros(0)), ("pos_margins", np.zeros(0)),
                            ("pos_added", np.zeros(0)), ("scene_margins", np.zeros(0)), ("scene_added", np.zeros(0)),
                            ("scene_user", np.zeros(0, bool))):
            if getattr(self, name) is None:
                setattr(self, name, empty)
        sets = (("negatives", "neg_added", "neg_sources"),
                ("positives", "pos_margins", "pos_added", "pos_sources"),
                ("scene", "scene_margins", "scene_added", "scene_user", "scene_sources"))
        for names in sets:
            lengths = {len(getattr(self, n)) for n in names}
            if len(lengths) != 1:
                raise ValueError(f"arrays of different lengths: {', '.join(names)}")

    def replace(self, **changes) -> BankState:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return BankState(**(values | changes))


def read_bank(path: Path) -> tuple[BankState, str, int]:
    """(state, model sha256 it was taught on, file version); ValueError/KeyError/OSError on an unreadable file."""
    with np.load(path, allow_pickle=False) as z:
        version = int(z["version"]) if "version" in z.files else 1
        if version > BANK_VERSION:
            raise ValueError(f"bank version {version} is newer than this device's ({BANK_VERSION})")
        dim = int(z["embedding_dim"])

        def emb(key: str) -> np.ndarray:
            return np.asarray(z[key], np.float32).reshape(-1, dim) if key in z.files else _empty(dim)

        def arr(key: str, n: int, fill: float, dtype=np.float64) -> np.ndarray:
            return np.asarray(z[key], dtype) if key in z.files else np.full(n, fill, dtype)

        def strings(key: str) -> tuple[str, ...]:
            return tuple(str(s) for s in z[key]) if key in z.files else ()

        positives, scene = emb("positives"), emb("scene")
        state = BankState(
            dim=dim, negatives=emb("negatives"), neg_added=arr("neg_added", 0, 0.0),
            neg_sources=strings("neg_sources"), positives=positives,
            pos_margins=arr("pos_margins", len(positives), np.nan), pos_added=arr("pos_added", len(positives), 0.0),
            pos_sources=strings("pos_sources"), scene=scene, scene_margins=arr("scene_margins", len(scene), 0.0),
            scene_added=arr("scene_added", len(scene), 0.0), scene_user=arr("scene_user", len(scene), False, bool),
            scene_sources=strings("scene_sources"))
        return state, str(z["model_sha256"]), version


def write_bank(path: Path, state: BankState, model_sha256: str) -> None:
    def write(f) -> None:
        np.savez(f, version=np.int64(BANK_VERSION), embedding_dim=np.int64(state.dim),
                 model_sha256=np.str_(model_sha256),
                 negatives=state.negatives.astype(np.float16), neg_added=state.neg_added,
                 neg_sources=np.array(state.neg_sources, dtype=np.str_),
                 positives=state.positives.astype(np.float16), pos_margins=state.pos_margins.astype(np.float32),
                 pos_added=state.pos_added, pos_sources=np.array(state.pos_sources, dtype=np.str_),
                 scene=state.scene.astype(np.float16), scene_margins=state.scene_margins.astype(np.float32),
                 scene_added=state.scene_added, scene_user=state.scene_user.astype(bool),
                 scene_sources=np.array(state.scene_sources, dtype=np.str_))

    # Only writers holding the bank's file lock get here: a temporary file left is a killed writer's.
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            pass
    atomic_write(path, write)
