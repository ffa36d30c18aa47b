"""`gatectl doctor`: a healthy gate passes; each kind of breakage shows ✗ with a fix.

Real parts where CI has them: the fetched models, key files with real modes, a real
encrypted cache, the replay camera on the face_recognition photos, a real Mosquitto with
mutual TLS and the venue ACL (one broker for the module). Only what CI cannot have (a
synchronised clock, GPIO chips, systemd-creds) comes from fakes passed in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from central.pki import init_venue
from gate import doctor
from gate.cli.main import main
from gate.config import Config, from_dict, load
from gate.doctor import broker as broker_check
from gate.doctor import files, host
from gate.doctor.result import Status
from gate.exitcodes import EXIT_FAIL, EXIT_OK
from gate.service.control import ControlServer
from gate.templates import open_templates
from sync.templates import Enrolment
from tests import broker as tb
from tests.support import DAY, random_unit

SECRET_ID = "att-do-not-print-42"


@pytest.fixture
def lane(tmp_path, models_dir, photos) -> Path:
    """A healthy simulated lane: config file, 0600 key files, a real encrypted cache."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("cache-key", "template-key"):
        (keys / name).write_bytes(os.urandom(32))
        (keys / name).chmod(0o600)
    f = tmp_path / "gate.toml"
    f.write_text(f"""
[gate]
id = "lane-1"
venue = "arena"
event = "final"
[models]
dir = "{models_dir}"
[cache]
dir = "state"
key_file = "keys/cache-key"
template_key_file = "keys/template-key"
[camera]
backend = "replay"
source = "{photos}"
width = 320
height = 240
[gpio]
backend = "mock"
[service]
control_socket = "run/control.sock"
""")
    templates = open_templates(load(f))
    templates.cache.load()
    rng = np.random.default_rng(1)
    until = int(time.time()) + 2 * DAY
    templates.cache.upsert([Enrolment(SECRET_ID, 1, until, random_unit(rng, 1))])
    # The second lands in the journal.
    templates.cache.upsert([Enrolment("att-2", 1, until, random_unit(rng, 1))])
    templates.close()
    return f


def context(cfg_file: Path, **changes) -> doctor.Context:
    """Everything real except the probes CI cannot have."""
    root = cfg_file.parent
    ctx = doctor.Context(cfg=load(cfg_file), config_file=cfg_file, owner_uid=os.geteuid(),
                         credentials_dir=None, credstores=(root / "credstore",), decrypt=None,
                         clock=lambda: (True, "test"), swaps=lambda: [],
                         unit_memlock=lambda: None, dev=root / "dev")
    return dataclasses.replace(ctx, **changes)


def by_name(results) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r.name, []).append(r)
    return out


def only(results, name):
    [r] = by_name(results)[name]
    return r


def test_a_healthy_lane_passes(lane):
    results = doctor.run(context(lane))
    failed = [r for r in results if r.failed]
    assert not failed, failed
    got = by_name(results)
    assert [r.status for r in got["keys"]] == [Status.OK, Status.OK]
    assert got["keys"][0].detail == f"cache-key: file {lane.parent}/keys/cache-key"
    assert only(results, "cache").detail.startswith("decrypts: version 2, 2 attendees, "
                                                    "2 templates, valid until ")
    assert only(results, "camera").detail.startswith("replay: 6 frames 320×240 at ")
    assert only(results, "config").detail == f"{lane}: valid for the service"
    assert only(results, "gpio").status is Status.SKIP  # mock pins
    assert only(results, "broker").status is Status.SKIP  # sync disabled
    assert SECRET_ID not in repr(results)


