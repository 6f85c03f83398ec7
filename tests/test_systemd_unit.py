"""The systemd unit: `systemd-analyze verify` is clean and `systemd-analyze security` exposure is at most 2.5.

CI must install systemd (for systemd-analyze): `apt-get install -y systemd`. Without it these tests skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "edge-device.service"
SHIPPED_EXEC = "/opt/edge-device/venv/bin/edge-device"
MAX_EXPOSURE = 2.5

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None, reason="systemd-analyze not installed (apt-get install -y systemd)")


def unit_for_this_host(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} " in text
    local = shutil.which("edge-device") or str(Path(sys.executable).parent / "edge-device")
    assert Path(local).is_file(), "the edge-device console script is not installed in this environment"
    path = tmp_path / "edge-device.service"
    path.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={local} "))
    return path


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_required_settings() -> None:
    d = directives(UNIT.read_text())
    expect = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "RestartPreventExitStatus": "78", "User": "edge-device", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "DevicePolicy": "closed", "StateDirectory": "edge-device", "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes", "RestrictNamespaces": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    }
    for key, value in expect.items():
        assert d.get(key) == [value], key
    assert d["ExecStart"] == [f"{SHIPPED_EXEC} run --config /etc/edge-device/config.toml"]
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "gpio"}
    assert "@system-service" in d["SystemCallFilter"]
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-gpiochip", "char-vchiq", "char-dma_heap"} <= allowed


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    unit = unit_for_this_host(tmp_path)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    output = (proc.stdout + proc.stderr).strip()
    mentions_us = [line for line in output.splitlines() if "edge-device" in line]
    assert proc.returncode == 0 and not mentions_us, output


@needs_analyze
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    unit = unit_for_this_host(tmp_path)
    proc = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                          timeout=60)
    match = re.search(r"Overall exposure level for edge-device\.service: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, proc.stdout


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _kernel_has_mdwe() -> bool:
    """PR_SET_MDWE (Linux >= 6.3) enforces what MemoryDenyWriteExecute= does; probe it in a child."""
    code = f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0))"
    return subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def test_runtime_tolerates_memory_deny_write_execute(tmp_path: Path, brightness_model: Path) -> None:
    """MemoryDenyWriteExecute=yes breaks JIT runtimes; run a real replay with W^X enforced by the kernel."""
    if not _kernel_has_mdwe():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3): cannot emulate MemoryDenyWriteExecute here")
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, level in enumerate([20] * 3 + [230] * 8 + [20] * 3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((48, 64, 3), level, np.uint8))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for level in [230] * 8:
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    for source in (frames, video):
        config = tmp_path / "config.toml"
        config.write_text(f'[camera]\nsource = "{source}"\n[model]\npath = "{brightness_model}"\n'
                          f'threads = 2\n[detect]\noff_delay = 0.5\n[feedback]\nenabled = false\n')
        code = textwrap.dedent(f"""
            import ctypes, sys
            assert ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0
            from edge_oneclass.device.cli import main
            sys.exit(main(["run", "--config", {str(config)!r}]))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count('"state":"ON"') == 1

