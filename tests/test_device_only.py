"""The workstation commands on an install without the `train` extra: one line naming what to install, exit 2.

The real check runs the installed console scripts of the device-only venv that scripts/test.sh builds (its
python is EDGE_DEVICE_ONLY_PYTHON); the in-process tests hide one module at the import boundary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge_oneclass.device.errors import EX_USAGE, MissingExtraError, require_modules
from edge_oneclass.export import eval_cli
from edge_oneclass.training import cli as train_cli

ROOT = Path(__file__).resolve().parents[1]
DEVICE_ONLY_PYTHON = os.environ.get("EDGE_DEVICE_ONLY_PYTHON")
TRAIN_HINT = "pip install 'edge-oneclass[train]'"
REPO_HINT = "pip install -e '.[train]'"


def train_extra() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in extras["train"]}


def test_the_guards_name_packages_of_the_train_extra() -> None:
    """The pip names the commands tell people to install are the ones pyproject's `train` extra installs."""
    extra = train_extra()
    assert set(train_cli.TRAIN_MODULES.values()) <= extra
    assert set(eval_cli.EVAL_MODULES.values()) | set(eval_cli.PLOT_MODULES.values()) <= extra


def test_require_modules_lists_what_is_missing(monkeypatch) -> None:
    require_modules({"numpy": "numpy"}, "unused")                  # present: nothing happens
    monkeypatch.setitem(sys.modules, "sklearn", None)              # import sklearn -> not found
    with pytest.raises(MissingExtraError) as info:
        require_modules({"numpy": "numpy", "sklearn": "scikit-learn"}, "do this")
    assert str(info.value) == "scikit-learn not installed here (a device-only install?); do this"
    assert info.value.exit_code == EX_USAGE


def test_eval_edge_without_scikit_learn_is_one_line(tmp_path: Path, brightness_model: Path) -> None:
    """In a subprocess of this venv with scikit-learn hidden at the import boundary (sys.modules entry None)."""
    code = ("import sys; sys.modules['sklearn'] = None; from edge_oneclass.export.eval_cli import main; "
            f"sys.exit(main([{str(brightness_model)!r}, '--positives', {str(tmp_path)!r}, "
            f"'--negatives', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("eval-edge: scikit-learn not installed here") and TRAIN_HINT in line


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert DEVICE_ONLY_PYTHON
    script = Path(DEVICE_ONLY_PYTHON).parent / name
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.skipif(not DEVICE_ONLY_PYTHON, reason="EDGE_DEVICE_ONLY_PYTHON not set (scripts/test.sh sets it)")
def test_workstation_commands_on_a_device_only_install(tmp_path: Path, brightness_model: Path) -> None:
    probe = subprocess.run([DEVICE_ONLY_PYTHON, "-c", "import importlib.util as u; "
                            "print([m for m in ('tensorflow', 'keras', 'sklearn') if u.find_spec(m)])"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert probe.stdout.strip() == "[]", "the device-only venv must not contain the train extra"
    photos = tmp_path / "dogs"
    photos.mkdir()
    commands = {
        "train-edge": [str(photos)],
        "export-edge": [str(tmp_path)],
        "eval-edge": [str(brightness_model), "--positives", str(photos), "--negatives", str(photos)],
    }
    for name, args in commands.items():
        proc = run_script(name, *args, cwd=tmp_path)      # cwd outside the repository: the installed code runs
        assert proc.returncode == 2, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        [line] = [s for s in proc.stderr.splitlines() if not s.startswith("INFO: Created TensorFlow Lite")]
        assert line.startswith(f"{name}: ") and "not installed here" in line and TRAIN_HINT in line, line
        assert REPO_HINT in line
        if name == "eval-edge":       # it scores with the device's runner: only part of the train extra
            assert "scikit-learn" in line and "tensorflow" not in line
            assert "eval-edge needs only scikit-learn, tqdm" in line
        else:
            assert "tensorflow" in line and "keras" in line
