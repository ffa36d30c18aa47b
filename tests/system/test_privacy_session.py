"""P1 and P4 over a whole simulated session: the demo runs in a subprocess with a fresh
work directory (enrolled, stranger, revoked, two at once, emergency, timeout, re-entry),
a recorder on the broker's ``#`` writes every MQTT message, and afterwards every file the
session created, its output and every message are searched for images, crops and
embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gate.images import load_image
from gate.sim.lane import at_lane_distance, compose
from sync import messages
from tests.support import DIM, PORTRAITS, ROOT


def unit_vectors(data: bytes, dim: int = DIM) -> int:
    """How many ``dim``-float, unit-length vectors (any alignment) ``data`` contains: what
    an embedding or a template looks like in memory. Ciphertext and text never do."""
    found = 0
    for offset in range(4):
        usable = (len(data) - offset) // 4 * 4
        if usable < dim * 4:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            v = np.frombuffer(data, "<f4", usable // 4, offset).astype(np.float64)
        ok = np.isfinite(v) & (np.abs(v) < 1.0)
        sq = np.where(ok, v * v, 10.0)  # a non-finite or big value spoils its windows
        c = np.concatenate([[0.0], np.cumsum(sq)])
        window = c[dim:] - c[:-dim]
        found += int(np.sum(np.abs(window - 1.0) < 1e-3))
    return found


@pytest.fixture(scope="module")
def session(tmp_path_factory, photos, models_dir):
    if not (PORTRAITS / ".stamp").exists():
        pytest.fail(f"{PORTRAITS}: run `make calibration-data` (make test does)")
    work = tmp_path_factory.mktemp("session")
    record = work.parent / f"{work.name}-mqtt.bin"
    done = subprocess.run([sys.executable, "-m", "gate.sim.demo", "--workdir", str(work),
                           "--models", str(models_dir), "--photos", str(photos),
                           "--portraits", str(PORTRAITS), "--record-mqtt", str(record),
                           "--log-level", "info"],
                          check=False, capture_output=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    files = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    return {"files": files, "out": done.stdout + done.stderr, "log": done.stderr,
            "mqtt": record.read_bytes() if record.exists() else b""}


@pytest.mark.slow
def test_the_session_really_ran(session):
    out = session["out"].decode()
    for expected in ("recognised: flapper open", "denied: not recognised",
                     "two people in front of the camera", "emergency: lane open",
                     "no passage before the timeout", "denied: already entered",
                     "entry events received by central (1)"):
        assert expected in out, expected
    assert session["mqtt"], "the recorder saw no messages"
    names = {p.name for p in session["files"]}
    assert {"templates.cache", "sync.db"} <= names  # the gate's state was written


@pytest.mark.slow
def test_p10_logs_carry_no_attendee_id_above_debug(session):
    """The firmware's journald lines of the whole session (INFO and up): state changes,
    decisions and sync, but never whom they were about."""
    lines = [ln for ln in session["log"].decode().splitlines() if ln[:1] == "<"]
    assert len(lines) > 10, "the session wrote (almost) no log lines"
    assert any("recognised: flapper open" in ln for ln in lines)
    assert any(ln.startswith("<6>gate.match.cache: cache:") for ln in lines)
    for ln in lines:
        assert "visitor-" not in ln, f"attendee id in a log line: {ln[:80]}"
        assert unit_vectors(ln.encode()) == 0


def _needles(photos: Path, pipeline) -> list[bytes]:
    """Byte strings that would betray a photo, a lane-camera frame or a crop."""
    sources = [photos / "obama.jpg", photos / "obama3.jpg", photos / "biden.jpg",
               *sorted(PORTRAITS.glob("*.jpg"))[:2]]
    needles = []
    for src in sources:
        raw = src.read_bytes()
        needles += [raw[k:k + 64] for k in range(len(raw) // 4, len(raw), len(raw) // 4)]
        crop = at_lane_distance(load_image(src), pipeline)
        frame = compose((crop,))
        for img in (crop, frame):
            h = img.shape[0]
            needles += [img[r, img.shape[1] // 3: img.shape[1] // 3 + 24].tobytes()
                        for r in (h // 3, h // 2, 2 * h // 3)]
    # Only distinctive needles: a full length and varied content (not flat background).
    return [n for n in needles if len(n) >= 64 and len(set(n)) >= 8]


@pytest.mark.slow
def test_p1_no_image_crop_or_embedding_anywhere(session, photos, pipeline):
    needles = _needles(photos, pipeline)
    blobs = {**{str(p): b for p, b in session["files"].items()},
             "stdout+stderr": session["out"], "mqtt": session["mqtt"]}
    assert len(needles) >= 30
    for name, blob in blobs.items():
        assert not any(n in blob for n in needles), f"image data in {name}"
        assert b"\xff\xd8\xff" not in blob and b"\x89PNG" not in blob, f"image file in {name}"
        # The reference central keeps its protected templates encrypted at rest too.
        assert unit_vectors(blob) == 0, f"an embedding-shaped vector in {name}"


def test_the_detector_would_find_an_embedding(pipeline, photo):
    """The scan above is not vacuous: one embedding among other bytes is found."""
    emb = pipeline.process(photo("obama.jpg")).embedding.copy()
    pipeline.wipe()
    blob = os.urandom(1001) + emb.tobytes() + os.urandom(333)
    assert unit_vectors(blob) >= 1
    assert unit_vectors(os.urandom(100_000)) == 0


@pytest.mark.slow
def test_p4_only_events_receipts_status_and_sealed_templates_cross_the_broker(session):
    lines = session["mqtt"].split(b"\n")
    kinds = set()
    for topic_raw, payload in zip(lines[0::2], lines[1::2], strict=False):
        if not topic_raw:
            continue
        _, _, kind = messages.parse_topic(topic_raw.decode())
        env = json.loads(payload)
        kinds.add(kind)
        if kind == "events":
            assert set(env["body"]) == {"event_id", "attendee", "gate", "at"}
        if kind == "templates":
            assert "sealed" in env["body"] or "sha256" in env["body"]
        if kind == "head":
            assert set(env["body"]) == {"templates", "revocations"}  # two numbers, no one
    assert kinds <= {"templates", "revocations", "commands", "head", "events", "receipts",
                     "status"}
    assert {"events", "receipts", "status"} <= kinds
