"""Append-only encrypted journal of changes since the last cache snapshot, as a chain.

Rewriting a 100k-template cache takes about half a second, so a single upsert or revoke
is appended here instead (one small AES-256-GCM record and an fsync) and the snapshot is
rewritten only now and then (compaction). Layout, format 2::

    header  "FPGJ" | format u16 | journal id (16 bytes, from the snapshot's header)
    record  length u32 | nonce (12) | ciphertext ‖ tag (length bytes)

Record *i*'s associated data is ``"FPGJ2" | journal id | i | tag of record i-1`` (zeros
for the first): the records form a chain bound to the one snapshot that names this
journal, so none can be altered, dropped from the middle, reordered, duplicated or moved
to another journal without the next one failing to verify. The chain cannot show that
records are missing at its *end*; the head slots in the snapshot file do
(:mod:`gate.match.head`), and :func:`scan` reports what it found for them to judge.

Appending writes the record at the last good length (cutting off a torn record a power
cut left there), fsyncs, and returns the tag for the head. A failed write (disk full, I/O
error, short write) cuts the file back to the last good length, so no partial record
stays in the middle, and raises OSError.
"""

from __future__ import annotations

import errno
import os
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gate.errors import CacheError
from gate.match.atomic import atomic_write, write_all
from gate.match.files import open_regular, read_regular

MAGIC = b"FPGJ"
FORMAT = 2
HEADER = struct.Struct("<4sH16s")
_RECORD = struct.Struct("<I12s")
TAG = 16
MAX_ENTRY = 64 << 20
#: The largest journal that is read (the cache compacts long before; appends that would
#: pass it fail like a full disk).
MAX_JOURNAL = 256 << 20
_NO_TAG = bytes(16)


def _aad(journal_id: bytes, index: int, prev_tag: bytes) -> bytes:
    return b"FPGJ2" + journal_id + struct.pack("<Q", index) + prev_tag


@dataclass
class Scan:
    """A journal as read: verified records, and what follows them."""

    journal_id: bytes
    entries: list[bytearray] = field(default_factory=list)  # plaintexts (wipe after use)
    tags: list[bytes] = field(default_factory=list)
    #: File offset after each verified record (after the header for none).
    ends: list[int] = field(default_factory=list)
    #: After the last verified record: "" nothing, "torn" a strict prefix of a record or
    #: zeros (an interrupted append), "garbage" anything else.
    tail: str = ""

    @property
    def good_size(self) -> int:
        """Bytes up to the end of the last verified record."""
        return self.ends[-1] if self.ends else HEADER.size

    def wipe(self) -> None:
        """Zero the decrypted records."""
        for entry in self.entries:
            entry[:] = bytes(len(entry))


def read_header(path: Path) -> bytes | None:
    """The journal id in ``path``'s header (None: no journal). CacheError if unusable."""
    try:
        data = read_regular(path, MAX_JOURNAL)[:HEADER.size]
    except FileNotFoundError:
        return None
    return _check_header(data, path)


def _check_header(data: bytes, path: Path) -> bytes:
    if len(data) < 6:
        raise CacheError(f"{path.name}: truncated header")
    magic, fmt = struct.unpack_from("<4sH", data, 0)
    if magic != MAGIC:
        raise CacheError(f"{path.name}: not a journal")
    if fmt < FORMAT:
        raise CacheError(f"{path.name}: format {fmt} of an older firmware; re-sync needed")
    if fmt != FORMAT or len(data) < HEADER.size:
        raise CacheError(f"{path.name}: not a journal of this format")
    journal_id: bytes = HEADER.unpack_from(data, 0)[2]
    return journal_id


def scan(path: Path, dek: bytes) -> Scan | None:
    """Read and verify the whole chain without changing the file (None: no journal)."""
    try:
        data = read_regular(path, MAX_JOURNAL)
    except FileNotFoundError:
        return None
    out = Scan(_check_header(data, path))
    aead = AESGCM(dek)
    at, prev = HEADER.size, _NO_TAG
    while at < len(data):
        if len(data) - at < _RECORD.size:
            out.tail = "torn"
            break
        length, nonce = _RECORD.unpack_from(data, at)
        end = at + _RECORD.size + length
        if not TAG <= length <= MAX_ENTRY:
            out.tail = "garbage"
            break
        if end > len(data):
            out.tail = "torn"
            break
        sealed = data[at + _RECORD.size:end]
        buf = bytearray(length - TAG)
        try:
            aead.decrypt_into(nonce, sealed, _aad(out.journal_id, len(out.entries), prev), buf)
        except InvalidTag:
            out.tail = "garbage"
            break
        prev = sealed[-TAG:]
        out.entries.append(buf)
        out.tags.append(prev)
        out.ends.append(end)
        at = end
    if out.tail and not any(data[at:]):
        out.tail = "torn"  # zeros: the size grew, the data never arrived
    return out


def create(path: Path, journal_id: bytes) -> None:
    """Write an empty journal for a new snapshot (atomic; OSError on failure)."""
    atomic_write(path, [HEADER.pack(MAGIC, FORMAT, journal_id)])


class Journal:
    """Appends to the journal that follows one snapshot."""

    def __init__(self, path: Path, dek: bytes, journal_id: bytes, *, count: int = 0,
                 good_size: int = HEADER.size, last_tag: bytes = _NO_TAG) -> None:
        self.path = Path(path)
        self._aead = AESGCM(dek)
        self.journal_id = journal_id
        self.count = count
        self.size = good_size
        self.last_tag = last_tag

    def append(self, plaintext: bytes | bytearray) -> bytes:
        """Seal and append one record; returns its tag once it is on stable storage.

        On any failure the file is cut back to its last good length and OSError raised.
        """
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, bytes(plaintext),
                                    _aad(self.journal_id, self.count, self.last_tag))
        record = _RECORD.pack(len(sealed), nonce) + sealed
        if self.size + len(record) > MAX_JOURNAL:
            raise OSError(errno.EFBIG, "journal at its size limit")
        try:
            fd = open_regular(self.path, MAX_JOURNAL, write=True)
        except FileNotFoundError:
            raise CacheError(f"{self.path.name}: removed while the gate was using it") from None
        try:
            try:
                if os.fstat(fd).st_size != self.size:
                    os.ftruncate(fd, self.size)  # a torn record from a crash, or our own
                write_all(fd, record, self.size)
                os.fsync(fd)
            except OSError:
                self._cut(fd)
                raise
        finally:
            os.close(fd)
        self.count += 1
        self.size += len(record)
        self.last_tag = sealed[-TAG:]
        return self.last_tag

    def _cut(self, fd: int) -> None:
        """Best effort: no partial record may stay (the head ignores one anyway)."""
        try:
            os.ftruncate(fd, self.size)
            os.fsync(fd)
        except OSError:
            pass

    def undo(self, size: int, count: int, last_tag: bytes) -> None:
        """Take back the last append (its head could not be written): cut the file."""
        self.size, self.count, self.last_tag = size, count, last_tag
        try:
            fd = open_regular(self.path, MAX_JOURNAL, write=True)
        except (OSError, CacheError):
            return
        try:
            self._cut(fd)
        finally:
            os.close(fd)
