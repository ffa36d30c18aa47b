"""The outbox (``sync.db``) damaged or vanished, as a technician with write access to the
state directory could leave it, and as faulty storage does.

Whatever the file holds, opening never raises: a damaged file is moved aside (kept, its
queued events unsent but never deleted) with a loud notice, a vanished or truncated one
is noticed because the number of events ever queued is also remembered beside it, and the
new outbox goes on numbering where the old one stopped.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.errors import StateError
from gate.link.state import EVENTS_STREAM, STATE_FILE, SyncState
from gate.sim.venue import lone_gate
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "outbox damage"
HOSTILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


RECEIPTS = "out:receipts"
EVENTS_TOPIC, RECEIPTS_TOPIC = "gate/v1/v/g/events", "gate/v1/v/g/receipts"


def _payload(topic: str, seq: int) -> bytes:
    """A payload that can be checked, as the link checks its own signature."""
    head = b"%s %d " % (topic.encode(), seq)
    return head + hashlib.sha256(head).hexdigest().encode()


def _intact(topic: str, payload: bytes) -> bool:
    head, _, digest = payload.rpartition(b" ")
    return head.startswith(topic.encode() + b" ") and \
        hashlib.sha256(head + b" ").hexdigest().encode() == digest


def _filled(directory: Path, events: int = 20) -> Path:
    """An outbox that queued ``events`` entry events and as many deletion receipts, and
    holds them all, closed cleanly."""
    state = SyncState(directory / STATE_FILE)
    for k in range(events):
        state.enqueue_next(EVENTS_STREAM, f"e{k}", EVENTS_TOPIC,
                           lambda seq: _payload(EVENTS_TOPIC, seq), ("att-1", "g", k))
        state.enqueue_next(RECEIPTS, f"r{k}", RECEIPTS_TOPIC,
                           lambda seq: _payload(RECEIPTS_TOPIC, seq))
    state.close()
    return directory / STATE_FILE


def _opened(path: Path) -> tuple[SyncState | None, BaseException | None]:
    try:
        return SyncState(path), None
    except BaseException as exc:
        return None, exc


def _numbering(state: SyncState, events: int) -> bool:
    """No seq will be used twice on either stream (a forward jump is harmless: central
    sees a gap; a reused receipt seq could hide a deletion proof)."""
    return all(state.last_seq(s) >= events - 1 for s in (EVENTS_STREAM, RECEIPTS))


def _held(path: Path, events: int) -> bool:
    """Opened without an exception; either every message is still there and numbering
    goes on, or the loss is said out loud and the numbering goes on past what was
    queued."""
    state, _exc = _opened(path)
    if state is None:
        return False
    state.check = _intact
    try:
        try:  # read everything the link reads: damage may only show on a row
            rows = state.pending(1000)
            complete = state.depth() == 2 * events and len(rows) == 2 * events and \
                all(_intact(t, p) for _, t, p in rows) and \
                len(state.entries_since("att-1", 0)) == events and _numbering(state, events)
        except StateError:
            complete = False  # noticed while open: moved aside, and said so
        if complete:
            return True
        loud = bool(state.notice)
        numbering = _numbering(state, events)
        state.enqueue_next(EVENTS_STREAM, "after", "t", lambda _seq: b"x", None)
        return loud and numbering and state.depth() >= 1
    finally:
        state.close()


@given(offset=st.integers(min_value=0, max_value=64 * 1024),
       value=st.integers(min_value=1, max_value=255))
@HOSTILE
def test_a_flipped_byte_anywhere_is_noticed_or_harmless(tmp_path_factory, ledger: Ledger,
                                                        offset, value):
    path = _filled(tmp_path_factory.mktemp("flip"))
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= value
    path.write_bytes(bytes(data))
    assert ledger.record(CLASS, _held(path, 20))


@given(length=st.integers(min_value=0, max_value=64 * 1024))
@HOSTILE
def test_truncation_anywhere_is_noticed(tmp_path_factory, ledger: Ledger, length):
    path = _filled(tmp_path_factory.mktemp("cut"))
    with open(path, "r+b") as f:
        f.truncate(min(length, os.path.getsize(path) - 1))
    assert ledger.record(CLASS, _held(path, 20))


@pytest.mark.parametrize("damage", ["random bytes", "text file", "zero bytes", "deleted",
                                    "directory", "fifo", "symlink to /dev/zero",
                                    "symlink elsewhere", "older copy"])
def test_replaced_vanished_or_rolled_back_outbox_fails_loudly(tmp_path, ledger: Ledger,
                                                             damage):
    path = _filled(tmp_path)
    if damage == "older copy":
        older = _filled(tmp_path / "older", events=5).read_bytes()
    path.unlink()
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    if damage == "random bytes":
        path.write_bytes(os.urandom(8192))
    elif damage == "text file":
        path.write_text("this is not a database\n" * 100)
    elif damage == "zero bytes":
        path.write_bytes(b"")
    elif damage == "directory":
        path.mkdir()
    elif damage == "fifo":
        os.mkfifo(path)
    elif damage == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif damage == "symlink elsewhere":
        (tmp_path / "elsewhere.db").write_bytes(b"")
        path.symlink_to(tmp_path / "elsewhere.db")
    elif damage == "older copy":
        path.write_bytes(older)
    held = _held(path, 20)
    if damage in ("random bytes", "text file", "directory", "fifo", "symlink to /dev/zero",
                  "symlink elsewhere"):
        kept = list(tmp_path.glob(f"{STATE_FILE}.corrupt-*"))
        held = held and bool(kept)  # moved aside, never deleted
    assert ledger.record(CLASS, held), damage


@given(where=st.sampled_from(["payload", "topic"]), at=st.floats(0, 1),
       value=st.integers(min_value=1, max_value=255))
@HOSTILE
def test_a_queued_message_damaged_on_disk_is_set_aside_not_sent(tmp_path_factory,
                                                                 ledger: Ledger, where, at,
                                                                 value):
    """SQLite keeps no checksum of a row: a flipped bit inside a queued event would be
    sent, refused by central and lost in silence. The link checks its own signature on
    what the outbox hands back; a damaged row is kept aside and the health line says so."""
    gate = lone_gate(tmp_path_factory.mktemp("row"))
    try:
        ids = [gate.link.publish_event(f"att-{k}", at=1_800_000_000.0 + k) for k in range(5)]
        path = gate.link.state.path
        assert len(gate.link.state.pending(100)) == 5  # all checked once, then one changes
        with sqlite3.connect(path) as db:
            old = db.execute(f"SELECT {where} FROM outbox WHERE id = ?", (ids[2],)).fetchone()
            data = bytearray(old[0] if where == "payload" else old[0].encode())
            data[min(int(at * len(data)), len(data) - 1)] ^= value
            new = bytes(data) if where == "payload" else data.decode("latin-1")
            db.execute(f"UPDATE outbox SET {where} = ? WHERE id = ?", (new, ids[2]))
        handed = [m for m, _, _ in gate.link.state.pending(100)]
        with sqlite3.connect(path) as db:
            kept = db.execute("SELECT COUNT(*) FROM damaged").fetchone()[0]
        held = handed == ids[:2] + ids[3:] and kept == 1 and \
            any("damaged on disk" in line for line in gate.link.health())
        assert ledger.record(CLASS, held), (handed, kept, gate.link.health())
    finally:
        gate.close()
