"""The entry log of a gate without a link to central.

With ``[sync] enabled = false`` nothing is ever sent: entries are kept in the state
directory's SQLite (:mod:`gate.link.state`) so anti-passback still works at this gate.
"""

from __future__ import annotations

import time
from pathlib import Path

from gate.link.state import STATE_FILE, SyncState
from sync.messages import uuid7


class LocalEntries:
    """Entry log kept in the state directory, never sent."""

    def __init__(self, state_dir: Path, gate: str) -> None:
        self.state, self.gate = SyncState(Path(state_dir) / STATE_FILE), gate

    def publish_event(self, attendee: str, at: float | None = None) -> str:
        """Record the entry locally (anti-passback still works)."""
        at_ms = int((time.time() if at is None else at) * 1000)
        event_id = uuid7(at_ms)
        self.state.record_entry(event_id, attendee, self.gate, at_ms)
        return event_id

    def entered_since(self, attendee: str, since: float) -> list[tuple[str, int]]:
        """Earlier entries of ``attendee`` at this gate."""
        return self.state.entries_since(attendee, int(since * 1000))

    def forget_before(self, before: float) -> int:
        """Drop entry records older than ``before``."""
        return self.state.forget_entries_before(int(before * 1000))

    def close(self) -> None:
        """Close the database."""
        self.state.close()
