"""Append-only encrypted journal of changes since the last cache snapshot.

Rewriting a 100k-template cache takes about half a second, so a single upsert or revoke
is appended here instead (one small AES-256-GCM record and an fsync) and the snapshot is
rewritten only now and then (compaction). Layout::

    header  "FPGJ" | format u16 | snapshot id (16 bytes)
    entry   length u32 | index u32 | nonce (12) | ciphertext ‖ tag

Each entry's associated data binds it to the snapshot it follows and to its position, so
entries cannot be moved between journals, reordered or replayed into another snapshot.
Opening tolerates exactly one kind of damage: a last entry cut short by a power cut
(it was never acknowledged, because ``append`` returns only after fsync). Any other
inconsistency raises :class:`~gate.errors.CacheError`. A journal whose snapshot id is not
the current snapshot's is left over from a compaction that finished writing the new
snapshot: its entries are already in it, and it is discarded.
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gate.errors import CacheError
from gate.match.atomic import atomic_write, destroy

MAGIC = b"FPGJ"
FORMAT = 1
_HEADER = struct.Struct("<4sH16s")
_ENTRY = struct.Struct("<II12s")
MAX_ENTRY = 64 << 20


class Journal:
    """The journal file that follows one snapshot."""

    def __init__(self, path: Path, dek: bytes, snapshot_id: bytes) -> None:
        self.path = Path(path)
        self._aead = AESGCM(dek)
        self.snapshot_id = snapshot_id
        self.entries = 0
        self.size = _HEADER.size
        #: True when the file is missing or follows another snapshot: reset before use.
        self.needs_reset = True

    def _aad(self, index: int) -> bytes:
        return b"journal" + self.snapshot_id + struct.pack("<I", index)

    def reset(self) -> None:
        """Start an empty journal for the current snapshot (atomic)."""
        atomic_write(self.path, [_HEADER.pack(MAGIC, FORMAT, self.snapshot_id)])
        self.entries, self.size, self.needs_reset = 0, _HEADER.size, False

    def read(self) -> list[bytearray]:
        """Decrypted entries, in order (wipe them after use). Stale journals read empty."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if len(data) < _HEADER.size:
            raise CacheError("journal: truncated header")
        magic, fmt, snap = _HEADER.unpack_from(data, 0)
        if magic != MAGIC or fmt != FORMAT:
            raise CacheError("journal: not a journal of this format")
        if snap != self.snapshot_id:
            return []
        self.needs_reset = False
        out: list[bytearray] = []
        at = _HEADER.size
        while at < len(data):
            if at + _ENTRY.size > len(data):
                break  # torn last entry (power cut while appending)
            length, index, nonce = _ENTRY.unpack_from(data, at)
            if length > MAX_ENTRY or index != len(out):
                raise CacheError("journal: corrupt entry header")
            end = at + _ENTRY.size + length
            if end > len(data):
                break  # torn last entry
            buf = bytearray(length - 16)
            try:
                self._aead.decrypt_into(nonce, data[at + _ENTRY.size:end], self._aad(index),
                                        buf)
            except InvalidTag:
                raise CacheError("journal: authentication failed (tampered or another "
                                 "key)") from None
            out.append(buf)
            at = end
        self.entries, self.size = len(out), at
        if at < len(data):
            with open(self.path, "r+b") as f:  # drop the torn tail before appending
                f.truncate(at)
                os.fsync(f.fileno())
        return out

    def append(self, plaintext: bytes | bytearray) -> None:
        """Seal and append one entry; returns after it is on stable storage."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext, self._aad(self.entries))
        record = _ENTRY.pack(len(sealed), self.entries, nonce) + sealed
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, record)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries += 1
        self.size += len(record)

    def destroy(self) -> None:
        """Overwrite and remove the journal."""
        destroy(self.path)
