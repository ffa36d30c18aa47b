"""Model supply: the manifest pins, hash refusal, the batch-1 patch and the int8 variant."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import gate.inference.litert as litert_backend
import gate.inference.tflite as tflite_backend
from gate.errors import ModelError, ModelHashError, ModelMissingError, RuntimeBackendError
from gate.inference import Model
from gate.models import manifest, read_verified
from tests.support import ROOT, tool


def test_manifest_pins_every_role_with_provenance():
    pins = manifest()
    assert set(pins) == {"detector", "landmarks", "embedder_batch2", "embedder_float",
                         "embedder_int8", "embedder_sface_float", "embedder_sface_int8",
                         "licence_apache", "notice"}
    for pin in pins.values():
        assert len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0
        assert pin.size > 0 and pin.license and pin.source and pin.derivation


def test_every_fetched_file_matches_its_pin(models_dir):
    for role in manifest():
        content, pin = read_verified(models_dir, role)
        assert len(content) == pin.size


def test_missing_file_is_refused_naming_file_and_fix(tmp_path):
    with pytest.raises(ModelMissingError) as err:
        read_verified(tmp_path, "detector")
    msg = str(err.value)
    assert "face_detection_short_range.tflite" in msg and "make models" in msg
    assert "\n" not in msg


def test_modified_file_is_refused(models_dir, tmp_path):
    for role in manifest():
        shutil.copy(models_dir / manifest()[role].name, tmp_path)
    target = tmp_path / "mobilefacenet_int8.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    target.write_bytes(bytes(data))
    with pytest.raises(ModelHashError) as err:
        read_verified(tmp_path, "embedder_int8")
    msg = str(err.value)
    assert "mobilefacenet_int8.tflite" in msg and "make models" in msg and "\n" not in msg
    # The others are still accepted: only the tampered file is refused.
    read_verified(tmp_path, "embedder_float")


def test_truncated_file_is_refused(models_dir, tmp_path):
    src = models_dir / "face_landmark.tflite"
    (tmp_path / src.name).write_bytes(src.read_bytes()[:1000])
    with pytest.raises(ModelHashError):
        read_verified(tmp_path, "landmarks")


@pytest.mark.parametrize("garbage", [b"", b"not a model", bytes(range(256)) * 64])
def test_garbage_bytes_give_a_model_error_not_a_crash(garbage):
    with pytest.raises(ModelError) as err:
        Model(garbage, name="garbage.tflite")
    assert "garbage.tflite" in str(err.value) and "\n" not in str(err.value)


def _faces(photo, pipeline_float, names):
    crops = []
    for name in names:
        res = pipeline_float.process(photo(name))
        assert res.usable, name
        crops.append(pipeline_float.aligner.crop.copy())
    return crops


def _prep(crops):
    return ((np.stack(crops).astype(np.float32) - 127.5) / 128.0).astype(np.float32)


def test_batch1_variant_equals_the_original_batch2_rows(models_dir, photo, pipeline_float):
    crops = _faces(photo, pipeline_float, ["obama.jpg", "biden.jpg"])
    x = _prep(crops)
    original = Model(read_verified(models_dir, "embedder_batch2")[0], name="b2")
    assert original.input_shape == (2, 112, 112, 3)
    rows = original.run(x)["embeddings"]
    single = Model(read_verified(models_dir, "embedder_float")[0], name="b1")
    assert single.input_shape == (1, 112, 112, 3)
    for k in range(2):
        out = single.run(x[k:k + 1])["embeddings"][0]
        np.testing.assert_allclose(out, rows[k], rtol=1e-5, atol=1e-5)
    # Different faces really give different rows (the comparison is not vacuous).
    assert np.abs(rows[0] - rows[1]).max() > 0.1


def test_int8_weights_really_are_int8_and_file_is_small(models_dir):
    path = models_dir / "mobilefacenet_int8.tflite"
    assert path.stat().st_size < 2 * 1024 * 1024
    model = Model(read_verified(models_dir, "embedder_int8")[0], name=path.name)
    details = model.tensor_details()
    conv = [d for d in details if d["name"].endswith("weights/read") and "depthwise" not in
            d["name"]]
    assert len(conv) == 35  # every CONV_2D kernel of MobileFaceNet
    assert all(d["dtype"] == np.int8 for d in conv)
    # Per-channel scales: one per output channel, as the dynamic-range recipe promises.
    for d in conv:
        scales = d["quantization_parameters"]["scales"]
        assert scales.size == d["shape"][0] and np.all(scales > 0)
    int8_params = sum(int(np.prod(d["shape"])) for d in conv)
    float_params = sum(int(np.prod(d["shape"])) for d in details
                       if "depthwise_weights" in d["name"])
    assert int8_params / (int8_params + float_params) > 0.9
    # The float model really is float: the check above is not vacuous.
    flt = Model(read_verified(models_dir, "embedder_float")[0], name="float")
    assert all(d["dtype"] == np.float32 for d in flt.tensor_details()
               if d["name"].endswith("weights/read"))


@pytest.mark.parametrize("pair", [("pipeline", "pipeline_float"),
                                  ("pipeline_mfn", "pipeline_mfn_float")])
def test_int8_embeddings_track_float(photo, request, pair):
    int8, flt = (request.getfixturevalue(p) for p in pair)
    for name in ("obama.jpg", "obama3.jpg", "biden.jpg"):
        a = int8.process(photo(name)).embedding.copy()
        b = flt.process(photo(name)).embedding.copy()
        assert float(a @ b) > 0.98, name


def test_sface_int8_quantizes_its_convolutions_and_dense_layer(models_dir):
    path = models_dir / "sface_int8.tflite"
    assert path.stat().st_size < 11 * 1024 * 1024  # float: 38.5 MB
    model = Model(read_verified(models_dir, "embedder_sface_int8")[0], name=path.name)
    assert model.input_shape == (1, 112, 112, 3) and model.output_shapes() == [(1, 128)]
    int8 = [d for d in model.tensor_details() if d["dtype"] == np.int8 and len(d["shape"]) > 1]
    # 14 CONV_2D kernels and the FULLY_CONNECTED weights, one scale per output channel.
    assert len(int8) == 15
    for d in int8:
        scales = d["quantization_parameters"]["scales"]
        assert scales.size == d["shape"][0] and np.all(scales > 0)
    flt = Model(read_verified(models_dir, "embedder_sface_float")[0], name="sface_float")
    assert not any(d["dtype"] == np.int8 for d in flt.tensor_details())


def test_tflite_runtime_fallback_gives_the_same_embedding(models_dir):
    pytest.importorskip("tflite_runtime", reason="tflite-runtime has no wheel for this Python")
    content = read_verified(models_dir, "embedder_float")[0]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 112, 112, 3)).astype(np.float32)
    litert = Model(content, name="f", backend="ai_edge_litert")
    legacy = Model(content, name="f", backend="tflite_runtime")
    assert (litert.backend, legacy.backend) == ("ai_edge_litert", "tflite_runtime")
    np.testing.assert_allclose(litert.run(x)["embeddings"], legacy.run(x)["embeddings"],
                               rtol=1e-4, atol=1e-4)


def test_auto_falls_back_with_a_warning(models_dir, monkeypatch, caplog):
    pytest.importorskip("tflite_runtime", reason="tflite-runtime has no wheel for this Python")

    def broken(content: bytes, threads: int) -> None:
        raise ImportError("No module named 'ai_edge_litert'")

    monkeypatch.setattr(litert_backend, "make_interpreter", broken)
    model = Model(read_verified(models_dir, "detector")[0], name="d")
    assert model.backend == "tflite_runtime"
    assert "ai_edge_litert unavailable" in caplog.text


def test_no_runtime_at_all_is_one_clear_error(models_dir, monkeypatch):
    def broken(content: bytes, threads: int) -> None:
        raise ImportError("missing")

    monkeypatch.setattr(litert_backend, "make_interpreter", broken)
    monkeypatch.setattr(tflite_backend, "make_interpreter", broken)
    with pytest.raises(RuntimeBackendError, match="install ai-edge-litert or tflite-runtime"):
        Model(read_verified(models_dir, "detector")[0], name="d")


def test_unknown_backend_is_refused(models_dir):
    with pytest.raises(RuntimeBackendError, match="unknown inference backend"):
        Model(read_verified(models_dir, "detector")[0], name="d", backend="onnx")


def test_build_script_check_mode_reports_problems(tmp_path):
    build_models = tool("build_models")
    manifest = build_models.load_manifest(ROOT / "gate" / "model_manifest.json")
    problems = build_models.check(tmp_path, manifest)
    assert len(problems) == len(manifest["files"]) == 9
    assert all("missing" in p for p in problems)
