"""The feedback bank ("not a dog"): embeddings the user flagged, applied to every view's score at once, no retraining.

A *negative* is the embedding of a view the user said was a false alarm. Every scored view gets

    adjust(e) = -max(0, max_j w_j * (<e, n_j> - gate_j))

added to its score (embeddings are L2-normalised, so the dot product is the cosine similarity):

- `gate_j` is a similarity to `n_j` that none of the label's own photos reach: the largest similarity of any label
  photo embedding in `calibration.npz` (whole views and crop views) to `n_j`, plus `GATE_MARGIN`, and at least
  `GATE_MIN`. So a negative only acts on views that are closer to it than any photo of the label is, and the
  label's photos score exactly as before. Positives the user added ("missed") count as label photos here too.
- `w_j = max(w, spread / (1 - gate_j))`: a view identical to a flagged one is pushed down by `spread`, the label
  photos' own score spread over the threshold (p95 of `oof_whole` minus the threshold), whatever the model's score
  scale; views between the gate and a duplicate by a proportional part of it. `w` is the model's background
  weight (`score.w_neg`, or `0.5 * score.w_knn` when it was trained without background), the floor and the whole
  slope for a model without calibration.npz. Measured on the standard model, `w` alone (6.1) left the flagged
  frames themselves over the threshold (score scale: threshold -16.2, cat frames up to +10 above it), hence the
  spread (13.9 there, so w_j is about 35 at a typical gate of 0.6).

Safety: a negative that the label's photos come closer to than `GATE_MAX` cannot act without acting on the label
(the user flagged a real one, or a photo of one) and is refused. After every change the label's photos are
re-scored (`oof_whole + adjust(embedding_whole)`) and their recall at the calibrated threshold must stay at or
above `calibration.target_recall` (or the model's own recall if that is lower); negatives that would break it
are refused. With the default max-gate this holds by construction; the check guards a looser `gate_quantile`.

Positives ("missed") do not raise scores: they are kept for the next retraining (their JPEGs in `missed/`) and
raise the gates of nearby negatives, so a teach can never suppress what the user confirmed as the label.

The bank is bounded (`max_negatives`, default 512; a greedy k-centre coreset keeps it spread out when full), stored
atomically as `bank.npz` (`device.state_files.atomic_write`) and tied to the model's embedding: a bank of another
embedding size is refused with a message (`BankMismatch`). A corrupt file is renamed aside
(`bank.npz.corrupt-<time>`), and the bank starts empty. Writers (the daemon, `edge-device teach`) serialise on an
flock and merge with the file first; readers notice a changed file by its stat (`reload_if_changed`), so a teach
reaches a running daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_oneclass.device.errors import ConfigError
from edge_oneclass.device.model.calibration import CalibrationUnavailable, read_calibration
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.coreset import greedy_coreset
from edge_oneclass.device.state_files import atomic_write

log = logging.getLogger(__name__)

BANK_FILE = "bank.npz"
FRAMES_DIR = "frames"      # negatives' JPEGs: `train-edge --background DIR/frames` uses them at the next retrain
MISSED_DIR = "missed"      # positives' JPEGs: add them to the label's photos at the next retrain
BANK_VERSION = 1
GATE_MIN = 0.5             # a negative never acts on views less similar to it than this
GATE_MARGIN = 0.02         # gap kept between the closest label photo and where a negative starts to act
GATE_MAX = 0.98            # a negative whose gate would be higher is as close to a label photo as to itself: refused
DEFAULT_GATE = 0.9         # models without calibration.npz: no label photos to measure, act on near-duplicates only
DEFAULT_WEIGHT = 1.0
SPREAD_PERCENTILE = 95     # how far a duplicate of a negative is pushed: label photos' p95 score - threshold


class BankMismatch(ConfigError):
    """A bank file made for a model with another embedding (size): cannot be used with this model."""


@dataclass
class LabelReference:
    """The label's own photos from `calibration.npz`: what a teach must never suppress."""

    embeddings: np.ndarray        # (m, D) float32: whole views and crop views, for the gates
    whole: np.ndarray             # (n, D) float32: whole views, for the recall check
    oof_whole: np.ndarray         # (n,) out-of-fold scores on the threshold's scale
    threshold: float
    target_recall: float

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def load(cls, model_path: str | Path, card: ModelCard) -> LabelReference | None:
        """Read calibration.npz beside the model (sha256 checked); None with one log line if it is missing."""
        cal = card.calibration or {}
        try:
            z = read_calibration(model_path, card.calibration, required=("embedding_whole", "oof_whole"))
        except CalibrationUnavailable as exc:
            if exc.reason == "missing":
                log.warning("feedback: %s not found: the label's photos cannot be checked, negatives act only on "
                            "near-duplicates (similarity > %.2f)", exc.path, DEFAULT_GATE)
            elif exc.reason == "mismatch":
                log.warning("feedback: %s does not match model.json's sha256: ignored (copy it again with the model)",
                            exc.path)
            else:
                log.warning("feedback: %s unreadable (%s): ignored", exc.path, exc.detail)
            return None
        whole = np.asarray(z["embedding_whole"], np.float32)
        crop = np.asarray(z["embedding_crop"], np.float32) if "embedding_crop" in z else whole[:0]
        oof = np.asarray(z["oof_whole"], np.float32)
        return cls(np.concatenate([whole, crop]), whole, oof, float(cal.get("threshold", card.threshold)),
                   float(cal.get("target_recall", 0.95)))

    def spread(self) -> float | None:
        if not len(self.oof_whole):
            return None
        value = float(np.percentile(self.oof_whole, SPREAD_PERCENTILE)) - self.threshold
        return value if value > 0 else None

    def recall(self, adjust: np.ndarray | None = None) -> float:
        scores = self.oof_whole if adjust is None else self.oof_whole + adjust
        return float(np.mean(scores >= self.threshold)) if len(scores) else 1.0


