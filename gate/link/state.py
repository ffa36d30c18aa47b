"""The gate's durable link state in SQLite (WAL, ``synchronous=FULL``).

* ``outbox``: entry events and receipts, written *before* they are published and deleted
  only when the broker acknowledges them (PUBACK). A crash, ``kill -9`` or a broker
  outage of hours loses nothing; after one, the same event may be published twice, which
  central removes by its unique id.
* ``seqs``: the last sequence number accepted on each central stream (replay defence).
* ``entries``: recent entries at this venue's gates, for anti-passback.
* ``central_keys``: central's signing keys, as pinned in config or rotated since.

All methods are thread-safe: MQTT callbacks and the gate loop share one connection.

The file fails closed and is never silently lost. Opening checks that ``sync.db`` is a
regular file and that SQLite's integrity check passes; a file that is not (random bytes,
a text file, a directory, a damaged page) is moved aside with a timestamp and kept, a
fresh database is started with a loud :attr:`SyncState.notice`, and every row that can
still be read is copied into it. SQLite keeps no checksum of a row, so each queued
message is checked again when it is handed out (the link checks its own signature): one
damaged on disk is set aside, said, and never sent. A vanished, truncated or rolled-back
outbox is detected too: how far each outgoing stream was numbered is also remembered in
``sync.db.expect``; a database that knows less says so and numbering goes on from there
(no seq is used twice). Every later SQLite failure (the disk is full, the file was
damaged while open) is one :class:`~gate.errors.StateError` line; the link keeps what it
could not write in RAM and retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gate.errors import StateError
from gate.link import recovery

log = logging.getLogger("gate.link")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seqs (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    event_id TEXT PRIMARY KEY, attendee TEXT NOT NULL, gate TEXT NOT NULL,
    at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_attendee ON entries (attendee, at_ms);
CREATE TABLE IF NOT EXISTS central_keys (kid TEXT PRIMARY KEY, public_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS damaged (
    id TEXT, topic TEXT, payload BLOB, found_ms INTEGER NOT NULL);
"""


#: One read of every table and column, run at open.
_PROBES = ("SELECT id, topic, payload, created_ms FROM outbox LIMIT 1",
           "SELECT stream, seq FROM seqs LIMIT 1",
           "SELECT event_id, attendee, gate, at_ms FROM entries LIMIT 1",
           "SELECT kid, public_key FROM central_keys LIMIT 1",
           "SELECT id, topic, payload, found_ms FROM damaged LIMIT 1")

#: The file in the state directory, and the file that remembers how much it held.
STATE_FILE = "sync.db"
_EXPECT = ".expect"
#: The outbox stream of entry events (its seq counts every event ever queued).
EVENTS_STREAM = "out:events"
_DAMAGE = recovery.DAMAGE
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _state_error(exc: BaseException) -> StateError:
    return StateError(f"link state: {recovery.describe(exc)}")


