"""Reading a file the gate was pointed at, without trusting what the path names.

A config path, a replay image or a replay video can name anything: ``/dev/zero``, a FIFO
nobody writes to, a directory, a socket, a file of 50 GB. Every file the gate reads goes
through here:

* the path is ``stat``-ed first and anything but a regular file is refused *without
  opening it* (opening some devices has side effects: ``/dev/watchdog`` arms the
  hardware watchdog);
* it is then opened once (``O_NONBLOCK``, so even a FIFO swapped in meanwhile cannot
  hang the open; ``O_NOCTTY``) and that one descriptor is checked with ``fstat``: that
  check is the one that counts, the first only keeps devices closed;
* it is read with a hard limit: at most ``limit + 1`` bytes are ever read, so a file
  that grows, or lies about its size (``/proc`` reports 0), cannot make the gate read
  more than the limit.

Symbolic links are followed on purpose: ``/etc/gate/gate.toml -> /opt/gate/etc/…`` or a
replay folder of links to photos is legitimate, and what is checked is the file the link
points to, so a link to ``/dev/zero`` is refused like ``/dev/zero`` itself.

Errors are built by the caller's ``fail`` from a one-line reason (the caller adds the
path and picks the exception class of :mod:`gate.errors`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

#: Reads are done in pieces of at most this many bytes.
_CHUNK = 1 << 20

_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)

Fail = Callable[[str], Exception]


def kind(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a regular file", "a character device", …)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` for a one-line message: as is when printable, else quoted and escaped."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


def open_regular(path: str | os.PathLike[str], *, what: str, fail: Fail) -> int:
    """A read-only descriptor of the regular file at ``path`` (links followed); the
    caller closes it. Anything else raises ``fail(reason)``."""
    try:
        before = os.stat(path)
    except (OSError, ValueError) as exc:
        raise fail(_unreadable(what, exc)) from None
    if not stat.S_ISREG(before.st_mode):
        raise fail(f"{what} is {kind(before.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except (OSError, ValueError) as exc:
        raise fail(_unreadable(what, exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise fail(f"{what} is {kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], *, limit: int, what: str, fail: Fail) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    A path that is not a regular file, cannot be opened, or holds more than ``limit``
    bytes raises ``fail(reason)``; no more than ``limit + 1`` bytes are read.
    """
    fd = open_regular(path, what=what, fail=fail)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise fail(f"{what} of {size} bytes exceeds the limit of {limit}")
        buf = bytearray()
        try:
            while len(buf) <= limit:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - len(buf)))
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise fail(_unreadable(what, exc)) from None
        if len(buf) > limit:
            raise fail(f"{what} grew past the limit of {limit} bytes while being read")
        return bytes(buf)
    finally:
        os.close(fd)


def _unreadable(what: str, exc: Exception) -> str:
    if isinstance(exc, ValueError):  # a NUL byte in the path
        return f"cannot read {what} (the path contains a NUL byte)"
    assert isinstance(exc, OSError)
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENXIO:  # a socket (or a device without its driver)
        reason = "a socket or a device with no driver, not a regular file"
    return f"cannot read {what} ({reason})"

