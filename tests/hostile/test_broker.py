"""Attacks through a real Mosquitto (mutual TLS, the venue's ACL), by someone holding one
gate's certificate and signing key: poison, a flood, and client-id takeover.

The handler-level suite (``test_mqtt.py``) tries thousands of bodies; this one sends a
sample through the broker to the other gate and to central, and checks that revocations
still get their signed receipts afterwards and that everyone is still listening.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gate.link.mqtt import MqttTransport
from sync import messages
from tests import broker as tb
from tests.ledger import Ledger
from tests.support import DAY, DIM, unit
from tests.venue import VENUE, Venue, wait_for

pytestmark = pytest.mark.hostile

ATTACKER, VICTIM = "lane-2", "lane-1"


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    v = Venue(tmp_path_factory.mktemp("hostile"))
    v.close_gate(ATTACKER)  # its certificate and key are now the attacker's
    yield v
    v.close()


def _key(venue: Venue) -> Ed25519PrivateKey:
    raw = (venue.dir / "gates" / ATTACKER / "credentials" / "sign-key").read_bytes()
    return Ed25519PrivateKey.from_private_bytes(raw)


def _poison(n: int) -> list[Any]:
    """Bodies that broke receivers, and random ones."""
    rng = np.random.default_rng(11)
    nasty: list[Any] = [
        {"event_id": messages.uuid7(1), "attendee": "att-1", "gate": ATTACKER, "at": 2**70},
        {"event_id": messages.uuid7(2), "attendee": "\ud800", "gate": ATTACKER, "at": 5},
        {"event_id": None, "attendee": "att-1", "gate": ATTACKER, "at": 5},
        {"event_id": messages.uuid7(3), "attendee": "x" * 10_000, "gate": ATTACKER, "at": 5},
        {"event_id": messages.uuid7(4), "attendee": "att-1", "gate": ATTACKER, "at": 1.5},
        {"event_id": messages.uuid7(5), "attendee": ["a"], "gate": ATTACKER, "at": -1},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}},
        {},
    ]
    for k in range(n - len(nasty)):
        nasty.append({f"k{j}": int(v) for j, v in
                      enumerate(rng.integers(-(2**62), 2**62, int(rng.integers(0, 6))))}
                     | {"n": k})
    return nasty


def _signed(key: Ed25519PrivateKey, body: Any, seq: int) -> tuple[str, bytes]:
    topic = messages.topic(VENUE, ATTACKER, "events")
    env: dict[str, Any] = {"v": 1, "type": "event", "seq": seq, "ts": 0, "kid": ATTACKER,
                           "body": body}
    env["sig"] = messages.b64(key.sign(messages.canonical(topic, env)))
    return topic, json.dumps(env, ensure_ascii=True).encode()


def _revocation_gets_its_receipt(venue: Venue, attendee: str) -> bool:
    face = unit(np.random.default_rng(len(attendee)).standard_normal(DIM))
    venue.central.enrol_embeddings(attendee, face[None], valid_until=int(time.time()) + DAY,
                                   gates=[VICTIM])
    cache = venue.gates[VICTIM].cache
    wait_for(lambda: attendee in cache, what="enrolment")
    seq = venue.central.revoke([attendee], gates=[VICTIM])[attendee]
    try:
        wait_for(lambda: venue.central.deletion_receipt(VICTIM, attendee, seq) is not None,
                 timeout=10, what="receipt")
    except AssertionError:
        return False
    return attendee not in cache


def test_poison_from_a_gate_certificate_stops_neither_the_other_gate_nor_central(
        venue: Venue, ledger: Ledger):
    attacker = tb.connect(venue.dir, ATTACKER, client_id=ATTACKER)
    key = _key(venue)
    bodies = _poison(200)
    try:
        for k, body in enumerate(bodies):
            tb.publish(attacker, *_signed(key, body, k))
        # A valid event afterwards still reaches central and the other gate.
        valid = {"event_id": messages.uuid7(int(time.time() * 1000)), "attendee": "att-ok",
                 "gate": ATTACKER, "at": int(time.time() * 1000)}
        tb.publish(attacker, *_signed(key, valid, len(bodies)))
        wait_for(lambda: any(e[0] == valid["event_id"] for e in venue.central.events()),
                 what="the valid event at central")
        link = venue.gates[VICTIM].link
        wait_for(lambda: link.entered_since("att-ok", 0) != [], what="the event at lane-1")
        held = link.transport is not None and link.transport.alive() and \
            _revocation_gets_its_receipt(venue, "att-after-poison")
    finally:
        tb.close(attacker)
    assert ledger.record("mqtt poison (gate certificate)", held, n=len(bodies))


def test_a_flood_from_a_gate_costs_a_few_log_lines_and_status_publishes(
        venue: Venue, ledger: Ledger, caplog):
    # The window starts before subscribing: everything counted falls inside it (the
    # retained status, one at once, one at the end of each second, one trailing).
    start = time.monotonic()
    statuses, _ = tb.subscribe(venue.admin, messages.topic(VENUE, VICTIM, "status"))
    attacker = tb.connect(venue.dir, ATTACKER, client_id=ATTACKER)
    topic = messages.topic(VENUE, ATTACKER, "events")
    with caplog.at_level(logging.INFO, logger="gate.link"):
        for k in range(2000):
            attacker.publish(topic, b"garbage %d" % k, qos=0)
        tb.publish(attacker, topic, b"last garbage")
        time.sleep(1.5)
    tb.close(attacker)
    elapsed = time.monotonic() - start
    # Distinct payloads: the admin client may hold overlapping subscriptions from earlier
    # tests, and Mosquitto then delivers one copy per matching subscription.
    payloads = set()
    while not statuses.empty():
        payloads.add(statuses.get_nowait().payload)
    published = len(payloads)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    held = published <= elapsed / 1.0 + 3 and len(warnings) <= 5 and \
        _revocation_gets_its_receipt(venue, "att-after-flood")
    assert ledger.record("mqtt flood", held, n=2001), (published, elapsed, len(warnings))


@pytest.mark.parametrize("client_id", [VICTIM, "central", "admin", "", "lane-1 ",
                                       "x" * 64])
def test_one_gate_certificate_cannot_take_another_clients_id(venue: Venue, ledger: Ledger,
                                                            client_id: str):
    link = venue.gates[VICTIM].link
    dropped: list[str] = []
    original = link.disconnected

    def watch(reason: str, *, expected: bool) -> None:
        dropped.append(reason)
        original(reason, expected=expected)

    link.disconnected = watch  # type: ignore[method-assign]
    try:
        try:
            intruder = tb.connect(venue.dir, ATTACKER, client_id=client_id)
        except tb.BrokerError:
            intruder = None  # refused outright: fine
        held = _revocation_gets_its_receipt(venue, f"att-id-{len(client_id)}-{client_id[:3]}")
        held = held and not dropped and link.wait_connected(0)
        if intruder is not None:
            tb.close(intruder)
    finally:
        link.disconnected = original  # type: ignore[method-assign]
    assert ledger.record("broker identity", held), (client_id, dropped)


def test_a_dead_network_thread_is_noticed_and_the_link_restarted(venue: Venue,
                                                                 ledger: Ledger):
    """Whatever kills paho's thread, the heartbeat says so (never "connected" forever) and a
    restart brings revocations back, with their receipts."""
    link = venue.gates[VICTIM].link
    transport = link.transport
    assert transport is not None and transport.alive()
    assert not link.stalled(after_s=5)
    assert isinstance(transport, MqttTransport) and transport.client is not None
    transport.client.loop_stop()  # the thread is gone, the socket still open
    dead = link.stalled(after_s=5) and any("not running" in h for h in link.health())
    link.restart()
    wait_for(lambda: transport.alive() and link.wait_connected(0), what="reconnect")
    held = dead and _revocation_gets_its_receipt(venue, "att-after-restart")
    assert ledger.record("link supervision", held)
