"""Central's signed, retained head: after every message on a gate's ``templates`` or
``revocations`` topic, ``gate/v1/{venue}/{gate}/head`` says the last seq sent on each of
the two streams (-1: none), signed, with a seq of its own; ``snapshot_begin`` names the
last revocation the snapshot already includes. Watched by an admin on the real broker.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from central.core import Central
from central.pki import init_venue
from sync import messages, schemas
from tests import broker as tb
from tests.central.conftest import EVENT, GATES, VENUE, T
from tests.support import DAY, ROOT, random_unit


@dataclass
class Env:
    """A fresh venue and broker per test; an admin recording every message in order."""

    dir: Any
    broker: tb.Broker
    central: Central
    admin: mqtt.Client
    seen: queue.Queue[mqtt.MQTTMessage]

    def drain(self, settle: float = 0.3) -> list[tuple[str, dict[str, Any], bool]]:
        """What the admin saw since the last drain: (topic, envelope, retained), in order."""
        out: list[tuple[str, dict[str, Any], bool]] = []
        deadline = time.monotonic() + settle
        while True:
            try:
                m = self.seen.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return out
            out.append((m.topic, json.loads(m.payload), bool(m.retain)))


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    d = tmp_path / "venue"
    init_venue(d, venue=VENUE, event=EVENT, gates=GATES)
    broker = tb.Broker(d).start()
    admin = tb.connect(d, "admin", client_id="admin")
    seen, _ = tb.subscribe(admin, f"{T}/#")
    central = Central(d, port=broker.port)
    central.connect()
    e = Env(d, broker, central, admin, seen)
    yield e
    e.central.close()
    tb.close(admin)
    broker.stop()


def central_keys(d: Any) -> dict[str, Any]:
    info = json.loads((d / "venue.json").read_text())
    return {info["central"]["kid"]: messages.public_key(info["central"]["sign_pub"])}


def retained_heads(env: Env) -> dict[str, tuple[int, schemas.Head]]:
    """What a new subscriber gets: each gate's retained head, verified (its seq, head)."""
    late = tb.connect(env.dir, "gate-1", client_id="gate-1")  # reads its own head only
    other = tb.connect(env.dir, "gate-2", client_id="gate-2")
    out = {}
    try:
        for gate, client in (("gate-1", late), ("gate-2", other)):
            inbox, _ = tb.subscribe(client, f"{T}/{gate}/head")
            try:
                msg = inbox.get(timeout=2)
            except queue.Empty:
                continue
            assert msg.retain
            env_ = messages.open_envelope(msg.topic, bytes(msg.payload), central_keys(env.dir))
            out[gate] = (env_.seq, schemas.head(env_.body))
    finally:
        tb.close(late)
        tb.close(other)
    return out


def check_stream(records: list[tuple[str, dict[str, Any], bool]],
                 before: dict[str, schemas.Head] | None = None) -> None:
    """Every message on a cache stream is followed by its gate's head, which names the
    highest seq of each stream so far (``before``: the heads when the records began); heads
    count up on their own stream."""
    last: dict[tuple[str, str], int] = {}
    for gate, h in (before or {}).items():
        last[gate, "templates"], last[gate, "revocations"] = h.templates, h.revocations
    head_seq: dict[str, int] = {}
    pending: dict[str, bool] = {}
    for topic, env, retain in records:
        _, gate, kind = messages.parse_topic(topic)
        if kind in schemas.STREAMS:
            last[gate, kind] = max(env["seq"], last.get((gate, kind), -1))
            pending[gate] = True
        elif kind == "head":
            assert env["type"] == "head"
            h = schemas.head(env["body"])
            assert h == schemas.Head(last.get((gate, "templates"), -1),
                                     last.get((gate, "revocations"), -1)), (gate, h, last)
            assert env["seq"] > head_seq.get(gate, -1)
            head_seq[gate] = env["seq"]
            pending[gate] = False
            assert not retain  # a live subscriber gets it as a new message
    assert not any(pending.values()), "a message without a head after it"


def face(seed: int, rows: int = 1) -> Any:
    return random_unit(np.random.default_rng(seed), rows)


def until() -> int:
    return int(time.time()) + DAY


