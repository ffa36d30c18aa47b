"""Array helpers of the cache: tombstone arrays, first snapshots, revocations that win.

Kept apart from :mod:`gate.match.cache` so that the cache reads as its rules, not as
numpy bookkeeping.
"""

from __future__ import annotations

import numpy as np

from gate.match.changes import REVOKE, UPSERT, Change
from gate.types import Array
from sync.templates import RECORD, TOMBSTONE


def tomb_array(tombs: dict[str, tuple[int, int]]) -> Array:
    """Tombstones (id -> (seq, valid_until)) in the ``TOMBSTONE`` layout."""
    out = np.zeros(len(tombs), TOMBSTONE)
    if tombs:
        out["id"] = [i.encode() for i in tombs]
        out["seq"] = [s for s, _ in tombs.values()]
        out["valid_until"] = [v for _, v in tombs.values()]
    return out


def first_state(change: Change, dim: int) -> tuple[Array, Array, Array]:
    """(records, vectors, tombstones) of an empty cache after ``change``: the first
    snapshot, written when there is none to append to yet."""
    records, tombs = np.zeros(0, RECORD), np.zeros(0, TOMBSTONE)
    vectors = np.zeros((0, dim), np.float32)
    if change.kind == UPSERT:
        records, vectors = change.records, change.vectors
    elif change.kind == REVOKE:
        tombs = change.records
    return records, vectors, tombs


def without_revoked(records: Array, vectors: Array, tombstones: Array,
                    ours: dict[str, tuple[int, int]]) -> tuple[Array, Array, Array]:
    """A snapshot with the revocations this gate knows and the snapshot does not.

    A tombstone of ours at least as new as the snapshot's record of that attendee removes
    the record (a snapshot built before the revocation reached central's stream must not
    bring the attendee back); one newer than the snapshot's own tombstone, or for an
    attendee it does not mention, is added. An attendee re-enrolled after our tombstone
    (record seq higher) stays. A snapshot holding both a record and a tombstone at least
    as new for one attendee loses the record too. ``vectors`` is returned as is when
    nothing is removed.
    """
    tomb_seq = {bytes(i).decode(): int(s) for i, s in
                zip(tombstones["id"], tombstones["seq"], strict=True)}
    if not ours and not tomb_seq:
        return records, vectors, tombstones
    rec_ids = [bytes(i).decode() for i in records["id"]]
    rec_seq = {a: int(s) for a, s in zip(rec_ids, records["seq"], strict=True)}
    drop = np.array([max(ours.get(a, (-1, 0))[0], tomb_seq.get(a, -1)) >= rec_seq[a]
                     for a in rec_ids], bool)
    extra = {a: v for a, v in ours.items()
             if v[0] > tomb_seq.get(a, -1) and v[0] >= rec_seq.get(a, -1)}
    if extra:
        keep = np.array([bytes(i).decode() not in extra for i in tombstones["id"]], bool)
        tombstones = np.concatenate([tombstones[keep], tomb_array(extra)])
    if drop.any():
        rows = np.repeat(~drop, records["count"].astype(np.int64))
        records, vectors = records[~drop], np.ascontiguousarray(vectors[rows])
    return records, vectors, tombstones