def test_cli_healthy_exits_0_and_prints_no_ids(lane, capsys, monkeypatch):
    monkeypatch.setattr(host, "clock_synchronized", lambda: (True, "test"))
    monkeypatch.setattr(host, "active_swaps", lambda: [])
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr(files, "SERVICE_USER", "no-such-user-here")
    assert main(["--config", str(lane), "doctor"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "gate lane-1 (arena / final) · service not running"
    assert out.splitlines()[-1] == "all checks passed"
    assert "✓ cache " in out and "– gpio " in out and SECRET_ID not in out
    assert main(["--config", str(lane), "doctor", "--json", "--skip", "camera", "gpio"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["service"] == "stopped"
    assert [c["name"] for c in report["checks"]] == [
        "config", "models", "keys", "keys", "cache", "disk", "memory", "clock", "gpio",
        "camera", "broker"]
    assert {c["name"]: c["status"] for c in report["checks"]}["camera"] == "skip"
    assert set(report["checks"][0]) == {"name", "status", "detail", "fix"}


def test_cli_broken_lane_exits_1_with_a_fix_per_failure(lane, capsys, monkeypatch):
    monkeypatch.setattr(host, "clock_synchronized", lambda: (False, "timedatectl"))
    monkeypatch.setattr(host, "active_swaps", lambda: [])
    (lane.parent / "keys" / "cache-key").chmod(0o644)
    assert main(["--config", str(lane), "doctor", "--skip", "camera"]) == EXIT_FAIL
    lines = capsys.readouterr().out.splitlines()
    keys = lines.index(next(x for x in lines if x.startswith("✗ keys")))
    assert "mode 0644 is open to others" in lines[keys]
    assert lines[keys + 1].strip() == f"→ chmod 0600 {lane.parent}/keys/cache-key"
    clock = lines.index(next(x for x in lines if x.startswith("✗ clock")))
    assert "timedatectl set-ntp true" in lines[clock + 1]
    assert lines[-1] == "2 checks failed"


# --- models ------------------------------------------------------------------------------

def test_missing_or_altered_model_files(lane, models_dir, tmp_path):
    bad = tmp_path / "models"
    shutil.copytree(models_dir, bad)
    cfg = load(lane)
    cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, dir=str(bad)))
    assert files.check_models(cfg)[0].status is Status.OK
    (bad / "face_landmark.tflite").unlink()
    r = files.check_models(cfg)[0]
    assert r.failed and "face_landmark.tflite: model file missing" in r.detail
    assert r.fix.startswith("run `make models`")
    shutil.copy(models_dir / "face_landmark.tflite", bad)
    with open(bad / "sface_int8.tflite", "r+b") as f:  # the default embedder's file
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    r = files.check_models(cfg)[0]
    assert r.failed and "differs from the pinned" in r.detail


# --- keys --------------------------------------------------------------------------------

def test_key_files_must_be_private_regular_and_ours(lane):
    keys = lane.parent / "keys"
    cfg = load(lane)
    spec = files.needed_keys(cfg)[0]
    assert spec.name == "cache-key"

    def check(**kw):
        return files.check_key(kw.pop("spec", spec), owner_uid=kw.pop("uid", os.geteuid()),
                               credentials_dir=None, credstores=(), **kw)

    assert check().status is Status.OK
    assert check(uid=os.geteuid() + 1).fix == f"chown gate {keys}/cache-key"
    (keys / "cache-key").chmod(0o640)
    assert check().detail.endswith("mode 0640 is open to others")
    (keys / "cache-key").chmod(0o600)
    (keys / "real").write_bytes(os.urandom(32))
    (keys / "real").chmod(0o600)
    (keys / "cache-key").unlink()
    (keys / "cache-key").symlink_to(keys / "real")
    assert "is a link or device" in check().detail
    (keys / "cache-key").unlink()
    r = check()
    assert r.failed and r.detail.endswith("not found (cache.key_file)")
    assert r.fix.startswith("run `gatectl keys init`")
    (keys / "cache-key").write_bytes(b"short")
    (keys / "cache-key").chmod(0o600)
    assert "not a key (32 raw bytes or 64 hex digits" in check().detail
    (keys / "cache-key").write_text(os.urandom(32).hex() + "\n")  # hex is accepted
    assert check().status is Status.OK
    tkey = files.needed_keys(dataclasses.replace(
        cfg, cache=dataclasses.replace(cfg.cache, template_key_file="")))[1]
    r = check(spec=tkey)
    assert r.failed and "missing" in r.detail and "facepass-central add-gate" in r.fix


def test_encrypted_credentials_and_the_credentials_directory(lane, tmp_path):
    cfg = load(lane)
    spec = files.needed_keys(cfg)[0]
    store = tmp_path / "credstore"
    store.mkdir()
    (store / "cache-key").write_bytes(b"ciphertext")
    # Only systemd can decrypt it: present, and that is all the doctor can tell.
    r = files.check_key(spec, owner_uid=0, credentials_dir=None, credstores=(store,))
    assert r.status is Status.OK and "systemd decrypts it at start" in r.detail
    seen = []

    def decrypt(path: Path) -> bytearray:
        seen.append(path)
        return bytearray(os.urandom(32))

    r = files.check_key(spec, owner_uid=0, credentials_dir=None, credstores=(store,),
                        decrypt=decrypt)
    assert r.detail.endswith("cache-key decrypts here") and seen == [store / "cache-key"]
    r = files.check_key(spec, owner_uid=0, credentials_dir=None, credstores=(store,),
                        decrypt=lambda _p: bytearray(b"wrong"))
    assert r.failed and "cache-key decrypts, but is not a key (32 raw bytes" in r.detail
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cache-key").write_bytes(os.urandom(32))
    r = files.check_key(spec, owner_uid=0, credentials_dir=str(creds), credstores=(store,))
    assert r.detail == f"cache-key: credential {creds}/cache-key"


def test_sync_keys_are_needed_only_with_sync(lane, tmp_path):
    cfg = load(lane)
    assert [s.name for s in files.needed_keys(cfg)] == ["cache-key", "template-key"]
    on = dataclasses.replace(cfg, sync=dataclasses.replace(cfg.sync, enabled=True))
    assert [s.name for s in files.needed_keys(on)] == [
        "cache-key", "template-key", "sign-key", "seal-key", "mqtt-key.pem"]
    results = files.check_keys(on, owner_uid=os.geteuid(), credentials_dir=None,
                               credstores=())
    assert [r.status for r in results] == [Status.OK, Status.OK] + [Status.FAIL] * 3


# --- cache -------------------------------------------------------------------------------

def test_the_cache_is_opened_from_a_copy_and_never_changed(lane):
    state = lane.parent / "state"
    # What opening the real cache would tidy up: a stale temporary and a torn journal tail.
    (state / ".templates.cache.1234.tmp").write_bytes(b"half-written")
    with open(state / "templates.journal", "ab") as f:
        f.write(b"\x07\x00")
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    r = files.check_cache(load(lane), None)[0]
    assert r.status is Status.OK and "2 attendees" in r.detail
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_a_cache_of_another_key_fails_closed(lane):
    (lane.parent / "keys" / "cache-key").write_bytes(os.urandom(32))
    r = files.check_cache(load(lane), None)[0]
    assert r.failed and r.detail.startswith("does not decrypt: ")
    assert "resync" in r.fix and SECRET_ID not in r.detail


def test_no_cache_yet_and_no_keys(lane, tmp_path):
    cfg = load(lane)
    empty = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache,
                                                               dir=str(tmp_path / "none")))
    assert files.check_cache(empty, None)[0].status is Status.SKIP
    nokeys = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, key_file=""))
    assert "no cache keys" in files.check_cache(nokeys, None)[0].detail


