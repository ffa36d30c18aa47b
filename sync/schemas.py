"""The body of every message type, as both ends read and write it.

:func:`sync.messages.open_envelope` checks the envelope and its signature; the functions
here check a verified body's fields before anything acts on it, and build the bodies a
sender signs. Central and the gate share them, so both ends agree on every field. A body
that does not fit raises :class:`~sync.errors.ProtocolError` with a one-line reason that
never quotes the body. Values that only the receiver can judge (an attendee id against
its store's rules, an index against a snapshot in progress) are left to the receiver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sync.errors import ProtocolError
from sync.messages import KID, MAX_INT, public_key
from sync.templates import ID_PATTERN

#: Most revocations one message may carry.
MAX_REVOKE_ITEMS = 100_000
#: Most chunks one snapshot may have.
MAX_SNAPSHOT_CHUNKS = 10_000
#: Largest time stamp (ms) an event may carry: what a signed 64-bit column holds.
MAX_MS = 2**63 - 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODEL_ID = re.compile(r"[a-z0-9-]{1,16}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@dataclass(frozen=True)
class RevokeItem:
    """One revocation as sent: the store checks the values (id, seq, end) itself."""

    attendee: Any
    seq: Any
    valid_until: Any = None


def revoke_items(body: dict[str, Any]) -> list[RevokeItem]:
    """The items of a ``revoke`` body ``{items: [{attendee, seq, valid_until?}, …]}``."""
    items = body.get("items")
    if set(body) != {"items"} or not isinstance(items, list) or \
            not 0 < len(items) <= MAX_REVOKE_ITEMS:
        raise ProtocolError("revoke: body must be {items: [...]}")
    out = []
    for it in items:
        if not isinstance(it, dict) or not {"attendee", "seq"} <= set(it) <= \
                {"attendee", "seq", "valid_until"}:
            raise ProtocolError("revoke: malformed item")
        out.append(RevokeItem(it["attendee"], it["seq"], it.get("valid_until")))
    return out


def revoke_body(items: list[RevokeItem]) -> dict[str, Any]:
    """A ``revoke`` body."""
    return {"items": [{"attendee": i.attendee, "seq": i.seq} if i.valid_until is None else
                      {"attendee": i.attendee, "seq": i.seq, "valid_until": i.valid_until}
                      for i in items]}


def upsert_sealed(body: dict[str, Any]) -> Any:
    """The sealed payload of an ``upsert`` body ``{sealed}``."""
    if set(body) != {"sealed"}:
        raise ProtocolError("upsert: body must be {sealed}")
    return body["sealed"]


@dataclass(frozen=True)
class SnapshotManifest:
    """A ``snapshot_begin``: what the chunks that follow must add up to."""

    snapshot: str
    chunks: int
    records: int
    tombstones: int
    sha256: str
    #: The last revocation seq the snapshot already includes (-1: none).
    revocations: int = -1
    #: Template model id of every chunk.
    model: str = ""


def snapshot_begin(body: dict[str, Any]) -> SnapshotManifest:
    """The manifest of a ``snapshot_begin`` body."""
    if set(body) != {"snapshot", "chunks", "records", "tombstones", "sha256", "revocations",
                     "model"}:
        raise ProtocolError("snapshot_begin: wrong fields")
    if not isinstance(body["model"], str) or not _MODEL_ID.fullmatch(body["model"]):
        raise ProtocolError("snapshot_begin: bad model")
    rev = body["revocations"]
    if not isinstance(rev, int) or isinstance(rev, bool) or not -1 <= rev <= MAX_INT:
        raise ProtocolError("snapshot_begin: bad revocations")
    for name in ("chunks", "records", "tombstones"):
        if not isinstance(body[name], int) or isinstance(body[name], bool) or \
                not 0 <= body[name] <= MAX_INT:
            raise ProtocolError(f"snapshot_begin: bad {name}")
    if not 0 < body["chunks"] <= MAX_SNAPSHOT_CHUNKS or \
            not isinstance(body["snapshot"], str) or not isinstance(body["sha256"], str) or \
            not _SHA256.fullmatch(body["sha256"]):
        raise ProtocolError("snapshot_begin: bad manifest")
    return SnapshotManifest(body["snapshot"], body["chunks"], body["records"],
                            body["tombstones"], body["sha256"], rev, body["model"])


@dataclass(frozen=True)
class SnapshotChunk:
    """A ``snapshot_chunk``: which snapshot, which piece, and the sealed piece."""

    snapshot: Any
    index: Any
    sealed: Any


def snapshot_chunk(body: dict[str, Any]) -> SnapshotChunk:
    """The fields of a ``snapshot_chunk`` body (the index is checked against the
    manifest by the receiver)."""
    if set(body) != {"snapshot", "index", "sealed"}:
        raise ProtocolError("snapshot_chunk: wrong fields")
    return SnapshotChunk(body["snapshot"], body["index"], body["sealed"])


#: Commands central may send a gate.
COMMANDS = ("resync", "purge", "rotate_signing_key")


@dataclass(frozen=True)
class Command:
    """A ``command``: its name and arguments."""

    name: str
    args: dict[str, Any]


def command(body: dict[str, Any]) -> Command:
    """A ``command`` body ``{name, args?}`` naming one of :data:`COMMANDS`."""
    name, args = body.get("name"), body.get("args", {})
    if set(body) - {"name", "args"} or not isinstance(args, dict):
        raise ProtocolError("command: wrong fields")
    if name not in COMMANDS:
        raise ProtocolError("command: unknown name")
    assert isinstance(name, str)
    if name == "rotate_signing_key":
        kid, pub = args.get("kid"), args.get("public_key")
        if not isinstance(kid, str) or not KID.fullmatch(kid):
            raise ProtocolError("rotate_signing_key: bad kid")
        public_key(str(pub))  # validates the key
    return Command(name, args)


@dataclass(frozen=True)
class EntryEvent:
    """One confirmed entry: at most one per passage, identified by its UUIDv7."""

    event_id: str
    attendee: str
    gate: str
    at_ms: int


def entry_event(body: dict[str, Any], gate: str, *, what: str = "event") -> EntryEvent:
    """The entry in an ``event`` body published by ``gate`` (its topic's gate)."""
    if set(body) != {"event_id", "attendee", "gate", "at"} or body["gate"] != gate or \
            not isinstance(body["at"], int) or isinstance(body["at"], bool) or \
            not 0 <= body["at"] <= MAX_MS or not isinstance(body["attendee"], str) or \
            not ID_PATTERN.fullmatch(body["attendee"]) or \
            not isinstance(body["event_id"], str) or not _UUID.fullmatch(body["event_id"]):
        raise ProtocolError(f"{what}: wrong fields")
    return EntryEvent(body["event_id"], body["attendee"], gate, body["at"])


def event_body(event: EntryEvent) -> dict[str, Any]:
    """An ``event`` body."""
    return {"event_id": event.event_id, "attendee": event.attendee, "gate": event.gate,
            "at": event.at_ms}


def applied_receipt(*, stream: str, seq: int, applied: int, stale: int,
                    cache_version: int) -> dict[str, Any]:
    """The receipt for a template message: how many records it changed."""
    return {"kind": "applied", "stream": stream, "seq": seq, "applied": applied,
            "stale": stale, "cache_version": cache_version}


def deletion_receipt(*, attendee: str, seq: int, deleted: bool, applied_at_ms: int,
                     cache_version: int) -> dict[str, Any]:
    """The signed proof that a revocation was applied (``deleted``) or was stale."""
    return {"kind": "deleted" if deleted else "stale", "attendee": attendee, "seq": seq,
            "applied_at": applied_at_ms, "cache_version": cache_version}


#: The streams whose state a gate's cache holds, and which central's head names.
STREAMS = ("templates", "revocations")


@dataclass(frozen=True)
class Head:
    """The last sequence number central has sent a gate on each cache stream (-1: none).

    Central publishes it signed and retained on the gate's ``head`` topic after each
    message; a gate whose cache has applied less is behind (lost messages, or a cache
    rolled back or deleted) and serves nobody until it has caught up.
    """

    templates: int = -1
    revocations: int = -1

    def seq(self, stream: str) -> int:
        """The head of ``stream``."""
        return self.templates if stream == "templates" else self.revocations


def head(body: dict[str, Any]) -> Head:
    """A ``head`` body ``{templates, revocations}`` (each -1 or a sequence number)."""
    if set(body) != set(STREAMS):
        raise ProtocolError("head: wrong fields")
    for name in STREAMS:
        value = body[name]
        if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value <= MAX_INT:
            raise ProtocolError(f"head: bad {name}")
    return Head(body["templates"], body["revocations"])


def head_body(h: Head) -> dict[str, Any]:
    """A ``head`` body."""
    return {"templates": h.templates, "revocations": h.revocations}
