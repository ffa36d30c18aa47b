"""MQTT poison and floods, at the gate's message handler (no broker: thousands of cases).

The attacker holds one gate's certificate and signing key (it may sign anything on its own
events topic), or has central's key but a bug or a hostile insider behind it. Whatever
arrives, the handler must not die, must count the message, and must go on applying the
next revocation with a receipt. ``test_broker.py`` runs a sample of the same through a
real Mosquitto.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gate.match.decision import Outcome
from sync import messages, schemas
from sync.errors import ProtocolError, SignedInvalidError
from sync.templates import Enrolment
from tests.ledger import Ledger
from tests.linkrig import PEER, VENUE, Rig
from tests.support import DAY, protector, random_unit

pytestmark = pytest.mark.hostile

RNG = np.random.default_rng(17)
FACES = {f"att-{i}": random_unit(RNG) for i in range(3)}

#: JSON values with the shapes that broke receivers: huge integers, lone surrogates,
#: floats, deep nesting, wrong types.
_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                  st.floats(allow_nan=False), st.text(max_size=20),
                  st.sampled_from(["\ud800", "x\udfff", "😀", "\x00", "a" * 300]))
_json = st.recursive(_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=12)
#: Nasty values that a type check alone lets through (they are ints and strs).
_nasty = st.one_of(st.integers(min_value=2**63, max_value=2**90),
                   st.integers(min_value=-(2**90), max_value=-1),
                   st.sampled_from(["\ud800", "x\udfff", "a" * 70, "a b", "", "\x00",
                                    "😀", "att/1", "+", "#"]))
VALID_EVENT = {"event_id": messages.uuid7(1_800_000_000_000), "attendee": "att-0",
               "gate": PEER, "at": 1_800_000_000_000}


@st.composite
def _event_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid entry event with one or two fields poisoned (past every type check)."""
    body = dict(VALID_EVENT)
    for name in draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=2,
                              unique=True)):
        body[name] = draw(st.one_of(_nasty, _leaf))
    return body


BODIES = st.one_of(st.dictionaries(st.text(max_size=10), _json, max_size=5), _event_like(),
                   _event_like())
HOSTILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])


@pytest.fixture
def rig(make_store, tmp_path, clock) -> Iterator[Rig]:
    r = Rig(make_store(), tmp_path, clock)
    until = int(clock() + 2 * DAY)
    r.upsert([Enrolment(n, 1, until, protector().protect(f)[None]) for n, f in FACES.items()])
    yield r
    r.state.close()


def _signed(rig: Rig, kind: str, mtype: str, body: Any, *, as_peer: bool) -> tuple[str, bytes]:
    gate = PEER if as_peer else "gate-1"
    topic = messages.topic(VENUE, gate, kind)
    key = rig.peer if as_peer else rig.central.key
    kid = PEER if as_peer else "central-1"
    # Central's poison takes the next seq of its stream, as central's own messages do.
    seq = 10**6 if as_peer else rig.central.seqs.get(kind, -1) + 1
    if not as_peer:
        rig.central.seqs[kind] = seq
    env: dict[str, Any] = {"v": 1, "type": mtype, "seq": seq, "ts": 0, "kid": kid,
                           "body": body}
    try:
        env["sig"] = messages.b64(key.sign(messages.canonical(topic, env)))
    except (ValueError, UnicodeEncodeError, OverflowError, TypeError):
        env["sig"] = messages.b64(bytes(64))  # not even signable: sent unsigned
    payload = json.dumps(env, ensure_ascii=True, allow_nan=True).encode()
    return topic, payload


def _still_works(rig: Rig, seq: int) -> bool:
    """A fresh revocation is applied with a deletion receipt, and matching still runs."""
    before = len(rig.receipts)
    rig.send(*rig.central.message("revocations", "revoke",
                                  {"items": [{"attendee": "att-2", "seq": seq}]}))
    receipt = rig.receipts[-1] if len(rig.receipts) > before else {}
    return receipt.get("attendee") == "att-2" and receipt.get("seq") == seq and \
        rig.matcher.identify(FACES["att-1"]).outcome is Outcome.MATCH


@given(body=BODIES)
@HOSTILE
def test_a_gate_signing_poison_on_its_events_topic_stops_nothing(rig, ledger: Ledger, body):
    seq = 10 + ledger.tried.get("mqtt poison (gate certificate)", 0)
    escaped = False
    try:
        rig.send(*_signed(rig, "events", "event", body, as_peer=True))
    except BaseException:  # the point of the test: nothing may escape the handler
        escaped = True
    held = not escaped and _still_works(rig, seq)
    assert ledger.record("mqtt poison (gate certificate)", held)


