"""The gate's durable link state in SQLite (WAL, ``synchronous=FULL``).

* ``outbox``: entry events and receipts, written *before* they are published and deleted
  only when the broker acknowledges them (PUBACK). A crash, ``kill -9`` or a broker
  outage of hours loses nothing; after one, the same event may be published twice, which
  central removes by its unique id.
* ``seqs``: the last sequence number accepted on each central stream (replay defence).
* ``entries``: recent entries at this venue's gates, for anti-passback.
* ``central_keys``: central's signing keys, as pinned in config or rotated since.

All methods are thread-safe: MQTT callbacks and the gate loop share one connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seqs (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    event_id TEXT PRIMARY KEY, attendee TEXT NOT NULL, gate TEXT NOT NULL,
    at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_attendee ON entries (attendee, at_ms);
CREATE TABLE IF NOT EXISTS central_keys (kid TEXT PRIMARY KEY, public_key TEXT NOT NULL);
"""


#: The file in the state directory.
STATE_FILE = "sync.db"


class SyncState:
    """One SQLite file under the state directory (``sync.db``)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
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
        return seq

    def pending(self, limit: int = 1000) -> list[tuple[str, str, bytes]]:
        """Oldest unacknowledged messages."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload FROM outbox ORDER BY rowid "
                                    "LIMIT ?", (limit,)).fetchall()
        return [(str(i), str(t), bytes(p)) for i, t, p in rows]

    def ack(self, *message_ids: str) -> None:
        """The broker has them (PUBACK): forget them (one transaction).

        Without an fsync of its own: a power cut can only undo the deletion, and the
        message is then sent again, which central removes by its id. Adding to the outbox
        is always fully synchronous.
        """
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._tx() as db:
                    db.executemany("DELETE FROM outbox WHERE id = ?",
                                   [(m,) for m in message_ids])
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def depth(self) -> int:
        """Messages waiting for the broker (the outbox's depth)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # sequence numbers
    def last_seq(self, stream: str) -> int:
        """Last accepted seq on a stream (-1 if none)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM seqs WHERE stream = ?",
                                   (stream,)).fetchone()
        return int(row[0]) if row else -1

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
        with self._lock:
            rows = self._db.execute("SELECT gate, at_ms FROM entries WHERE attendee = ? AND "
                                    "at_ms >= ? ORDER BY at_ms", (attendee, since_ms)).fetchall()
        return [(str(g), int(t)) for g, t in rows]

    def forget_entries_before(self, before_ms: int) -> int:
        """Drop old entries (they outlive no event); returns how many."""
        with self._tx() as db:
            return db.execute("DELETE FROM entries WHERE at_ms < ?", (before_ms,)).rowcount

    # central's keys
    def central_keys(self) -> dict[str, str]:
        """kid → base64 public key."""
        with self._lock:
            rows = self._db.execute("SELECT kid, public_key FROM central_keys").fetchall()
        return {str(k): str(v) for k, v in rows}

    def replace_central_keys(self, keys: dict[str, str]) -> None:
        """Pin exactly these keys (after a signed rotation)."""
        with self._tx() as db:
            db.execute("DELETE FROM central_keys")
            db.executemany("INSERT INTO central_keys VALUES (?, ?)", list(keys.items()))
