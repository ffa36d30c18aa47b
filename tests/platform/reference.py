"""What the pipeline outputs on the face_recognition photos, to compare machines.

``python -m tests.platform.reference OUT.json`` writes, for every embedder, each photo's
faces (boxes) and the chosen face's embedding. ``make test-arm64`` writes it on the x86
host and ``test_reference_outputs.py`` compares the emulated aarch64 gate against it.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

from gate.config import from_dict
from gate.images import load_image
from gate.match.embedders import EMBEDDERS
from gate.pipeline import FacePipeline
from tests.support import MODELS, PHOTOS

#: What ``make test-arm64`` compares: under qemu-user a frame takes about 10 s (XNNPACK's
#: NEON code emulated instruction by instruction), so the int8 embedders a Pi runs, on
#: two photos (two people).
EMULATED = (("sface-int8", "mobilefacenet-int8"), ("obama.jpg", "biden.jpg"))


def outputs(models_dir: Path = MODELS, photos: Path = PHOTOS, *,
            embedders: tuple[str, ...] = tuple(EMBEDDERS),
            names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """{embedder: {photo: {"boxes": [...], "embedding": [...] or None}}}."""
    cfg = from_dict({"models": {"dir": str(models_dir)}})
    out: dict[str, Any] = {"machine": platform.machine(), "embedders": {}}
    paths = [photos / n for n in names] if names else sorted(photos.glob("*.jpg"))
    for name in embedders:
        pipe = FacePipeline.from_config(cfg, embedder=name)
        rows = {}
        for path in paths:
            res = pipe.process(load_image(path))
            rows[path.name] = {
                "boxes": [[round(v, 2) for v in f.box] for f in res.faces],
                "embedding": None if res.embedding is None else
                [float(v) for v in res.embedding]}
            pipe.wipe()
        out["embedders"][name] = rows
    return out


if __name__ == "__main__":
    every = "--all" in sys.argv
    subset = {} if every else {"embedders": EMULATED[0], "names": EMULATED[1]}
    Path(sys.argv[1]).write_text(json.dumps(outputs(**subset)))  # type: ignore[arg-type]
