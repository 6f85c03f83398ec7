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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# New files get the usual mode for this process (0644 under the default umask), as a plain open() would give
# them; mkstemp's own 0600 would hide snapshots and kept frames from other users of the state directory.
_NEW_FILE_MODE = 0o666 & ~_umask()


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


def remove_oldest(files_oldest_first: list[Path], keep: int) -> int:
    """Delete all but the last `keep` of the files (the newest): the one way a bounded folder (kept frames,
    snapshots) stays bounded. A file that cannot be deleted is left; returns how many were deleted."""
    removed = 0
    for old in files_oldest_first[:max(0, len(files_oldest_first) - keep)]:
        with contextlib.suppress(OSError):
            old.unlink()
            removed += 1
    return removed


def atomic_write(path: str | os.PathLike[str], data: bytes | Writer, mode: int | None = None) -> Path:
    """Write `data` (bytes, or a function that writes to a binary file) to `path` atomically and durably. The file
    keeps the mode of the one it replaces (or gets `mode`, or the process's usual mode for a new file).

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
        if mode is None:
            try:
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                mode = _NEW_FILE_MODE
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
