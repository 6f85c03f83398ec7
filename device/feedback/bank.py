"""The feedback bank: what the user flagged, applied to every view's score at once, no retraining.

Two sides act on scores (embeddings are L2-normalised, so a dot product is a cosine similarity):

    adjust(e) = lift(e) - push(e)
    push(e) = max(0, max_j w_j * (<e, n_j> - g_j))                       negatives: "not a dog"
    lift(e) = max(0, max_k L_k * min(1, (<e, p_k> - h_k) / (top_k - h_k)))    positives: "missed", "this is my dog"

Negatives (a false alarm's views):
- `g_j` is a similarity to `n_j` that none of the label's own photos reach: the largest similarity of any label
  photo in `calibration.npz` (whole and crop views) or any taught positive to `n_j`, plus `GATE_MARGIN`, at least
  `GATE_MIN`. So a negative only acts on views closer to it than any photo of the label is, and the label's
  photos score exactly as before. A negative whose gate would exceed `GATE_MAX` is as close to a label photo as to
  itself (the user flagged a real one) and is refused; one that would still drop the label photos' out-of-fold
  recall below the calibrated target is refused too.
- `w_j = max(w, spread / (1 - g_j))`: a view identical to a flagged one is pushed down by `spread`, the label
  photos' own score spread over the threshold (p95 of `oof_whole` minus the threshold), whatever the model's scale.

Positives (the views of a missed dog, or photos taught with `teach --is`), symmetric on the label's own scale:
- `L_k = median label margin - m_k`, where `m_k` is the view's margin (score minus threshold) when it was taught
  and the median label margin is where the typical label photo scores (out of fold): a view as close to the taught
  one as two frames of one fixed camera a few seconds apart (`SAME_VIEW`, cosine 0.95) is lifted to score like a
  typical label photo; views between the gate `h_k` and that by a proportional part of it (`top_k` = `SAME_VIEW`,
  or halfway from the gate to 1 when the gate is above it). Capped at `LIFT_CAP` spreads.
- `h_k`, safe by construction: at least `POS_GATE_MIN` (0.85: unrelated photos' nearest neighbour among 589 dev
  no-dog photos has a median cosine of 0.72); above every flagged negative's similarity plus `GATE_MARGIN` (a
  positive never acts on what the user said is not the label); and high enough that no known empty view, the
  camera's own quiet frames and the user's background photos (`scene`, kept with their margins), is lifted to
  within `POS_SAFETY` spreads of the threshold. A positive is thereby shrunk; one whose gate would exceed
  `GATE_MAX` is refused, with the reason naming what it looks like.
- The user's word wins over the reservoir: a dog lying still that was never detected is "quiet" too. The daemon's
  own quiet frames the flag contradicts (the controller names those kept while the scene stayed as it is now) and
  those as close to a taught positive as `QUIET_YIELD` leave the reservoir instead of blocking it, and a new quiet
  frame that close to a positive is not kept. The user's background photos never yield. The similarity alone is
  not enough: two noisy frames of one still scene are 0.96-0.99 apart in cosine, depending on the model's last
  bits, so a still dog's own quiet frames could block its flag on one machine and not on another.

Changes merge with the file under an flock (the daemon and `edge-device teach` both write), are saved atomically
(`bank_file`), and a change that cannot be saved is undone in memory too. A corrupt file is set aside
(`bank.npz.corrupt-<time>`); a bank of another embedding size is refused (`BankMismatch`).
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

from edge_oneclass.device.feedback.bank_file import BANK_FILE, BankState, read_bank, write_bank
from edge_oneclass.device.feedback.reference import (
    DEFAULT_GATE,
    DEFAULT_WEIGHT,
    BankMismatch,
    LabelReference,
    bank_weight,
)
from edge_oneclass.device.model.card import ModelCard
from edge_oneclass.device.model.coreset import greedy_coreset

log = logging.getLogger(__name__)

__all__ = ["BANK_FILE", "BankMismatch", "FeedbackBank", "LabelReference", "TeachResult", "bank_weight"]

GATE_MIN = 0.5             # a negative never acts on views less similar to it than this
GATE_MARGIN = 0.02         # gap kept between the closest protected view and where a negative or positive acts
GATE_MAX = 0.98            # a gate higher than this: as close to the other side as to itself: refused
POS_GATE_MIN = 0.85        # a positive never acts on views less similar to it than this
SAME_VIEW = 0.95           # two frames of one fixed camera seconds apart: lifted all the way
POS_SAFETY = 0.25          # known empty views stay at least this many spreads under the threshold
LIFT_CAP = 4.0             # a positive lifts by at most this many spreads
QUIET_YIELD = GATE_MAX     # the daemon's quiet frames this close to a taught positive give way to it


@dataclass
class TeachResult:
    added: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)   # (source, reason)
    dropped: int = 0                                                 # removed to stay within the bound
    yielded: int = 0                                                 # quiet frames that gave way to positives
    shrunk: int = 0                                                  # positives whose reach known empty views cut

    def summary(self, kind: str = "negative") -> str:
        parts = [f"{self.added} {kind}(s) added"]
        if self.shrunk:
            parts.append(f"{self.shrunk} of them kept off the camera's empty views")
        if self.refused:
            reasons = sorted({r for _, r in self.refused})
            parts.append(f"{len(self.refused)} refused ({'; '.join(reasons)})")
        if self.yielded:
            parts.append(f"{self.yielded} quiet frame(s) like them left the reservoir (your word wins)")
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


def _ramp_top(gates: np.ndarray) -> np.ndarray:
    return np.maximum(SAME_VIEW, (1.0 + gates) / 2.0)


def _ramp(sims: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """0 at or below the gate, 1 from `top` up, linear between."""
    top = _ramp_top(gates)
    return np.clip((sims - gates) / np.maximum(top - gates, 1e-6), 0.0, 1.0)


class FeedbackBank:
    def __init__(self, directory: str | Path, dim: int, model_sha256: str = "", weight: float = DEFAULT_WEIGHT,
                 reference: LabelReference | None = None, max_negatives: int = 512, max_positives: int = 512,
                 max_quiet: int = 64, max_background: int = 256, gate_quantile: float = 1.0) -> None:
        if reference is not None and reference.dim != dim:
            raise BankMismatch(f"calibration.npz has {reference.dim}-d embeddings but the model {dim}-d; copy "
                               f"calibration.npz from the same export as the model")
        self.dir = Path(directory)
        self.path = self.dir / BANK_FILE
        self.dim = int(dim)
        self.model_sha256 = model_sha256
        self.weight = float(weight)
        self.reference = reference
        self.max_negatives, self.max_positives = int(max_negatives), int(max_positives)
        self.max_quiet, self.max_background = int(max_quiet), int(max_background)
        self.gate_quantile = float(gate_quantile)
        # The label's own scale: how far a duplicate of a negative is pushed (p95 label score - threshold), and
        # where a positive lifts a view to (the median label photo's margin).
        self.spread = reference.spread() if reference is not None else None
        self.target = reference.median_margin() if reference is not None else None
        self._lock = threading.RLock()
        self.generation = 0
        self._stat: tuple[int, int, int] | None = None
        self._set(BankState(self.dim))

    # -- the state and its derived gates ------------------------------------------------------------------

    def _set(self, state: BankState) -> None:
        """Install `state`: every gate and weight recomputed for this model, then swapped in for scoring."""
        self.state = state
        self.gates = self._neg_gates(state.negatives, state.positives)
        self.pos_gates, self.pos_lifts = self._pos_gates(state.positives, state.pos_margins, state)
        self._activate()

    def _activate(self) -> None:
        s = self.state
        push_w = self.weights_for(self.gates)
        acting = self.pos_lifts > 0
        self._active = (s.negatives, self.gates, push_w,
                        s.positives[acting], self.pos_gates[acting], self.pos_lifts[acting])
        self.generation += 1       # scores computed before this no longer hold (the frame scorer re-scores)

    # read-only views of the state, under the names the rest of the device and the tests use
    negatives = property(lambda self: self.state.negatives)
    neg_sources = property(lambda self: list(self.state.neg_sources))
    neg_added = property(lambda self: self.state.neg_added)
    positives = property(lambda self: self.state.positives)
    pos_sources = property(lambda self: list(self.state.pos_sources))
    pos_added = property(lambda self: self.state.pos_added)
    pos_margins = property(lambda self: self.state.pos_margins)
    scene = property(lambda self: self.state.scene)

    def __len__(self) -> int:
        return len(self.state.negatives)

    # -- scoring (the frame loop; lock-free: `_active` is swapped in one assignment) ---------------------

    def weights_for(self, gates: np.ndarray) -> np.ndarray:
        """Each negative's slope: the label's score spread over (1 - its gate), at least the model's weight."""
        if self.spread is None:
            return np.full(len(gates), self.weight, np.float32)
        return np.maximum(self.weight, self.spread / np.maximum(1.0 - gates, 0.02)).astype(np.float32)

    def adjust(self, embedding: np.ndarray) -> float:
        negatives, gates, weights, positives, pos_gates, lifts = self._active
        if not (len(negatives) or len(positives)):
            return 0.0
        # an int8 model's embedding is unit length only to within its quantisation: compare directions, as the
        # stored views (normalised) are compared
        embedding = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
        out = 0.0
        if len(negatives):
            worst = float(np.max(weights * (negatives @ embedding - gates)))
            out -= max(worst, 0.0)
        if len(positives):
            out += float(np.max(lifts * _ramp(positives @ embedding, pos_gates)))
        return out

    def adjust_many(self, embeddings: np.ndarray, negatives: np.ndarray | None = None,
                    gates: np.ndarray | None = None) -> np.ndarray:
        """The negatives' push on many views (the label photos' recall check), as `adjust` would apply it."""
        negatives = self.state.negatives if negatives is None else negatives
        gates = self.gates if gates is None else gates
        if not len(negatives) or not len(embeddings):
            return np.zeros(len(embeddings), np.float32)
        excess = (_l2(embeddings) @ negatives.T - gates[None, :]) * self.weights_for(gates)[None, :]
        return (-np.maximum(np.max(excess, axis=1), 0.0)).astype(np.float32)

    def lift_many(self, embeddings: np.ndarray, positives: np.ndarray, gates: np.ndarray,
                  lifts: np.ndarray) -> np.ndarray:
        if not len(positives) or not len(embeddings):
            return np.zeros(len(embeddings), np.float32)
        return np.max(lifts[None, :] * _ramp(_l2(embeddings) @ positives.T, gates[None, :]),
                      axis=1).astype(np.float32)

    # -- gates ------------------------------------------------------------------------------------------------

    def _neg_gates(self, negatives: np.ndarray, positives: np.ndarray) -> np.ndarray:
        """Each negative's gate: above every label photo and taught positive (see the module docstring)."""
        if not len(negatives):
            return np.zeros(0, np.float32)
        refs = [r for r in ((self.reference.embeddings if self.reference is not None else None), positives)
                if r is not None and len(r)]
        floor = GATE_MIN if self.reference is not None else DEFAULT_GATE
        if not refs:
            return np.full(len(negatives), floor, np.float32)
        sims = np.concatenate(refs) @ negatives.T
        near = np.quantile(sims, self.gate_quantile, axis=0) if self.gate_quantile < 1 else sims.max(axis=0)
        return np.maximum(near + GATE_MARGIN, floor).astype(np.float32)

    def _lifts(self, margins: np.ndarray) -> np.ndarray:
        """How far each positive lifts a view as close to it as `SAME_VIEW`: to the typical label photo's margin.
        No lift without calibration.npz, or for positives of a version-1 bank (no margin: protection only)."""
        if self.target is None or self.spread is None:
            return np.zeros(len(margins), np.float32)
        lifts = np.clip(self.target - np.nan_to_num(np.asarray(margins, np.float64), nan=self.target), 0.0,
                        LIFT_CAP * self.spread)
        return lifts.astype(np.float32)

    def _pos_base_gates(self, positives: np.ndarray, state: BankState) -> np.ndarray:
        """Positives' gates before the empty views: the floor, and above every flagged negative."""
        gates = np.full(len(positives), POS_GATE_MIN, np.float64)
        if len(positives) and len(state.negatives):
            gates = np.maximum(gates, (state.negatives @ positives.T).max(axis=0) + GATE_MARGIN)
        return gates

    def _pos_gates(self, positives: np.ndarray, margins: np.ndarray, state: BankState
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(gates, lifts) of positives against what the device knows is not the label; a gate above GATE_MAX
        means the positive cannot act safely (its lift is then 0)."""
        lifts = self._lifts(margins)
        gates = self._pos_base_gates(positives, state)
        if len(positives) and len(state.scene) and self.spread is not None:
            sims = state.scene @ positives.T                                   # (scene, positives)
            # the lift each empty view may take: none for one already within POS_SAFETY spreads of the threshold
            # (a camera whose empty scene scores close to it), which a gate above its similarity still leaves
            allowed = np.maximum(-POS_SAFETY * self.spread - state.scene_margins, 0.0)
            for k in np.flatnonzero(lifts > 0):
                gates[k] = self._lowest_safe_gate(sims[:, k], allowed, float(lifts[k]), float(gates[k]))
        lifts = np.where(gates > GATE_MAX, 0.0, lifts).astype(np.float32)
        return gates.astype(np.float32), lifts

    @staticmethod
    def _lowest_safe_gate(sims: np.ndarray, allowed: np.ndarray, lift: float, start: float) -> float:
        """The lowest gate from `start` up at which no known empty view gets more lift than it may take."""
        for gate in np.arange(start, GATE_MAX + 0.0015, 0.001):
            if np.all(lift * _ramp(sims, np.float64(gate)) <= allowed):
                return float(gate)
        return 1.0

    def _why_refused(self, positive: np.ndarray, state: BankState) -> str:
        """What a refused positive is as close to as to itself."""
        best, what = -1.0, "the camera's empty views"
        if len(state.negatives):
            i = int(np.argmax(state.negatives @ positive))
            best, what = float(state.negatives[i] @ positive), f"a view flagged not the label ({state.neg_sources[i]})"
        if len(state.scene):
            j = int(np.argmax(state.scene @ positive))
            if float(state.scene[j] @ positive) >= best:
                kind = "a background photo you taught" if state.scene_user[j] else "the camera's empty scene"
                what = f"{kind} ({state.scene_sources[j]})"
        return (f"as close to {what} as to itself; a subject this small in the whole view cannot be told from it: "
                f"turn on the wide-view crops ([detect] regions, sweep)")

    # -- the label photos' recall (negatives) ----------------------------------------------------------------

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
            negs = np.concatenate([self.state.negatives, candidates[keep]])
            g = np.concatenate([self.gates, gates[keep]])
            if ref.recall(self.adjust_many(ref.whole, negs, g)) >= floor:
                break
            idx = np.flatnonzero(keep)      # the kept candidate that pushes the label photos down the most goes first
            harm = [-float(self.adjust_many(ref.whole, candidates[[i]], gates[[i]]).sum()) for i in idx]
            keep[idx[int(np.argmax(harm))]] = False
        return keep

    # -- changes -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """One change of the bank: under both locks, merged with the file first; if it cannot be saved (a full
        disk), the bank in memory goes back to what it was, so what scores is always what is on disk."""
        with self._lock, self._file_lock():
            self.reload_if_changed()
            before = self.state
            try:
                yield
                write_bank(self.path, self.state, self.model_sha256)
                self._stat = self._file_stat()
            except BaseException:
                self._set(before)
                raise

    def add_negatives(self, embeddings: np.ndarray, sources: Sequence[str], now: float | None = None) -> TeachResult:
        """Add negatives (refusing unsafe ones), bound the bank and save it; merges with the file first."""
        result = TeachResult()
        if not len(embeddings):
            return result
        cand = self._checked(embeddings)
        with self._changing():
            s = self.state
            gates = self._neg_gates(cand, s.positives)
            keep = self._safe_subset(cand, gates)
            for i in np.flatnonzero(~keep):
                reason = ("as close to the label's own photos (or a view you taught is the label) as to itself "
                          "(a real one?)" if gates[i] > GATE_MAX
                          else f"would drop the label photos' recall below {self._recall_floor():.2f}")
                result.refused.append((sources[i], reason))
            if keep.any():
                t = time.time() if now is None else now
                negatives = np.concatenate([s.negatives, cand[keep]])
                added = np.concatenate([s.neg_added, np.full(int(keep.sum()), t)])
                srcs = s.neg_sources + tuple(src for src, k in zip(sources, keep, strict=True) if k)
                result.added = int(keep.sum())
                if len(negatives) > self.max_negatives:
                    rows = np.sort(greedy_coreset(negatives, self.max_negatives))
                    result.dropped = len(negatives) - len(rows)
                    negatives, added, srcs = negatives[rows], added[rows], tuple(srcs[i] for i in rows)
                self._set(s.replace(negatives=negatives, neg_added=added, neg_sources=srcs))
        return result

    def add_positives(self, embeddings: np.ndarray, margins: Sequence[float], sources: Sequence[str],
                      now: float | None = None, contradicted: Sequence[str] = ()) -> TeachResult:
        """Add views the user said are the label (`margins`: each view's score minus its threshold when taught):
        shrunk or refused where they would lift a known empty view, saved; the newest `max_positives` are kept.
        `contradicted`: sources of the daemon's quiet frames the user's word overrules (kept of the very scene
        the user now says shows the label)."""
        result = TeachResult()
        if not len(embeddings):
            return result
        cand = self._checked(embeddings)
        margins = np.asarray(margins, np.float64)
        with self._changing():
            s = self.state
            # the user's word wins over the daemon's own quiet frames: those it contradicts or like the views leave
            yielding = None
            if len(s.scene):
                overruled = set(contradicted)
                named = np.array([src in overruled for src in s.scene_sources], bool)
                yielding = (~s.scene_user) & (named | ((s.scene @ cand.T).max(axis=1) >= QUIET_YIELD))
            if yielding is not None and yielding.any():
                result.yielded = int(yielding.sum())
                s = self._scene_rows(s, ~yielding)
            gates, lifts = self._pos_gates(cand, margins, s)
            should_lift = self._lifts(margins) > 0
            keep = ~(should_lift & (lifts <= 0))           # a positive that should lift but cannot act safely
            result.shrunk = int(np.sum(keep & should_lift & (gates > self._pos_base_gates(cand, s) + 1e-6)))
            for i in np.flatnonzero(~keep):
                result.refused.append((sources[i], self._why_refused(cand[i], s)))
            if keep.any():
                t = time.time() if now is None else now
                positives = np.concatenate([s.positives, cand[keep]])
                pos_margins = np.concatenate([s.pos_margins, margins[keep]])
                added = np.concatenate([s.pos_added, np.full(int(keep.sum()), t)])
                srcs = s.pos_sources + tuple(src for src, k in zip(sources, keep, strict=True) if k)
                result.added = int(keep.sum())
                extra = max(0, len(positives) - self.max_positives)   # the newest are kept
                result.dropped = extra
                s = s.replace(positives=positives[extra:], pos_margins=pos_margins[extra:], pos_added=added[extra:],
                              pos_sources=srcs[extra:])
            self._set(s)
            self._drop_unsafe_negatives()
        return result

    def add_scene(self, embeddings: np.ndarray, margins: Sequence[float], sources: Sequence[str],
                  user: bool = False, now: float | None = None) -> TeachResult:
        """Keep views known to show no label: the daemon's quiet frames (`user` False: a bounded reservoir kept
        spread out by a k-centre coreset; those as close to a taught positive as `QUIET_YIELD` are not kept) or
        the user's background photos (`teach --background`). Positives' gates rise to keep them unlifted."""
        result = TeachResult()
        if not len(embeddings):
            return result
        cand = self._checked(embeddings)
        margins = np.asarray(margins, np.float64)
        with self._changing():
            s = self.state
            keep = np.ones(len(cand), bool)
            if not user and len(s.positives):
                keep = (s.positives @ cand.T).max(axis=0) < QUIET_YIELD
                result.refused += [(src, "looks like a view you said is the label")
                                   for src, k in zip(sources, keep, strict=True) if not k]
            if keep.any():
                t = time.time() if now is None else now
                n = int(keep.sum())
                s = s.replace(scene=np.concatenate([s.scene, cand[keep]]),
                              scene_margins=np.concatenate([s.scene_margins, margins[keep]]),
                              scene_added=np.concatenate([s.scene_added, np.full(n, t)]),
                              scene_user=np.concatenate([s.scene_user, np.full(n, user)]),
                              scene_sources=s.scene_sources + tuple(x for x, k in zip(sources, keep, strict=True)
                                                                    if k))
                result.added = n
                bound = self.max_background if user else self.max_quiet
                rows = np.flatnonzero(s.scene_user == user)          # this kind's rows; the other kind stays
                if len(rows) > bound:
                    keep_rows = s.scene_user != user
                    keep_rows[rows[greedy_coreset(s.scene[rows], bound)]] = True
                    result.dropped = len(rows) - bound
                    s = self._scene_rows(s, keep_rows)
            self._set(s)
        return result

    @staticmethod
    def _scene_rows(s: BankState, mask: np.ndarray) -> BankState:
        return s.replace(scene=s.scene[mask], scene_margins=s.scene_margins[mask], scene_added=s.scene_added[mask],
                         scene_user=s.scene_user[mask],
                         scene_sources=tuple(x for x, k in zip(s.scene_sources, mask, strict=True) if k))

    def _drop_unsafe_negatives(self) -> None:
        """After positives changed: negatives now as close to a confirmed view as to themselves go."""
        keep = self.gates <= GATE_MAX
        if keep.all():
            return
        log.info("feedback: %d negative(s) removed: now as close to a view you said is the label as to themselves",
                 int((~keep).sum()))
        s = self.state
        self._set(s.replace(negatives=s.negatives[keep], neg_added=s.neg_added[keep],
                            neg_sources=tuple(x for x, k in zip(s.neg_sources, keep, strict=True) if k)))

    def forget(self, which: str = "all") -> tuple[int, int]:
        """Empty one side (`negatives`, `positives`) or everything (`all`, the scene views too); the kept JPEGs
        stay, for retraining. Returns the (negatives, positives) removed."""
        if which not in ("all", "negatives", "positives"):
            raise ValueError(f"forget: {which!r} is not all, negatives or positives")
        with self._changing():
            s = self.state
            counts = (len(s.negatives) if which in ("all", "negatives") else 0,
                      len(s.positives) if which in ("all", "positives") else 0)
            if which == "all":
                s = BankState(self.dim)
            elif which == "negatives":
                s = s.replace(negatives=s.negatives[:0], neg_added=s.neg_added[:0], neg_sources=())
            else:
                s = s.replace(positives=s.positives[:0], pos_margins=s.pos_margins[:0], pos_added=s.pos_added[:0],
                              pos_sources=())
            self._set(s)
        return counts

    def _checked(self, embeddings: np.ndarray) -> np.ndarray:
        cand = _as_stored(embeddings)
        if cand.shape[1] != self.dim:
            raise BankMismatch(f"embeddings of size {cand.shape[1]} do not fit this bank ({self.dim}); wrong model?")
        return cand

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

    def load(self) -> bool:
        """(Re)read the bank file; a missing file is an empty bank, a corrupt one is set aside. True if read."""
        with self._lock:
            self._stat = self._file_stat()
            if self._stat is None:
                self._set(BankState(self.dim))
                return False
            try:
                state, sha, version = read_bank(self.path)
            except Exception as exc:  # noqa: BLE001 - any unreadable file: set aside, never a crash loop
                self._set_aside(exc)
                return False
            if state.dim != self.dim:
                raise BankMismatch(f"{self.path} was made for a model with {state.dim}-d embeddings but this model "
                                   f"has {self.dim}-d ones; clear it with `edge-device teach --forget` (the kept "
                                   f"JPEGs can be taught again) or move it away")
            if sha and self.model_sha256 and sha != self.model_sha256:
                log.info("feedback: %s was taught on model %s…, now %s…: its gates are recomputed for this model",
                         self.path, sha[:12], self.model_sha256[:12])
            if version < 2 and len(state.positives):
                log.info("feedback: %s is a version-%d bank: its %d positive(s) protect but do not lift (their "
                         "margins were not kept); teach them again to lift", self.path, version, len(state.positives))
            self._set(state)
            keep = self.gates <= GATE_MAX
            if not keep.all():
                log.warning("feedback: %d negative(s) in %s are too close to the label's photos for this model: "
                            "not used", int((~keep).sum()), self.path)
                self._set(state.replace(negatives=state.negatives[keep], neg_added=state.neg_added[keep],
                                        neg_sources=tuple(x for x, k in zip(state.neg_sources, keep, strict=True)
                                                          if k)))
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
        self._set(BankState(self.dim))
        self._stat = self._file_stat()

    def reload_if_changed(self) -> bool:
        """Reload when another process (`edge-device teach`) replaced the file; True if it was reloaded."""
        if self._file_stat() == self._stat:
            return False
        with self._lock:
            self.load()
        return True

    def describe(self) -> str:
        s = self.state
        scale = f"push {self.spread:.3g}" if self.spread is not None else f"weight {self.weight:.3g}"
        quiet = int(np.sum(~s.scene_user))
        return (f"{len(s.negatives)} negative(s) (max {self.max_negatives}), {len(s.positives)} positive(s) "
                f"({int(np.sum(self.pos_lifts > 0))} lifting), {quiet} quiet frame(s), "
                f"{len(s.scene) - quiet} background photo(s), {scale}, in {self.path}")

    @classmethod
    def open(cls, directory: str | Path, model_path: str | Path, card: ModelCard, dim: int,
             max_negatives: int = 512, max_quiet: int = 64, gate_quantile: float = 1.0) -> FeedbackBank:
        """The bank for this model: calibration.npz read, the file loaded (BankMismatch if it is another model's)."""
        reference = LabelReference.load(model_path, card)
        bank = cls(directory, dim, card.sha256, bank_weight(card), reference, max_negatives, max_quiet=max_quiet,
                   gate_quantile=gate_quantile)
        bank.load()
        return bank
