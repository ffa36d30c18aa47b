"""The shape of the code, checked: imports run one way between the packages, no module
imports itself round a loop, and hardware and model libraries stay in their backends.

Read from the source (every ``import`` statement, at module level or inside a function),
so a new edge fails here before anyone has to draw the graph again:

    central ──▶ sync ◀── gate          (sync, the protocol, imports neither)
       └─ central/enrol.py ──▶ gate's face pipeline (the same model on both ends)
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate.camera import CAMERAS
from gate.config import CameraConfig, ModelsConfig
from gate.detect.detectors import DETECTORS
from gate.match.embedders import ALIASES as EMBEDDER_ALIASES
from gate.match.embedders import EMBEDDERS
from tests.support import ROOT

PACKAGES = ("gate", "sync", "central")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module name ``module`` imports (absolute), at any depth of the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:len(module.split(".")) - node.level +
                                           (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{a.name}" for a in node.names)


def _ours(name: str) -> str | None:
    """The module of this repository that ``name`` refers to (None: a library)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name in _imports(module, path):
            target = _ours(name)
            if target is not None and target != module:
                edges[module].add(target)
    return edges


EDGES = _edges()


def _top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def _package_edges() -> set[tuple[str, str]]:
    return {(_top(a), _top(b)) for a, bs in EDGES.items() for b in bs if _top(a) != _top(b)}


def test_the_graph_is_read_from_the_code():
    """Not vacuous: the edges every layer needs are seen."""
    assert "sync.messages" in EDGES["gate.link.handler"]
    assert "sync.protect" in EDGES["central.core"]
    assert "gate.match.cache" in EDGES["gate.match.matcher"]
    assert len(MODULES) > 100


def test_packages_import_one_way():
    """gate and central build on the protocol; the protocol builds on neither; the
    firmware never imports the reference central."""
    assert _package_edges() <= {("gate", "sync"), ("central", "sync"), ("central", "gate")}


def test_central_borrows_only_the_face_pipeline_from_the_gate():
    """Central embeds enrolment photos with the gate's own pipeline and embedder registry
    (the same model on both ends) in one module, and never touches the gate's store, link
    or service."""
    uses = {(a, b) for a, bs in EDGES.items() if _top(a) == "central"
            for b in bs if _top(b) == "gate"}
    assert {a for a, _ in uses} == {"central.enrol"}
    assert {b for _, b in uses} <= {"gate.pipeline", "gate.images", "gate.config",
                                     "gate.errors", "gate.match.embedders"}


def test_the_protocol_is_a_leaf():
    """sync imports the standard library, numpy and cryptography: no transport, no
    model, nothing of the firmware or of central."""
    for module, path in MODULES.items():
        if _top(module) != "sync":
            continue
        for name in _imports(module, path):
            root = name.split(".")[0]
            if _ours(name) is None:
                assert root in sys.stdlib_module_names or \
                    root in {"numpy", "cryptography"}, f"{module} imports {name}"
            else:
                assert root == "sync", f"{module} imports {name}"


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in EDGES.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in MODULES:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles() == []


#: Libraries that touch hardware or run models: only their backend modules import them.
BACKENDS = {
    "picamera2": {"gate.camera.picamera2"},
    "gpiozero": {"gate.io.devices"},
    "ai_edge_litert": {"gate.inference.litert", "gate.inference.fc_model"},
    "tflite_runtime": {"gate.inference.tflite"},
    # The link's transport, the doctor's own connection test, the demo's recorder on
    # the broker, and the reference central.
    "paho": {"gate.link.mqtt", "gate.doctor.broker", "gate.sim.demo", "central.core"},
}


@pytest.mark.parametrize("library", sorted(BACKENDS))
def test_hardware_and_model_libraries_stay_in_their_backends(library):
    users = {m for m, p in MODULES.items() for n in _imports(m, p)
             if n.split(".")[0] == library}
    assert users <= BACKENDS[library]


#: Decision logic: plain values in and out, testable alone.
PURE = ("gate.policy", "gate.judge", "gate.detect.quality", "gate.match.decision",
        "gate.match.validate", "sync.templates", "sync.schemas")


@pytest.mark.parametrize("module", PURE)
def test_decision_logic_imports_no_device_model_or_io_library(module):
    libraries = {n.split(".")[0] for n in _imports(module, MODULES[module])
                 if _ours(n) is None}
    assert libraries <= {"__future__", "enum", "math", "collections", "dataclasses", "re",
                         "typing", "numpy"}
    # ...and of this repository only other pure modules (and plain types/errors).
    ours = {_ours(n) for n in _imports(module, MODULES[module])} - {None}
    assert ours <= {*PURE, "gate.types", "gate.errors", "sync.errors", "sync.messages"}, ours


def test_the_firmware_wheel_holds_no_central():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["gate*", "sync*"]
    central = tomllib.loads((ROOT / "central" / "pyproject.toml").read_text())
    assert central["project"]["scripts"] == {"facepass-central": "central.cli:entry"}


def test_package_discovery_stays_out_of_build(tmp_path):
    """``pip install .`` finds the packages without walking build/, where the platform
    checks keep whole Debian roots whose symlinks loop (it once spun there for minutes)."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]
    for pkg in ("gate", "gate/camera", "sync"):
        (tmp_path / pkg).mkdir(parents=True)
        (tmp_path / pkg / "__init__.py").touch()
    doc = tmp_path / "build/roots/debian/usr/share/doc/node-a"
    doc.mkdir(parents=True)
    for name in ("node-b", "node-c"):  # two links back up: 2^40 paths before ELOOP
        (doc / name).symlink_to("..")
    finder = "PEP420PackageFinder" if find.get("namespaces", True) else "PackageFinder"
    code = (f"from setuptools.discovery import {finder} as F; "
            f"print(sorted(F.find({str(tmp_path)!r}, include={find['include']!r})))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=30, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("package discovery walks build/ (set namespaces = false)")
    assert done.stdout.strip() == "['gate', 'gate.camera', 'sync']"


def test_backends_are_named_in_one_place():
    """The config's choices come from the registries, not a second list."""
    def choices(cls: type, name: str) -> tuple[str, ...]:
        return cls.__dataclass_fields__[name].metadata["choices"]  # type: ignore[attr-defined]

    assert choices(CameraConfig, "backend") == tuple(CAMERAS)
    assert choices(ModelsConfig, "detector") == tuple(DETECTORS)
    assert choices(ModelsConfig, "embedder") == (*EMBEDDERS, *EMBEDDER_ALIASES)
