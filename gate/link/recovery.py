"""What :class:`~gate.link.state.SyncState` needs when ``sync.db`` is not as it left it.

* :func:`read_back`: the rows that can still be read from a database moved aside,
  each of the right types (damage further on still leaves what came before).
* :func:`read_numbering` / :func:`write_numbering`: ``sync.db.expect``, how far each
  outgoing stream was numbered, kept beside the database so that one which vanished, was
  cut short or was swapped for an older copy is noticed and never reuses a seq.
* :func:`describe`, :func:`is_damage`, :func:`kind_of`: one line about a failure, and
  whether it is damage to the file or a condition to wait out (a full disk).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.match.atomic import atomic_write
from sync import jsonsafe

#: What a damaged database can raise besides sqlite3.Error (text that is not UTF-8...).
DAMAGE = (sqlite3.Error, UnicodeDecodeError, ValueError)

#: The tables worth reading back, with the type of each column.
TABLES: dict[str, tuple[type, ...]] = {
    "outbox": (str, str, bytes, int), "entries": (str, str, str, int),
    "central_keys": (str, str), "damaged": (str, str, bytes, int)}

_MAX_SEQ = 2**62


@dataclass
class ReadBack:
    """Rows read from a database moved aside, by table, and its stream seqs."""

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {t: [] for t in TABLES})
    seqs: list[tuple[str, int]] = field(default_factory=list)


def read_back(aside: Path) -> ReadBack:
    """Every row of :data:`TABLES` (and ``seqs``) that can still be read from ``aside``.

    Opened read-only; rows of the wrong types are left behind. Queued messages are not
    checked here: the link checks its signature on each before it is sent.
    """
    found = ReadBack()
    try:
        if aside.is_symlink() or not aside.is_file():
            return found
        src = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
    except (sqlite3.Error, OSError):
        return found
    try:
        for table, types in TABLES.items():
            with contextlib.suppress(*DAMAGE):
                for row in src.execute(f"SELECT * FROM {table}"):
                    if len(row) == len(types) and all(
                            type(v) is tp for v, tp in zip(row, types, strict=True)):
                        found.rows[table].append(row)
        with contextlib.suppress(*DAMAGE):
            found.seqs = [(r[0], r[1]) for r in src.execute("SELECT stream, seq FROM seqs")
                          if type(r[0]) is str and type(r[1]) is int and 0 <= r[1] < _MAX_SEQ]
    finally:
        src.close()
    return found


def read_numbering(path: Path) -> dict[str, int]:
    """The last seq of each outgoing stream as written in ``path`` (empty if unreadable)."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return {}
            data = jsonsafe.loads(f.read(65536))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("out:")
            and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _MAX_SEQ}


def write_numbering(path: Path, seqs: dict[str, int]) -> None:
    """Write ``seqs`` to ``path`` atomically (OSError if it cannot be)."""
    atomic_write(path, [json.dumps(seqs, sort_keys=True).encode()])


def describe(exc: BaseException) -> str:
    """One line about a failure, cut before anything it quotes (a damaged row's text could
    be an attendee id, which never goes to a log or a status)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for quote in ("'", '"', " with text"):
        text = text.split(quote, 1)[0]
    return text.strip()[:120] or type(exc).__name__


#: Operational errors that are conditions to wait out, not damage to the file.
_PASSING = ("full", "locked", "busy", "readonly", "read-only", "disk i/o", "unable to open",
            "interrupted", "out of memory")


def is_damage(exc: BaseException) -> bool:
    """A damaged file (as opposed to a full disk or a busy database, which pass)."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return not any(w in text for w in _PASSING)
    return isinstance(exc, (sqlite3.DatabaseError, UnicodeDecodeError))


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a file"
