"""Encoding of one change (upsert, revoke, drop, sequence note) as a journal entry.

An entry is ``kind (1 byte) | cache version u64 | count u32 | count2 u32 | seq_templates
i64 | seq_revocations i64`` followed by arrays in the record layouts of
:mod:`sync.templates`, so replaying the journal gives exactly the state the change
produced, without re-validating against today's clock. The two sequence numbers are the
last central message of each stream applied once this change is (-1: none): a restored
copy of the cache says how far behind central it is.

Every change takes the next cache version, except a sequence note (``SEQ``: a central
message that changed nothing), which keeps the current one: the version counts changes to
who may enter, and receipts carry it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from gate.errors import CacheError, TemplateError
from gate.types import Array
from sync.templates import MAX_SEQ, MAX_TEMPLATES, RECORD, TOMBSTONE

UPSERT, REVOKE, DROP, SEQ = b"U", b"R", b"D", b"S"
_HEAD = struct.Struct("<cQIIqq")
ID = np.dtype("S64")
#: The streams whose central sequence numbers the cache records, in entry order.
STREAMS = ("templates", "revocations")


@dataclass
class Change:
    """One change; arrays are copies (``vectors`` is wiped by the caller)."""

    kind: bytes
    version: int
    records: Array  # RECORD rows (upsert), TOMBSTONE rows (revoke) or ids (drop)
    vectors: Array  # upsert only
    extra: Array  # drop only: tombstone ids that expired
    seqs: tuple[int, int]  # stream seqs once applied
    #: The central message that caused it (kept in RAM only, while it waits to be written).
    source: tuple[str, int] | None = None

    @property
    def nbytes(self) -> int:
        """RAM it holds (for the bound on changes waiting)."""
        return int(self.records.nbytes + self.vectors.nbytes + self.extra.nbytes)

    def wipe(self) -> None:
        """Zero the templates it carries."""
        self.vectors.fill(0)


def encode(change: Change) -> bytearray:
    """One entry's plaintext (zero it after appending)."""
    parts = [change.records, change.vectors, change.extra] if change.kind == DROP else \
        [change.records, change.vectors]
    second = change.extra.size if change.kind == DROP else 0
    out = bytearray(_HEAD.size + sum(a.nbytes for a in parts))
    _HEAD.pack_into(out, 0, change.kind, change.version, change.records.size, second,
                    *change.seqs)
    as_bytes = np.frombuffer(out, np.uint8)
    at = _HEAD.size
    for a in parts:
        as_bytes[at:at + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        at += a.nbytes
    return out


def decode(entry: bytearray, dim: int) -> Change:
    """Parse one entry; a malformed one raises CacheError."""
    try:
        kind, version, n, m, seq_t, seq_r = _HEAD.unpack_from(entry, 0)
        at = _HEAD.size
        empty = np.zeros((0, dim), np.float32)
        no_ids = np.zeros(0, ID)
        seqs = (seq_t, seq_r)
        if min(seqs) < -1:
            raise ValueError("seq")
        if kind == UPSERT:
            records = np.frombuffer(entry, RECORD, n, at).copy()
            counts = records["count"]
            if counts.size and (counts.min() < 1 or counts.max() > MAX_TEMPLATES):
                raise ValueError("count")
            rows = int(counts.sum(dtype=np.int64))
            _exact(entry, at + records.nbytes + rows * dim * 4)
            vectors = np.frombuffer(entry, "<f4", rows * dim, at + records.nbytes)
            return Change(kind, version, records, vectors.reshape(rows, dim).copy(), no_ids,
                          seqs)
        if kind == REVOKE:
            _exact(entry, at + n * TOMBSTONE.itemsize)
            return Change(kind, version, np.frombuffer(entry, TOMBSTONE, n, at).copy(), empty,
                          no_ids, seqs)
        if kind == DROP:
            _exact(entry, at + (n + m) * ID.itemsize)
            ids = np.frombuffer(entry, ID, n, at).copy()
            return Change(kind, version, ids, empty,
                          np.frombuffer(entry, ID, m, at + ids.nbytes).copy(), seqs)
        if kind == SEQ:
            _exact(entry, at)
            return Change(kind, version, no_ids, empty, no_ids, seqs)
    except (ValueError, struct.error):
        pass
    raise CacheError("journal: malformed entry")


def next_version(kind: bytes, version: int) -> int:
    """The version a change of ``kind`` made at ``version`` carries."""
    return version if kind == SEQ else version + 1


def _exact(entry: bytearray, size: int) -> None:
    if len(entry) != size:
        raise ValueError("size")


def stream_index(stream: str) -> int:
    """Position of ``stream`` in :data:`STREAMS` (TemplateError for any other name)."""
    try:
        return STREAMS.index(stream)
    except ValueError:
        raise TemplateError(f"unknown stream {stream!r} (known: {', '.join(STREAMS)})") \
            from None


def check_source(source: tuple[str, int] | None) -> None:
    """The central message behind a change: (stream, seq 0..MAX_SEQ), or None."""
    if source is None:
        return
    stream, seq = source
    stream_index(stream)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise TemplateError(f"seq must be an integer 0..{MAX_SEQ}")


def seq_pair(seqs: dict[str, int] | None) -> tuple[int, int]:
    """A snapshot's stream seqs in :data:`STREAMS` order; -1 (or leaving a stream out)
    means none yet."""
    seqs = seqs or {}
    for stream, seq in seqs.items():
        stream_index(stream)
        if seq != -1:
            check_source((stream, seq))
    return seqs.get(STREAMS[0], -1), seqs.get(STREAMS[1], -1)
