"""The TFLite runner: loads an int8 model through the lightest interpreter available and scores images.

Interpreter order: ai-edge-litert (maintained; works with NumPy 2), tflite_runtime, tensorflow.lite.
A model has one score output (shape [1, 1]) and, from schema 2 on, an embedding output (shape [1, D]): the
L2-normalised vector the score is built on, which the device's feedback bank compares frames with. From schema 3
the score is the model's output plus the card's class-prior term of that embedding (device/class_prior.py); from
schema 4 a crop of a frame gets the prior's crop weight (`infer(..., crop=True)`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.model.card import ModelCard, card_path_for, load_verified
from edge_oneclass.device.model.class_prior import ClassPrior

log = logging.getLogger(__name__)


def _interpreter_class() -> tuple[Callable, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf  # type: ignore[import-not-found]

        return tf.lite.Interpreter, "tensorflow.lite"
    except ImportError as exc:
        raise ModelError("no TFLite interpreter found; pip install ai-edge-litert") from exc


@dataclass
class Inference:
    score: float
    embedding: np.ndarray | None   # (D,) float32, None for models without an embedding output


class Runner:
    """Scores preprocessed RGB uint8 images with a hash-checked int8 model. Higher score = more like the label."""

    def __init__(self, model_path: str | Path, threads: int = 2, verify: bool = True) -> None:
        self.model_path = Path(model_path)
        if verify:
            self.card: ModelCard | None = load_verified(self.model_path)
        else:
            self.card = None
        # Added to every score; export sets it on its unverified runner once it has fitted it.
        self.prior: ClassPrior | None = self.card.prior(str(card_path_for(self.model_path))) \
            if self.card is not None else None
        cls, self.backend = _interpreter_class()
        try:
            self._interp = cls(model_path=str(self.model_path), num_threads=int(threads))
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.model_path}: not a loadable TFLite model ({exc})") from exc
        inp = self._interp.get_input_details()[0]
        outputs = self._interp.get_output_details()
        scores = [o for o in outputs if int(np.prod(o["shape"])) == 1]
        embeddings = [o for o in outputs if int(np.prod(o["shape"])) > 1]
        if len(scores) != 1 or len(embeddings) > 1:
            raise ModelError(f"{self.model_path}: expected one score output and at most one embedding output, got "
                             f"shapes {[list(o['shape']) for o in outputs]}; re-export the model with export-edge")
        self._in_index, self._in_dtype = inp["index"], inp["dtype"]
        self._in_scale, self._in_zero = inp.get("quantization", (0.0, 0))
        self._score_out = scores[0]
        self._embedding_out = embeddings[0] if embeddings else None
        self.embedding_dim = int(self._embedding_out["shape"][-1]) if self._embedding_out is not None else 0
        self.input_size = int(inp["shape"][1])
        self.last_inference_ms = 0.0
        if self.prior is not None and self.embedding_dim <= max(self.prior.classes):
            raise ModelError(f"{self.model_path}: model.json's class_prior does not fit the model's embedding "
                             f"output ({self.embedding_dim}); copy both files from the same export")
        if self.card is not None and self.card.image_size != self.input_size:
            raise ModelError(f"{self.model_path}: input is {self.input_size}px but model.json says "
                             f"{self.card.image_size}px; copy both files from the same export")
        log.debug("loaded %s with %s (%d threads)", self.model_path, self.backend, threads)

    def _to_input(self, image: np.ndarray) -> np.ndarray:
        if self._in_dtype == np.uint8:
            x = image
        elif self._in_dtype == np.int8:
            scale = self._in_scale or 1.0
            q = np.round(image.astype(np.float32) / scale + self._in_zero)
            x = np.clip(q, -128, 127).astype(np.int8)
        else:
            x = image.astype(np.float32)
        return x[None, ...]

    @staticmethod
    def _dequantised(interp, out: dict) -> np.ndarray:
        y = interp.get_tensor(out["index"]).reshape(-1)
        scale, zero = out.get("quantization", (0.0, 0))
        if out["dtype"] in (np.int8, np.uint8) and scale:
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def infer(self, image: np.ndarray, crop: bool = False) -> Inference:
        """Score one already-preprocessed (size, size, 3) RGB uint8 image; `last_inference_ms` is the invoke time.
        `crop`: the image is a crop of a frame, whose class-prior term has the prior's crop weight."""
        self._interp.set_tensor(self._in_index, self._to_input(image))
        t0 = time.perf_counter()
        self._interp.invoke()
        self.last_inference_ms = (time.perf_counter() - t0) * 1000.0
        score = float(self._dequantised(self._interp, self._score_out)[0])
        embedding = None if self._embedding_out is None else self._dequantised(self._interp, self._embedding_out)
        if self.prior is not None and embedding is not None:
            score += self.prior.term(embedding, crop)
        return Inference(score, embedding)
