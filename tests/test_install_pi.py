"""scripts/install-pi.sh --root TMP: every file it writes, a second run that changes nothing, a kept config,
and an uninstall that removes exactly what it added.

The install is real: a venv built on /usr/bin/python3 with --system-site-packages, and pip installing the `device`
extra from PyPI (pip's own cache makes re-runs fast; about a minute with a warm cache). It needs root (useradd
--prefix writes the fake root's /etc/passwd) and python3-venv.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-pi.sh"
FIXTURE = ROOT / "tests" / "fixtures" / "brightness"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install-pi.sh needs root (useradd --prefix)")


def install(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        pytest.fail(f"install-pi.sh {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and symlink outside __pycache__: content hash (or link target), mtime and mode."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(path.relative_to(root))] = ("link", os.readlink(path))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[str(path.relative_to(root))] = (digest, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def records(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines() if line}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    if not Path("/usr/bin/python3").exists():
        pytest.fail("/usr/bin/python3 not found; apt-get install -y python3 python3-venv")
    base = tmp_path_factory.mktemp("pi")
    model = base / "dog-model"
    model.mkdir()
    for name in ("model.tflite", "model.json"):
        shutil.copy2(FIXTURE / name, model / name)
    np.savez(model / "calibration.npz", oof_whole=np.zeros(3, np.float32))   # travels with the model when present
    root = base / "root"
    root.mkdir()
    return root, model, install("--root", root, "--model", model)


def test_first_run_writes_the_venv_config_unit_model_and_user(installed) -> None:
    root, model, proc = installed
    venv = root / "opt/edge-device/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text().splitlines()
    version = subprocess.run([venv / "bin/edge-device", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == "edge-device 0.1.0", version
    # the installed copy, not this checkout, and the system site-packages are on its path
    probe = subprocess.run([venv / "bin/python", "-c", "import edge_oneclass.device as d, sys; print(d.__file__); "
                            "print('/usr/lib/python3/dist-packages' in sys.path)"],
                           capture_output=True, text=True, timeout=60, cwd="/")
    where, sees_system = probe.stdout.split()
    assert where.startswith(str(venv / "lib")), where
    assert sees_system == "True"
    assert (venv / "edge-device-source.sha256").read_text().strip()
    assert (venv / "edge-device-constraints.txt").exists()

    assert (root / "etc/edge-device/config.toml").read_bytes() == (ROOT / "systemd/config.example.toml").read_bytes()
    unit = root / "etc/systemd/system/edge-device.service"
    assert unit.read_bytes() == (ROOT / "systemd/edge-device.service").read_bytes()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-device.service"
    assert os.readlink(wants) == "/etc/systemd/system/edge-device.service"
    assert (root / "opt/edge-device/README.md").read_bytes() == (ROOT / "README.md").read_bytes()
    state = root / "var/lib/edge-device"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    for name in ("model.tflite", "model.json", "calibration.npz"):
        assert (state / name).read_bytes() == (model / name).read_bytes()
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o640

    user = records(root / "etc/passwd")["edge-device"]
    assert user[5:] == ["/var/lib/edge-device", "/usr/sbin/nologin"]
    groups = records(root / "etc/group")
    assert groups["edge-device"][2] == user[3]            # its own primary group
    for g in ("video", "gpio"):
        assert "edge-device" in groups[g][3].split(","), g
    assert "skipped (--root): edge-device check" in proc.stdout
    assert "ran --version: edge-device 0.1.0" in proc.stdout


def test_second_run_changes_no_file(installed) -> None:
    root, model, _ = installed
    before = snapshot(root)
    proc = install("--root", root, "--model", model)
    assert snapshot(root) == before
    assert "unchanged: project in /opt/edge-device/venv" in proc.stdout
    assert "wrote:" not in proc.stdout and "created:" not in proc.stdout


def test_an_edited_config_is_kept(installed) -> None:
    root, model, _ = installed
    config = root / "etc/edge-device/config.toml"
    edited = config.read_text().replace('source = "picamera2"', 'source = "/dev/video0"')
    config.write_text(edited)
    proc = install("--root", root, "--model", model)
    assert config.read_text() == edited
    assert "kept: /etc/edge-device/config.toml" in proc.stdout
    assert "wrote: /opt/edge-device/config.sha256" in proc.stdout   # a changed config restarts the service


def test_a_model_json_from_another_export_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy2(FIXTURE / "model.tflite", model / "model.tflite")
    (model / "model.json").write_text((FIXTURE / "model.json").read_text().replace('"sha256": "2', '"sha256": "3'))
    (tmp_path / "root").mkdir()
    proc = install("--root", tmp_path / "root", "--model", model, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"install-pi: {model}/model.tflite sha256 2acc98c89935… is not the 3acc98c89935… in model.json; "
        "copy both from the same export"]
    assert list((tmp_path / "root").iterdir()) == []


def test_uninstall_keeps_config_model_and_user_and_purge_removes_them(installed) -> None:
    """Last in this file: it takes the install apart."""
    root, _, _ = installed
    before = snapshot(root)
    install("--root", root, "--uninstall")
    after = snapshot(root)
    removed = set(before) - set(after)
    assert removed == {k for k in before if k.startswith("opt/edge-device/")} | {
        "etc/systemd/system/edge-device.service", "etc/systemd/system/multi-user.target.wants/edge-device.service"}
    assert all(after[k] == before[k] for k in after)   # nothing else touched
    assert not (root / "opt/edge-device").exists()
    assert "edge-device" in records(root / "etc/passwd")
    again = install("--root", root, "--uninstall")      # nothing left to remove is not an error
    assert "removed" not in again.stdout

    install("--root", root, "--uninstall", "--purge")
    left = snapshot(root)
    assert not any(k.startswith(("etc/edge-device", "var/lib/edge-device")) for k in left)
    assert "edge-device" not in records(root / "etc/passwd")
    groups = records(root / "etc/group")
    assert "edge-device" not in groups and {"video", "gpio"} <= set(groups)
    assert {k.split("/")[0] for k in left} == {"etc"}
    assert {k for k in left if not k.endswith("-")} == {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"}


def test_help_and_shellcheck() -> None:
    assert "--root DIR" in install("--help").stdout
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck; scripts/test.sh does)")
    proc = subprocess.run(["shellcheck", SCRIPT, ROOT / "scripts/test-arm64.sh"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
