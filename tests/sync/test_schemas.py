"""Message bodies (sync.schemas): well-formed ones are read, malformed ones refused with a
one-line ProtocolError that never quotes the body, and what the builders write reads back.

``sync/asyncapi.yaml`` is the reference: every well-formed body here validates against it,
every malformed one in the first table does not (the second holds what the parsers refuse
beyond what a JSON schema can say). Hypothesis throws garbage bodies (any JSON
object, and well-formed bodies with one field broken) at every parser: each either
refuses it with ProtocolError or returns values of the types the spec promises for the
fields it is responsible for (what only the receiver can judge, such as an attendee id
against its store's rules, is left to the receiver and checked in the gate's tests).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from sync import messages, schemas
from sync.errors import ProtocolError
from sync.schemas import (
    COMMANDS,
    MAX_REVOKE_ITEMS,
    MAX_SNAPSHOT_CHUNKS,
    Command,
    EntryEvent,
    Head,
    RevokeItem,
    SnapshotChunk,
    SnapshotManifest,
)
from sync.templates import ID_PATTERN
from tests.support import ROOT

SPEC = yaml.safe_load((ROOT / "sync" / "asyncapi.yaml").read_text())
VENUE, GATE = "arena", "lane-1"
CENTRAL_KEY = Ed25519PrivateKey.generate()
GATE_KEY = Ed25519PrivateKey.generate()
PUB = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
    Encoding.Raw, PublicFormat.Raw)).decode()
SEALED = {"epk": "AAAA", "nonce": "AAAA", "ct": "AAAA"}
SHA = "0123456789abcdef" * 4
EVENT_ID = messages.uuid7(1_795_000_000_000)
#: Put into every malformed body: no refusal may quote it.
MARK = "Q\u00a7mark"
#: Message type -> the topic kind it travels on.
KIND = {"revoke": "revocations", "upsert": "templates", "snapshot_begin": "templates",
        "snapshot_chunk": "templates", "command": "commands", "head": "head",
        "event": "events", "receipt": "receipts"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def _event(body: dict[str, Any]) -> EntryEvent:
    return schemas.entry_event(body, GATE)


#: Message type -> its parser (an event is read as published by GATE).
PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "revoke": schemas.revoke_items,
    "upsert": schemas.upsert_sealed,
    "snapshot_begin": schemas.snapshot_begin,
    "snapshot_chunk": schemas.snapshot_chunk,
    "command": schemas.command,
    "head": schemas.head,
    "event": _event,
}


def spec_errors(mtype: str, body: dict[str, Any]) -> list[str]:
    """Where ``body`` breaks the message schema of ``mtype`` in sync/asyncapi.yaml."""
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{mtype}",
                                      "components": SPEC["components"]},
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    envelope = {"v": 1, "type": mtype, "seq": 1, "ts": 1, "kid": "central-1", "body": body,
                "sig": "AAAA"}
    return [e.message for e in validator.iter_errors(envelope)]


def over_the_wire(mtype: str, body: dict[str, Any], *, gate: str = GATE) -> dict[str, Any]:
    """``body`` signed, serialised, parsed and verified as a receiver does."""
    key = GATE_KEY if KIND[mtype] in messages.GATE_KINDS else CENTRAL_KEY
    topic = messages.topic(VENUE, gate, KIND[mtype])
    payload = messages.sign(topic, mtype=mtype, seq=3, ts_ms=1_795_000_000_000, kid="k-1",
                            body=body, key=key)
    env = messages.open_envelope(topic, payload, {"k-1": key.public_key()})
    assert env.type == mtype
    return env.body


# --- well-formed bodies ------------------------------------------------------------------

VALID: list[tuple[str, dict[str, Any], Any]] = [
    ("revoke", {"items": [{"attendee": "att-1", "seq": 4}]}, [RevokeItem("att-1", 4)]),
    ("revoke", {"items": [{"attendee": "att-1", "seq": 0, "valid_until": 1_900_000_000},
                          {"attendee": "b:2", "seq": 2**63 - 1}]},
     [RevokeItem("att-1", 0, 1_900_000_000), RevokeItem("b:2", 2**63 - 1)]),
    ("upsert", {"sealed": SEALED}, SEALED),
    ("snapshot_begin", {"snapshot": "s-1", "chunks": 1, "records": 0, "tombstones": 0,
                        "sha256": SHA, "revocations": -1, "model": "mobilefacenet"},
     SnapshotManifest("s-1", 1, 0, 0, SHA, -1, "mobilefacenet")),
    ("snapshot_begin", {"snapshot": EVENT_ID, "chunks": MAX_SNAPSHOT_CHUNKS,
                        "records": 100_000, "tombstones": 7, "sha256": SHA,
                        "revocations": 2**63 - 1, "model": "sface"},
     SnapshotManifest(EVENT_ID, MAX_SNAPSHOT_CHUNKS, 100_000, 7, SHA, 2**63 - 1, "sface")),
    ("head", {"templates": -1, "revocations": -1}, Head(-1, -1)),
    ("head", {"templates": 12, "revocations": 2**63 - 1}, Head(12, 2**63 - 1)),
    ("snapshot_chunk", {"snapshot": "s-1", "index": 0, "sealed": SEALED},
     SnapshotChunk("s-1", 0, SEALED)),
    ("command", {"name": "resync"}, Command("resync", {})),
    ("command", {"name": "purge", "args": {}}, Command("purge", {})),
    ("command", {"name": "rotate_signing_key", "args": {"kid": "central-2", "public_key": PUB}},
     Command("rotate_signing_key", {"kid": "central-2", "public_key": PUB})),
    ("event", {"event_id": EVENT_ID, "attendee": "att-1", "gate": GATE, "at": 1_795_000_000_000},
     EntryEvent(EVENT_ID, "att-1", GATE, 1_795_000_000_000)),
    ("event", {"event_id": EVENT_ID, "attendee": "att-1", "gate": GATE, "at": 0},
     EntryEvent(EVENT_ID, "att-1", GATE, 0)),
]


@pytest.mark.parametrize(("mtype", "body", "expected"), VALID,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(VALID)])
def test_well_formed_bodies_are_read(mtype, body, expected):
    assert spec_errors(mtype, body) == []
    assert PARSERS[mtype](body) == expected
    # The same after signing, JSON and verification (what a receiver actually holds).
    assert PARSERS[mtype](over_the_wire(mtype, body)) == expected


def _body_schema(mtype: str) -> dict[str, Any]:
    return SPEC["components"]["schemas"][mtype]["allOf"][1]["properties"]["body"]


def test_the_largest_revocation_is_read_and_one_more_item_is_refused():
    assert _body_schema("revoke")["properties"]["items"]["maxItems"] == MAX_REVOKE_ITEMS
    body = {"items": [{"attendee": f"a{i}", "seq": i} for i in range(MAX_REVOKE_ITEMS)]}
    items = schemas.revoke_items(body)
    assert len(items) == MAX_REVOKE_ITEMS and items[-1] == RevokeItem(
        f"a{MAX_REVOKE_ITEMS - 1}", MAX_REVOKE_ITEMS - 1)
    body["items"].append({"attendee": MARK, "seq": 1})
    with pytest.raises(ProtocolError, match=r"^revoke: body must be") as err:
        schemas.revoke_items(body)
    assert MARK not in str(err.value)


def test_the_snapshot_limit_is_the_specs():
    chunks = _body_schema("snapshot_begin")["properties"]["chunks"]
    assert (chunks["minimum"], chunks["maximum"]) == (1, MAX_SNAPSHOT_CHUNKS)


# --- malformed bodies --------------------------------------------------------------------

REVOKE_ITEM = {"attendee": "att-1", "seq": 1}
BEGIN = {"snapshot": "s-1", "chunks": 2, "records": 5, "tombstones": 0, "sha256": SHA,
         "revocations": 3, "model": "mobilefacenet"}
HEAD = {"templates": 4, "revocations": 9}
CHUNK = {"snapshot": "s-1", "index": 0, "sealed": SEALED}
EVENT = {"event_id": EVENT_ID, "attendee": "att-1", "gate": GATE, "at": 1_795_000_000_000}
ROTATE = {"kid": "central-2", "public_key": PUB}

MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("revoke", {}, "revoke: body must be"),
    ("revoke", {"items": []}, "revoke: body must be"),
    ("revoke", {"items": MARK}, "revoke: body must be"),
    ("revoke", {"items": {"attendee": MARK, "seq": 1}}, "revoke: body must be"),
    ("revoke", {"items": [REVOKE_ITEM], MARK: 1}, "revoke: body must be"),
    ("revoke", {"items": [REVOKE_ITEM, MARK]}, "revoke: malformed item"),
    ("revoke", {"items": [None]}, "revoke: malformed item"),
    ("revoke", {"items": [{"attendee": MARK}]}, "revoke: malformed item"),
    ("revoke", {"items": [{"seq": 1}]}, "revoke: malformed item"),
    ("revoke", {"items": [{**REVOKE_ITEM, "templates": MARK}]}, "revoke: malformed item"),
    ("upsert", {}, "upsert: body must be {sealed}"),
    ("upsert", {"sealed": SEALED, "tombstones": [MARK]}, "upsert: body must be {sealed}"),
    ("upsert", {"templates": MARK}, "upsert: body must be {sealed}"),
    ("snapshot_begin", {}, "snapshot_begin: wrong fields"),
    ("snapshot_begin", {k: v for k, v in BEGIN.items() if k != "model"},
     "snapshot_begin: wrong fields"),
    ("snapshot_begin", {**BEGIN, "model": ""}, "snapshot_begin: bad model"),
    ("snapshot_begin", {**BEGIN, "model": "x" * 17}, "snapshot_begin: bad model"),
    ("snapshot_begin", {**BEGIN, "model": "MobileFaceNet"}, "snapshot_begin: bad model"),
    ("snapshot_begin", {**BEGIN, "model": 7}, "snapshot_begin: bad model"),
    ("snapshot_begin", {**BEGIN, "model": MARK}, "snapshot_begin: bad model"),
    ("snapshot_begin", {**BEGIN, "extra": MARK}, "snapshot_begin: wrong fields"),
    ("snapshot_begin", {k: v for k, v in BEGIN.items() if k != "sha256"},
     "snapshot_begin: wrong fields"),
    ("snapshot_begin", {k: v for k, v in BEGIN.items() if k != "revocations"},
     "snapshot_begin: wrong fields"),
    ("snapshot_begin", {**BEGIN, "revocations": -2}, "snapshot_begin: bad revocations"),
    ("snapshot_begin", {**BEGIN, "revocations": True}, "snapshot_begin: bad revocations"),
    ("snapshot_begin", {**BEGIN, "revocations": MARK}, "snapshot_begin: bad revocations"),
    ("snapshot_begin", {**BEGIN, "revocations": 2**63}, "snapshot_begin: bad revocations"),
    ("head", {}, "head: wrong fields"),
    ("head", {**HEAD, "extra": MARK}, "head: wrong fields"),
    ("head", {"templates": 4}, "head: wrong fields"),
    ("head", {**HEAD, "templates": -2}, "head: bad templates"),
    ("head", {**HEAD, "templates": MARK}, "head: bad templates"),
    ("head", {**HEAD, "revocations": None}, "head: bad revocations"),
    ("head", {**HEAD, "revocations": 2**63}, "head: bad revocations"),
    ("event", {**EVENT, "at": -1}, "event: wrong fields"),
    ("event", {**EVENT, "at": 2**63}, "event: wrong fields"),  # no database can hold it
    ("event", {**EVENT, "attendee": MARK}, "event: wrong fields"),
    ("snapshot_begin", {**BEGIN, "chunks": MARK}, "snapshot_begin: bad chunks"),
    ("snapshot_begin", {**BEGIN, "chunks": True}, "snapshot_begin: bad chunks"),
    ("snapshot_begin", {**BEGIN, "chunks": -1}, "snapshot_begin: bad chunks"),
    ("snapshot_begin", {**BEGIN, "records": None}, "snapshot_begin: bad records"),
    ("snapshot_begin", {**BEGIN, "records": -5}, "snapshot_begin: bad records"),
    ("snapshot_begin", {**BEGIN, "tombstones": False}, "snapshot_begin: bad tombstones"),
    ("snapshot_begin", {**BEGIN, "tombstones": [0]}, "snapshot_begin: bad tombstones"),
    ("snapshot_begin", {**BEGIN, "chunks": 0}, "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "chunks": MAX_SNAPSHOT_CHUNKS + 1},
     "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "snapshot": [MARK]}, "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "sha256": SHA[:-1]}, "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "sha256": SHA + "0"}, "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "sha256": SHA.upper()}, "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "sha256": (MARK + "z" * 64)[:64]},
     "snapshot_begin: bad manifest"),
    ("snapshot_begin", {**BEGIN, "sha256": int(SHA[:16], 16)}, "snapshot_begin: bad manifest"),
    ("snapshot_chunk", {}, "snapshot_chunk: wrong fields"),
    ("snapshot_chunk", {"snapshot": MARK, "index": 0}, "snapshot_chunk: wrong fields"),
    ("snapshot_chunk", {**CHUNK, "sha256": MARK}, "snapshot_chunk: wrong fields"),
    ("command", {}, "command: unknown name"),
    ("command", {"name": MARK}, "command: unknown name"),
    ("command", {"name": ["resync"]}, "command: unknown name"),
    ("command", {"name": "RESYNC"}, "command: unknown name"),
    ("command", {"name": "resync", "extra": MARK}, "command: wrong fields"),
    ("command", {"name": "resync", "args": [MARK]}, "command: wrong fields"),
    ("command", {"name": "resync", "args": MARK}, "command: wrong fields"),
    ("event", {}, "event: wrong fields"),
    ("event", {**EVENT, "extra": MARK}, "event: wrong fields"),
    ("event", {k: v for k, v in EVENT.items() if k != "at"}, "event: wrong fields"),
    ("event", {**EVENT, "attendee": [MARK]}, "event: wrong fields"),
    ("event", {**EVENT, "attendee": None}, "event: wrong fields"),
    ("event", {**EVENT, "at": MARK}, "event: wrong fields"),
    ("event", {**EVENT, "at": 1.5}, "event: wrong fields"),
    ("event", {**EVENT, "at": True}, "event: wrong fields"),
    ("event", {**EVENT, "event_id": None}, "event: wrong fields"),
    ("event", {**EVENT, "event_id": 17}, "event: wrong fields"),
    ("event", {**EVENT, "event_id": {"id": MARK}}, "event: wrong fields"),
    ("event", {**EVENT, "event_id": MARK}, "event: wrong fields"),
    ("event", {**EVENT, "event_id": ""}, "event: wrong fields"),
    ("event", {**EVENT, "event_id": EVENT_ID[:-1]}, "event: wrong fields"),
]

#: Refused although the spec's JSON schema would let them through.
BEYOND_SPEC: list[tuple[str, dict[str, Any], str]] = [
    ("command", {"name": "rotate_signing_key"}, "rotate_signing_key: bad kid"),
    ("command", {"name": "rotate_signing_key", "args": {**ROTATE, "kid": MARK}},
     "rotate_signing_key: bad kid"),
    ("command", {"name": "rotate_signing_key", "args": {**ROTATE, "kid": 7}},
     "rotate_signing_key: bad kid"),
    ("command", {"name": "rotate_signing_key", "args": {"kid": "central-2"}}, "public key"),
    ("command", {"name": "rotate_signing_key", "args": {**ROTATE, "public_key": MARK}},
     "public key: not base64"),
    ("command", {"name": "rotate_signing_key", "args": {**ROTATE, "public_key": PUB[:-4]}},
     "public key: 30 bytes, expected 32"),
    ("command", {"name": "rotate_signing_key", "args": {**ROTATE, "public_key": [PUB]}},
     "public key"),
    ("snapshot_begin", {**BEGIN, "chunks": 2.0}, "snapshot_begin: bad chunks"),  # JSON: 2
    ("event", {**EVENT, "gate": "lane-2"}, "event: wrong fields"),  # not its publisher
]


@pytest.mark.parametrize(("mtype", "body", "reason", "breaks_spec"),
                         [(*row, True) for row in MALFORMED] +
                         [(*row, False) for row in BEYOND_SPEC],
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(MALFORMED)] +
                         [f"{m}-beyond-{i}" for i, (m, _, _) in enumerate(BEYOND_SPEC)])
def test_malformed_bodies_are_refused_in_one_line(mtype, body, reason, breaks_spec):
    assert bool(spec_errors(mtype, body)) == breaks_spec
    with pytest.raises(ProtocolError) as err:
        PARSERS[mtype](body)
    message = str(err.value)
    assert message.startswith(reason)
    assert "\n" not in message and MARK not in message and len(message) < 120


def test_the_refusing_parser_names_what_it_read():
    with pytest.raises(ProtocolError, match=r"^peer event: wrong fields$"):
        schemas.entry_event({**EVENT, "at": None}, GATE, what="peer event")


def test_an_event_is_read_only_for_the_gate_that_published_it():
    assert schemas.entry_event(EVENT, GATE).gate == GATE
    with pytest.raises(ProtocolError):
        schemas.entry_event(EVENT, "lane-2")


# --- garbage -----------------------------------------------------------------------------

FIELDS = sorted({"items", "attendee", "seq", "valid_until", "sealed", "snapshot", "chunks",
                 "records", "tombstones", "sha256", "index", "name", "args", "kid",
                 "public_key", "event_id", "gate", "at", "epk", "nonce", "ct", "revocations",
                 "templates"})
#: Values that get past the first checks (so the garbage reaches the later ones).
PLAUSIBLE: list[Any] = [0, 1, 2, -1, 2**63 - 1, 2**63, True, False, None, 1.0, "", "att-1", GATE,
             "lane-2", "s-1", SHA, SHA.upper(), EVENT_ID, *COMMANDS, "central-2", PUB, {},
             [], SEALED]
marked_text = st.text(max_size=12).map(lambda s: MARK + s)
leaves = (st.none() | st.booleans() | st.integers() | st.integers(-2, 2**64) |
          st.floats(allow_nan=False, allow_infinity=False) | marked_text |
          st.sampled_from(PLAUSIBLE))
keys = st.sampled_from(FIELDS) | marked_text
json_values = st.recursive(leaves, lambda c: st.lists(c, max_size=4) |
                           st.dictionaries(keys, c, max_size=5), max_leaves=12)
any_body = st.dictionaries(keys, json_values, max_size=6)
#: A well-formed body of each type, to break one field at a time.
TEMPLATES = {"revoke": {"items": [dict(REVOKE_ITEM)]}, "upsert": {"sealed": SEALED},
             "snapshot_begin": BEGIN, "snapshot_chunk": CHUNK, "head": HEAD,
             "command": {"name": "rotate_signing_key", "args": ROTATE}, "event": EVENT}


@st.composite
def broken_bodies(draw: st.DrawFn, mtype: str) -> dict[str, Any]:
    """A well-formed ``mtype`` body with one field replaced, removed or added (one level
    down too: a revoke item, a command's args)."""
    body = json.loads(json.dumps(TEMPLATES[mtype]))
    target = body
    if mtype == "revoke" and draw(st.booleans()):
        target = body["items"][0]
    elif mtype == "command" and draw(st.booleans()):
        target = body["args"]
    how = draw(st.sampled_from(["replace", "remove", "add"]))
    if how == "replace":
        target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    elif how == "remove":
        del target[draw(st.sampled_from(sorted(target)))]
    else:
        target[draw(keys)] = draw(json_values)
    return body


def _one_line_without_the_body(exc: ProtocolError) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message
    assert MARK not in message and len(message) < 120


def _check_accepted(mtype: str, body: dict[str, Any], got: Any) -> None:
    """What a parser returned for a body it accepted has the spec's types and limits
    for every field that parser answers for."""
    def count(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    if mtype == "revoke":
        assert set(body) == {"items"} and 1 <= len(got) <= MAX_REVOKE_ITEMS
        for item, raw in zip(got, body["items"], strict=True):
            assert isinstance(raw, dict) and {"attendee", "seq"} <= set(raw) <= \
                {"attendee", "seq", "valid_until"}
            assert item == RevokeItem(raw["attendee"], raw["seq"], raw.get("valid_until"))
    elif mtype == "upsert":
        assert set(body) == {"sealed"} and got is body["sealed"]
    elif mtype == "snapshot_begin":
        assert set(body) == {"snapshot", "chunks", "records", "tombstones", "sha256",
                             "revocations", "model"}
        assert isinstance(got.model, str) and re.fullmatch("[a-z0-9-]{1,16}", got.model)
        assert count(got.revocations, -1)
        assert isinstance(got.snapshot, str) and count(got.chunks, 1, MAX_SNAPSHOT_CHUNKS)
        for n in (got.records, got.tombstones):
            assert isinstance(n, int) and not isinstance(n, bool) and n >= 0
        assert isinstance(got.sha256, str) and re.fullmatch("[0-9a-f]{64}", got.sha256)
    elif mtype == "snapshot_chunk":
        assert set(body) == {"snapshot", "index", "sealed"}
        assert got == SnapshotChunk(body["snapshot"], body["index"], body["sealed"])
    elif mtype == "command":
        assert set(body) <= {"name", "args"} and got.name in COMMANDS
        assert isinstance(got.args, dict)
        if got.name == "rotate_signing_key":
            assert isinstance(got.args["kid"], str) and messages.KID.fullmatch(got.args["kid"])
            assert isinstance(got.args["public_key"], str)
            messages.public_key(got.args["public_key"])
    elif mtype == "head":
        assert set(body) == {"templates", "revocations"}
        assert count(got.templates, -1) and count(got.revocations, -1)
    else:
        assert set(body) == {"event_id", "attendee", "gate", "at"} and got.gate == GATE
        assert isinstance(got.event_id, str) and UUID.fullmatch(got.event_id)
        assert isinstance(got.attendee, str) and count(got.at_ms)
        assert ID_PATTERN.fullmatch(got.attendee)


def _parse_garbage(mtype: str, body: dict[str, Any]) -> None:
    try:
        got = PARSERS[mtype](body)
    except ProtocolError as exc:
        _one_line_without_the_body(exc)
    else:
        _check_accepted(mtype, body, got)


@pytest.mark.parametrize("mtype", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(body=any_body)
def test_garbage_bodies_are_refused_cleanly(mtype, body):
    _parse_garbage(mtype, body)


@pytest.mark.parametrize("mtype", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_broken_field_is_refused_cleanly(mtype, data):
    _parse_garbage(mtype, data.draw(broken_bodies(mtype)))


# --- builders ----------------------------------------------------------------------------

attendees = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
counts = st.integers(0, 2**63 - 1)
revoke_items = st.lists(st.builds(RevokeItem, attendees, counts,
                                  st.none() | st.integers(0, 2**62)), min_size=1, max_size=20)
entry_events = st.builds(EntryEvent, st.integers(0, 2**48 - 1).map(messages.uuid7),
                         attendees, st.just(GATE), st.integers(0, 2**63 - 1))


@settings(max_examples=100, deadline=None)
@given(items=revoke_items)
def test_revoke_bodies_read_back(items):
    body = schemas.revoke_body(items)
    assert spec_errors("revoke", body) == []
    assert schemas.revoke_items(body) == items
    assert schemas.revoke_items(over_the_wire("revoke", body)) == items


@settings(max_examples=100, deadline=None)
@given(event=entry_events)
def test_event_bodies_read_back(event):
    body = schemas.event_body(event)
    assert spec_errors("event", body) == []
    assert schemas.entry_event(body, GATE) == event
    assert schemas.entry_event(over_the_wire("event", body), GATE) == event


@settings(max_examples=50, deadline=None)
@given(stream_seq=counts, applied=counts, stale=counts, version=counts)
def test_applied_receipts_follow_the_spec(stream_seq, applied, stale, version):
    body = schemas.applied_receipt(stream="templates", seq=stream_seq, applied=applied,
                                   stale=stale, cache_version=version)
    assert spec_errors("receipt", body) == []
    assert over_the_wire("receipt", body) == {
        "kind": "applied", "stream": "templates", "seq": stream_seq, "applied": applied,
        "stale": stale, "cache_version": version}


@pytest.mark.parametrize(("deleted", "kind"), [(True, "deleted"), (False, "stale")])
def test_deletion_receipts_follow_the_spec(deleted, kind):
    body = schemas.deletion_receipt(attendee="att-1", seq=4, deleted=deleted,
                                    applied_at_ms=1_795_000_000_123, cache_version=9)
    assert spec_errors("receipt", body) == []
    assert over_the_wire("receipt", body) == {
        "kind": kind, "attendee": "att-1", "seq": 4, "applied_at": 1_795_000_000_123,
        "cache_version": 9}


def test_every_type_central_sends_has_a_parser_and_the_spec_knows_them_all():
    central_types = {t for k in messages.CENTRAL_KINDS for t in messages.TYPES[k]}
    assert central_types | {"event"} == set(PARSERS)
    assert set(PARSERS) | {"receipt", "status"} <= set(SPEC["components"]["schemas"])
