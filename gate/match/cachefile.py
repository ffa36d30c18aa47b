"""The encrypted template cache file: format, sealing and opening.

Layout (all integers little-endian)::

    header   "FPGC" | format u16 | flags u16 | cache_version u64 | created_at i64
             | chunk_size u32 | chunks u32 | length u64 | nonce_prefix 8 bytes
             | venue, event, gate id: each u16 length + UTF-8
    body     chunks × (ciphertext ‖ 16-byte tag)

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
from gate.match.atomic import atomic_write
from gate.types import Array
from sync.templates import RECORD, TOMBSTONE

MAGIC = b"FPGC"
FORMAT = 1
CHUNK = 1 << 20
TAG = 16
_FIXED = struct.Struct("<4sHHQqIIQ8s")
_PLAIN = struct.Struct("<4sIIHH")
#: Refuse to open anything claiming to be bigger (a corrupt length must not allocate GBs).
MAX_PLAINTEXT = 1 << 31


@dataclass(frozen=True)
class Binding:
    """Who a cache belongs to: checked on every open."""

    venue: str
    event: str
    gate: str

    def encode(self) -> bytes:
        """Length-prefixed UTF-8 fields."""
        out = b""
        for field in (self.venue, self.event, self.gate):
            raw = field.encode()
            out += struct.pack("<H", len(raw)) + raw
        return out


@dataclass
class Contents:
    """Decrypted cache contents; ``vectors`` is a view of the decrypted buffer.

    Call ``wipe()`` once the templates are copied where they belong: it zeroes the whole
    decrypted buffer.
    """

    version: int
    created_at: int
    snapshot_id: bytes
    records: Array
    vectors: Array
    tombstones: Array
    _plain: bytearray

    def wipe(self) -> None:
        """Zero the decrypted buffer (and with it ``vectors``)."""
        np.frombuffer(self._plain, np.uint8).fill(0)


def snapshot_id(header: bytes) -> bytes:
    """Identity of a snapshot: its journal is bound to it."""
    return hashlib.sha256(header).digest()[:16]


def seal(path: Path, dek: bytes, binding: Binding, *, version: int, records: Array,
         vectors: Array, tombstones: Array, dim: int) -> bytes:
    """Write a cache file atomically; returns its snapshot id.

    The plaintext is never assembled in one piece: each 1 MiB chunk is filled from the
    arrays in turn, encrypted and written, so sealing 100k templates needs one chunk of
    extra memory, not a second copy of the templates.
    """
    head = bytearray(_PLAIN.size)
    _PLAIN.pack_into(head, 0, b"TPL1", records.size, tombstones.size, dim, 0)
    pieces = [np.frombuffer(head, np.uint8)] + [
        np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        for a in (records, np.ascontiguousarray(vectors, "<f4"), tombstones)]
    length = sum(p.size for p in pieces)
    chunks = max(1, -(-length // CHUNK))
    prefix = secrets.token_bytes(8)
    header = _FIXED.pack(MAGIC, FORMAT, 0, version, int(time.time()), CHUNK, chunks,
                         length, prefix) + binding.encode()
    digest = hashlib.sha256(header).digest()
    aead = AESGCM(dek)
    plain = bytearray(CHUNK)
    plain_np = np.frombuffer(plain, np.uint8)

    def body() -> Iterator[bytes | memoryview]:
        yield header
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
    return snapshot_id(header)


def _aad(digest: bytes, index: int, last: bool) -> bytes:
    return digest + struct.pack("<I?", index, last)


@dataclass(frozen=True)
class _Header:
    version: int
    created: int
    chunk: int
    chunks: int
    length: int
    prefix: bytes
    raw: bytes
    binding: Binding


def _read_header(f: BinaryIO, path: Path) -> _Header:
    read = f.read
    fixed = read(_FIXED.size)
    if len(fixed) < _FIXED.size:
        raise CacheError(f"{path.name}: truncated header")
    magic, fmt, _flags, version, created, chunk, chunks, length, prefix = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise CacheError(f"{path.name}: not a template cache")
    if fmt != FORMAT:
        raise CacheError(f"{path.name}: cache format {fmt} is not supported (expected {FORMAT})")
    fields = []
    raw = fixed
    for _ in range(3):
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
            chunks != max(1, -(-length // chunk)):
        raise CacheError(f"{path.name}: corrupt header")
    return _Header(version, created, chunk, chunks, length, prefix, raw, Binding(*fields))


def open_cache(path: Path, dek: bytes, binding: Binding) -> Contents:
    """Decrypt and parse a cache file; any inconsistency raises CacheError."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after chunked reads
    except FileNotFoundError:
        raise CacheError(f"{path.name}: no cache file") from None
    with f:
        h = _read_header(f, path)
        chunk, chunks, length, prefix = h.chunk, h.chunks, h.length, h.prefix
        if h.binding != binding:
            raise CacheError(f"{path.name}: belongs to venue/event/gate "
                             f"{h.binding.venue}/{h.binding.event}/{h.binding.gate}")
        digest = hashlib.sha256(h.raw).digest()
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
            contents = _parse(plain, h.version, h.created, path, snapshot_id(h.raw))
        except BaseException:
            np.frombuffer(plain, np.uint8).fill(0)
            raise
        return contents


def _parse(plain: bytearray, version: int, created: int, path: Path,
           snap: bytes) -> Contents:
    if len(plain) < _PLAIN.size:
        raise CacheError(f"{path.name}: empty contents")
    magic, n_rec, n_tomb, dim, _ = _PLAIN.unpack_from(plain, 0)
    if magic != b"TPL1":
        raise CacheError(f"{path.name}: unknown contents")
    at = _PLAIN.size
    records = np.frombuffer(plain, RECORD, n_rec, at).copy()
    at += records.nbytes
    rows = int(records["count"].sum(dtype=np.int64))
    expected = at + rows * dim * 4 + n_tomb * TOMBSTONE.itemsize
    if expected != len(plain):
        raise CacheError(f"{path.name}: contents do not add up")
    vectors = np.frombuffer(plain, "<f4", rows * dim, at).reshape(rows, dim)
    at += rows * dim * 4
    tombstones = np.frombuffer(plain, TOMBSTONE, n_tomb, at).copy()
    return Contents(version, created, snap, records, vectors, tombstones, plain)
