"""Where pushed models live on the device, written so that a power cut never leaves half a model.

    <store>/current/    model.tflite, model.json (, calibration.npz): the model the daemon starts with
    <store>/previous/   the model that ran before the last push (for `rollback`)
    <store>/.incoming-*/ a push being checked; renamed to current/ once it passed

`<store>` is `[model] store`, by default `models/` beside `[model] path` (/var/lib/edge-device/models).
Files are written and fsynced in a temporary folder of the store, which is then renamed: the old current/
becomes previous/ and the new folder becomes current/. The daemon starts from current/ when it holds a model
that passes its checks, else from `[model] path` (also after a crash between the two renames).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edge_oneclass.device.errors import ModelError
from edge_oneclass.device.model.card import load_verified
from edge_oneclass.device.state_files import atomic_write, fsync_dir
from edge_oneclass.device.update.payload import FILES, MODEL_FILE

log = logging.getLogger(__name__)

CURRENT, PREVIOUS = "current", "previous"


def store_dir(cfg: Any) -> Path:
    """`[model] store`, or `models/` beside `[model] path`. `cfg` is the whole Config."""
    store = getattr(cfg.model, "store", None)
    return Path(store) if store else Path(cfg.model.path).parent / "models"


def active_model_path(cfg: Any) -> Path:
    """The model the daemon should load: the store's current/ if it holds a verified model; else previous/ (a
    crash between a push's two renames leaves the running model there, and no current/); else `[model] path`."""
    for folder, what in ((CURRENT, "pushed model"), (PREVIOUS, "previous model")):
        candidate = store_dir(cfg) / folder / MODEL_FILE
        if not candidate.is_file():
            continue
        try:
            load_verified(candidate)
        except ModelError as exc:
            log.warning("%s %s is not usable (%s)", what, candidate, exc)
            continue
        if folder == PREVIOUS:
            log.warning("no usable model in %s (a push was interrupted?): starting from %s", CURRENT, candidate)
        return candidate
    return Path(cfg.model.path)


def model_files(model_path: str | Path) -> dict[str, bytes]:
    """The files of the model at `model_path` and its siblings (model.json, calibration.npz if present)."""
    folder = Path(model_path).parent
    files = {MODEL_FILE: Path(model_path).read_bytes()}
    for name in FILES[1:]:
        if (folder / name).is_file():
            files[name] = (folder / name).read_bytes()
    return files


def writable_problem(path: Path) -> str | None:
    """None if `path` (or, when it does not exist yet, its nearest existing parent) is a writable folder; else why."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def current(self) -> Path:
        return self.root / CURRENT

    @property
    def previous(self) -> Path:
        return self.root / PREVIOUS

    def stage(self, files: dict[str, bytes]) -> Path:
        """Write `files` into a new temporary folder of the store (fsynced); the caller checks, then `promote`s."""
        self.root.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        for name, data in files.items():
            atomic_write(staged / name, data)
        return staged

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def promote(self, staged: Path, running: Path) -> Path:
        """Make `staged` the current model; the model running now (folder `running`) becomes previous/.
        Returns the new current folder."""
        if running.resolve() != self.current.resolve() or not self.current.is_dir():
            # the running model lives elsewhere ([model] path): keep a copy of it as previous
            old = self.stage(model_files(running / MODEL_FILE))
        else:
            old = self.current
        if self.previous.exists():
            trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
            os.replace(self.previous, trash / PREVIOUS)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(old, self.previous)
        if self.current.exists():           # a current/ that was not the running model
            trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
            os.replace(self.current, trash / CURRENT)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staged, self.current)
        fsync_dir(self.root)
        return self.current

    def cleanup(self) -> None:
        """Remove folders left by an interrupted push."""
        if not self.root.is_dir():
            return
        for leftover in list(self.root.glob(".incoming-*")) + list(self.root.glob(".trash-*")):
            shutil.rmtree(leftover, ignore_errors=True)


def check_state_dirs(cfg: Any) -> str:
    """`edge-device check`: the folders the daemon writes at run time must be writable (by this user).

    The model store (pushed models), and where configured the snapshot and feedback folders. Raises ModelError
    naming the path and the fix; returns the OK line.
    """
    import getpass

    dirs = [("model store", store_dir(cfg))]
    snapshot = getattr(getattr(cfg, "snapshot", None), "dir", None)
    feedback = getattr(getattr(cfg, "feedback", None), "dir", None)
    dirs += [(what, Path(d)) for what, d in (("snapshot dir", snapshot), ("feedback dir", feedback)) if d]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    for what, path in dirs:
        problem = writable_problem(path)
        if problem:
            raise ModelError(f"{what} {path}: {problem} ({user}); keep it under /var/lib/edge-device (the unit's "
                             f"StateDirectory=edge-device, writable by the service) or `sudo chown -R edge-device: "
                             f"{path}`; run check as the service user: sudo -u edge-device edge-device check")
    return ", ".join(f"{what} {path}" for what, path in dirs) + f" writable by {user}"
