"""The link's durable state (SQLite): outbox, sequence numbers, entry log, central's keys."""

from __future__ import annotations

from gate.link.state import SyncState


def test_sync_state_outbox_seqs_entries_and_keys(tmp_path):
    db = SyncState(tmp_path / "s.db")
    db.enqueue("e1", "t", b"p1")
    db.enqueue("e2", "t", b"p2")
    db.enqueue("e1", "t", b"dup")  # the same id again: kept once
    assert db.pending() == [("e1", "t", b"p1"), ("e2", "t", b"p2")] and db.depth() == 2
    db.ack("e1")
    db.close()
    db2 = SyncState(tmp_path / "s.db")  # survives a restart
    assert db2.depth() == 1
    assert db2.last_seq("in:templates") == -1
    db2.set_seq("in:templates", 7)
    db3 = SyncState(tmp_path / "s.db")
    assert db3.last_seq("in:templates") == 7
    db3.close()
    db2.record_entry("x", "att-1", "lane-2", 1000)
    assert db2.entries_since("att-1", 500) == [("lane-2", 1000)]
    assert db2.entries_since("att-1", 1001) == []
    db2.replace_central_keys({"k2": "pub"})
    assert db2.central_keys() == {"k2": "pub"}
    assert oct((tmp_path / "s.db").stat().st_mode & 0o777) == "0o600"
    db2.close()
