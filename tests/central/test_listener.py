"""Central's listener cannot die: whatever a message does in paho's network thread, it is
dropped, counted by kind (and by signer when it was validly signed), logged at most once
per kind per interval without its content, and the next valid message is recorded.

The poison is published through the real broker by gate-1 itself, with its certificate
and its signing key: the ACL lets it, and its signature verifies.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.core import Central
from sync import messages
from tests import broker as tb
from tests.central.conftest import VENUE, Site, event_body, gate_key, signed, wait_for
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

#: Everything here is published with gate-1's own certificate (and, when signed, its key).
BY_GATE, FLOOD = "mqtt poison (gate certificate)", "mqtt flood"
MARK = "att-secret-42"  # an attendee id inside poison: never in a log line
KINDS = ("events", "receipts", "status")


class Lines(logging.Handler):
    """Every record central logs, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@dataclass
class Rig:
    """The venue, central listening, gate-1's connection and central's log lines."""

    site: Site
    central: Central
    gate: mqtt.Client
    lines: Lines


@pytest.fixture(scope="module")
def rig(site: Site, central: Central, gate: mqtt.Client, lines: Lines) -> Rig:
    return Rig(site, central, gate, lines)


@pytest.fixture(scope="module")
def central(site: Site) -> Iterator[Central]:
    c = Central(site.dir, port=site.broker.port)
    c.connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def gate(site: Site) -> Iterator[mqtt.Client]:
    """gate-1's own connection (its certificate)."""
    client = tb.connect(site.dir, "gate-1", client_id="gate-1")
    yield client
    tb.close(client)


@pytest.fixture(scope="module")
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("central")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


class Seq:
    n = 10_000

    @classmethod
    def next(cls) -> int:
        cls.n += 1
        return cls.n


def send(site: Site, client: mqtt.Client, kind: str, payload: bytes) -> Any:
    return client.publish(messages.topic(VENUE, "gate-1", kind), payload, qos=1)


