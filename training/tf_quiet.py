"""Keeping TensorFlow's native C++ logging (start-up, converter) off the user's terminal."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send fd 2 to /dev/null for the block: TensorFlow's native code writes there, below Python's logging.

    Python exceptions still propagate as usual; only the native chatter is dropped.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_native_logging() -> None:
    """TensorFlow's C++ log level, set before anything imports TensorFlow (it is read once, at import): without it
    a user sees oneDNN and CUDA notices at start and a `NodeDef mentions attribute use_unbounded_threadpool` error
    line per autoencoder fit (tf.data's graph is newer than the op registry; harmless). The workstation commands
    call this first; TF_CPP_MIN_LOG_LEVEL set by the user wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras without their burst of start-up logging."""
    quiet_native_logging()
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