def test_enrol_revoke_and_snapshot_each_update_the_head(env):
    c = env.central
    assert retained_heads(env) == {}  # nothing sent yet, nothing retained
    c.enrol_embeddings("att-1", face(1), valid_until=until())
    records = env.drain()
    upserts = {messages.parse_topic(t)[1]: e["seq"] for t, e, _ in records
               if e["type"] == "upsert"}
    assert set(upserts) == set(GATES)
    heads = retained_heads(env)
    assert {g: h for g, (_, h) in heads.items()} == {
        g: schemas.Head(templates=upserts[g], revocations=-1) for g in GATES}

    seqs = c.revoke(["att-1"], gates=["gate-1"])
    records += env.drain()
    rev = [e["seq"] for t, e, _ in records if e["type"] == "revoke"]
    assert len(rev) == 1 and seqs == {"att-1": 2}
    heads = retained_heads(env)
    assert heads["gate-1"][1] == schemas.Head(upserts["gate-1"], rev[0])
    assert heads["gate-2"][1] == schemas.Head(upserts["gate-2"], -1)  # untouched

    c.enrol_embeddings("att-2", face(2, 3), valid_until=until())
    c.enrol_embeddings("att-3", face(3, 2), valid_until=until())
    assert c.snapshot("gate-1", chunk_records=1) == 2
    records += env.drain()
    begin = [e for t, e, _ in records if e["type"] == "snapshot_begin"]
    chunks = [e["seq"] for t, e, _ in records if e["type"] == "snapshot_chunk"]
    assert len(begin) == 1 and len(chunks) == 2
    manifest = schemas.snapshot_begin(begin[0]["body"])  # the protocol's own check
    assert manifest.revocations == rev[0]  # the revocation sent before is in the snapshot
    assert manifest.tombstones == 1
    heads = retained_heads(env)
    assert heads["gate-1"][1] == schemas.Head(templates=max(chunks), revocations=rev[0])
    assert heads["gate-1"][1] == c.head("gate-1")
    check_stream(records)
    # Each of them, heads included, is what sync/asyncapi.yaml describes.
    doc = yaml.safe_load((ROOT / "sync" / "asyncapi.yaml").read_text())
    for topic, e, _ in records:
        schema = {"$ref": f"#/components/schemas/{e['type']}", "components": doc["components"]}
        errors = list(Draft202012Validator(schema).iter_errors(e))
        assert not errors, (topic, errors[0].message)
    assert {e["type"] for _, e, _ in records} >= {"upsert", "revoke", "snapshot_begin",
                                                  "snapshot_chunk", "head"}
    # One head per cache-stream message, none for commands.
    c.command("gate-1", "purge")
    more = env.drain()
    assert [messages.parse_topic(t)[2] for t, _, _ in more] == ["commands"]


def test_snapshot_to_a_gate_that_never_had_a_revocation_says_minus_one(env):
    env.central.enrol_embeddings("att-1", face(1), valid_until=until(), gates=["gate-2"])
    env.central.snapshot("gate-2")
    begin = [e for _, e, _ in env.drain() if e["type"] == "snapshot_begin"]
    assert begin[0]["body"]["revocations"] == -1
    assert schemas.snapshot_begin(begin[0]["body"]).revocations == -1


def test_an_explicit_seq_moves_the_head_and_the_counter_never_goes_back(env):
    c = env.central
    c.publish("gate-1", "revocations", "revoke", {"items": [{"attendee": "a", "seq": 1}]},
              seq=40)
    assert c.head("gate-1") == schemas.Head(-1, 40)
    assert c.revoke(["b"], gates=["gate-1"]) == {"b": 1}
    assert c.head("gate-1") == schemas.Head(-1, 41)
    c.publish("gate-1", "revocations", "revoke", {"items": [{"attendee": "c", "seq": 1}]},
              seq=7)  # an old seq resent on purpose: the head stays at the newest
    assert c.head("gate-1") == schemas.Head(-1, 41)
    check_stream(env.drain())


def test_the_head_survives_a_central_restart(env):
    c = env.central
    c.enrol_embeddings("att-1", face(1), valid_until=until(), gates=["gate-1"])
    first = retained_heads(env)["gate-1"]
    c.close()
    env.central = Central(env.dir, port=env.broker.port)
    env.central.connect()
    env.central.revoke(["att-1"], gates=["gate-1"])
    second = retained_heads(env)["gate-1"]
    assert second[0] > first[0]  # the head's own seq continues
    assert second[1] == schemas.Head(first[1].templates, 0)


def test_the_acl_lets_a_gate_read_only_its_own_head_and_write_none(env):
    env.central.enrol_embeddings("att-1", face(1), valid_until=until())
    gate1 = tb.connect(env.dir, "gate-1", client_id="gate-1")
    try:
        own, _ = tb.subscribe(gate1, f"{T}/gate-1/head")
        theirs, _ = tb.subscribe(gate1, f"{T}/gate-2/head")
        every, _ = tb.subscribe(gate1, f"{T}/+/head")
        assert own.get(timeout=3).topic == f"{T}/gate-1/head"
        # A gate can neither forge nor clear (empty retained message) any head.
        for target in ("gate-1", "gate-2"):
            for payload in (b"forged", b""):
                code = tb.publish(gate1, f"{T}/{target}/head", payload, retain=True)
                assert code.value == 0x87, (target, payload, code)
        time.sleep(0.3)
        assert theirs.empty()
        assert all(m.topic == f"{T}/gate-1/head" for m in list(every.queue))
    finally:
        tb.close(gate1)
    # The retained heads are central's still.
    heads = retained_heads(env)
    assert set(heads) == set(GATES)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["enrol", "revoke", "snapshot", "command"]),
                              st.sampled_from([None, ("gate-1",), ("gate-2",)]),
                              st.integers(0, 4)), min_size=1, max_size=8))
def test_any_sequence_of_operations_keeps_heads_consistent(env, ops):
    c = env.central
    before = {g: c.head(g) for g in GATES}
    for op, gates, who in ops:
        attendee = f"att-{who}"
        if op == "enrol":
            c.enrol_embeddings(attendee, face(who, 1 + who % 3), valid_until=until(),
                               gates=gates)
        elif op == "revoke":
            c.revoke([attendee], gates=gates)
        elif op == "snapshot":
            for g in gates or GATES:
                c.snapshot(g, chunk_records=2)
        else:
            c.command((gates or GATES)[0], "resync")
    records = env.drain(0.2)
    check_stream(records, before)
    for g in GATES:
        sent = [e for t, e, _ in records if messages.parse_topic(t)[1] == g and
                messages.parse_topic(t)[2] in schemas.STREAMS]
        if sent:
            assert retained_heads(env)[g][1] == c.head(g)