# --- a running service -------------------------------------------------------------------

STATUS: dict[str, Any] = {
    "state": "idle", "pid": 4242, "gate": "lane-1",
    "cache": {"valid": True, "version": 7, "templates": 120, "attendees": 100},
    "camera": {"backend": "replay", "open": False, "fps": 0.0, "errors": 0},
    "hardening": {"memory_locked": True, "detail": "memory locked (mlockall)"}}


def test_with_the_service_running_the_camera_is_not_opened(lane, tmp_path):
    sock = tmp_path / "run" / "control.sock"
    server = ControlServer(sock, {"status": lambda _p: STATUS})
    server.start()
    try:
        service, unknown = doctor.service_status(sock)
        assert service == STATUS and not unknown
        cfg = load(lane)
        # A camera that does not exist: opening it would fail, so a ✓ proves it stayed shut.
        cfg = dataclasses.replace(cfg, camera=dataclasses.replace(
            cfg.camera, source=str(tmp_path / "no-camera")))
        opened = []
        results = doctor.run(context(lane, cfg=cfg, service=service,
                                     swaps=lambda: ["/swapfile"],
                                     camera_opener=lambda *a, **_k: opened.append(a)))
    finally:
        server.stop()
    assert opened == []
    assert only(results, "camera").detail == ("in use by the service: replay, closed while "
                                              "the lane is empty, no faults")
    assert only(results, "cache").detail == ("open in the service: version 7, 100 attendees, "
                                             "120 templates")
    assert only(results, "memory").status is Status.OK  # swap on, but memory locked
    assert doctor.service_status(sock) == (None, False)
    # A service that may be running but will not talk to us: hands off its camera too.
    r = host.check_camera(load(lane).camera, service=None, service_unknown=True)[0]
    assert r.status is Status.SKIP and "not opening the camera" in r.detail


