"""Snapshots: colour order survives the JPEG round trip; a bad directory never raises; the folder stays bounded."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from edge_oneclass.device.snapshot import encode_jpeg, save_snapshot, snapshot_name


def test_red_rgb_decodes_to_red():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = 255                                    # pure red in RGB
    jpeg = encode_jpeg(rgb, quality=90)
    assert jpeg[:2] == b"\xff\xd8"
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (32, 48, 3)
    b, g, r = bgr.reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_encode_rejects_non_rgb():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_jpeg(np.zeros((8, 8), np.uint8))


def test_save_snapshot_writes_iso_utc_name(tmp_path):
    path = save_snapshot(tmp_path / "snaps", "dog", 1_714_560_000.25, b"\xff\xd8jpeg")
    assert path is not None and path.read_bytes() == b"\xff\xd8jpeg"
    assert path.name == "dog_20240501T104000.250Z.jpg" == snapshot_name("dog", 1_714_560_000.25)
    assert [p.name for p in path.parent.iterdir()] == [path.name]      # no temporary file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_save_into_unwritable_dir_returns_none_and_logs(tmp_path, caplog):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING, logger="edge_oneclass.device.snapshot"):
            assert save_snapshot(locked / "sub", "dog", 0.0, b"x") is None
    finally:
        locked.chmod(0o700)
    assert "cannot write" in caplog.text


def test_save_where_a_file_blocks_the_dir_returns_none_and_logs(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the snapshot directory should be")
    with caplog.at_level(logging.WARNING, logger="edge_oneclass.device.snapshot"):
        assert save_snapshot(blocker, "dog", 0.0, b"x") is None
    assert "cannot write" in caplog.text and str(blocker) in caplog.text


def test_save_into_proc_returns_none_even_as_root(caplog):
    with caplog.at_level(logging.WARNING, logger="edge_oneclass.device.snapshot"):
        assert save_snapshot("/proc/edge-snapshots", "dog", 0.0, b"x") is None
    assert "cannot write /proc/edge-snapshots/dog_19700101T000000.000Z.jpg" in caplog.text


def test_the_snapshot_folder_keeps_the_newest_and_nothing_else_is_touched(tmp_path):
    """Months of episodes on an SD card: only the newest `keep` snapshots stay, whatever their label (a model
    push can rename it), and the user's own files in that folder are never removed."""
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    (snaps / "holiday.jpg").write_bytes(b"mine")
    (snaps / "notes.txt").write_text("mine too")
    times = [1_714_560_000.0 + 60 * i for i in range(6)]
    for i, t in enumerate(times):
        assert save_snapshot(snaps, "dog" if i % 2 else "parcel", t, b"\xff\xd8", keep=3) is not None
    names = [snapshot_name("dog" if i % 2 else "parcel", t) for i, t in enumerate(times)]
    assert sorted(p.name for p in snaps.iterdir()) == sorted(names[-3:] + ["holiday.jpg", "notes.txt"])
    save_snapshot(snaps, "dog", times[-1] + 60, b"\xff\xd8", keep=0)      # 0 keeps them all
    assert len(list(snaps.glob("*Z.jpg"))) == 4