def poison_body(site: Site, kind: str, body: Any) -> bytes:
    """gate-1's valid signature over a body that is anything at all."""
    topic = messages.topic(VENUE, "gate-1", kind)
    mtype = {"events": "event", "receipts": "receipt", "status": "status"}[kind]
    env = {"v": 1, "type": mtype, "seq": Seq.next(), "ts": 1, "kid": "gate-1", "body": body}
    unsigned = json.dumps(env, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    env["sig"] = messages.b64(gate_key(site.dir, "gate-1").sign(
        topic.encode() + b"\x00" + unsigned.encode()))
    return json.dumps(env, separators=(",", ":"), ensure_ascii=True).encode()


def valid_event_gets_through(site: Site, gate: mqtt.Client, central: Central,
                             timeout: float = 10.0) -> None:
    """The listener is alive: a valid event published now is recorded."""
    body = event_body("gate-1")
    assert not tb.publish(gate, messages.topic(VENUE, "gate-1", "events"),
                          signed(site.dir, "gate-1", "events", body, seq=Seq.next())
                          ).is_failure
    wait_for(lambda: body["event_id"] in {e[0] for e in central.events()}, timeout,
             "the valid event after the poison")
    assert central.client._thread is not None and central.client._thread.is_alive()


def refused(central: Central) -> int:
    return sum(central.refused.values())


# --- poison bodies ----------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(),                                   # any size: 2**70 and beyond
    st.sampled_from([2**63, -(2**63), 2**70, -(2**70), 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON can carry these
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", MARK, "\x00", "é" * 50]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["event_id", "attendee", "gate", "at", "kind", "seq", "\ud800"])), inner, max_size=5)),
    max_leaves=20)


def deep(n: int) -> Any:
    v: Any = MARK
    for _ in range(n):
        v = {"x": [v]}
    return v


def _replaced(good: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**good, key: value}


def event_like() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like an event, with one field replaced by anything."""
    good = {"event_id": messages.uuid7(), "attendee": MARK, "gate": "gate-1", "at": 1}
    return st.builds(_replaced, st.just(good), st.sampled_from(list(good)), SCALARS)


POISON = st.one_of(
    st.dictionaries(st.text(max_size=10), JSON, max_size=6),
    event_like(),
    st.builds(deep, st.integers(5, 60)),
    st.fixed_dictionaries({"kind": st.sampled_from(["deleted", "stale", "applied", "x"]),
                           "attendee": SCALARS, "seq": SCALARS, "applied_at": SCALARS,
                           "cache_version": SCALARS}))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), bodies=st.lists(POISON, min_size=1, max_size=5))
def test_signed_poison_never_kills_the_listener(rig, ledger: Ledger, kind, bodies):
    site, central, gate, lines = rig.site, rig.central, rig.gate, rig.lines
    with ledger.case(BY_GATE, n=len(bodies)):
        for body in bodies:
            send(site, gate, kind, poison_body(site, kind, body)).wait_for_publish(5)
        valid_event_gets_through(site, gate, central)
        assert not any(MARK in line for line in lines.text())


RAW = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"{}", b"[]", b"null", b'{"v":1}', b"\xff\xfe", b"1" * 5000,
                     b"[" * 100_000, b'{"a":' * 50_000, b"NaN", b'{"v":1e999}',
                     b'{"v":1,"type":"event","seq":1,"ts":1,"kid":"gate-1","body":{},"sig":"' +
                     b"A" * 88 + b'"}']))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), payload=RAW)
def test_unsigned_garbage_is_refused_and_counted(site, central, gate, *, ledger: Ledger,
                                                kind, payload):
    before = refused(central)
    with ledger.case(BY_GATE):
        send(site, gate, kind, payload).wait_for_publish(5)
        wait_for(lambda: refused(central) > before, 10, "the garbage to be refused")
        valid_event_gets_through(site, gate, central)


def test_signed_but_invalid_messages_are_counted_against_their_signer(site, central, gate,
                                                                      ledger: Ledger):
    before = central.refused_by_signer["gate-1"]
    kinds_before = set(central.refused)
    with ledger.case(BY_GATE, n=7):  # six signed bodies and one unsigned
        for body in ({"huge": 2**70}, {"s": "\ud800"}, {"f": 1.5}, deep(10),
                     {"event_id": "not-a-uuid", "attendee": "a", "gate": "gate-1", "at": 1}):
            send(site, gate, "events", poison_body(site, "events", body)).wait_for_publish(5)
        send(site, gate, "receipts", poison_body(site, "receipts", {"kind": "deleted"})
             ).wait_for_publish(5)
        wait_for(lambda: central.refused_by_signer["gate-1"] >= before + 6, 10, "six refusals")
        new = set(central.refused) - kinds_before
        assert all(k.startswith("signed but invalid: ") for k in new), new
        # An unsigned message is nobody's evidence.
        send(site, gate, "events", b"{}").wait_for_publish(5)
        valid_event_gets_through(site, gate, central)
        assert central.refused_by_signer["gate-1"] == before + 6


def test_2000_garbage_messages_make_a_few_log_lines(site, central, gate, lines,
                                                     ledger: Ledger):
    start_lines, start = len(lines.records), refused(central)
    kinds_before = dict(central.refused)
    poison = [("events", b"not json"), ("receipts", b"{}"),
              ("events", poison_body(site, "events", {"n": 2**70})),
              ("events", poison_body(site, "events", {"event_id": MARK})),
              ("receipts", poison_body(site, "receipts", {"s": "\ud800"})),
              ("status", poison_body(site, "status", {"f": 0.5}))]
    with ledger.case(FLOOD, n=2000):
        infos = [send(site, gate, *poison[i % len(poison)]) for i in range(2000)]
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: refused(central) >= start + 2000, 30, "2000 refusals")
        assert refused(central) == start + 2000
        valid_event_gets_through(site, gate, central)
        new_lines = lines.records[start_lines:]
        grew = {k for k, v in central.refused.items() if v > kinds_before.get(k, 0)}
        # At most one line per kind in the interval: a handful, not 2000.
        assert len(new_lines) <= len(grew) <= 12, [r.getMessage() for r in new_lines]
        for r in new_lines:
            text = r.getMessage()
            assert MARK not in text and "not json" not in text and "\n" not in text
            assert r.levelno == logging.WARNING


def test_after_the_interval_a_kind_is_logged_again_with_the_count(site, central, gate, lines,
                                                                   ledger: Ledger):
    central.refusal_log_interval = 0.5
    try:
        with ledger.case(FLOOD, n=7):  # a small flood, across two log intervals
            send(site, gate, "status", b"first").wait_for_publish(5)
            time.sleep(0.6)
            start = len(lines.records)
            for _ in range(5):
                send(site, gate, "status", b"again").wait_for_publish(5)
            time.sleep(0.6)
            send(site, gate, "status", b"later").wait_for_publish(5)
            wait_for(lambda: len(lines.records) >= start + 2, 5, "two lines")
            texts = [r.getMessage() for r in lines.records[start:]]
            assert len(texts) == 2, texts
            assert texts[1].endswith("(and 4 more since the last report)"), texts
    finally:
        central.refusal_log_interval = 60.0


class FaultyDb:
    """central.db that fails every write with ``exc`` while armed (disk full, ...)."""

    def __init__(self, real: sqlite3.Connection, exc: BaseException) -> None:
        self.real, self.exc, self.armed = real, exc, True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.armed and sql.lstrip().upper().startswith("INSERT"):
            raise self.exc
        return self.real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("exc", [
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.DatabaseError("database disk image is malformed"),
    sqlite3.ProgrammingError("Cannot operate on a closed database."),
    OSError(28, "No space left on device"),
    UnicodeEncodeError("utf-8", "\ud800" + MARK, 0, 1, "surrogates not allowed"),
    MemoryError(), RecursionError(), KeyError(MARK), RuntimeError(MARK)],
    ids=lambda e: type(e).__name__)
def test_a_fault_while_storing_is_contained(rig, monkeypatch, ledger: Ledger, exc):
    site, central, gate, lines = rig.site, rig.central, rig.gate, rig.lines
    faulty = FaultyDb(central.db, exc)
    monkeypatch.setattr(central, "db", faulty)
    kind = f"not stored: {type(exc).__name__}"
    before, start = central.refused[kind], len(lines.records)
    # Whatever storing a gate's message raises (as a poison body might make it): one
    # message of each kind.
    with ledger.case(BY_GATE, n=len(KINDS)):
        for k in KINDS:
            body = event_body("gate-1") if k == "events" else (
                {"kind": "deleted", "attendee": MARK, "seq": 1, "applied_at": 1,
                 "cache_version": 1} if k == "receipts" else {"state": "online"})
            send(site, gate, k, signed(site.dir, "gate-1", k, body, seq=Seq.next())
                 ).wait_for_publish(5)
        wait_for(lambda: central.refused[kind] >= before + 3, 10, "three faults counted")
        assert central.client._thread is not None and central.client._thread.is_alive()
        faulty.armed = False
        valid_event_gets_through(site, gate, central)
        for r in lines.records[start:]:
            assert MARK not in r.getMessage()


def test_a_refusal_that_itself_fails_is_still_contained(site, central, gate, monkeypatch,
                                                        ledger: Ledger):
    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("the counter exploded")

    monkeypatch.setattr(central, "_refuse", broken)
    with ledger.case(BY_GATE, n=2):
        send(site, gate, "events", b"garbage").wait_for_publish(5)
        send(site, gate, "events", poison_body(site, "events", {"n": 2**70})
             ).wait_for_publish(5)
        monkeypatch.undo()
        valid_event_gets_through(site, gate, central)


def test_duplicates_and_valid_receipts_and_status_still_work(site, central, gate):
    body = event_body("gate-1")
    payload = signed(site.dir, "gate-1", "events", body, seq=Seq.next())
    dup = central.duplicates
    for _ in range(3):
        send(site, gate, "events", payload).wait_for_publish(5)
    receipt = {"kind": "deleted", "attendee": "att-9", "seq": 4, "applied_at": 1,
               "cache_version": 2}
    send(site, gate, "receipts", signed(site.dir, "gate-1", "receipts", receipt,
                                        seq=Seq.next())).wait_for_publish(5)
    send(site, gate, "status", signed(site.dir, "gate-1", "status", {"state": "online"},
                                      seq=Seq.next())).wait_for_publish(5)
    wait_for(lambda: central.deletion_receipt("gate-1", "att-9", 4) is not None, 10,
             "the receipt")
    wait_for(lambda: central.status("gate-1") == {"state": "online"}, 10, "the status")
    wait_for(lambda: central.duplicates >= dup + 2, 10, "two duplicates")
    assert [e[0] for e in central.events()].count(body["event_id"]) == 1


def test_a_receipt_seq_used_twice_keeps_both_proofs(site, central, gate):
    """A gate whose outbox was reset may number a new receipt with an old seq: the
    second deletion receipt is kept, not dropped as a duplicate; the very same receipt
    sent again is kept once."""
    seq = Seq.next()
    for attendee in ("att-31", "att-32", "att-32", "att-33"):
        receipt = {"kind": "deleted", "attendee": attendee, "seq": 1, "applied_at": 1,
                   "cache_version": 2}
        send(site, gate, "receipts", signed(site.dir, "gate-1", "receipts", receipt,
                                            seq=seq)).wait_for_publish(5)
    def arrived(attendee: str) -> bool:
        return central.deletion_receipt("gate-1", attendee, 1) is not None

    for attendee in ("att-31", "att-32", "att-33"):  # in order: att-33 comes last
        wait_for(functools.partial(arrived, attendee), 10, f"the receipt for {attendee}")
    assert sum(r.get("attendee") == "att-32" for r in central.receipts("gate-1")) == 1