def test_service_reporting_camera_faults_and_an_invalid_cache(lane):
    bad = {**STATUS, "camera": {**STATUS["camera"], "errors": 3},
           "cache": {"valid": False, "reason": "data key does not unwrap"},
           "hardening": {"memory_locked": False, "detail": "RLIMIT_MEMLOCK is 8192 KiB"}}
    results = doctor.run(context(lane, service=bad, swaps=lambda: ["/swapfile"]))
    assert only(results, "camera").failed and "3 camera faults" in only(results, "camera").detail
    assert only(results, "cache").failed
    assert only(results, "memory").failed and "8192 KiB" in only(results, "memory").detail


# --- camera, disk, memory, clock, gpio ---------------------------------------------------

def test_a_camera_that_does_not_exist(lane, tmp_path):
    cfg = load(lane)
    for backend, source in (("replay", str(tmp_path / "nothing")), ("replay", ""),
                            ("opencv", str(tmp_path / "video9"))):
        cam = dataclasses.replace(cfg.camera, backend=backend, source=source)
        r = host.check_camera(cam, service=None)[0]
        assert r.failed and r.fix, (backend, source, r)
    r = host.check_camera(dataclasses.replace(cfg.camera, source=str(tmp_path / "nothing")),
                          service=None)[0]
    assert r.detail == f"replay: {tmp_path}/nothing does not exist"


def test_a_black_camera(lane, tmp_path):
    (tmp_path / "dark").mkdir()
    cv2.imwrite(str(tmp_path / "dark" / "black.png"), np.zeros((48, 64, 3), np.uint8))
    cam = dataclasses.replace(load(lane).camera, source=str(tmp_path / "dark"), fps=120.0)
    r = host.check_camera(cam, service=None)[0]
    assert r.failed and "all black" in r.detail and "lens cap" in r.fix


def test_disk_space(tmp_path):
    assert files.check_disk(tmp_path / "not" / "yet")[0].status is Status.OK
    r = files.check_disk(tmp_path, minimum=1 << 62)[0]
    assert r.failed and "the event outbox grows while offline" in r.detail


@pytest.mark.parametrize(("swaps", "service", "limit", "locked_cfg", "expect"), [
    ([], None, None, True, Status.OK),
    (["/dev/zram0"], None, None, True, Status.OK),
    (["/swapfile"], None, 8 << 20, True, Status.FAIL),
    (["/swapfile"], None, -1, True, Status.OK),
    (["/swapfile"], None, -1, False, Status.FAIL),
    (None, None, None, True, Status.SKIP),
])
def test_memory_cannot_reach_swap(swaps, service, limit, locked_cfg, expect):
    r = host.check_memory(swaps, service=service, lock_configured=locked_cfg,
                          unit_limit=limit)[0]
    assert r.status is expect
    if expect is Status.FAIL:
        assert "dphys-swapfile" in r.fix


def test_clock(monkeypatch):
    assert host.check_clock(True, "timedatectl")[0].status is Status.OK
    r = host.check_clock(False, "timedatectl")[0]
    assert r.failed and "template expiry" in r.detail
    assert host.check_clock(None, "nothing to ask")[0].status is Status.SKIP
    r = host.check_clock(True, "timedatectl", now=86400.0)[0]
    assert r.failed and "1970-01-02" in r.detail

    def Done(out: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], rc, stdout=out, stderr="")

    assert host.clock_synchronized(lambda _a: Done("yes\n")) == (True, "timedatectl")
    assert host.clock_synchronized(lambda _a: Done("no\n")) == (False, "timedatectl")
    monkeypatch.setattr(host, "kernel_synchronized", lambda: None)
    assert host.clock_synchronized(lambda _a: Done("", 1)) == (None, "nothing to ask")
    # Without systemd the kernel answers; whatever it says, it is a yes or a no here.
    monkeypatch.undo()
    assert host.kernel_synchronized() in (True, False)


