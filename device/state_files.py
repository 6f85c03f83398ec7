"""How the device writes and checks the files it keeps (bank, kept frames, snapshots, pushed models).

One way to write: `atomic_write` puts the bytes in a temporary file beside the target, flushes and fsyncs it,
renames it over the target and fsyncs the folder, so a power cut or a SIGKILL leaves either the old file or the
new one, never half of one, and a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], None]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside `path` durable (best effort: some filesystems refuse to fsync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | Writer, mode: int | None = None) -> Path:
    """Write `data` (bytes, or a function that writes to a binary file) to `path` atomically and durably.

    Raises OSError (disk full, read-only) with the temporary file already removed; the old `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
