"""Import TensorFlow without its pages of C++ start-up logging on the user's terminal."""

from __future__ import annotations

import os


def import_tensorflow_quietly() -> None:
    """TensorFlow's native code logs to fd 2 before Python logging exists; hide that one burst.

    Errors still surface: an ImportError is raised as usual, only the native chatter is dropped.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
