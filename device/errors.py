"""Exceptions a user can fix, each carrying the exit code the CLI should use.

Exit codes follow ARCHITECTURE.md: 1 runtime failure, 2 usage, 78 configuration (systemd will not
restart on 78).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

EX_RUNTIME = 1
EX_USAGE = 2
EX_CONFIG = 78


class EdgeError(Exception):
    """Base for errors whose message is a one-line instruction to the user (no traceback)."""

    exit_code = EX_RUNTIME


class ConfigError(EdgeError):
    """A wrong, unknown or missing configuration key; names the key."""

    exit_code = EX_CONFIG


class ModelError(EdgeError):
    """A missing, unreadable or tampered model file; names the file."""

    exit_code = EX_CONFIG


class ImageError(EdgeError):
    """An image that cannot be decoded; names the file."""


class SourceError(EdgeError):
    """A camera, stream, video or folder that cannot be opened or read."""


class SourceSetupError(SourceError):
    """A camera backend whose software is missing or broken (e.g. picamera2 fails to import); names the cause
    and the fix. Exit 78: a restart cannot repair an installation, so systemd must not loop on it."""

    exit_code = EX_CONFIG


class DataError(EdgeError):
    """Training input that cannot make a model (too few images, missing folder)."""

    exit_code = EX_USAGE


class BrokerError(EdgeError):
    """An MQTT broker that cannot be reached or refuses the login; names host:port."""


class MissingExtraError(EdgeError):
    """A command run on an install without the packages it needs, e.g. `train-edge` on the Pi's device-only
    install; says what to install."""

    exit_code = EX_USAGE


def require_modules(modules: Mapping[str, str], install: str) -> None:
    """Raise MissingExtraError listing the pip names of the `modules` (import name -> pip name) that are absent.

    Looked up with find_spec, never imported: the check costs milliseconds, not TensorFlow's start-up.
    """
    missing = [pip for module, pip in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(f"{', '.join(missing)} not installed here (a device-only install?); {install}")
