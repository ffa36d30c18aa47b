"""The sync protocol end to end through a real Mosquitto with mutual TLS and ACLs."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator

from central.cli import main
from gate.config import from_dict
from gate.link.link import GateLink
from gate.link.mqtt import MqttTransport
from gate.match.decision import Outcome
from gate.templates import open_templates
from sync import messages, payloads
from sync.seal import seal
from sync.templates import Enrolment
from tests import broker as tb
from tests.support import DAY, DIM, MODEL, ROOT, unit
from tests.venue import EVENT, GATES, VENUE, Venue, wait_for


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    v = Venue(tmp_path_factory.mktemp("sync"))
    yield v
    v.close()


RNG = np.random.default_rng(3)
FACES = {f"att-{i:03d}": unit(RNG.standard_normal(DIM)) for i in range(30)}


def until() -> int:
    return int(time.time()) + 2 * DAY


def test_enrol_match_revoke_with_receipt_and_events(venue, photo, pipeline):
    g = venue.gates["lane-1"]
    cache, matcher, link = g.cache, g.matcher, g.link
    obama = pipeline.process(photo("obama.jpg")).embedding.copy()
    pipeline.wipe()
    venue.central.enrol_embeddings("att-obama", obama[None], valid_until=until())
    for name, face in list(FACES.items())[:10]:
        venue.central.enrol_embeddings(name, face[None], valid_until=until())
    wait_for(lambda: cache.status().attendees >= 11, what="enrolments at lane-1")
    probe = pipeline.process(photo("obama3.jpg")).embedding.copy()
    pipeline.wipe()
    assert matcher.identify(probe).attendee == "att-obama"
    # Cancellation: deleted before the next decision, with a signed receipt at central.
    seq = venue.central.revoke(["att-obama"])["att-obama"]
    wait_for(lambda: venue.central.deletion_receipt("lane-1", "att-obama", seq) is not None,
             what="deletion receipt")
    receipt = venue.central.deletion_receipt("lane-1", "att-obama", seq)
    assert receipt is not None and receipt["cache_version"] == cache.version
    assert "att-obama" not in cache
    assert matcher.identify(probe).outcome is Outcome.BELOW_THRESHOLD
    # Entry events: each reaches central exactly once; lane-2 learns them (anti-passback).
    ids = [link.publish_event(f"att-00{i}") for i in range(5)]
    wait_for(lambda: {e[0] for e in venue.central.events()} >= set(ids), what="events")
    assert link.state.depth() == 0
    link2 = venue.gates["lane-2"].link
    wait_for(lambda: link2.entered_since("att-003", time.time() - 60) != [],
             what="peer entry at lane-2")
    assert link2.entered_since("att-003", time.time() - 60)[0][0] == "lane-1"


def test_snapshot_replaces_the_cache_atomically(venue):
    g2 = venue.gates["lane-2"]
    for name, face in list(FACES.items())[10:20]:
        venue.central.enrol_embeddings(name, face[None], valid_until=until(), gates=["lane-1"])
    n = venue.central.snapshot("lane-2", chunk_records=3)
    wait_for(lambda: g2.cache.status().attendees == n, what="snapshot at lane-2")
    assert g2.cache.status().tombstones >= 1  # the revocation travelled in the snapshot
    assert g2.matcher.identify(FACES["att-015"]).attendee == "att-015"
    assert "att-obama" not in g2.cache


def _validator(doc: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": doc["components"]})


def test_every_message_on_the_broker_is_allowed_and_valid(venue, pipeline, photo):
    """P4/P5: only sealed templates, entry events, receipts and status ever cross the
    broker; every one validates against sync/asyncapi.yaml; no raw embedding anywhere."""
    time.sleep(0.5)
    doc = yaml.safe_load((ROOT / "sync" / "asyncapi.yaml").read_text())
    raw = [f.tobytes() for f in FACES.values()]
    raw_b64 = [messages.b64(r[:48]) for r in raw]
    assert venue.seen
    kinds = set()
    for topic_name, payload in venue.seen:
        v, gate, kind = messages.parse_topic(topic_name)
        assert v == VENUE and gate in GATES
        env = json.loads(payload)
        kinds.add(env["type"])
        errors = list(_validator(doc, env["type"]).iter_errors(env))
        assert not errors, (topic_name, errors[0].message)
        assert not any(r[:48] in payload for r in raw)
        assert not any(b in payload.decode() for b in raw_b64)
        if kind == "templates":
            assert set(env["body"]) <= {"sealed", "snapshot", "index", "chunks", "records",
                                        "tombstones", "sha256", "revocations", "model"}
        if kind == "status":
            assert "att-" not in payload.decode()  # counts only, never an attendee
    assert {"upsert", "snapshot_begin", "snapshot_chunk", "revoke", "event", "receipt",
            "status", "head"} <= kinds


def _publish_raw(venue: Venue, gate: str, kind: str, payload: bytes) -> None:
    info = venue.central.client.publish(messages.topic(VENUE, gate, kind), payload, qos=1)
    info.wait_for_publish(5)


def test_bad_messages_are_refused_counted_and_change_nothing(venue):
    g = venue.gates["lane-1"]
    cache, link = g.cache, g.link
    time.sleep(0.3)
    before = (cache.version, link.state.depth(), dict(link.rejected))
    forger = Ed25519PrivateKey.generate()
    topic_rev = messages.topic(VENUE, "lane-1", "revocations")
    body = {"items": [{"attendee": "att-001", "seq": 99}]}
    last = link.state.last_seq("in:revocations")
    bad = [
        ("revocations", messages.sign(topic_rev, mtype="revoke", seq=last + 50, ts_ms=1,
                                      kid="central-1", body=body, key=forger)),
        ("revocations", messages.sign(topic_rev, mtype="revoke", seq=last + 50, ts_ms=1,
                                      kid="central-9", body=body, key=forger)),
        ("revocations", b"{not json"),
        ("revocations", b'{"v":1}'),
        ("commands", b"\x00\xff" * 100),
    ]
    # Another gate's sealed payload, correctly signed, published to lane-1.
    topic_tpl = messages.topic(VENUE, "lane-1", "templates")
    plain = payloads.encode([], model=MODEL)
    seq = venue.central._next_seq("lane-1/templates")
    foreign = seal(plain, venue.central.gates["lane-2"].seal, topic=topic_tpl, seq=seq,
                   gate="lane-2")
    bad.append(("templates", messages.sign(topic_tpl, mtype="upsert", seq=seq, ts_ms=1,
                                           kid=venue.central.kid, body={"sealed": foreign},
                                           key=venue.central._sign)))
    for kind, payload in bad:
        _publish_raw(venue, "lane-1", kind, payload)
    wait_for(lambda: sum(link.rejected.values()) - sum(before[2].values()) >= len(bad),
             what="all bad messages refused")
    assert (cache.version, link.state.depth()) == before[:2]
    assert "att-001" in cache
    # ...and the counts reach central in the retained status.
    wait_for(lambda: sum((venue.central.status("lane-1") or {}).get("rejected", {}).values())
             >= len(bad), what="rejections in status")


def test_replays_duplicates_and_gaps(venue):
    g = venue.gates["lane-1"]
    cache, link = g.cache, g.link
    topic_rev = messages.topic(VENUE, "lane-1", "revocations")
    seq = venue.central._next_seq("lane-1/revocations")
    payload = messages.sign(topic_rev, mtype="revoke", seq=seq, ts_ms=1, kid=venue.central.kid,
                            body={"items": [{"attendee": "att-002", "seq": 5}]},
                            key=venue.central._sign)
    dup_before = link.duplicates
    for _ in range(3):  # delivered, then replayed twice
        _publish_raw(venue, "lane-1", "revocations", payload)
    wait_for(lambda: link.duplicates - dup_before >= 2, what="replays ignored")
    assert "att-002" not in cache
    version = cache.version
    # An older message arriving late (out of order) is ignored too.
    old = messages.sign(topic_rev, mtype="revoke", seq=seq - 1, ts_ms=1,
                        kid=venue.central.kid, body={"items": [{"attendee": "att-004",
                                                                 "seq": 5}]},
                        key=venue.central._sign)
    _publish_raw(venue, "lane-1", "revocations", old)
    wait_for(lambda: link.duplicates - dup_before >= 3, what="stale message ignored")
    assert "att-004" in cache and cache.version == version
    # A gap (a missed message) is applied and makes the gate ask for a snapshot.
    gap = seq + 5
    venue.central.publish("lane-1", "revocations", "revoke",
                          {"items": [{"attendee": "att-005", "seq": 5}]}, seq=gap)
    wait_for(lambda: "att-005" not in cache, what="revocation after a gap")
    assert link.resync_needed
    wait_for(lambda: (venue.central.status("lane-1") or {}).get("resync_needed") is True,
             what="resync request in status")
    venue.central._next_seq("lane-1/revocations")  # keep central's counter ahead
    with venue.central._lock:
        venue.central.db.execute("UPDATE out_seq SET seq = ? WHERE stream = ?",
                                 (gap, "lane-1/revocations"))


def test_interrupted_snapshot_is_asked_for_again(venue):
    c = venue.central
    live = [(a, f) for a, f in FACES.items() if a >= "att-020"]
    for name, face in live:
        c.enrol_embeddings(name, face[None], valid_until=until(), gates=["lane-1"])
    # Only the manifest and the first chunk get through, then the gate restarts.
    enrolments = [Enrolment(a, 1, until(), c.protector.protect(f)[None]) for a, f in live]
    plains = [payloads.encode(enrolments[:5], model=MODEL),
              payloads.encode(enrolments[5:], model=MODEL)]
    digest = hashlib.sha256(bytes(plains[0]) + bytes(plains[1])).hexdigest()
    c.publish("lane-2", "templates", "snapshot_begin",
              {"snapshot": "s-1", "chunks": 2, "records": len(live), "tombstones": 0,
               "sha256": digest})
    seq, sealed = c._sealed_body("lane-2", "templates", plains[0])
    c.publish("lane-2", "templates", "snapshot_chunk",
              {"snapshot": "s-1", "index": 0, "sealed": sealed}, seq=seq)
    time.sleep(0.5)
    venue.close_gate("lane-2")
    g = venue.open("lane-2")
    seq, sealed = c._sealed_body("lane-2", "templates", plains[1])
    c.publish("lane-2", "templates", "snapshot_chunk",
              {"snapshot": "s-1", "index": 1, "sealed": sealed}, seq=seq)
    wait_for(lambda: g.link.resync_needed, what="resync request after the lost chunk")
    assert g.cache.status().state == "ok"  # the old cache keeps serving meanwhile
    c.snapshot("lane-2", chunk_records=4)
    wait_for(lambda: not g.link.resync_needed and "att-025" in g.cache, what="new snapshot")


def test_broker_crash_in_the_middle_of_a_snapshot(venue):
    g = venue.gates["lane-2"]
    cache, link = g.cache, g.link
    c = venue.central
    for name, face in list(FACES.items())[:25]:
        c.enrol_embeddings(name, face[None], valid_until=until(), gates=["lane-1"])
    c.snapshot("lane-2", chunk_records=1)  # 25+ small chunks
    venue.broker.kill()  # SIGKILL: whatever was only in the broker's memory is gone
    venue.broker.start()
    wait_for(lambda: link.wait_connected(0) and c._connected.is_set(), 30, "reconnects")
    # Either the snapshot still completes (paho resends its in-flight messages), or the
    # gate asks for a new one, at any moment: when a cut-off snapshot is noticed, or when
    # the head it compares with after reconnecting says it is behind. Central answers each
    # request (at most one a second here) until the gate is in step.
    answered = [0.0]

    def in_step() -> bool:
        if link.resync_needed and time.monotonic() - answered[0] > 1.0:
            answered[0] = time.monotonic()
            c.snapshot("lane-2", chunk_records=5)
        return not link.resync_needed and cache.status().attendees >= 25

    wait_for(in_step, 30, "snapshot after the crash")
    assert g.matcher.identify(FACES["att-007"]).attendee == "att-007"


def test_clock_jumps(venue):
    cache = venue.gates["lane-1"].cache
    real = cache.clock
    try:
        cache.clock = lambda: real() - 3 * 3600  # the gate's clock is 3 h behind
        venue.central.enrol_embeddings("att-clock", FACES["att-029"][None],
                                       valid_until=until(), gates=["lane-1"])
        wait_for(lambda: "att-clock" in cache, what="enrolment with a lagging clock")
        cache.clock = lambda: real() + 10 * DAY  # ...then jumps past the event's end
        venue.central.command("lane-1", "purge")
        wait_for(lambda: cache.status().attendees == 0, what="purge after the jump")
    finally:
        cache.clock = real


def test_signing_key_rotation(venue):
    g = venue.gates["lane-1"]
    cache, link = g.cache, g.link
    c = venue.central
    old_key, old_kid = c._sign, c.kid
    c.rotate_signing_key("central-2")
    wait_for(lambda: set(link.state.central_keys()) == {"central-2"}, what="key rotation")
    c.enrol_embeddings("att-new-key", FACES["att-001"][None], valid_until=until(),
                       gates=["lane-1"])
    wait_for(lambda: "att-new-key" in cache, what="message signed with the new key")
    rejected = sum(link.rejected.values())
    topic_rev = messages.topic(VENUE, "lane-1", "revocations")
    stale_key = messages.sign(topic_rev, mtype="revoke", seq=10**6, ts_ms=1, kid=old_kid,
                              body={"items": [{"attendee": "att-new-key", "seq": 9}]},
                              key=old_key)
    _publish_raw(venue, "lane-1", "revocations", stale_key)
    wait_for(lambda: sum(link.rejected.values()) > rejected, what="old key refused")
    assert "att-new-key" in cache


def test_events_survive_broker_restarts(venue):
    link = venue.gates["lane-1"].link
    c = venue.central
    ids = [link.publish_event(f"att-{i % 30:03d}") for i in range(50)]
    venue.broker.stop()
    ids += [link.publish_event(f"att-{i % 30:03d}") for i in range(50)]  # while down
    assert link.state.depth() >= 50
    venue.broker.start()
    wait_for(lambda: link.wait_connected(0) and c._connected.is_set(), 30, "reconnects")
    link.flush()
    wait_for(lambda: {e[0] for e in c.events()} >= set(ids), 30, "all events after outage")
    assert link.state.depth() == 0
    assert len({e[0] for e in c.events()}) == len(c.events())  # each recorded once


GATE_PROCESS = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from gate.sim.venue import open_gate
    link = open_gate(Path(sys.argv[2]), "lane-1", Path(sys.argv[3]),
                     host="127.0.0.1", port=int(sys.argv[4])).link
    link.start()
    link.wait_connected(10)
    n = 0
    while True:
        event_id = link.publish_event(f"kill-{n % 7}")
        print(event_id, flush=True)  # durably queued: it must reach central
        n += 1
        time.sleep(0.005)
""")


