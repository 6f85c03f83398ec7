"""Exceptions a user can fix, each carrying the exit code the CLI should use.

Exit codes follow ARCHITECTURE.md: 1 runtime failure, 2 usage, 78 configuration (systemd will not
restart on 78).
"""

from __future__ import annotations

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