#: A valid body of each central message type (the sealed upsert is garbage inside).
VALID_CENTRAL = {
    "revocations": {"items": [{"attendee": "att-0", "seq": 99, "valid_until": 1_900_000_000}]},
    "templates": {"sealed": {"epk": "A" * 44, "nonce": "A" * 16, "ct": "A" * 24}},
    "commands": {"name": "rotate_signing_key", "args": {"kid": "central-9",
                                                        "public_key": "A" * 43 + "="}},

    "head": {"templates": 0, "revocations": 0},
}


@st.composite
def _central_bodies(draw: st.DrawFn, kind: str) -> Any:
    if draw(st.booleans()):
        return draw(st.dictionaries(st.text(max_size=10), _json, max_size=5))
    body = json.loads(json.dumps(VALID_CENTRAL[kind]))
    target = body["items"][0] if kind == "revocations" else \
        body["args"] if kind == "commands" else body
    target[draw(st.sampled_from(sorted(target)))] = draw(st.one_of(_nasty, _leaf))
    return body


def _verifies(rig: Rig, topic: str, payload: bytes) -> bool:
    """The envelope's signature holds (whatever its contents)."""
    try:
        messages.open_envelope(topic, payload, rig.handler._keys())
    except SignedInvalidError:
        return True
    except ProtocolError:
        return False
    return True


def _parses(kind: str, body: Any) -> bool:
    try:
        messages.check_values(body)
        (schemas.command if kind == "commands" else schemas.head)(body)
    except (ProtocolError, TypeError, AttributeError):
        return False
    return True


@given(data=st.data(), kind=st.sampled_from(sorted(VALID_CENTRAL)))
@HOSTILE
def test_poison_signed_with_centrals_key_is_counted_against_it_and_changes_nothing(
        rig, ledger: Ledger, data, kind):
    body = data.draw(_central_bodies(kind))
    # A well-formed command or head signed by central takes effect (a key rotation, a
    # hold): legitimate, not poison. Everything else must be refused.
    assume(kind not in ("commands", "head") or not _parses(kind, body))
    mtype = {"revocations": "revoke", "templates": "upsert", "commands": "command",
             "head": "head"}[kind]
    seq = 10 + ledger.tried.get("mqtt poison (central's key)", 0)
    attendees, refused = rig.cache.status().attendees, sum(rig.handler.rejected.values())
    against = rig.handler.by_signer["central-1"]
    topic, payload = _signed(rig, kind, mtype, body, as_peer=False)
    signed = _verifies(rig, topic, payload)
    escaped = False
    try:
        rig.send(topic, payload)
    except BaseException:  # the point of the test: nothing may escape the handler
        escaped = True
    # Refused: nothing changed, and if its signature held, it counts against central's
    # key. (A revocation that happens to be well-formed is applied: legitimate.)
    if sum(rig.handler.rejected.values()) > refused:
        unchanged = rig.cache.status().attendees == attendees and \
            rig.handler.by_signer["central-1"] == against + signed
    else:
        unchanged = kind == "revocations"
    held = not escaped and unchanged and _still_works(rig, seq)
    assert ledger.record("mqtt poison (central's key)", held)


def test_raw_garbage_payloads_and_topics_stop_nothing(rig, ledger: Ledger):
    rng = np.random.default_rng(3)
    cases = [rng.bytes(int(n)) for n in rng.integers(0, 300, 300)]
    cases += [b"", b"{}", b"[]", b"null", b"\xff\xfe", b"{" * 10_000, b'{"v": 1e999}']
    topics = [messages.topic(VENUE, "gate-1", k) for k in messages.CENTRAL_KINDS]
    topics += [messages.topic(VENUE, PEER, "events"), "gate/v1/x", "gate/v1/" + "a" * 500]
    for k, payload in enumerate(cases):
        escaped = False
        try:
            rig.send(topics[k % len(topics)], payload)
        except BaseException:
            escaped = True
        ledger.record("mqtt poison (gate certificate)", not escaped)
        assert not escaped
    assert _still_works(rig, 5000)


def test_a_flood_gives_a_few_log_lines_and_counts_the_rest(rig, ledger: Ledger, caplog):
    changed_before = rig.changes
    with caplog.at_level(logging.INFO, logger="gate.link"):
        for k in range(2000):
            topic = messages.topic(VENUE, "gate-1", "revocations")
            rig.send(topic, b"garbage %d" % k)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    refused = sum(rig.handler.rejected.values())
    held = len(lines) <= 5 and refused == 2000
    assert ledger.record("mqtt flood", held, n=2000), (len(lines), refused)
    # Every refusal asks for a status publish; the link coalesces them (tested on the link).
    assert rig.changes - changed_before == 2000
