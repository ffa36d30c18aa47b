"""Plain helpers shared by the tests (fixtures built on them live in ``conftest.py``).

Paths of the fetched data, unit vectors, a hand-moved clock, and the one way tests build
a gate's template cache and matcher: :func:`open_store`, through the firmware's own
factory, with the event's transform built once per key for the whole session.
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from gate.config import Config, from_dict
from gate.credentials import Key
from gate.match.embedders import embedder_spec
from gate.templates import TemplateKeys, Templates, open_templates
from sync.protect import Protector

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
PHOTOS = ROOT / "build" / "testdata" / "face_recognition"
PORTRAITS = ROOT / "build" / "calibration" / "radar"
FACES94 = ROOT.parent / "shared" / "datasets" / "faces94-female"

#: The default embedder's template model: synthetic templates live in its space.
MODEL = embedder_spec(from_dict({}).models.embedder).model
DIM = MODEL.dim
DAY = 86400
#: The cache key and the event's template key the tests' gates use.
KEK = bytes(range(100, 132))
TKEY = bytes(range(32))


def tool(name: str) -> ModuleType:
    """A script of ``tools/`` (not a package: imported from its directory)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def unit(x: Any) -> np.ndarray:
    """Rows (or one vector) scaled to unit length, as float32."""
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(rng: np.random.Generator, *shape: int, dim: int = DIM) -> np.ndarray:
    """Random unit vectors of ``dim`` values, in ``shape`` (none: one vector)."""
    return unit(rng.standard_normal((*shape, dim)))


class Clock:
    """A clock the test moves by hand (no sleeps)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@functools.cache
def protector(key: bytes = TKEY) -> Protector:
    """The event transform of ``key``, built once per session (a QR decomposition)."""
    return Protector(key, dim=DIM)


def store_config(*, venue: str = "venue-1", event: str = "event-1", gate: str = "gate-1",
                 threshold: float = 0.5, **tables: dict[str, Any]) -> Config:
    """A config for a test gate: identity, a fixed match threshold, other tables as given."""
    data: dict[str, Any] = {"gate": {"id": gate, "venue": venue, "event": event},
                            "match": {"threshold": threshold, **tables.pop("match", {})}}
    data.update(tables)
    return from_dict(data)


def open_store(directory: Path, *, clock: Callable[[], float] = time.time, kek: bytes = KEK,
               tkey: bytes = TKEY, cfg: Config | None = None,
               embedder: str | None = None) -> Templates:
    """A gate's cache (not loaded) and matcher in ``directory``, built by the firmware's
    factory with the tests' keys (the shared protector only for the default model)."""
    keys = TemplateKeys(Key(kek, "test"), Key(tkey, "test"))
    return open_templates(cfg or store_config(), keys=keys, directory=directory, clock=clock,
                          embedder=embedder,
                          protector=None if embedder else protector(tkey))
