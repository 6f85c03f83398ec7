"""Shared fixtures: the real photos, and a real Mosquitto broker on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEV = DATA / "dev"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def dev_data() -> Path:
    if not (DEV / "dog").is_dir():
        pytest.fail(f"real photos not found at {DEV}; the shared data folder must sit beside the repository")
    return DEV


@pytest.fixture(scope="session")
def brightness_model() -> Path:
    """Tiny int8 TFLite whose score is mean brightness (0..1), threshold 0.5; see fixtures/make_brightness_model.py."""
    return FIXTURES / "brightness" / "model.tflite"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A real mosquitto on 127.0.0.1, stoppable and restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            pytest.fail("mosquitto is not installed; apt-get install -y mosquitto (.ci/run does this)")
        self.exe = exe
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path):
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def link_images(src: Path, dst: Path, names: list[str]) -> Path:
    """A user-style folder of the real photos, made of symlinks (the shared data is never copied)."""
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dst / n).symlink_to(src / n)
    return dst


def dev_names(start: int, stop: int) -> list[str]:
    return [f"{i:06d}.jpg" for i in range(start, stop)]


def training_seed() -> int:
    """The training seed of the suite's model (`EDGE_TEST_SEED`, default 0)."""
    import os

    raw = os.environ.get("EDGE_TEST_SEED", "0").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"EDGE_TEST_SEED must be an integer (train-edge --seed), got {raw!r}") from None


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, dev_data: Path) -> Path:
    """A real model trained by `train-edge` on 80 of the dev dogs (128 px, few epochs): used by the workstation
    tests and by the device's end-to-end replay. Returns the model directory.

    `EDGE_TEST_SEED` (default 0) is train-edge's `--seed`: a test that uses this model must hold for any honest
    model, and another seed is the cheap way to get one whose last bits differ (as another CPU's would), e.g.
    `EDGE_TEST_SEED=2 bash scripts/test.sh`. `EDGE_TEST_MODEL=DIR` uses a model already trained with the command
    below (DIR/model.tflite, DIR/../train-edge.stderr) instead, to re-run tests quickly against the same model."""
    import os
    import subprocess
    import sys

    if os.environ.get("EDGE_TEST_MODEL"):
        given = Path(os.environ["EDGE_TEST_MODEL"])
        if not (given / "model.tflite").is_file() or not (given.parent / "train-edge.stderr").is_file():
            raise pytest.UsageError(f"EDGE_TEST_MODEL={given}: needs {given}/model.tflite and "
                                    f"{given.parent}/train-edge.stderr")
        return given
    seed = training_seed()
    base = tmp_path_factory.mktemp(f"trained-seed{seed}")
    dogs = link_images(dev_data / "dog", base / "dog", dev_names(0, 80))
    out = base / "dog-model"
    proc = subprocess.run([sys.executable, "-m", "edge_oneclass.export.workflow", str(dogs), "--out", str(out),
                           "--image-size", "128", "--epochs", "15", "--seed", str(seed)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"train-edge failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (base / "train-edge.stderr").write_text(proc.stderr)    # what the user saw: tests/test_train_edge.py reads it
    return out


class PersistentMosquitto(Mosquitto):
    """Mosquitto that keeps its database across stop/start, as a Home Assistant broker does: retained messages
    and the sessions (queued QoS 1 messages) of clean_session=False clients survive a restart."""

    def __init__(self, workdir: Path) -> None:
        import os

        super().__init__(workdir)
        db = workdir / "mosquitto-db"
        db.mkdir(exist_ok=True)
        # as root, mosquitto drops to the `mosquitto` user, which cannot write into the test's folder
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {db}/\n{user}")


    def saved(self) -> bool:
        """True unless mosquitto said it could not write its database."""
        return "Error saving" not in self.log.read_text(errors="replace")


@pytest.fixture
def persistent_mosquitto(tmp_path: Path):
    broker = PersistentMosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def pytest_report_header(config) -> str:
    import os

    if os.environ.get("EDGE_TEST_MODEL"):
        return f"trained_model: {os.environ['EDGE_TEST_MODEL']} (EDGE_TEST_MODEL)"
    return f"trained_model: train-edge --seed {training_seed()} (EDGE_TEST_SEED)"
