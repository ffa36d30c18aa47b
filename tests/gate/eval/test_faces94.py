"""End-to-end evaluation on faces94-female (skipped where ../shared/datasets is absent).

These are regression guards on the issue's accuracy targets, not the measurement itself:
the figures quoted in the README come from `make eval` / `gatectl eval`.
"""

from __future__ import annotations

import pytest

from gate.eval import runner
from gate.eval.datasets import load_folder

# Embedding the whole set twice (int8 and float) takes about 20 s.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faces94_embedded(faces94, pipeline, pipeline_float):
    folder = load_folder(faces94)
    out = {"int8": runner.embed_all(pipeline, folder.images),
           "float": runner.embed_all(pipeline_float, folder.images)}
    yield folder, out
    for emb in out.values():
        emb.wipe()


def test_accuracy_targets(faces94_embedded):
    folder, embedded = faces94_embedded
    reports = {k: runner.verify_folder(v, folder.labels) for k, v in embedded.items()}
    for model, r in reports.items():
        assert r["unusable_rate"] <= 0.01, (model, r["unusable_reasons"])
        assert r["accuracy"] >= 0.995, model
    assert abs(reports["int8"]["accuracy"] - reports["float"]["accuracy"]) <= 0.003


def test_openset_is_resolved_at_1e_2(faces94_embedded):
    folder, embedded = faces94_embedded
    r = runner.openset_folder(embedded["int8"], folder.labels, gallery_sizes=[9], margin=0.05)
    assert [x["margin"] for x in r["results"]] == [0.0, 0.05]
    point = r["results"][0]["fnir_at_fpir"][1]
    assert point["fpir"] == 0.01 and point["resolvable"]
    assert r["results"][0]["rank1"] > 0.95
