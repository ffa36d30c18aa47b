"""The encrypted template cache file: format, sealing and opening.

Layout (all integers little-endian), format 3::

    header   "FPGC" | format u16 | flags u16 | cache_version u64 | created_at i64
             | chunk_size u32 | chunks u32 | length u64 | nonce_prefix 8 bytes
             | journal_id 16 bytes | prev_journal_id 16 bytes
             | seq_templates i64 | seq_revocations i64
             | venue, event, gate id, template model id: each u16 length + UTF-8
    head     2 journal head slots (:mod:`gate.match.head`), rewritten in place
    body     chunks × (ciphertext ‖ 16-byte tag)

The header commits to the journal that follows this snapshot: ``journal_id`` is random,
the journal's header carries it and every journal record is authenticated with it, and
flag ``JOURNAL`` says the journal exists (a snapshot is always written with its empty
journal, so a missing or foreign journal is damage, not a state). ``prev_journal_id``
names the journal this snapshot replaced: a power cut between writing the snapshot and
resetting the journal leaves that one in place, and only that one is then accepted (and
only if nothing was appended since). ``seq_*`` are the last central sequence numbers of
the two streams the snapshot reflects (-1: none), so a rolled-back cache can be caught by
comparing them with central's. Files of earlier formats (1: no journal binding, 2: no
model id) are refused: the gate re-syncs from central. A cache of another template model
than the configured embedder's is refused the same way (its templates live in a space
the running model does not produce).

The plaintext is cut into chunks sealed one by one with AES-256-GCM (a STREAM-style
construction): chunk *i* uses nonce ``nonce_prefix ‖ i`` and associated data
``SHA-256(header) ‖ i ‖ last?``, so the header (venue, event, gate, version) is bound to
every chunk, chunks cannot be reordered, dropped or cut short, and a file can be opened
with bounded memory. Decryption writes into one buffer that is zeroed after parsing.

Plaintext (the protected templates; never raw embeddings), in the record layouts of
:mod:`sync.templates` (``RECORD``, ``TOMBSTONE``)::

    "TPL1" | records u32 | tombstones u32 | dim u16 | pad u16
    records     records × {id: 64 bytes, seq u64, valid_until i64, count u8}
    vectors     Σcount × dim float32
    tombstones  tombstones × {id: 64 bytes, seq u64, valid_until i64}
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gate.errors import CacheError
from gate.match import head
from gate.match.atomic import atomic_write
from gate.match.files import open_regular
from gate.types import Array
from sync.templates import MAX_TEMPLATES, RECORD, TOMBSTONE

MAGIC = b"FPGC"
FORMAT = 3
#: Flag: a journal exists for this snapshot (always set by :func:`seal`).
JOURNAL = 1
CHUNK = 1 << 20
TAG = 16
_FIXED = struct.Struct("<4sHHQqIIQ8s16s16sqq")
_PLAIN = struct.Struct("<4sIIHH")
#: Refuse to open anything claiming to be bigger (a corrupt length must not allocate GBs).
MAX_PLAINTEXT = 1 << 31
#: The largest cache file that is opened at all.
MAX_FILE = MAX_PLAINTEXT + (MAX_PLAINTEXT // CHUNK + 1) * TAG + (1 << 20)
NO_JOURNAL = bytes(16)
#: Length-prefixed strings after the fixed header: venue, event, gate, template model.
HEADER_FIELDS = 4


@dataclass(frozen=True)
class Binding:
    """Who a cache belongs to, and which template model it holds: checked on every open."""

    venue: str
    event: str
    gate: str
    model: str = "mobilefacenet"

    def encode(self) -> bytes:
        """Venue, event and gate as length-prefixed UTF-8 (the data key's associated data;
        the model is not part of it, so a model change keeps the key)."""
        return b"".join(_field(f) for f in (self.venue, self.event, self.gate))


@dataclass
class Contents:
    """Decrypted cache contents; ``vectors`` is a view of the decrypted buffer.

    Call ``wipe()`` once the templates are copied where they belong: it zeroes the whole
    decrypted buffer.
    """

    version: int
    created_at: int
    records: Array
    vectors: Array
    tombstones: Array
    _plain: bytearray
    meta: Meta

    def wipe(self) -> None:
        """Zero the decrypted buffer (and with it ``vectors``)."""
        np.frombuffer(self._plain, np.uint8).fill(0)


@dataclass(frozen=True)
class Meta:
    """What the journal and its head need of a snapshot."""

    journal_id: bytes
    prev_journal: bytes
    seqs: tuple[int, int]  # templates, revocations (-1: none)
    digest: bytes  # SHA-256 of the header: the head slots are bound to it
    head_offset: int
    head_raw: bytes  # both slots as read
    identity: tuple[int, int]  # (st_dev, st_ino): the head is written into this file


def _field(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<H", len(raw)) + raw


def seal(path: Path, dek: bytes, binding: Binding, *, version: int, records: Array,
         vectors: Array, tombstones: Array, dim: int, journal_id: bytes,
         prev_journal: bytes, seqs: tuple[int, int]) -> Meta:
    """Write a cache file atomically (OSError and the old file untouched on failure).

    The plaintext is never assembled in one piece: each 1 MiB chunk is filled from the
    arrays in turn, encrypted and written, so sealing 100k templates needs one chunk of
    extra memory, not a second copy of the templates.
    """
    start = bytearray(_PLAIN.size)
    _PLAIN.pack_into(start, 0, b"TPL1", records.size, tombstones.size, dim, 0)
    pieces = [np.frombuffer(start, np.uint8)] + [
        np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        for a in (records, np.ascontiguousarray(vectors, "<f4"), tombstones)]
    length = sum(p.size for p in pieces)
    chunks = max(1, -(-length // CHUNK))
    prefix = secrets.token_bytes(8)
    header = _FIXED.pack(MAGIC, FORMAT, JOURNAL, version, int(time.time()), CHUNK, chunks,
                         length, prefix, journal_id, prev_journal, *seqs) + binding.encode() \
        + _field(binding.model)
    digest = hashlib.sha256(header).digest()
    slots = head.initial(head.head_key(dek), digest)
    aead = AESGCM(dek)
    plain = bytearray(CHUNK)
    plain_np = np.frombuffer(plain, np.uint8)

    def body() -> Iterator[bytes | memoryview]:
        yield header
        yield slots
        out = bytearray(CHUNK + TAG)
        piece, offset = 0, 0
        for i in range(chunks):
            size = min(CHUNK, length - i * CHUNK)
            filled = 0
            while filled < size:  # fill this chunk from the arrays in order
                take = min(size - filled, pieces[piece].size - offset)
                plain_np[filled:filled + take] = pieces[piece][offset:offset + take]
                filled, offset = filled + take, offset + take
                if offset == pieces[piece].size:
                    piece, offset = piece + 1, 0
            sealed = memoryview(out)[:size + TAG]
            aead.encrypt_into(prefix + struct.pack(">I", i), memoryview(plain)[:size],
                              _aad(digest, i, i == chunks - 1), sealed)
            yield sealed

    try:
        atomic_write(path, body())
    finally:
        plain_np.fill(0)
    st = os.lstat(path)
    return Meta(journal_id, prev_journal, seqs, digest, len(header), slots,
                (st.st_dev, st.st_ino))


def _aad(digest: bytes, index: int, last: bool) -> bytes:
    return digest + struct.pack("<I?", index, last)


@dataclass(frozen=True)
class _Header:
    version: int
    created: int
    flags: int
    chunk: int
    chunks: int
    length: int
    prefix: bytes
    journal_id: bytes
    prev_journal: bytes
    seqs: tuple[int, int]
    raw: bytes
    binding: Binding


def _read_header(f: BinaryIO, path: Path) -> _Header:
    read = f.read
    start = read(6)
    if len(start) < 6:
        raise CacheError(f"{path.name}: truncated header")
    magic, fmt = struct.unpack("<4sH", start)
    if magic != MAGIC:
        raise CacheError(f"{path.name}: not a template cache")
    if fmt < FORMAT:
        raise CacheError(f"{path.name}: format {fmt} of an older firmware; re-sync needed")
    if fmt != FORMAT:
        raise CacheError(f"{path.name}: cache format {fmt} is not supported (expected {FORMAT})")
    rest = read(_FIXED.size - 6)
    if len(rest) < _FIXED.size - 6:
        raise CacheError(f"{path.name}: truncated header")
    fixed = start + rest
    (_, _, flags, version, created, chunk, chunks, length, prefix, journal_id, prev,
     seq_t, seq_r) = _FIXED.unpack(fixed)
    fields = []
    raw = fixed
    for _ in range(HEADER_FIELDS):
        size_raw = read(2)
        if len(size_raw) < 2:
            raise CacheError(f"{path.name}: truncated header")
        (size,) = struct.unpack("<H", size_raw)
        value = read(size)
        if len(value) < size:
            raise CacheError(f"{path.name}: truncated header")
        raw += size_raw + value
        try:
            fields.append(value.decode())
        except UnicodeDecodeError:
            raise CacheError(f"{path.name}: corrupt header") from None
    if not 0 < chunk <= 64 * CHUNK or length > MAX_PLAINTEXT or \
            chunks != max(1, -(-length // chunk)) or flags != JOURNAL or \
            min(seq_t, seq_r) < -1:
        raise CacheError(f"{path.name}: corrupt header")
    return _Header(version, created, flags, chunk, chunks, length, prefix, journal_id, prev,
                   (seq_t, seq_r), raw, Binding(*fields))


def open_cache(path: Path, dek: bytes, binding: Binding) -> Contents:
    """Decrypt and parse a cache file; any inconsistency raises CacheError.

    The file must be a regular file (not a link, directory or FIFO) whose size is exactly
    what its header says, checked before anything is allocated or decrypted.
    """
    try:
        fd = open_regular(path, MAX_FILE)
    except FileNotFoundError:
        raise CacheError(f"{path.name}: no cache file") from None
    try:
        with os.fdopen(fd, "rb") as f:
            return _open(f, path, dek, binding)
    except OSError as exc:
        raise CacheError(f"{path.name}: read error ({exc.strerror})") from None


def _open(f: BinaryIO, path: Path, dek: bytes, binding: Binding) -> Contents:
    h = _read_header(f, path)
    chunk, chunks, length, prefix = h.chunk, h.chunks, h.length, h.prefix
    if h.binding.model != binding.model and h.binding.encode() == binding.encode():
        shown = h.binding.model.encode("ascii", "replace").decode()[:16]
        raise CacheError(f"{path.name}: holds {shown!r} templates, the configured embedder "
                         f"makes {binding.model!r} ones; re-sync needed")
    if h.binding != binding:
        b = h.binding
        shown = "/".join((b.venue, b.event, b.gate)).encode("ascii", "replace").decode()
        raise CacheError(f"{path.name}: belongs to venue/event/gate "
                         f"{shown.replace(chr(10), '?')[:200]}")
    st = os.fstat(f.fileno())
    expected = len(h.raw) + head.SIZE + length + chunks * TAG
    if st.st_size < expected:
        raise CacheError(f"{path.name}: truncated")
    if st.st_size > expected:
        raise CacheError(f"{path.name}: trailing data")
    slots = f.read(head.SIZE)
    digest = hashlib.sha256(h.raw).digest()
    meta = Meta(h.journal_id, h.prev_journal, h.seqs, digest, len(h.raw), slots,
                (st.st_dev, st.st_ino))
    aead = AESGCM(dek)
    plain = bytearray(length)
    view = memoryview(plain)
    try:
        for i in range(chunks):
            size = min(chunk, length - i * chunk)
            sealed = f.read(size + TAG)
            if len(sealed) < size + TAG:
                raise CacheError(f"{path.name}: truncated")
            try:
                aead.decrypt_into(prefix + struct.pack(">I", i), sealed,
                                  _aad(digest, i, i == chunks - 1),
                                  view[i * chunk:i * chunk + size])
            except InvalidTag:
                raise CacheError(f"{path.name}: authentication failed (tampered, "
                                 "corrupt or another key)") from None
        if f.read(1):
            raise CacheError(f"{path.name}: trailing data")
        contents = _parse(plain, h.version, h.created, path, meta)
    except BaseException:
        np.frombuffer(plain, np.uint8).fill(0)
        raise
    return contents


def _parse(plain: bytearray, version: int, created: int, path: Path, meta: Meta) -> Contents:
    if len(plain) < _PLAIN.size:
        raise CacheError(f"{path.name}: empty contents")
    magic, n_rec, n_tomb, dim, _ = _PLAIN.unpack_from(plain, 0)
    if magic != b"TPL1":
        raise CacheError(f"{path.name}: unknown contents")
    at = _PLAIN.size
    if at + n_rec * RECORD.itemsize > len(plain):
        raise CacheError(f"{path.name}: contents do not add up")
    records = np.frombuffer(plain, RECORD, n_rec, at).copy()
    at += records.nbytes
    rows = int(records["count"].sum(dtype=np.int64))
    expected = at + rows * dim * 4 + n_tomb * TOMBSTONE.itemsize
    if expected != len(plain) or (records.size and (records["count"].min() < 1 or
                                                    records["count"].max() > MAX_TEMPLATES)):
        raise CacheError(f"{path.name}: contents do not add up")
    vectors = np.frombuffer(plain, "<f4", rows * dim, at).reshape(rows, dim)
    at += rows * dim * 4
    tombstones = np.frombuffer(plain, TOMBSTONE, n_tomb, at).copy()
    return Contents(version, created, records, vectors, tombstones, plain, meta)
