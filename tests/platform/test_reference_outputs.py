"""The gate on another machine computes what it computes here: the same faces and, for
each embedder, embeddings equal within a stated tolerance (``make test-arm64`` runs this
on an emulated aarch64 Debian against outputs written on the x86 host)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.platform.reference import outputs

#: Least cosine between the two machines' embeddings of the same photo. The int8 models'
#: dynamic-range kernels are different code on x86 and Arm (rounding of the activations'
#: quantization differs); float models agree to rounding.
MIN_COSINE = {"mobilefacenet-int8": 0.99, "sface-int8": 0.99,
              "mobilefacenet-float": 0.999, "sface-float": 0.999}
#: Least overlap (IoU) of a face's box on the two machines.
MIN_IOU = 0.95


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def reference() -> dict:
    path = os.environ.get("GATE_REFERENCE")
    if not path:
        pytest.skip("no outputs from another machine to compare with (GATE_REFERENCE; "
                    "make test-arm64 sets it)")
    return json.loads(Path(path).read_text())


def test_same_faces_and_embeddings_as_the_reference_machine(reference, models_dir, photos):
    models = tuple(reference["embedders"])
    names = tuple(sorted(next(iter(reference["embedders"].values()))))
    assert models and names
    here = outputs(models_dir, photos, embedders=models, names=names)
    assert set(here["embedders"]) == set(reference["embedders"])
    worst: dict[str, float] = {}
    for model, rows in reference["embedders"].items():
        assert set(here["embedders"][model]) == set(rows)
        for photo, ref in rows.items():
            mine = here["embedders"][model][photo]
            assert len(mine["boxes"]) == len(ref["boxes"]), (model, photo)
            for a, b in zip(mine["boxes"], ref["boxes"], strict=True):
                assert _iou(a, b) >= MIN_IOU, (model, photo, a, b)
            assert (mine["embedding"] is None) == (ref["embedding"] is None), (model, photo)
            if ref["embedding"] is not None:
                cos = float(np.dot(mine["embedding"], ref["embedding"]))
                worst[model] = min(worst.get(model, 1.0), cos)
    summary = ", ".join(f"{m} {c:.5f}" for m, c in sorted(worst.items()))
    print(f"\nleast cosine, {here['machine']} vs {reference['machine']}: {summary}")
    out = os.environ.get("GATE_AGREEMENT")
    if out:
        Path(out).write_text(summary + "\n")
    for model, cos in worst.items():
        assert cos >= MIN_COSINE[model], f"{model}: cosine {cos:.5f} < {MIN_COSINE[model]}"