@pytest.mark.slow
def test_events_survive_kill_9_of_the_gate_at_random_moments(venue, tmp_path):
    """Run lane-1 as a separate process, SIGKILL it at random moments and restart it:
    every event it reported as queued reaches central, once after de-duplication."""
    venue.close_gate("lane-1")
    rng = random.Random(9)
    queued: list[str] = []
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", GATE_PROCESS, str(ROOT),
                                 str(venue.dir), str(venue.states["lane-1"]),
                                 str(venue.broker.port)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        time.sleep(rng.uniform(1.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        queued += out.split()
    link = venue.open("lane-1").link  # the last restart drains what is left
    link.flush()
    wait_for(lambda: {e[0] for e in venue.central.events()} >= set(queued), 30,
             "every queued event at central")
    wait_for(lambda: link.state.depth() == 0, 10, "outbox drained")
    assert len(queued) > 50


def test_status_is_retained_with_a_last_will(venue):
    """A new subscriber immediately gets each gate's last status; a gate that vanishes
    without saying goodbye is reported offline by the broker."""
    sub = tb.connect(venue.dir, "admin", client_id="admin-late")
    got: queue.Queue[Any] = queue.Queue()
    sub.on_message = lambda _c, _u, m: got.put((m.topic, json.loads(m.payload)))
    sub.subscribe(f"gate/v1/{VENUE}/+/status", qos=1)
    first = got.get(timeout=5)
    assert first[1]["body"]["state"] in ("online", "offline")
    g = venue.gates["lane-2"]
    transport = g.link.transport
    assert isinstance(transport, MqttTransport) and transport.client is not None
    client = transport.client
    sock = client._sock
    assert sock is not None
    sock.close()  # the gate's connection drops without a DISCONNECT
    client.loop_stop()
    deadline = time.monotonic() + 20
    offline = False
    while time.monotonic() < deadline and not offline:
        try:
            topic_name, env = got.get(timeout=1)
        except queue.Empty:
            continue
        offline = topic_name.endswith("lane-2/status") and env["body"]["state"] == "offline"
    assert offline
    tb.close(sub)
    venue.gates.pop("lane-2")
    g.link.close()
    g.matcher.wipe()
    g.cache.close()


@pytest.mark.slow
def test_central_cli(tmp_path, capsys, photos):
    out = tmp_path / "v"
    assert main(["init-venue", str(out), "--venue", "hall", "--event", "expo", "--gates",
                 "g1"]) == 0
    assert "systemd-creds encrypt" in capsys.readouterr().out
    assert main(["init-venue", str(out), "--venue", "hall", "--event", "expo", "--gates",
                 "g1"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["init-venue", str(tmp_path / "w"), "--venue", "bad name", "--event", "e",
                 "--gates", "g"]) == 1
    assert main(["init-venue", str(tmp_path / "x"), "--venue", "hall", "--event", "e",
                 "--gates", "g", "--embedder", "resnet"]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "central: unknown embedder 'resnet' (known: mobilefacenet-int8,")
    assert main(["init-venue", str(tmp_path / "s"), "--venue", "hall", "--event", "e",
                 "--gates", "g", "--embedder", "sface-int8"]) == 0
    assert json.loads((tmp_path / "s" / "venue.json").read_text())["embedder"] == {
        "name": "sface-int8", "model": "sface"}
    assert main(["revoke", str(tmp_path / "missing"), "a1"]) == 1
    with tb.Broker(out) as broker:
        code = main(["enrol", str(out), "--port", str(broker.port), "att-1",
                     str(photos / "obama.jpg")])
        text = capsys.readouterr().out
        assert code == 0 and "none is stored" in text
        assert main(["enrol", str(out), "--port", str(broker.port), "att-2",
                     str(photos / "obama_partial_face.jpg")]) == 1
        assert "not usable" in capsys.readouterr().err
        assert main(["revoke", str(out), "--port", str(broker.port), "att-1"]) == 0
        assert "pending: att-1 on g1" in capsys.readouterr().out  # the gate is offline
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    assert "facepass-central" in capsys.readouterr().err


def test_gate_sync_from_config(venue, tmp_path, monkeypatch):
    info = json.loads((venue.dir / "venue.json").read_text())
    gdir = venue.dir / "gates" / "lane-2"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(gdir / "credentials"))
    cfg = from_dict({
        "gate": {"id": "lane-2", "venue": VENUE, "event": EVENT},
        "cache": {"dir": str(tmp_path / "state")},
        "sync": {"enabled": True, "host": "127.0.0.1", "port": venue.broker.port,
                 "ca_file": str(gdir / "ca.crt"), "cert_file": str(gdir / "client.crt"),
                 "central_keys": [f"{info['central']['kid']}={info['central']['sign_pub']}",
                                  f"central-2={info['central']['sign_pub']}"],
                 "peer_keys": [f"lane-1={info['gates']['lane-1']['sign_pub']}"]}})
    templates = open_templates(cfg)
    templates.cache.load()
    link = GateLink.from_config(cfg, cache=templates.cache)
    link.start()
    try:
        assert link.wait_connected(10)
    finally:
        link.stop()
        link.close()
        templates.close()