class SyncState:
    """One SQLite file under the state directory (``sync.db``); see the module docstring."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        # What had to be recovered (moved aside, vanished, damaged rows), by kind.
        self._notices: dict[str, str] = {}
        self._lock = threading.RLock()
        #: The last seq this process gave each outgoing stream (see :meth:`_outgoing`).
        self._numbered: dict[str, int] = {}
        self._recovering = False
        #: Checks a queued message before it is handed out (topic, payload → intact?);
        #: the link sets it to a check of its own signature.
        self.check: Callable[[str, bytes], bool] | None = None
        #: Queued messages found damaged and set aside (table ``damaged``), this run.
        self.damaged = 0
        self._intact: dict[str, bytes] = {}  # id → digest of a row that passed ``check``
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = self._open()
        self._check_expected()

    # --- opening -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # A small WAL: checkpointed every 256 pages (1 MiB) and truncated back to that
            # size, so a nearly full disk is not taken by the write-ahead log itself.
            db.execute("PRAGMA wal_autocheckpoint=256")
            db.execute("PRAGMA journal_size_limit=1048576")
            # The full check (not quick_check): it also finds an index that disagrees with
            # its table, which would hide rows from a lookup (an attendee's entries).
            check = db.execute("PRAGMA integrity_check(1)").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(
                    f"integrity_check: {check[0] if check else 'no answer'}")
            db.executescript(_SCHEMA)
            for probe in _PROBES:  # the tables hold what this code reads (not a damaged schema)
                db.execute(probe).fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            st = None
        aside = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            aside = self._aside(f"not a regular file ({recovery.kind_of(st.st_mode)})")
        try:
            return self._connect()
        except Exception as exc:  # whatever the damage (SQLite, a bad UTF-8 schema...)
            if isinstance(exc, OSError) and not self.path.exists():
                raise _state_error(exc) from None  # the directory itself is unusable
            aside = self._aside(recovery.describe(exc))
        try:
            db = self._connect()
        except Exception as exc:
            raise _state_error(exc) from None
        if aside is not None:
            self._salvage(aside, db)
        return db

    def _aside(self, why: str) -> Path:
        """Move a damaged database (and its side files) aside, kept for inspection."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", *_SIDE_FILES):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists() or src.is_symlink():
                os.replace(src, aside.with_name(aside.name + suffix))
        self._say("aside", f"outbox {self.path.name} was unusable ({why}): moved aside to "
                           f"{aside.name} and kept; a new outbox was started")
        return aside

    def _salvage(self, aside: Path, db: sqlite3.Connection) -> None:
        """Copy what can still be read from a database moved aside into the new one."""
        found = recovery.read_back(aside)
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                for table, types in recovery.TABLES.items():
                    marks = ", ".join("?" * len(types))
                    db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})",
                                   found.rows[table])
                db.executemany("INSERT INTO seqs VALUES (?, ?) ON CONFLICT(stream) DO UPDATE "
                               "SET seq = MAX(seq, excluded.seq)", found.seqs)
                db.execute("COMMIT")
            except _DAMAGE:
                db.execute("ROLLBACK")
                return
        self._say("aside", self._notices["aside"] +
                  f"; {len(found.rows['outbox'])} queued messages and "
                  f"{len(found.rows['entries'])} entries were read back from it")

    @property
    def notice(self) -> str:
        """What opening or reading had to recover, in one line; "" if nothing."""
        return "; ".join(self._notices.values())

    def _say(self, kind: str, line: str) -> None:
        self._notices[kind] = line
        log.error("sync: %s", line)

    def _expect_path(self) -> Path:
        return self.path.with_name(self.path.name + _EXPECT)

    def _expected(self) -> dict[str, int]:
        """The last seq of each outgoing stream, as last remembered beside the file."""
        return recovery.read_numbering(self._expect_path())

    def _outgoing(self) -> dict[str, int]:
        """The last seq of each outgoing stream: the most of the file, the note beside it
        and what this process numbered (so a damaged or rolled-back file never makes a
        number be used twice: central keeps a receipt per (gate, seq))."""
        seqs = dict(self._expected())
        for stream, seq in [*self._held_outgoing().items(), *self._numbered.items()]:
            seqs[stream] = max(seq, seqs.get(stream, -1))
        return seqs

    def _held_outgoing(self) -> dict[str, int]:
        rows = self._read("SELECT stream, seq FROM seqs WHERE stream LIKE 'out:%'",
                          types=(str, int))
        return {str(s): int(q) for s, q in rows}

    def _check_expected(self) -> None:
        expected, held = self._expected(), self._held_outgoing()
        short = sorted(s for s, q in expected.items() if held.get(s, -1) < q)
        if short and not self.notice:
            what = ", ".join(f"{s} #{held.get(s, -1) + 1} of #{expected[s] + 1}"
                             for s in short)
            self._say("short", f"outbox {self.path.name} holds fewer messages than it had "
                               f"queued ({what}): it vanished, was truncated, rolled back "
                               "or damaged; messages queued since the last check may be lost")
        self._continue_numbering()
        self.remember()

    def _continue_numbering(self) -> None:
        """Go on numbering where the outgoing streams had got to: central sees a gap
        rather than a number used twice."""
        held = self._held_outgoing()
        for stream, seq in self._outgoing().items():
            if held.get(stream, -1) < seq:
                with contextlib.suppress(StateError):
                    self.set_seq(stream, seq)

    def remember(self) -> None:
        """Write down how far each outgoing stream has been numbered (best effort; called
        at open, by housekeeping and at close)."""
        try:
            recovery.write_numbering(self._expect_path(), self._outgoing())
        except (OSError, StateError) as exc:
            log.warning("sync: cannot note the outbox's size (%s)", exc)

    def _failed(self, exc: BaseException) -> StateError:
        """The one-line error for a failed operation. A file found damaged while open is
        moved aside and a fresh one started (the caller retries there); a full disk or a
        busy database is left as it is, to be retried."""
        if recovery.is_damage(exc) and not self._recovering:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            aside = self._aside(recovery.describe(exc))
            self._recovering = True  # a fresh file that fails too is not moved aside again
            try:
                self._db = self._connect()
                self._salvage(aside, self._db)
                self._continue_numbering()
            except Exception as again:  # not even a fresh file: the directory is the problem
                return _state_error(again)
            finally:
                self._recovering = False
        return _state_error(exc)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except _DAMAGE as exc:
                raise self._failed(exc) from None
            try:
                yield self._db
            except BaseException as exc:
                with contextlib.suppress(*_DAMAGE):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, _DAMAGE):
                    raise self._failed(exc) from None
                raise
            try:
                self._db.execute("COMMIT")
            except _DAMAGE as exc:
                with contextlib.suppress(*_DAMAGE):
                    self._db.execute("ROLLBACK")
                raise self._failed(exc) from None

    def _read(self, sql: str, args: tuple[Any, ...] = (), *,
              types: tuple[type, ...] = ()) -> list[Any]:
        """Rows of ``sql``; with ``types``, each column must hold that type (a damaged
        record can turn a blob into text or a number into a string)."""
        with self._lock:
            try:
                rows = self._db.execute(sql, args).fetchall()
            except _DAMAGE as exc:
                raise self._failed(exc) from None
            for row in rows:
                if types and not all(isinstance(v, tp) for v, tp in zip(row, types, strict=True)):
                    raise self._failed(sqlite3.DatabaseError(
                        "database disk image is malformed (a value of the wrong type)"))
            return rows

    def checkpoint(self) -> None:
        """Move the write-ahead log into the database and truncate it (frees disk space
        after the disk was full)."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except _DAMAGE as exc:
                raise _state_error(exc) from None

    def close(self) -> None:
        """Remember the outbox's size and close the database."""
        self.remember()
        with self._lock:
            self._db.close()

    # outbox
    def enqueue(self, message_id: str, topic: str, payload: bytes) -> None:
        """Make a message durable before it is published."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)",
                       (message_id, topic, payload, int(time.time() * 1000)))

    def enqueue_next(self, stream: str, message_id: str, topic: str,
                     build: Callable[[int], bytes],
                     entry: tuple[str, str, int] | None = None) -> int:
        """In one transaction: take the stream's next seq, build the payload with it,
        queue it, and (for an entry event) record the entry. Returns the seq."""
        with self._tx() as db:
            row = db.execute("SELECT seq FROM seqs WHERE stream = ?", (stream,)).fetchone()
            seq = int(row[0]) + 1 if row else 0
            db.execute("INSERT INTO seqs VALUES (?, ?) ON CONFLICT(stream) DO UPDATE SET "
                       "seq = excluded.seq", (stream, seq))
            db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)",
                       (message_id, topic, build(seq), int(time.time() * 1000)))
            if entry is not None:
                db.execute("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?)",
                           (message_id, *entry))
        self._numbered[stream] = seq
        return seq

    def pending(self, limit: int = 1000) -> list[tuple[str, str, bytes]]:
        """Oldest unacknowledged messages."""
        rows = [(i, t, bytes(p)) for i, t, p in self._read(
            "SELECT id, topic, payload FROM outbox ORDER BY rowid LIMIT ?", (limit,),
            types=(str, str, bytes))]
        check = self.check
        if check is None:
            return rows
        # The same rows come back on every flush while they wait for their PUBACK, and a
        # signature check costs ~0.1 ms: a row that passed is known by a digest of what it
        # held, and checked in full again only if that changed.
        bad = []
        for message_id, name, payload in rows:
            digest = hashlib.blake2b(name.encode() + b"\0" + payload, digest_size=16).digest()
            if self._intact.get(message_id) == digest:
                continue
            if check(name, payload):
                self._intact[message_id] = digest
            else:
                bad.append((message_id, name, payload))
        if bad:
            self._set_aside(bad)
        return [r for r in rows if r not in bad]

    def _set_aside(self, rows: list[tuple[str, str, bytes]]) -> None:
        """Queued messages that fail :attr:`check` (damaged on disk): moved to the
        ``damaged`` table, kept for inspection and never sent; said in :attr:`notice`."""
        now = int(self.clock() * 1000)
        with self._tx() as db:
            db.executemany("INSERT INTO damaged VALUES (?, ?, ?, ?)",
                           [(i, t, p, now) for i, t, p in rows])
            db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        self.damaged += len(rows)
        self._say("damaged", f"outbox {self.path.name}: {self.damaged} queued messages were "
                             "damaged on disk (they fail the gate's own signature): set "
                             "aside in its table 'damaged', not sent")

    def ack(self, *message_ids: str) -> None:
        """The broker has them (PUBACK): forget them (one transaction).

        Without an fsync of its own: a power cut can only undo the deletion, and the
        message is then sent again, which central removes by its id. Adding to the outbox
        is always fully synchronous.
        """
        with self._lock:
            try:
                self._db.execute("PRAGMA synchronous=NORMAL")
            except _DAMAGE as exc:
                raise _state_error(exc) from None
            try:
                with self._tx() as db:
                    db.executemany("DELETE FROM outbox WHERE id = ?",
                                   [(m,) for m in message_ids])
                for m in message_ids:
                    self._intact.pop(m, None)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA synchronous=FULL")

    def depth(self) -> int:
        """Messages waiting for the broker (the outbox's depth)."""
        return int(self._read("SELECT COUNT(*) FROM outbox", types=(int,))[0][0])

    # sequence numbers
    def last_seq(self, stream: str) -> int:
        """Last accepted seq on a stream (-1 if none)."""
        rows = self._read("SELECT seq FROM seqs WHERE stream = ?", (stream,), types=(int,))
        return int(rows[0][0]) if rows else -1

    def set_seq(self, stream: str, seq: int) -> None:
        """Record an accepted seq (after the message's effect is durable)."""
        with self._tx() as db:
            db.execute("INSERT INTO seqs VALUES (?, ?) ON CONFLICT(stream) DO UPDATE SET "
                       "seq = excluded.seq", (stream, seq))

    # anti-passback
    def record_entry(self, event_id: str, attendee: str, gate: str, at_ms: int) -> None:
        """An entry seen at this venue (own or another gate's)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?)",
                       (event_id, attendee, gate, at_ms))

    def entries_since(self, attendee: str, since_ms: int) -> list[tuple[str, int]]:
        """(gate, at_ms) of an attendee's entries at or after ``since_ms``."""
        rows = self._read("SELECT gate, at_ms FROM entries WHERE attendee = ? AND at_ms >= ? "
                          "ORDER BY at_ms", (attendee, since_ms), types=(str, int))
        return [(g, t) for g, t in rows]

    def forget_entries_before(self, before_ms: int) -> int:
        """Drop old entries (they outlive no event); returns how many."""
        with self._tx() as db:
            return db.execute("DELETE FROM entries WHERE at_ms < ?", (before_ms,)).rowcount

    # central's keys
    def central_keys(self) -> dict[str, str]:
        """kid → base64 public key."""
        rows = self._read("SELECT kid, public_key FROM central_keys", types=(str, str))
        return dict(rows)

    def replace_central_keys(self, keys: dict[str, str]) -> None:
        """Pin exactly these keys (after a signed rotation)."""
        with self._tx() as db:
            db.execute("DELETE FROM central_keys")
            db.executemany("INSERT INTO central_keys VALUES (?, ?)", list(keys.items()))