def test_gpio(tmp_path):
    assert host.check_gpio("mock", dev=tmp_path)[0].status is Status.SKIP
    r = host.check_gpio("auto", dev=tmp_path)[0]
    assert r.failed and 'gpio.backend = "mock"' in r.fix
    (tmp_path / "gpiochip0").write_bytes(b"")
    assert host.check_gpio("auto", dev=tmp_path)[0].detail == "gpiochip0 open read-write"


def test_a_crashing_check_does_not_hide_the_others(lane, monkeypatch):
    def boom(_cfg):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(files, "check_models", boom)
    results = doctor.run(context(lane))
    r = only(results, "models")
    assert r.failed and r.detail == "the check itself failed: RuntimeError: probe exploded"
    assert only(results, "cache").status is Status.OK


# --- the broker: one real Mosquitto for the module ---------------------------------------

VENUE = "arena"


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    """Gates lane-1 (correct ACL), lane-2 (may read every topic), lane-3 (may write every
    topic); lane-1 has a retained status, as a running gate would."""
    d = tmp_path_factory.mktemp("doctor-broker") / "venue"
    init_venue(d, venue=VENUE, event="final", gates=["lane-1", "lane-2", "lane-3"])
    acl = d / "broker" / "acl"
    acl.write_text(acl.read_text() + f"\nuser lane-2\ntopic read gate/v1/{VENUE}/#\n"
                                     f"\nuser lane-3\ntopic write gate/v1/{VENUE}/#\n")
    b = tb.Broker(d).start()
    central = tb.connect(d, "central", client_id="central-test")
    tb.publish(central, f"gate/v1/{VENUE}/lane-1/status", b"online", retain=True)
    tb.close(central)
    yield d, b
    b.stop()


def sync_cfg(venue_dir: Path, gate: str, port: int, **sync) -> Config:
    facts = json.loads((venue_dir / "venue.json").read_text())
    g = venue_dir / "gates" / gate
    data = {"gate": {"id": gate, "venue": VENUE, "event": "final"},
            "sync": {"enabled": True, "host": "127.0.0.1", "port": port,
                     "ca_file": str(g / "ca.crt"), "cert_file": str(g / "client.crt"),
                     "key_file": str(g / "client.key"),
                     "central_keys": [f"central-1={facts['central']['sign_pub']}"],
                     "peer_keys": [f"{p}={k['sign_pub']}" for p, k in facts["gates"].items()
                                   if p != gate], **sync}}
    return from_dict(data)


def test_broker_handshake_and_acl_of_a_healthy_gate(venue):
    d, b = venue
    link, acl = broker_check.check_broker(sync_cfg(d, "lane-1", b.port), credentials_dir=None)
    assert link.status is Status.OK and link.detail.startswith("TLS handshake (TLSv1.")
    assert acl.status is Status.OK, acl
    assert "another gate's topics closed" in acl.detail


def test_broker_with_a_tls_key_held_only_in_memory(venue):
    # An installed gate's TLS key is an encrypted credential: decrypted into memory only.
    d, b = venue
    key = bytearray((d / "gates" / "lane-1" / "client.key").read_bytes())
    link, acl = broker_check.check_broker(sync_cfg(d, "lane-1", b.port, key_file=""),
                                          credentials_dir=None, key_bytes=key)
    assert (link.status, acl.status) == (Status.OK, Status.OK)
    assert key == bytearray(len(key))  # zeroed once OpenSSL has it


def test_broker_down(venue):
    d, _ = venue
    [r] = broker_check.check_broker(sync_cfg(d, "lane-1", tb.free_port()),
                                    credentials_dir=None, timeout=2)
    assert r.failed and r.detail.startswith("cannot reach 127.0.0.1:")
    assert "is the broker running" in r.fix


