"""Shared fixtures: real models and real photos loaded once per session, and builders.

Models and the face_recognition test photos are fetched by ``make models`` and
``make testdata``, which ``make test`` runs first: if they are missing the tests fail
loudly rather than skip, because CI is supposed to have them. Only the faces94 set in
``../shared/datasets`` is optional (an outside clone does not have it).

The tests are laid out like the packages they test (``tests/gate/match/`` tests
``gate/match/``); ``tests/system/`` holds what needs central, broker and gates together.
Plain helpers shared between test modules are in :mod:`tests.support`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gate.config import Config, from_dict
from gate.images import load_image
from gate.pipeline import FacePipeline
from gate.templates import Templates
from gate.types import Image
from sync.protect import Protector
from tests import support
from tests.ledger import LEDGER, Ledger
from tests.support import FACES94, MODELS, PHOTOS, Clock


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """Tests that run ``gatectl run`` in-process set up the service's logging on a stream
    pytest closes afterwards: put the root logger back as it was after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)

@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The fetched model files; fails (not skips) when `make models` has not run."""
    if not (MODELS / "mobilefacenet_int8.tflite").is_file():
        pytest.fail(f"{MODELS} has no models: run `make models` (make test does)")
    return MODELS


@pytest.fixture(scope="session")
def photos() -> Path:
    """The face_recognition 1.3.0 test photos; fails when `make testdata` has not run."""
    if not (PHOTOS / "obama.jpg").is_file():
        pytest.fail(f"{PHOTOS} has no photos: run `make testdata` (make test does)")
    return PHOTOS


@pytest.fixture(scope="session")
def faces94() -> Path:
    """The faces94-female set, read in place; skips when ../shared/datasets is absent."""
    if not FACES94.is_dir():
        pytest.skip(f"{FACES94} absent (only the project's own machines have it)")
    return FACES94


@pytest.fixture(scope="session")
def config(models_dir: Path) -> Config:
    """Default config pointing at the fetched models."""
    return from_dict({"models": {"dir": str(models_dir)}})


@pytest.fixture(scope="session")
def pipeline(config: Config) -> FacePipeline:
    """The default pipeline (SFace int8, face-mesh alignment, no flip averaging)."""
    return FacePipeline.from_config(config)


@pytest.fixture(scope="session")
def pipeline_float(config: Config) -> FacePipeline:
    """The same pipeline with the default model's float variant."""
    return FacePipeline.from_config(config, embedder="sface-float")


@pytest.fixture(scope="session")
def pipeline_mfn(config: Config) -> FacePipeline:
    """The pipeline with MobileFaceNet, int8 (the light option)."""
    return FacePipeline.from_config(config, embedder="mobilefacenet-int8")


@pytest.fixture(scope="session")
def pipeline_mfn_float(config: Config) -> FacePipeline:
    """The pipeline with MobileFaceNet, float."""
    return FacePipeline.from_config(config, embedder="mobilefacenet-float")


@pytest.fixture(scope="session")
def photo(photos: Path):
    """Loader for a test photo by file name (decoded fresh each call)."""
    def load(name: str) -> Image:
        return load_image(photos / name)
    return load


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand."""
    return Clock()


@pytest.fixture(scope="session")
def protector() -> Protector:
    """The tests' event transform, built once for the whole session."""
    return support.protector()


@pytest.fixture
def make_store(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Templates]]:
    """Builds gates' caches and matchers (factory defaults: ``tmp_path/state``, the
    hand-moved clock, the tests' keys); each is closed at the end of the test."""
    made: list[Templates] = []

    def make(directory: Path | None = None, **kwargs: Any) -> Templates:
        kwargs.setdefault("clock", clock)
        t = support.open_store(directory or tmp_path / "state", **kwargs)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    """The session's attack ledger (``tests/ledger.py``): hostile-input tests record their
    cases in it, and the run ends with its table."""
    return LEDGER


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the attack table when any hostile case ran (``make attack``, ``make test``)."""
    if not LEDGER.tried:
        return
    terminalreporter.section("hostile input: cases tried, held, broke")
    for line in LEDGER.table():
        terminalreporter.write_line(line)
