#!/usr/bin/env bash
# `make test-arm64`: the gate on the Raspberry Pi's architecture, in an emulated aarch64
# Debian 12 (qemu-user through binfmt_misc), installed as a Pi installs it.
#
#  1. a minbase arm64 root (tools/rootfs.py; built once, cached under build/roots/);
#  2. the checkout's tracked files copied in; aarch64 wheels installed from PyPI into a
#     venv with --system-site-packages and the Pi's pins (the `pi` extra's numpy and
#     OpenCV bounds). picamera2 itself is not: on a Pi it is apt's (Raspberry Pi's archive,
#     not reachable here), and from PyPI alone it needs python-prctl built from source
#     (libcap-dev and a compiler);
#  3. the x86-built model files copied in and their sha256 checked there against the
#     committed manifest (the firmware would refuse any other file);
#  4. a subset of the suite run under emulation: the pipeline on two real photos with both
#     int8 embedders, faces and embeddings equal to the x86 host's within the stated
#     tolerance (tests/platform/test_reference_outputs.py: model loading, the pipeline, the
#     int8 kernels), the encrypted store's round trips and damage handling, the template
#     protection's crypto, and `gatectl doctor`, which must check what it can and say
#     what it cannot. Under qemu-user a frame takes 1-3 s (every NEON instruction emulated), so the
#     rest of the suite and the demo (hundreds of frames) are left to a real Pi
#     (`make demo && make test` there).
#
# Timings under emulation are not performance figures. Where the kernel refuses
# binfmt_misc this says so in one line and exits 0; on a real Pi run `make demo` and
# `make test` instead.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ARM64_ROOT:-build/roots/debian12-arm64}
# The core qemu-user emulates: a Raspberry Pi 5's Cortex-A76 (ARMv8.2: NEON, dot product).
# qemu's default, "max", adds SVE and int8 matrix multiply, which no Pi has: under it both
# int8 embedders gave embeddings unrelated to x86's (cosine -0.29 and 0.20) and every model
# ran ~25x slower. ARM64_CPU=cortex-a72 emulates a Pi 4 (docs/measurements.md, arm64).
export QEMU_CPU=${ARM64_CPU:-cortex-a76}
SRC=/src/gate
PY=${PYTHON:-python3}

bash tools/sysdeps.sh arm64
rc=0
$PY tools/rootfs.py build --arch arm64 --root "$ROOT" \
    --include python3,python3-venv,python3-pip,ca-certificates,make,libgl1,libglib2.0-0,mosquitto \
    || rc=$?
if [ $rc -eq 77 ]; then
    echo "test-arm64: skipped (see the line above); on a real Pi: make demo && make test"
    exit 0
fi
[ $rc -eq 0 ] || exit $rc

# The reference outputs, computed here on the host (x86) with the same files.
mkdir -p build/platform
.venv/bin/python -m tests.platform.reference build/platform/reference-host.json

# A fresh copy of the tracked files, the models and the test photos.
rm -rf "$ROOT$SRC"
mkdir -p "$ROOT$SRC/build/testdata" "$ROOT$SRC/build/platform"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$ROOT$SRC"
cp -a models "$ROOT$SRC/models"
cp -a build/testdata/face_recognition "$ROOT$SRC/build/testdata/"
cp build/platform/reference-host.json "$ROOT$SRC/build/platform/"

$PY tools/rootfs.py run --root "$ROOT" -- /bin/bash -euo pipefail -c '
cd /src/gate
echo "test-arm64: $(uname -m) (qemu-user, $QEMU_CPU), $(python3 --version), $(. /etc/os-release; echo "$PRETTY_NAME")"
# The manifest check is the standard library alone: it runs before anything is installed.
python3 tools/build_models.py --check
if [ ! -x /opt/venv/bin/python ]; then
    python3 -m venv --system-site-packages /opt/venv
fi
pip() { /opt/venv/bin/python -m pip --quiet "$@"; }
pip install --upgrade pip
# The system packages a gate needs, by the same script as everywhere.
bash tools/sysdeps.sh runtime
# As a Pi installs it: the pi extra'"'"'s pins (read from pyproject.toml), without picamera2,
# which a Pi takes from apt.
pins=$(python3 -c "import tomllib; print(\" \".join(d for d in tomllib.load(open(\"pyproject.toml\", \"rb\"))[\"project\"][\"optional-dependencies\"][\"pi\"] if not d.startswith(\"picamera2\")))")
echo "test-arm64: pins of the pi extra: $pins"
# shellcheck disable=SC2086
pip install . ./central $pins pytest pytest-mock hypothesis jsonschema pyyaml
/opt/venv/bin/python - <<EOF
import platform, numpy, cv2
from gate.inference import Model
print(f"test-arm64: numpy {numpy.__version__}, OpenCV {cv2.__version__}, {platform.machine()}")
EOF
GATE_REFERENCE=build/platform/reference-host.json \
GATE_AGREEMENT=build/platform/agreement.txt \
    /opt/venv/bin/python -m pytest -q -p no:cacheprovider -o addopts="" -s \
    tests/platform/test_reference_outputs.py \
    tests/gate/match/test_cache_storage.py tests/sync/test_protect.py
echo "test-arm64: gatectl doctor (no config, keys, GPIO or camera here: it must say so)"
GATE_MODELS_DIR=/src/gate/models /opt/venv/bin/gatectl doctor || true
GATE_MODELS_DIR=/src/gate/models /opt/venv/bin/gatectl doctor --json > /tmp/doctor.json || true
/opt/venv/bin/python - <<EOF
import json
r = json.load(open("/tmp/doctor.json"))
checks = {c["name"]: c for c in r["checks"]}
names = {"config", "models", "keys", "cache", "disk", "memory", "clock", "gpio", "camera", "broker"}
assert names <= set(checks), names - set(checks)
assert checks["models"]["status"] == "ok", checks["models"]
for c in r["checks"]:  # every failure says what to do
    assert c["status"] != "fail" or c["fix"], c
print("test-arm64: doctor checked", len(r["checks"]), "items; models ok")
EOF
'
echo "test-arm64: passed on $QEMU_CPU; least cosine arm64 vs x86: $(cat "$ROOT$SRC/build/platform/agreement.txt")"
