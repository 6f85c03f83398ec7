"""The house rules of the layout: one import name, every package installed, folders by job, layers one way.

`pip install .` must put exactly one top-level name in site-packages (`edge_oneclass`), so a user's own
`device.py` or PyPI's `device` / `export` packages can never shadow ours; no folder grows into a flat heap of
modules; and no two modules import each other, directly or in a loop (imports inside functions and under
TYPE_CHECKING count: a loop is a loop).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edge_oneclass"
FOLDERS = ("device", "training", "export")
MAX_MODULES_PER_FOLDER = 12


def modules() -> dict[str, Path]:
    """Every module of the three folders, by its installed name."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join((PACKAGE, *parts[:-1])) if parts[-1] == "__init__" else ".".join((PACKAGE, *parts))
            out[name] = path
    return out


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: `from .x import y` inside package p is p.x
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def test_every_package_folder_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join((PACKAGE, *p.parent.relative_to(ROOT).parts))
             for folder in FOLDERS for p in (ROOT / folder).rglob("__init__.py")}
    assert listed == found, f"pyproject.toml [tool.setuptools] packages: add {sorted(found - listed)}, " \
                            f"remove {sorted(listed - found)}"


def test_no_folder_is_a_heap_of_modules() -> None:
    for folder in [ROOT / f for f in FOLDERS] + [p.parent for f in FOLDERS for p in (ROOT / f).rglob("*/__init__.py")]:
        own = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(own) <= MAX_MODULES_PER_FOLDER, f"{folder.relative_to(ROOT)}: {len(own)} modules; group them by job"


def test_no_two_modules_import_each_other() -> None:
    mods = modules()
    known = set(mods)
    graph = {name: imported(path, name, known) for name, path in mods.items()}
    # every cycle shows up as a back edge of a depth-first search
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import loops: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_layers_point_one_way() -> None:
    """device imports neither training nor export; training never imports export."""
    mods = modules()
    known = set(mods)
    for name, path in mods.items():
        deps = imported(path, name, known)
        if name.startswith(f"{PACKAGE}.device"):
            assert not {d for d in deps if not d.startswith(f"{PACKAGE}.device")}, name
        if name.startswith(f"{PACKAGE}.training"):
            assert not {d for d in deps if d.startswith(f"{PACKAGE}.export")}, name


@pytest.mark.timeout(300)
def test_the_wheel_installs_one_top_level_name(tmp_path: Path) -> None:
    """What `pip install .` puts in site-packages: edge_oneclass/ and its dist-info, nothing named device,
    training or export."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = {n.split("/", 1)[0] for n in names}
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {t for t in top if not t.endswith(".dist-info")} == {PACKAGE}, sorted(top)
    for sub in ("device/model/running.py", "device/mqtt/client.py", "training/backbone/efficientnet_lite.py"):
        assert f"{PACKAGE}/{sub}" in names, sub
    assert "edge-device = edge_oneclass.device.cli:main" in entry_points