def bank_weight(card: ModelCard) -> float:
    """How hard a negative pushes: the model's background weight, or half its kNN weight."""
    w_neg = float(card.score.get("w_neg") or 0.0)
    if w_neg > 0:
        return w_neg
    w_knn = float(card.score.get("w_knn") or 0.0)
    return 0.5 * w_knn if w_knn > 0 else DEFAULT_WEIGHT


@dataclass
class TeachResult:
    added: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)   # (source, reason)
    dropped: int = 0                                                 # removed by the coreset to stay bounded

    def summary(self, kind: str = "negative") -> str:
        parts = [f"{self.added} {kind}(s) added"]
        if self.refused:
            reasons = sorted({r for _, r in self.refused})
            parts.append(f"{len(self.refused)} refused ({'; '.join(reasons)})")
        if self.dropped:
            parts.append(f"{self.dropped} dropped to stay within the bound")
        return ", ".join(parts)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _as_stored(x: np.ndarray) -> np.ndarray:
    """Embeddings as the file keeps them (float16), back in float32: gates are computed on what is reloaded."""
    return _l2(x).astype(np.float16).astype(np.float32)


class FeedbackBank:
    def __init__(self, directory: str | Path, dim: int, model_sha256: str = "", weight: float = DEFAULT_WEIGHT,
                 reference: LabelReference | None = None, max_negatives: int = 512, max_positives: int = 512,
                 gate_quantile: float = 1.0) -> None:
        if reference is not None and reference.dim != dim:
            raise BankMismatch(f"calibration.npz has {reference.dim}-d embeddings but the model {dim}-d; copy "
                               f"calibration.npz from the same export as the model")
        self.dir = Path(directory)
        self.path = self.dir / BANK_FILE
        self.dim = int(dim)
        self.model_sha256 = model_sha256
        self.weight = float(weight)
        self.reference = reference
        self.max_negatives = int(max_negatives)
        self.max_positives = int(max_positives)
        self.gate_quantile = float(gate_quantile)
        # The label's own score spread over the threshold (p95 of its out-of-fold scores minus the threshold): a
        # view identical to a flagged one is pushed down by this much, whatever the model's score scale.
        self.spread = reference.spread() if reference is not None else None
        self._lock = threading.RLock()
        self.generation = 0
        self._stat: tuple[int, int, int] | None = None
        self._clear()

    def _clear(self) -> None:
        d = self.dim
        self.negatives = np.zeros((0, d), np.float32)
        self.gates = np.zeros(0, np.float32)
        self.neg_added = np.zeros(0, np.float64)
        self.neg_sources: list[str] = []
        self.positives = np.zeros((0, d), np.float32)
        self.pos_added = np.zeros(0, np.float64)
        self.pos_sources: list[str] = []
        self._activate()

    # -- scoring (the frame loop; lock-free: `_active` is swapped in one assignment) ---------------------

    def weights_for(self, gates: np.ndarray) -> np.ndarray:
        """Each negative's slope: the label's score spread over (1 - its gate), at least the model's weight."""
        if self.spread is None:
            return np.full(len(gates), self.weight, np.float32)
        return np.maximum(self.weight, self.spread / np.maximum(1.0 - gates, 0.02)).astype(np.float32)

    def _activate(self) -> None:
        self._active = (self.negatives, self.gates, self.weights_for(self.gates))
        self.generation += 1       # scores computed before this no longer hold (the frame scorer re-scores)

    def adjust(self, embedding: np.ndarray) -> float:
        negatives, gates, weights = self._active
        if not len(negatives):
            return 0.0
        excess = negatives @ embedding - gates
        worst = float(np.max(weights * excess))
        return -worst if worst > 0 else 0.0

    def adjust_many(self, embeddings: np.ndarray, negatives: np.ndarray | None = None,
                    gates: np.ndarray | None = None) -> np.ndarray:
        negatives = self.negatives if negatives is None else negatives
        gates = self.gates if gates is None else gates
        if not len(negatives) or not len(embeddings):
            return np.zeros(len(embeddings), np.float32)
        excess = (np.asarray(embeddings, np.float32) @ negatives.T - gates[None, :]) * self.weights_for(gates)[None, :]
        return (-np.maximum(np.max(excess, axis=1), 0.0)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.negatives)

    # -- gates and safety -----------------------------------------------------------------------------------

    def _protected(self) -> np.ndarray:
        refs = [self.positives]
        if self.reference is not None:
            refs.insert(0, self.reference.embeddings)
        return np.concatenate(refs) if refs else np.zeros((0, self.dim), np.float32)

    def _gates_for(self, candidates: np.ndarray) -> np.ndarray:
        protected = self._protected()
        if not len(protected):
            return np.full(len(candidates), DEFAULT_GATE if self.reference is None else GATE_MIN, np.float32)
        sims = protected @ candidates.T                                  # (m, k)
        near = np.quantile(sims, self.gate_quantile, axis=0) if self.gate_quantile < 1 else sims.max(axis=0)
        floor = GATE_MIN if self.reference is not None else DEFAULT_GATE
        return np.maximum(near + GATE_MARGIN, floor).astype(np.float32)

    def _recall_floor(self) -> float:
        ref = self.reference
        assert ref is not None
        return min(ref.target_recall, ref.recall())

    def _safe_subset(self, candidates: np.ndarray, gates: np.ndarray) -> np.ndarray:
        """Mask of candidates that keep the label photos' recall: refuse, worst first, those that break it."""
        keep = gates <= GATE_MAX
        ref = self.reference
        if ref is None or not len(ref.whole):
            return keep
        floor = self._recall_floor()
        while keep.any():
            negs = np.concatenate([self.negatives, candidates[keep]])
            g = np.concatenate([self.gates, gates[keep]])
            if ref.recall(self.adjust_many(ref.whole, negs, g)) >= floor:
                break
            # the kept candidate that pushes the label photos down the most goes first
            idx = np.flatnonzero(keep)
            harm = [-float(self.adjust_many(ref.whole, candidates[[i]], gates[[i]]).sum()) for i in idx]
            keep[idx[int(np.argmax(harm))]] = False
        return keep

    # -- changes -------------------------------------------------------------------------------------------

    def add_negatives(self, embeddings: np.ndarray, sources: Sequence[str], now: float | None = None) -> TeachResult:
        """Add negatives (refusing unsafe ones), bound the bank and save it; merges with the file first."""
        result = TeachResult()
        if not len(embeddings):
            return result
        cand = _as_stored(embeddings)
        self._check_dim(cand.shape[1])
        with self._changing():
            gates = self._gates_for(cand)
            keep = self._safe_subset(cand, gates)
            for i in np.flatnonzero(~keep):
                reason = ("as close to the label's own photos as to itself (a real one?)" if gates[i] > GATE_MAX
                          else f"would drop the label photos' recall below {self._recall_floor():.2f}")
                result.refused.append((sources[i], reason))
            if keep.any():
                t = time.time() if now is None else now
                self.negatives = np.concatenate([self.negatives, cand[keep]])
                self.gates = np.concatenate([self.gates, gates[keep]])
                self.neg_added = np.concatenate([self.neg_added, np.full(int(keep.sum()), t)])
                self.neg_sources = self.neg_sources + [s for s, k in zip(sources, keep, strict=True) if k]
                result.added = int(keep.sum())
                result.dropped = self._bound_negatives()
                self._save()
        return result

    def add_positives(self, embeddings: np.ndarray, sources: Sequence[str], now: float | None = None) -> TeachResult:
        """Keep "missed" views: for the next retraining, and as protected photos that raise nearby negatives' gates."""
        result = TeachResult()
        if not len(embeddings):
            return result
        cand = _as_stored(embeddings)
        self._check_dim(cand.shape[1])
        with self._changing():
            t = time.time() if now is None else now
            self.positives = np.concatenate([self.positives, cand])
            self.pos_added = np.concatenate([self.pos_added, np.full(len(cand), t)])
            self.pos_sources = self.pos_sources + list(sources)
            result.added = len(cand)
            if len(self.positives) > self.max_positives:   # the newest are kept
                extra = len(self.positives) - self.max_positives
                self.positives, self.pos_added = self.positives[extra:], self.pos_added[extra:]
                self.pos_sources = self.pos_sources[extra:]
                result.dropped = extra
            self._regate()
            self._save()
        return result

    def forget(self) -> tuple[int, int]:
        """Empty the bank (the kept JPEGs stay, for retraining); returns the (negatives, positives) removed."""
        with self._changing():
            counts = len(self.negatives), len(self.positives)
            self._clear()
            self._save()
        return counts

    _STATE = ("negatives", "gates", "neg_added", "neg_sources", "positives", "pos_added", "pos_sources")

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """One change of the bank: under both locks, merged with the file first; if it cannot be saved (a full
        disk), the bank in memory goes back to what it was, so what scores is always what is on disk."""
        with self._lock, self._file_lock():
            self.reload_if_changed()
            before = {name: getattr(self, name) for name in self._STATE}
            try:
                yield
            except BaseException:
                for name, value in before.items():
                    setattr(self, name, value)
                self._activate()
                raise

    def _check_dim(self, dim: int) -> None:
        if dim != self.dim:
            raise BankMismatch(f"embeddings of size {dim} do not fit this bank ({self.dim}); wrong model?")

    def _regate(self) -> None:
        """Recompute every negative's gate (the protected set changed) and drop those that became unsafe."""
        if not len(self.negatives):
            return
        self.gates = self._gates_for(self.negatives)
        keep = self.gates <= GATE_MAX
        if not keep.all():
            log.info("feedback: %d negative(s) removed: now as close to a confirmed %s view as to themselves",
                     int((~keep).sum()), "label")
            self._take_negatives(keep)
        self._activate()

    def _take_negatives(self, keep: np.ndarray) -> None:
        self.negatives, self.gates, self.neg_added = self.negatives[keep], self.gates[keep], self.neg_added[keep]
        self.neg_sources = [s for s, k in zip(self.neg_sources, keep, strict=True) if k]

    def _bound_negatives(self) -> int:
        n = len(self.negatives)
        if n > self.max_negatives:
            keep = np.zeros(n, bool)
            keep[greedy_coreset(self.negatives, self.max_negatives)] = True
            self._take_negatives(keep)
        self._activate()
        return n - len(self.negatives)

    # -- files -----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise writers across processes (the daemon and `edge-device teach`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _file_stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _save(self) -> None:
        def write(f) -> None:
            np.savez(f, version=np.int64(BANK_VERSION), embedding_dim=np.int64(self.dim),
                     model_sha256=np.str_(self.model_sha256),
                     negatives=self.negatives.astype(np.float16), gates=self.gates.astype(np.float32),
                     neg_added=self.neg_added, neg_sources=np.array(self.neg_sources, dtype=np.str_),
                     positives=self.positives.astype(np.float16), pos_added=self.pos_added,
                     pos_sources=np.array(self.pos_sources, dtype=np.str_))

        # Only writers holding the file lock get here: a temporary file left is a killed writer's, never a live one.
        for leftover in self.dir.glob(f".{BANK_FILE}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        atomic_write(self.path, write)
        self._stat = self._file_stat()

    def load(self) -> bool:
        """(Re)read the bank file; a missing file is an empty bank, a corrupt one is set aside. True if read."""
        with self._lock:
            self._stat = self._file_stat()
            if self._stat is None:
                self._clear()
                return False
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    dim = int(z["embedding_dim"])
                    sha = str(z["model_sha256"])
                    negatives = np.asarray(z["negatives"], np.float32).reshape(-1, dim)
                    neg_added = np.asarray(z["neg_added"], np.float64)
                    neg_sources = [str(s) for s in z["neg_sources"]]
                    positives = np.asarray(z["positives"], np.float32).reshape(-1, dim)
                    pos_added = np.asarray(z["pos_added"], np.float64)
                    pos_sources = [str(s) for s in z["pos_sources"]]
                if not (len(negatives) == len(neg_added) == len(neg_sources)
                        and len(positives) == len(pos_added) == len(pos_sources)):
                    raise ValueError("arrays of different lengths")
            except Exception as exc:  # noqa: BLE001 - any unreadable file: set aside, never a crash loop
                self._set_aside(exc)
                return False
            if dim != self.dim:
                raise BankMismatch(f"{self.path} was made for a model with {dim}-d embeddings but this model has "
                                   f"{self.dim}-d ones; clear it with `edge-device teach --forget` (the kept "
                                   f"JPEGs can be taught again) or move it away")
            if sha and self.model_sha256 and sha != self.model_sha256:
                log.info("feedback: %s was taught on model %s…, now %s…: its gates are recomputed for this model",
                         self.path, sha[:12], self.model_sha256[:12])
            self.negatives, self.neg_added, self.neg_sources = negatives, neg_added, neg_sources
            self.positives, self.pos_added, self.pos_sources = positives, pos_added, pos_sources
            self.gates = self._gates_for(negatives) if len(negatives) else np.zeros(0, np.float32)
            keep = self.gates <= GATE_MAX
            if not keep.all():
                log.warning("feedback: %d negative(s) in %s are too close to the label's photos for this model: "
                            "not used", int((~keep).sum()), self.path)
                self._take_negatives(keep)
            self._activate()
            return True

    def _set_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            where = f"renamed to {aside.name}"
        except OSError as err:
            where = f"could not be renamed ({err.strerror or err})"
        log.warning("feedback: %s is unreadable (%s: %s); %s, starting with an empty bank", self.path,
                    type(exc).__name__, exc, where)
        self._clear()
        self._stat = self._file_stat()

    def reload_if_changed(self) -> bool:
        """Reload when another process (`edge-device teach`) replaced the file; True if it was reloaded."""
        if self._file_stat() == self._stat:
            return False
        with self._lock:
            self.load()
        return True

    def describe(self) -> str:
        push = f"push {self.spread:.3g}" if self.spread is not None else f"weight {self.weight:.3g}"
        return (f"{len(self.negatives)} negative(s) (max {self.max_negatives}), {len(self.positives)} positive(s), "
                f"{push}, in {self.path}")

    @classmethod
    def open(cls, directory: str | Path, model_path: str | Path, card: ModelCard, dim: int,
             max_negatives: int = 512, gate_quantile: float = 1.0) -> FeedbackBank:
        """The bank for this model: calibration.npz read, the file loaded (BankMismatch if it is another model's)."""
        reference = LabelReference.load(model_path, card)
        bank = cls(directory, dim, card.sha256, bank_weight(card), reference, max_negatives,
                   gate_quantile=gate_quantile)
        bank.load()
        return bank


class FrameStore:
    """A bounded folder of JPEGs (oldest removed): the flagged frames, for `train-edge --background`."""

    def __init__(self, directory: str | Path, max_files: int) -> None:
        self.dir = Path(directory)
        self.max_files = int(max_files)
        self._n = 0

    def add(self, jpeg: bytes, prefix: str, t: float | None = None) -> Path | None:
        if self.max_files <= 0:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        t = time.time() if t is None else t
        self._n += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t))
        path = self.dir / f"{stamp}-{int((t % 1) * 1000):03d}-{os.getpid()}-{self._n:04d}-{prefix}.jpg"
        atomic_write(path, jpeg)
        self.prune()
        return path

    def prune(self) -> None:
        files = sorted(self.dir.glob("*.jpg"))
        for old in files[:max(0, len(files) - self.max_files)]:
            with contextlib.suppress(OSError):
                old.unlink()
