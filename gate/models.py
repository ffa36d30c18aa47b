"""Model files: the committed sha256 manifest and verified loading.

The manifest (``gate/model_manifest.json``) ships inside the package, so the pins
travel with the code that enforces them. A file is read once, hashed, and the same
bytes are handed to the runtime: nothing can swap the file between check and load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gate.errors import ModelHashError, ModelMissingError
from gate.safefile import read_regular

FIX = "run `make models`"


@dataclass(frozen=True)
class PinnedFile:
    """One manifest entry."""

    name: str
    role: str
    sha256: str
    size: int
    license: str
    source: str
    derivation: str


def manifest() -> dict[str, PinnedFile]:
    """Manifest entries keyed by role (``detector``, ``landmarks``, ``embedder_int8``...)."""
    text = resources.files("gate").joinpath("model_manifest.json").read_text(encoding="utf-8")
    entries = {}
    for e in json.loads(text)["files"]:
        entries[e["role"]] = PinnedFile(
            name=e["name"], role=e["role"], sha256=e["sha256"], size=e["bytes"],
            license=e["license"], source=e["source"], derivation=e["derivation"],
        )
    return entries


def read_verified(models_dir: Path, role: str) -> tuple[bytes, PinnedFile]:
    """Read the file for ``role`` and check it against the manifest.

    Raises :class:`ModelMissingError` or :class:`ModelHashError` with a one-line
    message naming the file and the fix.
    """
    pin = manifest()[role]
    path = Path(models_dir) / pin.name
    if not path.exists() and not path.is_symlink():
        raise ModelMissingError(f"{path}: model file missing; {FIX}")
    # Never more than the pinned size (+1 to see a longer file): a link to /dev/zero or a
    # huge file is refused before anything big is read.
    content = read_regular(path, limit=pin.size, what=f"{path}",
                           fail=lambda why: ModelHashError(f"{why}; {FIX}"))
    digest = hashlib.sha256(content).hexdigest()
    if digest != pin.sha256:
        raise ModelHashError(
            f"{path}: sha256 {digest[:12]}… differs from the pinned {pin.sha256[:12]}…; "
            f"refusing it; {FIX}"
        )
    return content, pin
