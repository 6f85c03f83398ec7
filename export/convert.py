"""Keras scorer -> full-integer int8 TFLite (uint8 pixels in, float32 score out).

Keras 3 path: `model.export()` writes a SavedModel with a fixed batch of 1, then the SavedModel converter
quantises every op to int8 with a representative dataset drawn from the training images. The score
leaves through a final dequantize as float32 so 256 output levels do not blur the ranking.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edge_oneclass.training.tf_quiet import native_stderr_silenced

log = logging.getLogger(__name__)


def convert_int8(model, representative: Callable[[], Iterable[np.ndarray]], out_path: str | Path,
                 quiet: bool = True) -> Path:
    """Convert `model` (float pixels 0..255 in, one score out) to an int8 TFLite file at `out_path`.

    `representative()` yields single preprocessed uint8 images (size, size, 3).
    """
    import tensorflow as tf

    out_path = Path(out_path)
    size = int(model.input_shape[1])

    def rep():
        for img in representative():
            yield [np.asarray(img, np.float32)[None]]

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        ctx = native_stderr_silenced() if quiet else contextlib.nullcontext()
        with ctx:
            model.export(str(saved), format="tf_saved_model", verbose=False,
                         input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="image")])
            conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = rep
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.float32
            blob = conv.convert()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(blob)
    log.info("wrote %s (%.1f MB)", out_path, len(blob) / 1e6)
    return out_path
