"""The link's message handler alone: no broker, no transport, real cache and state.

Central's side is played with the protocol's own functions (sign, seal, payloads), so
these tests show that what central sends means the same to the handler whatever
carries it; ``tests/system/test_sync_e2e.py`` runs the same through a real Mosquitto.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gate.link.handler import MessageHandler
from gate.match.decision import Outcome
from sync import messages, payloads
from sync.templates import MOBILEFACENET, SFACE, Enrolment
from tests.linkrig import GATE, PEER, VENUE, Central, Rig
from tests.support import DAY, MODEL, Clock, protector, random_unit, unit


@pytest.fixture
def rig(make_store, tmp_path, clock) -> Iterator[Rig]:
    r = Rig(make_store(), tmp_path, clock)
    yield r
    r.state.close()


RNG = np.random.default_rng(5)
FACES = {f"att-{i}": random_unit(RNG) for i in range(4)}


def enrolment(name: str, seq: int, clock: Clock) -> Enrolment:
    return Enrolment(name, seq, int(clock() + 2 * DAY), protector().protect(FACES[name])[None])


def test_upsert_then_revoke_with_a_signed_deletion_receipt(rig):
    rig.upsert([enrolment(n, 1, rig.clock) for n in FACES])
    assert rig.cache.status().attendees == 4
    assert rig.receipts[-1]["kind"] == "applied" and rig.receipts[-1]["applied"] == 4
    assert rig.matcher.identify(FACES["att-1"]).outcome is Outcome.MATCH

    rig.send(*rig.central.message("revocations", "revoke",
                                  {"items": [{"attendee": "att-1", "seq": 2}]}))
    assert "att-1" not in rig.cache
    assert rig.matcher.identify(FACES["att-1"]).attendee is None
    receipt = rig.receipts[-1]
    assert (receipt["kind"], receipt["attendee"], receipt["seq"]) == ("deleted", "att-1", 2)
    assert rig.state.last_seq("in:revocations") == 0
    assert rig.changes >= 2  # the link republishes its status after each


def test_replayed_and_stale_messages_change_nothing(rig):
    rig.upsert([enrolment("att-0", 1, rig.clock)])
    topic, payload = rig.central.message("revocations", "revoke",
                                         {"items": [{"attendee": "att-0", "seq": 2}]})
    rig.send(topic, payload)
    version = rig.cache.version
    rig.send(topic, payload)  # the same message again (redelivery or replay)
    assert rig.handler.duplicates == 1 and rig.cache.version == version
    # An upsert older than the revocation cannot bring the attendee back.
    rig.upsert([enrolment("att-0", 1, rig.clock)])
    assert "att-0" not in rig.cache
    assert rig.receipts[-1]["stale"] == 1


@pytest.mark.parametrize("pushed", [1, 10**6, 2**62])
def test_a_seq_pushed_forward_in_the_state_file_cannot_stop_deletion(rig, pushed):
    """``sync.db`` is a plain file a technician can edit: its record of central's cache
    streams is not what decides a replay (the cache's own authenticated record is)."""
    rig.upsert([enrolment(n, 1, rig.clock) for n in FACES])
    for stream in ("in:revocations", "in:templates"):
        rig.state.set_seq(stream, rig.state.last_seq(stream) + pushed)
    restarted = MessageHandler(venue=VENUE, gate=GATE, cache=rig.cache, state=rig.state,
                               seal_key=rig.seal_key, peer_keys={}, queue=rig._queue,
                               changed=lambda: None)
    restarted.message(*rig.central.message("revocations", "revoke",
                                           {"items": [{"attendee": "att-2", "seq": 2}]}))
    assert "att-2" not in rig.cache
    assert rig.matcher.identify(FACES["att-2"]).attendee is None
    assert rig.receipts[-1]["attendee"] == "att-2" and rig.receipts[-1]["kind"] == "deleted"
    seq, sealed = rig.central.sealed("templates",
                                     payloads.encode([enrolment("att-2", 3, rig.clock)],
                                                     model=MODEL))
    restarted.message(*rig.central.message("templates", "upsert", {"sealed": sealed}, seq=seq))
    assert "att-2" in rig.cache  # and a new enrolment still applies


@pytest.mark.parametrize("tamper", ["unsigned", "other key", "other gate's topic",
                                    "not json"])
def test_refused_messages_are_counted_and_change_nothing(rig, tamper):
    rig.upsert([enrolment("att-0", 1, rig.clock)])
    topic, payload = rig.central.message("revocations", "revoke",
                                         {"items": [{"attendee": "att-0", "seq": 2}]})
    if tamper == "unsigned":
        payload = payload.replace(b'"sig":"', b'"sig":"A')
    elif tamper == "other key":
        other = Central(rig.seal_key.public_key())
        other.key = Ed25519PrivateKey.generate()
        topic, payload = other.message("revocations", "revoke",
                                       {"items": [{"attendee": "att-0", "seq": 2}]})
    elif tamper == "other gate's topic":
        topic = messages.topic(VENUE, PEER, "revocations")
    else:
        payload = b"\xff{"
    before = (rig.cache.version, len(rig.receipts))
    rig.send(topic, payload)
    assert (rig.cache.version, len(rig.receipts)) == before
    assert "att-0" in rig.cache
    assert sum(rig.handler.rejected.values()) == 1


def test_a_snapshot_replaces_the_cache_after_its_manifest_checks(rig):
    rig.upsert([enrolment("att-0", 1, rig.clock)])
    plain = payloads.encode([enrolment(n, 5, rig.clock) for n in ("att-2", "att-3")],
                            model=MODEL)
    digest = hashlib.sha256(plain).hexdigest()
    rig.send(*rig.central.message("templates", "snapshot_begin", {
        "snapshot": "s1", "chunks": 1, "records": 2, "tombstones": 0, "sha256": digest,
        "revocations": -1, "model": MODEL.id}))
    seq, sealed = rig.central.sealed("templates", plain)
    rig.send(*rig.central.message("templates", "snapshot_chunk",
                                  {"snapshot": "s1", "index": 0, "sealed": sealed}, seq=seq))
    assert sorted(a for a in FACES if a in rig.cache) == ["att-2", "att-3"]
    assert not rig.handler.resync_needed


def test_templates_of_another_model_are_refused_in_one_line_until_central_agrees(rig):
    other = MOBILEFACENET if MODEL == SFACE else SFACE
    rig.upsert([enrolment("att-0", 1, rig.clock)])
    version = rig.cache.version
    # A snapshot announced for the other model's templates.
    rig.send(*rig.central.message("templates", "snapshot_begin", {
        "snapshot": "s1", "chunks": 1, "records": 1, "tombstones": 0, "sha256": "0" * 64,
        "revocations": -1, "model": other.id}))
    expected = (f"templates are for model {other.id!r}, this end runs {MODEL.id!r}: "
                "configure the same embedder at both ends")
    assert rig.handler.model_mismatch == expected
    # An upsert sealed with the other model's payload layout: refused the same way.
    foreign = [Enrolment("att-2", 5, int(rig.clock()) + 86400,
                         unit(np.ones((1, other.dim), np.float32)))]
    seq, sealed = rig.central.sealed("templates", payloads.encode(foreign, model=other))
    rig.send(*rig.central.message("templates", "upsert", {"sealed": sealed}, seq=seq))
    assert sum(n for k, n in rig.handler.rejected.items()
               if k.startswith(f"templates are for model {other.id!r}")) == 2
    assert rig.cache.version == version and "att-2" not in rig.cache
    assert "att-0" in rig.cache  # what the gate had stays
    # Central configured right again: the next templates apply and the line goes away.
    rig.upsert([enrolment("att-3", 6, rig.clock)])
    assert "att-3" in rig.cache and rig.handler.model_mismatch == ""


def test_another_gates_entry_is_recorded_for_anti_passback(rig):
    topic = messages.topic(VENUE, PEER, "events")
    body = {"event_id": messages.uuid7(1000), "attendee": "att-0", "gate": PEER, "at": 1000}
    rig.send(topic, messages.sign(topic, mtype="event", seq=0, ts_ms=1000, kid=PEER,
                                  body=body, key=rig.peer))
    assert rig.state.entries_since("att-0", 0) == [(PEER, 1000)]
    # Signed by someone else under that gate's name: refused.
    forged = messages.sign(topic, mtype="event", seq=1, ts_ms=1000, kid=PEER,
                           body={**body, "event_id": messages.uuid7(2000)},
                           key=Ed25519PrivateKey.generate())
    rig.send(topic, forged)
    assert rig.state.entries_since("att-0", 0) == [(PEER, 1000)]
    assert sum(rig.handler.rejected.values()) == 1


def head(rig: Rig, templates: int, revocations: int) -> tuple[str, bytes]:
    return rig.central.message("head", "head", {"templates": templates,
                                                "revocations": revocations})


def test_a_cache_behind_centrals_head_serves_nobody_until_it_catches_up(rig):
    rig.upsert([enrolment(n, 1, rig.clock) for n in FACES])  # templates seq 0
    rig.send(*head(rig, 0, -1))
    assert rig.matcher.identify(FACES["att-0"]).outcome is Outcome.MATCH
    # Central says it sent revocation 0, which never arrived (lost, or a cache on disk
    # rolled back to before it): nobody is matched until the gate has caught up.
    rig.send(*head(rig, 0, 0))
    assert rig.matcher.identify(FACES["att-0"]).outcome is Outcome.CACHE_INVALID
    assert rig.handler.resync_needed and "revocations" in rig.handler.behind
    assert rig.cache.status().state == "invalid"
    rig.send(*rig.central.message("revocations", "revoke",
                                  {"items": [{"attendee": "att-0", "seq": 2}]}, seq=0))
    assert rig.handler.behind == ""
    assert rig.matcher.identify(FACES["att-1"]).outcome is Outcome.MATCH
    assert rig.matcher.identify(FACES["att-0"]).attendee is None


def test_the_retained_head_is_compared_again_on_every_delivery(rig):
    rig.upsert([enrolment("att-0", 1, rig.clock)])
    topic, payload = head(rig, 0, -1)
    rig.send(topic, payload)
    assert rig.handler.behind == ""
    # The same retained head delivered again after a reconnect, but meanwhile the cache
    # was replaced by an empty one (its files deleted): the comparison runs again.
    rig.cache.wipe()
    rig.send(topic, payload)
    assert rig.handler.behind.startswith("behind central")
