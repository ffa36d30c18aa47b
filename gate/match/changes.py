"""Encoding of one change (upsert, revoke, drop) as a journal entry.

An entry is ``kind (1 byte) | cache version u64 | count u32 | count2 u32`` followed by
arrays in the record layouts of :mod:`sync.templates`, so replaying the journal gives
exactly the state the change produced, without re-validating against today's clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from gate.errors import CacheError
from gate.types import Array
from sync.templates import RECORD, TOMBSTONE

UPSERT, REVOKE, DROP = b"U", b"R", b"D"
_HEAD = struct.Struct("<cQII")
ID = np.dtype("S64")


@dataclass
class Change:
    """A decoded entry; arrays are copies (``vectors`` is wiped by the caller)."""

    kind: bytes
    version: int
    records: Array  # RECORD rows (upsert), TOMBSTONE rows (revoke) or ids (drop)
    vectors: Array  # upsert only
    extra: Array  # drop only: tombstone ids that expired


def encode(kind: bytes, version: int, first: Array, vectors: Array | None = None,
           extra: Array | None = None) -> bytearray:
    """One entry's plaintext (zero it after appending)."""
    parts = [first, *(a for a in (vectors, extra) if a is not None)]
    second = extra.size if extra is not None else 0
    out = bytearray(_HEAD.size + sum(a.nbytes for a in parts))
    _HEAD.pack_into(out, 0, kind, version, first.size, second)
    as_bytes = np.frombuffer(out, np.uint8)
    at = _HEAD.size
    for a in parts:
        as_bytes[at:at + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        at += a.nbytes
    return out


def decode(entry: bytearray, dim: int) -> Change:
    """Parse one entry; a malformed one raises CacheError."""
    try:
        kind, version, n, m = _HEAD.unpack_from(entry, 0)
        at = _HEAD.size
        empty = np.zeros((0, dim), np.float32)
        if kind == UPSERT:
            records = np.frombuffer(entry, RECORD, n, at).copy()
            rows = int(records["count"].sum(dtype=np.int64))
            vectors = np.frombuffer(entry, "<f4", rows * dim, at + records.nbytes)
            return Change(kind, version, records, vectors.reshape(rows, dim).copy(),
                          np.zeros(0, ID))
        if kind == REVOKE:
            return Change(kind, version, np.frombuffer(entry, TOMBSTONE, n, at).copy(), empty,
                          np.zeros(0, ID))
        if kind == DROP:
            ids = np.frombuffer(entry, ID, n, at).copy()
            return Change(kind, version, ids, empty,
                          np.frombuffer(entry, ID, m, at + ids.nbytes).copy())
    except (ValueError, struct.error):
        pass
    raise CacheError("journal: malformed entry")
