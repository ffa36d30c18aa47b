"""The link's message handler alone: no broker, no transport, real cache and state.

Central's side is played with the protocol's own functions (sign, seal, payloads), so
these tests show that what central sends means the same to the handler whatever
carries it; ``tests/system/test_sync_e2e.py`` runs the same through a real Mosquitto.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.link.handler import MessageHandler
from gate.link.state import STATE_FILE, SyncState
from gate.match.decision import Outcome
from gate.templates import Templates
from sync import messages, payloads
from sync.seal import seal
from sync.templates import Enrolment
from tests.support import DAY, Clock, protector, random_unit

VENUE, GATE, PEER = "venue-1", "gate-1", "gate-2"


class Central:
    """Signs (and seals) central's messages as the reference central would."""

    def __init__(self, seal_pub: Any) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.seal_pub = seal_pub
        self.seqs: dict[str, int] = {}

    @property
    def pin(self) -> dict[str, str]:
        return {"central-1": messages.b64(self.key.public_key().public_bytes_raw())}

    def message(self, kind: str, mtype: str, body: dict[str, Any], *,
                seq: int | None = None) -> tuple[str, bytes]:
        topic = messages.topic(VENUE, GATE, kind)
        if seq is None:
            seq = self.seqs.get(kind, -1) + 1
        self.seqs[kind] = seq
        return topic, messages.sign(topic, mtype=mtype, seq=seq, ts_ms=0, kid="central-1",
                                    body=body, key=self.key)

    def sealed(self, kind: str, plain: bytearray) -> tuple[int, dict[str, Any]]:
        seq = self.seqs.get(kind, -1) + 1
        return seq, seal(plain, self.seal_pub, topic=messages.topic(VENUE, GATE, kind),
                         seq=seq, gate=GATE)


class Rig:
    """A handler over a real cache and SQLite state; receipts collected as queued."""

    def __init__(self, templates: Templates, state_dir: Path, clock: Clock) -> None:
        self.cache, self.matcher = templates
        self.cache.load()
        self.state = SyncState(state_dir / STATE_FILE)
        self.seal_key = X25519PrivateKey.generate()
        self.central = Central(self.seal_key.public_key())
        self.state.replace_central_keys(self.central.pin)
        self.peer = Ed25519PrivateKey.generate()
        self.receipts: list[dict[str, Any]] = []
        self.changes = 0
        self.handler = MessageHandler(
            venue=VENUE, gate=GATE, cache=self.cache, state=self.state,
            seal_key=self.seal_key,
            peer_keys={PEER: messages.b64(self.peer.public_key().public_bytes_raw())},
            queue=self._queue, changed=self._changed)
        self.clock = clock

    def _queue(self, kind: str, mtype: str, body: dict[str, Any]) -> str:
        assert (kind, mtype) == ("receipts", "receipt")
        self.receipts.append(body)
        return f"m{len(self.receipts)}"

    def _changed(self) -> None:
        self.changes += 1

    def send(self, topic: str, payload: bytes) -> None:
        self.handler.message(topic, payload)

    def upsert(self, enrolments: list[Enrolment]) -> None:
        plain = payloads.encode(enrolments)
        seq, sealed = self.central.sealed("templates", plain)
        self.send(*self.central.message("templates", "upsert", {"sealed": sealed}, seq=seq))


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
    plain = payloads.encode([enrolment(n, 5, rig.clock) for n in ("att-2", "att-3")])
    digest = hashlib.sha256(plain).hexdigest()
    rig.send(*rig.central.message("templates", "snapshot_begin", {
        "snapshot": "s1", "chunks": 1, "records": 2, "tombstones": 0, "sha256": digest}))
    seq, sealed = rig.central.sealed("templates", plain)
    rig.send(*rig.central.message("templates", "snapshot_chunk",
                                  {"snapshot": "s1", "index": 0, "sealed": sealed}, seq=seq))
    assert sorted(a for a in FACES if a in rig.cache) == ["att-2", "att-3"]
    assert not rig.handler.resync_needed


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
