#!/usr/bin/env bash
# `make test-arm64`: the gate on the Raspberry Pi's architecture, in an emulated aarch64
# Debian 12 (qemu-user through binfmt_misc), installed as a Pi installs it.
#
#  1. a minbase arm64 root (tools/rootfs.py; built once, cached under build/roots/);
#  2. the checkout's tracked files copied in; the project installed from PyPI's aarch64
#     wheels into a venv with --system-site-packages, with the `pi` extra whole: its numpy
#     and OpenCV pins and picamera2, whose python-prctl and PiDNG pip builds from source
#     (tools/sysdeps.sh pi-pypi: a compiler and libcap from Debian). On Raspberry Pi OS
#     apt's python3-picamera2 satisfies it instead; libcamera's bindings exist only there,
#     so here the camera must say exactly that;
#  3. the x86-built model files copied in and their sha256 checked there against the
#     committed manifest (the firmware would refuse any other file);
#  4. a subset of the suite run under emulation: the pipeline on two real photos with both
#     int8 embedders, faces and embeddings equal to the x86 host's within the stated
#     tolerance (on the Pi 5's core, then again on the Pi 4's) (tests/platform/test_reference_outputs.py: model loading, the pipeline, the
#     int8 kernels), the encrypted store's round trips and damage handling, the template
#     protection's crypto, and `gatectl doctor`, which must check what it can and say
#     what it cannot;
#  5. the demo, whole (central's processes, Mosquitto with mutual TLS, the queue of seven
#     turns, which it checks itself), with the lane's timeouts stretched (--pace): under
#     qemu-user a frame takes about a second. The rest of the suite is left to a real Pi
#     (`make test` there);
#  6. `make install` as docs/install.md says (in a chroot, as for an SD-card image: no
#     systemd running, so no daemon-reload), the installed gatectl's doctor finding the
#     installed models, `systemd-analyze verify` of the installed unit from the host, then
#     `make uninstall --purge` leaving nothing behind.
#
# Timings under emulation are not performance figures. Where the kernel refuses
# binfmt_misc this says so in one line and exits 0; on a real Pi run `make demo` and
# `make test` instead.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ARM64_ROOT:-build/roots/debian12-arm64}
# The core qemu-user emulates, and /proc/cpuinfo names (tools/rootfs.py): a Raspberry Pi
# 5's Cortex-A76 (ARMv8.2: NEON with dot product). The faces and int8 embeddings are also
# checked on a Pi 4's Cortex-A72 (ARMv8.0, no dot product: other XNNPACK kernels) at the end.
# ARM64_CPU=cortex-a72 or cortex-a53 (Pi 3, Zero 2 W) runs the whole check on that core.
export QEMU_CPU=${ARM64_CPU:-cortex-a76}
SRC=/src/gate
PY=${PYTHON:-python3}

bash tools/sysdeps.sh arm64
rc=0
$PY tools/rootfs.py build --arch arm64 --root "$ROOT" \
    --include python3,python3-venv,python3-pip,ca-certificates,make,libgl1,libglib2.0-0,mosquitto,systemd \
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
# Two portraits for the demo's stranger and third attendee (the demo takes the first two).
mkdir -p "$ROOT$SRC/build/calibration/radar"
mapfile -d '' -t portraits < <(find build/calibration/radar -name '*.jpg' -print0 | sort -z)
cp -t "$ROOT$SRC/build/calibration/radar/" "${portraits[@]:0:2}"
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
# The system packages a gate needs, by the same script as everywhere, and what pip needs
# to build picamera2'"'"'s dependencies here (no Raspberry Pi OS archive).
bash tools/sysdeps.sh runtime pi-pypi
# As a Pi installs it, the pi extra whole: its numpy and OpenCV pins and picamera2.
pip install ".[pi]" ./central pytest pytest-mock hypothesis jsonschema pyyaml
/opt/venv/bin/python - <<EOF
import platform, numpy, cv2
from importlib.metadata import version
from gate.camera import open_camera
from gate.camera.base import CameraError, Mode
from gate.inference import Model
import prctl, pidng, simplejpeg, av  # picamera2'"'"'s compiled dependencies load
picamera2 = version("picamera2")
print(f"test-arm64: numpy {numpy.__version__}, OpenCV {cv2.__version__}, "
      f"picamera2 {picamera2}, {platform.machine()}")
try:
    open_camera("picamera2", "", Mode(640, 480, 30)).open()
    raise SystemExit("test-arm64: picamera2 opened a camera under emulation?")
except CameraError as exc:
    assert "libcamera" in str(exc), exc
    print(f"test-arm64: the camera, as a technician reads it: {exc}")
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
echo "test-arm64: the demo, paced for emulation (its timings are not performance figures)"
/opt/venv/bin/python -m gate.sim.demo --pace 10
echo "test-arm64: make install, as docs/install.md says"
make install INSTALL_ARGS=-y
/usr/local/bin/gatectl doctor --json > /tmp/doctor-installed.json || true
/opt/venv/bin/python - <<EOF
import json
checks = {c["name"]: c for c in json.load(open("/tmp/doctor-installed.json"))["checks"]}
assert checks["models"]["status"] == "ok", checks["models"]
print("test-arm64: the installed gatectl finds its models:", checks["models"]["detail"])
EOF
'
echo "test-arm64: systemd-analyze verify of the unit installed in the arm64 root"
out=$(systemd-analyze verify --root="$ROOT" "$ROOT/etc/systemd/system/gate.service" 2>&1) || {
    echo "$out"; exit 1; }
[ -z "$out" ] || { echo "test-arm64: systemd-analyze verify: $out" >&2; exit 1; }
$PY tools/rootfs.py run --root "$ROOT" -- /bin/bash -euo pipefail -c '
cd /src/gate
make uninstall INSTALL_ARGS="-y --purge"
for left in /opt/gate /etc/gate /etc/systemd/system/gate.service /usr/local/bin/gatectl; do
    if [ -e "$left" ] || [ -L "$left" ]; then echo "test-arm64: left behind: $left" >&2; exit 1; fi
done
echo "test-arm64: make uninstall --purge left nothing behind"
'
# The Pi 4's core takes XNNPACK's int8 kernels without dot product: its faces and
# embeddings are compared with x86's too (a minute; the rest does not depend on the core).
also=cortex-a72
[ "$QEMU_CPU" != "$also" ] || also=cortex-a76
QEMU_CPU=$also $PY tools/rootfs.py run --root "$ROOT" -- /bin/bash -euo pipefail -c '
cd /src/gate
echo "test-arm64: the faces and int8 embeddings again on $QEMU_CPU"
GATE_REFERENCE=build/platform/reference-host.json \
GATE_AGREEMENT=build/platform/agreement-also.txt \
    /opt/venv/bin/python -m pytest -q -p no:cacheprovider -o addopts="" \
    tests/platform/test_reference_outputs.py
'
echo "test-arm64: passed on $QEMU_CPU; least cosine arm64 vs x86: $(cat "$ROOT$SRC/build/platform/agreement.txt")"
echo "test-arm64: on $also: $(cat "$ROOT$SRC/build/platform/agreement-also.txt")"
