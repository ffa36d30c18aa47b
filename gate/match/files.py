"""Opening the cache's files: regular files only, never through a link, never bigger than
their format allows, and every error in one line.

Someone with access to the state directory can put anything under a cache file's name: a
directory, a FIFO (a plain ``open`` would block the gate forever), a symbolic link to
another file, a sparse file of terabytes. Each is refused before a byte is read, as a
:class:`~gate.errors.CacheError` that makes the cache invalid; a missing file is left to
the caller (:class:`FileNotFoundError`), because whether that is legitimate depends on
which file it is.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from gate.errors import CacheError, StorageError

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a device", stat.S_IFBLK: "a device", stat.S_IFLNK: "a link"}


def open_regular(path: Path, limit: int, *, write: bool = False) -> int:
    """An fd on ``path`` after checking it is a regular file of at most ``limit`` bytes.

    Raises FileNotFoundError when it does not exist, CacheError for anything else.
    """
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | \
        os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CacheError(f"{path.name}: {_why(path, exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"{path.name}: is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a file')}"
                             ", not a regular file")
        if st.st_size > limit:
            raise CacheError(f"{path.name}: {st.st_size} bytes, more than its format allows "
                             f"({limit})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _why(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link, refused"
    if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENODEV):
        try:
            kind = _KINDS.get(stat.S_IFMT(path.lstat().st_mode), "not a file")
        except OSError:
            kind = "not a file"
        return f"is {kind}, not a regular file"
    return f"cannot open ({exc.strerror})"


def read_regular(path: Path, limit: int) -> bytes:
    """The whole content of a checked regular file (FileNotFoundError when missing)."""
    fd = open_regular(path, limit)
    try:
        parts = []
        size = 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            size += len(block)
            if size > limit:  # grew while reading
                raise CacheError(f"{path.name}: more than its format allows ({limit})")
            parts.append(block)
        return b"".join(parts)
    except OSError as exc:
        raise CacheError(f"{path.name}: read error ({exc.strerror})") from None
    finally:
        os.close(fd)


def exists(path: Path) -> bool:
    """Whether anything (even a dangling link) has this name."""
    return os.path.lexists(path)


def storage_error(what: str, exc: OSError) -> StorageError:
    """A one-line StorageError for a failed write."""
    return StorageError(f"{what}: {describe(exc)}", describe(exc))


def describe(exc: OSError) -> str:
    """What the technician needs to read: "disk full", "I/O error", ..."""
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EIO: "I/O error", errno.EROFS: "read-only filesystem",
            errno.EFBIG: "file too large"}.get(exc.errno or 0, exc.strerror or str(exc))
