"""Crash-safe file replacement and destruction.

``atomic_write``: write a temporary file in the same directory, fsync it, rename it over
the target, fsync the directory. A power cut at any instant leaves either the old file or
the new one, never a mix: rename is atomic on POSIX filesystems and both fsyncs order the
data before the name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Replace ``path`` with the concatenated ``chunks`` (mode 0600), crash-safely."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


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
    _fsync_dir(path.parent)


def remove_stale_temps(directory: Path) -> int:
    """Delete temporaries left by a write that a power cut interrupted."""
    count = 0
    for tmp in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            count += 1
    return count
