"""The outbox (``sync.db``) damaged or vanished, as a technician with write access to the
state directory could leave it, and as faulty storage does.

Whatever the file holds, opening never raises: a damaged file is moved aside (kept, its
queued events unsent but never deleted) with a loud notice, a vanished or truncated one
is noticed because the number of events ever queued is also remembered beside it, and the
new outbox goes on numbering where the old one stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.errors import StateError
from gate.link.state import EVENTS_STREAM, STATE_FILE, SyncState
from tests.hostile.ledger import Ledger

CLASS = "outbox damage"
HOSTILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


def _filled(directory: Path, events: int = 20) -> Path:
    """An outbox that queued ``events`` entry events and holds them, closed cleanly."""
    state = SyncState(directory / STATE_FILE)
    for k in range(events):
        state.enqueue_next(EVENTS_STREAM, f"e{k}", "gate/v1/v/g/events",
                           lambda seq: b"payload %d" % seq, ("att-1", "g", k))
    state.close()
    return directory / STATE_FILE


def _opened(path: Path) -> tuple[SyncState | None, BaseException | None]:
    try:
        return SyncState(path), None
    except BaseException as exc:
        return None, exc


def _held(path: Path, events: int) -> bool:
    """Opened without an exception; either every event is still there, or the loss is
    said out loud and the numbering goes on past what was queued."""
    state, _exc = _opened(path)
    if state is None:
        return False
    try:
        try:  # read everything the link reads: damage may only show on a row
            complete = state.depth() == events and len(state.pending(1000)) == events and \
                len(state.entries_since("att-1", 0)) == events and \
                state.last_seq(EVENTS_STREAM) == events - 1
        except StateError:
            complete = False  # noticed while open: moved aside, and said so
        if complete:
            return True
        loud = bool(state.notice)
        numbering = state.last_seq(EVENTS_STREAM) >= events - 1
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
