"""Crash-safe file replacement and destruction, with every write checked.

Standard library only (the installer runs :mod:`gate.match.erase`, which imports this,
with the system ``python3``); errors are plain :class:`OSError` and the cache turns them
into :class:`~gate.errors.StorageError`.

``atomic_write``: write a temporary file in the same directory, fsync it, rename it over
the target, fsync the directory. A power cut at any instant leaves either the old file or
the new one, never a mix: rename is atomic on POSIX filesystems and both fsyncs order the
data before the name. A write that fails (disk full, I/O error, or a *short* write, which
on a regular file means the disk filled up mid-way) removes the temporary and leaves the
target as it was.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename or unlink in it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> None:
    """Write ``data`` at the file position (or at ``offset``); a short write is an error.

    ``os.write`` may write less than asked when the filesystem fills up; that is reported
    as ``ENOSPC`` instead of being retried into a half-written record.
    """
    size = len(data)
    done = os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
    if done != size:
        raise OSError(errno.ENOSPC, f"short write ({done} of {size} bytes)")


def atomic_write(path: Path, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
    """Replace ``path`` with the concatenated ``chunks`` (mode 0600), crash-safely.

    Raises OSError with the target untouched when anything before the rename fails. Once
    the rename is done the new file *is* the target: a failing directory fsync after it
    is logged, not raised (raising would make the caller believe the old file is still
    there while the name already points at the new one).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        try:
            for chunk in chunks:
                write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        log.warning("%s: written, but syncing its directory failed (%s)", path.name,
                    exc.strerror)


def destroy(path: Path) -> None:
    """Overwrite a file with random bytes, fsync, remove it and fsync the directory."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "r+b") as f:
        f.write(secrets.token_bytes(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    fsync_dir(path.parent)


def remove_stale_temps(directory: Path) -> int:
    """Delete temporaries left by a write that a power cut interrupted (regular files
    only: anything else under such a name is not ours and is left alone)."""
    count = 0
    for tmp in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if stat.S_ISREG(tmp.lstat().st_mode):
                tmp.unlink()
                count += 1
    return count