def test_broker_with_the_wrong_ca(venue, tmp_path):
    d, b = venue
    other = tmp_path / "other"
    init_venue(other, venue=VENUE, event="final", gates=["lane-1"])
    [r] = broker_check.check_broker(
        sync_cfg(d, "lane-1", b.port, ca_file=str(other / "ca" / "ca.crt")),
        credentials_dir=None, timeout=2)
    assert r.failed and "TLS handshake with 127.0.0.1" in r.detail
    assert r.detail.endswith("(the broker's certificate is not from sync.ca_file's CA)")
    assert "sync.ca_file" in r.fix
    # A certificate of another venue's CA: the broker hangs up after the handshake.
    og = other / "gates" / "lane-1"
    [r] = broker_check.check_broker(
        sync_cfg(d, "lane-1", b.port, cert_file=str(og / "client.crt"),
                 key_file=str(og / "client.key")), credentials_dir=None, timeout=2)
    assert r.failed and "refused this gate's certificate" in r.detail, r


@pytest.mark.parametrize(("gate", "says"), [
    ("lane-2", "can read gate status it must not see (lane-1"),
    ("lane-3", "may publish under another gate's topics"),
])
def test_broker_acl_that_lets_a_gate_too_far_is_caught(venue, gate, says):
    d, b = venue
    link, acl = broker_check.check_broker(sync_cfg(d, gate, b.port), credentials_dir=None)
    assert link.status is Status.OK
    assert acl.failed and says in acl.detail, acl
    assert "regenerate the broker ACL" in acl.fix


def test_cli_with_the_broker_down_exits_1(venue, lane, capsys, monkeypatch):
    d, _ = venue
    g = d / "gates" / "lane-1"
    facts = json.loads((d / "venue.json").read_text())
    text = lane.read_text() + f"""
[sync]
enabled = true
host = "127.0.0.1"
port = {tb.free_port()}
ca_file = "{g / 'ca.crt'}"
cert_file = "{g / 'client.crt'}"
key_file = "{g / 'client.key'}"
sign_key_file = "{g / 'credentials' / 'sign-key'}"
seal_key_file = "{g / 'credentials' / 'seal-key'}"
central_keys = ["central-1={facts['central']['sign_pub']}"]
"""
    lane.write_text(text)
    monkeypatch.setattr(host, "clock_synchronized", lambda: (True, "test"))
    monkeypatch.setattr(host, "active_swaps", lambda: [])
    monkeypatch.setattr(files, "SERVICE_USER", "no-such-user-here")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["--config", str(lane), "doctor", "--json", "--skip", "camera"]) == EXIT_FAIL
    report = json.loads(capsys.readouterr().out)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["broker"], failed
    assert [c["detail"].split(":")[0] for c in report["checks"] if c["name"] == "keys"] == [
        "cache-key", "template-key", "sign-key", "seal-key", "mqtt-key.pem"]


def test_the_broker_check_leaves_the_gates_queued_messages_to_the_gate(venue):
    """The broker names a session after the certificate, so the doctor's connection is the
    gate's session: what the broker queued for the (stopped) gate must still reach it."""
    d, b = venue
    topic = f"gate/v1/{VENUE}/lane-1/revocations"
    # The gate's persistent session, with its subscription, then the gate goes away.
    gate = tb.connect(d, "lane-1", client_id="lane-1", clean_start=False,
                      session_expiry=3600)
    tb.subscribe(gate, topic)
    tb.close(gate)
    central = tb.connect(d, "central", client_id="central-test")
    tb.publish(central, topic, b"queued for the gate")
    tb.close(central)
    link, acl = broker_check.check_broker(sync_cfg(d, "lane-1", b.port), credentials_dir=None)
    assert (link.status, acl.status) == (Status.OK, Status.OK)
    back = tb.connect(d, "lane-1", client_id="lane-1", clean_start=False,
                      session_expiry=3600)
    try:
        got = tb.inbox(back).get(timeout=5)
        assert (got.topic, got.payload) == (topic, b"queued for the gate")
    finally:
        tb.close(back)


def test_with_the_service_running_the_broker_check_does_not_connect(venue, monkeypatch):
    d, b = venue

    def no_connect(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the doctor connected while the service holds the session")

    monkeypatch.setattr(mqtt.Client, "connect", no_connect)
    cfg = sync_cfg(d, "lane-1", b.port)
    up = {"broker": {"enabled": True, "connected": True}}
    link, acl = broker_check.check_broker(cfg, credentials_dir=None, service=up)
    assert link.status is Status.OK and acl.status is Status.SKIP
    down = {"broker": {"enabled": True, "connected": False}}
    [link, _] = broker_check.check_broker(cfg, credentials_dir=None, service=down)
    assert link.failed and "not connected" in link.detail
