"""The journal's head: how many journal records are committed, kept in the snapshot file.

The journal (:mod:`gate.match.journal`) is append-only and chained, so nothing can be
dropped from its middle or reordered. Its *end*, though, cannot vouch for itself: a file
cut at a record boundary, or an older copy of it, is a valid chain that is merely short,
and the records lost could be revocations. So every append is committed in a second
place: after the record is on stable storage, its count and tag are written, in place,
into one of two *head slots* stored between the snapshot's header and its body::

    slot  count u64 | tag of record count-1 (16 bytes, zeros for 0) | MAC (16 bytes)

The MAC is HMAC-SHA256 (truncated) under a key derived from the data key, over the
snapshot header's digest, the slot's position, the count and the tag: a slot cannot be
forged, nor moved to another snapshot. Count *n* goes to slot ``n % 2``, so a power cut
while a slot is written (torn write) leaves the other one, holding ``n - 1``, intact. A
fresh snapshot starts with both slots at 0.

:func:`reconcile` accepts exactly the states a crash can leave (see there) and refuses
the rest: a journal shorter than its head (truncated, records dropped, an older copy), a
head older than the journal by more than the one record in flight (an older copy of the
snapshot file), slots that do not pair up.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from gate.errors import CacheError
from gate.match.atomic import write_all
from gate.match.files import open_regular

SLOT = struct.Struct("<Q16s16s")
#: Both slots, as stored after the snapshot header.
SIZE = 2 * SLOT.size
NO_TAG = bytes(16)


def head_key(dek: bytes) -> bytes:
    """The MAC key of the head slots (separate from the data key's AES-GCM use)."""
    return hmac.new(dek, b"facepass journal head key v2", hashlib.sha256).digest()


def _mac(key: bytes, digest: bytes, position: int, count: int, tag: bytes) -> bytes:
    msg = b"FPGH" + digest + struct.pack("<BQ", position, count) + tag
    return hmac.new(key, msg, hashlib.sha256).digest()[:16]


def slot(key: bytes, digest: bytes, count: int, tag: bytes) -> bytes:
    """The bytes of the slot holding ``count`` (it goes at position ``count % 2``)."""
    return SLOT.pack(count, tag, _mac(key, digest, count % 2, count, tag))


def initial(key: bytes, digest: bytes) -> bytes:
    """Both slots of a fresh snapshot: 0 committed records."""
    return b"".join(SLOT.pack(0, NO_TAG, _mac(key, digest, p, 0, NO_TAG)) for p in (0, 1))


def _parse(key: bytes, digest: bytes, raw: bytes, position: int) -> tuple[int, bytes] | None:
    count, tag, mac = SLOT.unpack_from(raw, position * SLOT.size)
    if not hmac.compare_digest(mac, _mac(key, digest, position, count, tag)):
        return None
    return count, tag


@dataclass(frozen=True)
class Verdict:
    """How many journal records the cache takes, and what must be written to catch up."""

    count: int
    #: The head lags the journal by the one record in flight at a crash: write its slot.
    catch_up: bool
    #: Human-readable crash repairs, for the log.
    notes: tuple[str, ...] = ()


def reconcile(key: bytes, digest: bytes, raw: bytes, *, tags: list[bytes], tail: str
              ) -> Verdict:
    """Check the head slots ``raw`` against the journal's verified records.

    ``tags``: the tags of the records that verified, in order; ``tail``: what follows
    them: ``""`` (nothing), ``"torn"`` (a strict prefix of a record, or zeros: an append
    cut by a power cut) or ``"garbage"`` (anything else). Accepted, with H the head:

    * H records and nothing or a torn tail: the tail was never acknowledged;
    * H + 1 records and nothing after: a crash between the journal's fsync and the slot
      write (or during it, tearing the slot): the record is durable and is taken.

    Everything else raises CacheError.
    """
    found = [_parse(key, digest, raw, p) for p in (0, 1)]
    a, b = found
    torn_slot = False
    if a is not None and b is not None:
        if not ((a[0] == b[0] == 0) or (a[0] % 2 == 0 and b[0] % 2 == 1
                                         and abs(a[0] - b[0]) == 1)):
            raise CacheError("journal head: slots do not pair up (tampered)")
        head, tag = max(a, b)
    elif a is not None or b is not None:
        # Only the slot being written can be torn: the one after the valid one's.
        position, (head, tag) = (0, a) if a is not None else (1, b)  # type: ignore[misc]
        if head % 2 != position:
            raise CacheError("journal head: a slot is damaged (tampered)")
        torn_slot = True
    else:
        raise CacheError("journal head: both slots fail authentication (tampered or "
                         "another key)")
    count = len(tags)
    if count < head:
        raise CacheError(f"journal: {head - count} of {head} committed records missing or "
                         "damaged (truncated, tampered or an older copy)")
    if head and tags[head - 1] != tag:
        raise CacheError("journal: does not match its head (tampered)")
    if count == head and not torn_slot:
        if tail == "garbage":
            raise CacheError("journal: damaged data after the last record")
        return Verdict(head, False, ("torn last record ignored",) if tail else ())
    if count == head + 1 and not tail:
        return Verdict(count, True, ("last record committed after a crash",))
    if count > head + 1:
        raise CacheError("journal: more records than the snapshot's head (an older copy of "
                         "templates.cache?)")
    raise CacheError("journal: does not match its head (damaged or tampered)")


def fresh(key: bytes, digest: bytes, raw: bytes) -> bool:
    """True when both slots are authentic and say 0: nothing was ever appended."""
    return _parse(key, digest, raw, 0) == (0, NO_TAG) == _parse(key, digest, raw, 1)


class Head:
    """Writes the slots of one snapshot file, in place."""

    def __init__(self, path: Path, key: bytes, digest: bytes, *, offset: int,
                 identity: tuple[int, int], count: int) -> None:
        self.path = path
        self._key = key
        self._digest = digest
        self._offset = offset
        self._identity = identity
        #: Records committed (what the newest slot says).
        self.count = count

    def write(self, count: int, tag: bytes) -> None:
        """Commit ``count`` records (OSError when the write fails; the other slot, which
        says ``count - 1``, is untouched). CacheError if the file was swapped under us."""
        fd = open_regular(self.path, 1 << 62, write=True)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self._identity:
                raise CacheError(f"{self.path.name}: replaced while the gate was using it")
            write_all(fd, slot(self._key, self._digest, count, tag),
                      self._offset + (count % 2) * SLOT.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count = count
