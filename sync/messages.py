"""Wire format of every MQTT message between central and gates (see ``asyncapi.yaml``).

Each payload is one UTF-8 JSON object, an *envelope*::

    {"v": 1, "type": "revoke", "seq": 17, "ts": 1795000000123, "kid": "central-1",
     "body": {...}, "sig": "<base64 Ed25519 signature>"}

The signature covers the topic and the canonical JSON of the envelope without ``sig``
(keys sorted, no spaces, ASCII only, integers only), so a message cannot be replayed on
another topic, gate or venue. ``seq`` is the sender's monotonic counter for that topic;
receivers persist the last one and refuse anything not newer. Sizes are checked before
JSON is parsed; every field is checked after. Anything wrong raises
:class:`~sync.errors.ProtocolError` with a one-line reason that never quotes the payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync import jsonsafe
from sync.errors import ProtocolError, SignedInvalidError

VERSION = 1
#: Largest payload parsed at all (a snapshot chunk is ~1.6 MB).
MAX_PAYLOAD = 8 * 1024 * 1024
#: How deep a body may nest, and the integer range every receiver can store (SQLite's).
MAX_DEPTH = 6
MAX_INT = 2**63 - 1
#: Central → gate kinds, gate → central kinds.
CENTRAL_KINDS = ("templates", "revocations", "commands", "head")
GATE_KINDS = ("events", "receipts", "status")
TYPES = {
    "templates": ("upsert", "snapshot_begin", "snapshot_chunk"),
    "revocations": ("revoke",),
    "commands": ("command",),
    "head": ("head",),
    "events": ("event",),
    "receipts": ("receipt",),
    "status": ("status",),
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TOPIC = re.compile(r"gate/v1/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/([A-Za-z0-9][A-Za-z0-9._-]{0,63})"
                    r"/([a-z]+)")


def topic(venue: str, gate: str, kind: str) -> str:
    """``gate/v1/{venue}/{gate}/{kind}``."""
    if kind not in TYPES or not NAME.fullmatch(venue) or not NAME.fullmatch(gate):
        raise ProtocolError(f"bad topic parts: {venue!r}/{gate!r}/{kind!r}")
    return f"gate/v1/{venue}/{gate}/{kind}"


def parse_topic(name: str) -> tuple[str, str, str]:
    """(venue, gate, kind) of a topic, or ProtocolError."""
    m = _TOPIC.fullmatch(name)
    if m is None or m.group(3) not in TYPES:
        raise ProtocolError("unknown topic")
    return m.group(1), m.group(2), m.group(3)


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): millisecond time then randomness; unique and time-ordered.

    Entry events carry one as their id, so a receiver drops a repeated delivery.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(secrets.token_bytes(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str, *, size: int | None = None,
          limit: int = MAX_PAYLOAD) -> bytes:
    """Decode base64 text strictly, with an optional exact size."""
    if not isinstance(text, str) or len(text) > limit * 4 // 3 + 4:
        raise ProtocolError(f"{what}: not base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError(f"{what}: not base64") from None
    if size is not None and len(raw) != size:
        raise ProtocolError(f"{what}: {len(raw)} bytes, expected {size}")
    return raw


def canonical(topic_name: str, envelope: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers."""
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return topic_name.encode("ascii") + b"\x00" + text.encode("ascii")


def sign(topic_name: str, *, mtype: str, seq: int, ts_ms: int, kid: str,
         body: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """A signed envelope of type ``mtype``, serialised."""
    env: dict[str, Any] = {"v": VERSION, "type": mtype, "seq": seq, "ts": ts_ms, "kid": kid,
                           "body": body}
    env["sig"] = b64(key.sign(canonical(topic_name, env)))
    return json.dumps(env, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class Envelope:
    """A verified message."""

    topic: str
    kind: str
    type: str
    seq: int
    ts: int
    kid: str
    body: dict[str, Any]


def _int(value: object, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(f"{what}: not an integer in range")
    return value


def open_envelope(topic_name: str, payload: bytes,
                  keys: Mapping[str, Ed25519PublicKey]) -> Envelope:
    """Parse and verify a payload received on ``topic_name`` against the pinned ``keys``."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    _, _, kind = parse_topic(topic_name)
    try:
        env = jsonsafe.loads(payload, parse_constant=_refuse_constant)
    except ValueError:  # not UTF-8, not JSON, or nested too deep to parse safely
        raise ProtocolError("payload is not JSON") from None
    if not isinstance(env, dict) or set(env) != {"v", "type", "seq", "ts", "kid", "body",
                                                 "sig"}:
        raise ProtocolError("not an envelope (wrong fields)")
    if env["v"] != VERSION:
        raise ProtocolError("unsupported protocol version")
    if env["type"] not in TYPES[kind]:
        raise ProtocolError(f"type not allowed on {kind}")
    kid = env["kid"]
    if not isinstance(kid, str) or not KID.fullmatch(kid):
        raise ProtocolError("bad key id")
    key = keys.get(kid)
    if key is None:
        raise ProtocolError("signed by an unknown key")
    if not isinstance(env["body"], dict):
        raise ProtocolError("body is not an object")
    seq = _int(env["seq"], "seq")
    ts = _int(env["ts"], "ts")
    sig = unb64(env["sig"], "sig", size=64)
    try:
        key.verify(sig, canonical(topic_name, env))
    except (InvalidSignature, ValueError):
        raise ProtocolError("bad signature") from None
    try:
        check_values(env["body"])
    except ProtocolError as exc:
        raise SignedInvalidError(kid, str(exc)) from None
    return Envelope(topic_name, kind, env["type"], seq, ts, kid, env["body"])


def check_values(value: object, depth: int = 0) -> None:
    """Every value in a body is one a receiver can hold and store: strings of valid
    UTF-8 (no lone surrogates), integers in ±(2⁶³−1), no floats, nesting at most
    :data:`MAX_DEPTH` deep. The schemas of :mod:`sync.schemas` check the fields after."""
    if depth > MAX_DEPTH:
        raise ProtocolError("body: nested too deep")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("body: a string is not valid UTF-8") from None
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise ProtocolError("body: an integer is out of range")
    elif isinstance(value, list):
        for item in value:
            check_values(item, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_values(k, depth + 1)
            check_values(v, depth + 1)
    else:
        raise ProtocolError("body: numbers must be integers")


def _refuse_constant(name: str) -> None:
    raise ValueError(name)  # NaN / Infinity are not JSON and never signed


def public_key(raw_b64: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes."""
    return Ed25519PublicKey.from_public_bytes(unb64(raw_b64, "public key", size=32))
