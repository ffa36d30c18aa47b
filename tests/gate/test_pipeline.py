"""The whole pipeline on real photos: who matches whom, input handling, and wiping (P2)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from gate.inference import Model
from gate.match.embedder import DEFAULT_THRESHOLD, Embedder
from gate.match.embedders import MOBILEFACENET_FLOAT
from gate.match.threshold import CALIBRATIONS
from gate.models import read_verified
from gate.pipeline import FacePipeline

OBAMA = ["obama.jpg", "obama2.jpg", "obama3.jpg"]


def _embed(pipeline: FacePipeline, image: np.ndarray) -> np.ndarray:
    res = pipeline.process(image)
    assert res.usable, [str(i) for i in res.issues]
    assert res.embedding is not None
    emb = res.embedding.copy()
    pipeline.wipe()
    return emb


@pytest.mark.parametrize("which", ["pipeline", "pipeline_float", "pipeline_mfn",
                                   "pipeline_mfn_float"])
def test_obama_matches_obama_and_biden_matches_no_one(which, request, photo):
    pipeline = request.getfixturevalue(which)
    # Each embedder's own calibrated threshold (FPIR 1e-3 with 100 enrolled).
    threshold = CALIBRATIONS[pipeline.embedder.spec.name].threshold_for(1e-3, 100)[0]
    obama = [_embed(pipeline, photo(n)) for n in OBAMA]
    biden = _embed(pipeline, photo("biden.jpg"))
    assert obama[0].shape == (pipeline.embedder.spec.model.dim,)
    for i in range(len(obama)):
        assert abs(float(np.linalg.norm(obama[i])) - 1.0) < 1e-5
        for j in range(i + 1, len(obama)):
            assert float(obama[i] @ obama[j]) >= threshold, (OBAMA[i], OBAMA[j])
        assert float(obama[i] @ biden) < threshold - 0.2, OBAMA[i]


def test_rgba_png_is_handled_like_its_jpeg_twin(photo, pipeline):
    """32bit.png is obama2.jpg saved with an alpha channel."""
    a = _embed(pipeline, photo("32bit.png"))
    b = _embed(pipeline, photo("obama2.jpg"))
    assert float(a @ b) > 0.98


def test_grayscale_photo_still_matches(photo, pipeline):
    gray = cv2.cvtColor(photo("obama.jpg"), cv2.COLOR_RGB2GRAY)
    as_rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    assert float(_embed(pipeline, as_rgb) @ _embed(pipeline, photo("obama3.jpg"))) \
        >= DEFAULT_THRESHOLD


def test_blazeface_only_alignment_still_works(config, photo):
    cfg = dataclasses.replace(config, detect=dataclasses.replace(config.detect,
                                                                 landmarks=False))
    pipe = FacePipeline.from_config(cfg)
    assert pipe.mesh is None
    a, b = _embed(pipe, photo("obama.jpg")), _embed(pipe, photo("obama3.jpg"))
    assert float(a @ b) >= DEFAULT_THRESHOLD
    partial = pipe.process(photo("obama_partial_face.jpg"))
    assert partial.measures is not None


def test_no_face_gives_a_reason_and_no_embedding(pipeline):
    res = pipeline.process(np.full((480, 640, 3), 90, np.uint8))
    assert not res.usable and res.embedding is None
    assert [i.reason.value for i in res.issues] == ["no_face"]


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32)])
def test_wrong_array_is_a_clear_error(bad, pipeline):
    with pytest.raises(ValueError, match="uint8 RGB"):
        pipeline.process(bad)


def test_stage_times_are_recorded(photo, pipeline):
    res = pipeline.process(photo("obama.jpg"))
    assert set(res.times_ms) == {"detect", "landmarks", "align", "quality", "embed", "models"}
    assert all(v >= 0 for v in res.times_ms.values())
    # The time inside the models is part of the stages', never more.
    stages = sum(v for k, v in res.times_ms.items() if k != "models")
    assert 0 < res.times_ms["models"] <= stages
    pipeline.wipe()


def test_wipe_leaves_no_pixel_or_embedding_in_any_buffer(photo, pipeline):
    """Promise P2's foundation: after wipe() every buffer the pipeline owns, and the
    interpreters' own input/output tensors, hold zeros. A reference kept from before
    the wipe sees the zeros too (buffers are reused, never reallocated)."""
    res = pipeline.process(photo("obama3.jpg"))
    kept = res.embedding
    buffers = [pipeline.detector._canvas, *pipeline.detector._pyramid.levels,
               pipeline.aligner.crop, pipeline.embedder.embedding, pipeline._gray]
    assert pipeline.mesh is not None
    buffers += [pipeline.mesh._crop]
    assert all(b.any() for b in buffers)
    models = [pipeline.detector.model, pipeline.mesh.model, pipeline.embedder.model]
    # Each model's input was written straight into its interpreter's tensor.
    assert all(m.read_tensor(m.io_indices[0]).any() for m in models)
    pipeline.wipe()
    assert kept is not None and not kept.any()
    assert not any(b.any() for b in buffers)
    for m in models:
        for index in m.io_indices:
            assert not m.read_tensor(index).any(), (m.name, index)


def test_buffers_are_reused_between_frames(photo, pipeline):
    first = pipeline.process(photo("obama.jpg")).embedding
    second = pipeline.process(photo("biden.jpg")).embedding
    assert first is second  # one buffer, overwritten: nothing accumulates in RAM
    pipeline.wipe()


def test_flip_average_is_the_normalised_sum_of_face_and_mirror(models_dir, photo,
                                                                pipeline_float):
    pipeline_float.process(photo("obama3.jpg"))
    crop = pipeline_float.aligner.crop.copy()
    pipeline_float.wipe()
    content = read_verified(models_dir, "embedder_float")[0]
    raw = Model(content, name="f")

    def net(x: np.ndarray) -> np.ndarray:
        t = ((x.astype(np.float32) - 127.5) / 128.0)[None]
        return raw.run(t)["embeddings"][0].astype(np.float64)

    a, b = net(crop), net(np.ascontiguousarray(crop[:, ::-1]))
    both = Embedder(Model(content, name="f"), spec=MOBILEFACENET_FLOAT, flip_average=True)
    assert both.model.input_shape[0] == 2
    expected = (a + b) / np.linalg.norm(a + b)  # raw outputs summed, then normalised
    np.testing.assert_allclose(both.embed(crop), expected, atol=1e-5)
    assert float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) < 0.999  # mirror differs
