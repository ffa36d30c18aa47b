"""Fault injection for the cache's files: power cuts in the middle of a write, I/O errors,
short writes, and the file layouts the tests need to aim damage precisely.

A *power cut* is simulated in-process: the write in flight puts only some of its bytes on
disk and a :class:`PowerCut` (a BaseException, so no ``except OSError`` catches it)
unwinds the whole call, as if the process had died there. The test then opens the
directory with a fresh cache, exactly as the gate would after rebooting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gate.match import cachefile, head, journal
from gate.match.erase import CACHE_FILE, JOURNAL_FILE


class PowerCut(BaseException):
    """The process died here."""


def cut_power_in_journal_write(monkeypatch: pytest.MonkeyPatch, keep: int) -> None:
    """The next journal record write puts only its first ``keep`` bytes on disk, then the
    power goes (the head slot is never written)."""
    def partial(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None
                ) -> None:
        assert offset is not None
        os.pwrite(fd, bytes(data[:keep]), offset)
        os.fsync(fd)
        raise PowerCut
    monkeypatch.setattr(journal, "write_all", partial)


def cut_power_before_head_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next journal record is written and synced, then the power goes before its head
    slot is written."""
    def never(*_a: object, **_k: object) -> None:
        raise PowerCut
    monkeypatch.setattr(head.Head, "write", never)


@contextlib.contextmanager
def failing_writes(monkeypatch: pytest.MonkeyPatch, err: int = errno.EIO, *,
                   short: bool = False) -> Iterator[None]:
    """Every checked write fails with ``err`` (or writes half and reports it: a short
    write) while inside the block."""
    from gate.match import atomic  # noqa: PLC0415 - patched module, imported where used

    real = atomic.write_all

    def broken(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None
               ) -> None:
        if short:
            half = bytes(data[:max(1, len(data) // 2)])
            done = os.write(fd, half) if offset is None else os.pwrite(fd, half, offset)
            raise OSError(errno.ENOSPC, f"short write ({done} of {len(data)} bytes)")
        raise OSError(err, os.strerror(err))

    with monkeypatch.context() as m:
        for module in (atomic, journal, head):
            m.setattr(module, "write_all", broken)
        yield
    assert atomic.write_all is real


def header_end(path: Path) -> int:
    """Offset of the head slots in a snapshot file (the end of its header)."""
    data = path.read_bytes()
    at = cachefile._FIXED.size
    for _ in range(cachefile.HEADER_FIELDS):
        (size,) = struct.unpack_from("<H", data, at)
        at += 2 + size
    return at


def head_region(path: Path) -> tuple[int, int]:
    """[start, end) of the two head slots in a snapshot file."""
    start = header_end(path)
    return start, start + head.SIZE


def without_head(path: Path) -> bytes:
    """A snapshot file's bytes with its head slots (rewritten in place) blanked."""
    data = bytearray(path.read_bytes())
    a, b = head_region(path)
    data[a:b] = bytes(b - a)
    return bytes(data)


def journal_records(state: Path) -> list[tuple[int, int]]:
    """[start, end) of each record in the journal."""
    data = (state / JOURNAL_FILE).read_bytes()
    at, spans = journal.HEADER.size, []
    while at + 16 <= len(data):
        (length,) = struct.unpack_from("<I", data, at)
        spans.append((at, at + 16 + length))
        at += 16 + length
    return spans


def files(state: Path) -> dict[str, tuple[object, ...]]:
    """Every entry's kind, bytes (size and inode instead, beyond 64 MiB) and mtime (ns),
    to prove nothing was written, added or removed."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(state.iterdir()):
        st = p.lstat()
        if p.is_file() and not p.is_symlink():
            data: object = p.read_bytes() if st.st_size <= 64 << 20 else \
                (st.st_size, st.st_ino)
            out[p.name] = ("file", data, st.st_mtime_ns)
        else:
            out[p.name] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns)
    return out


def cache_path(state: Path) -> Path:
    return state / CACHE_FILE


Mutator = Callable[[Path], None]
