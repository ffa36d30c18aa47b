"""The outbox's recovery helpers alone: the numbering note and failure lines."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from gate.link import recovery


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=200),
                      st.dictionaries(st.text(max_size=12),
                                      st.one_of(st.integers(), st.booleans(), st.none(),
                                                st.floats(), st.text(max_size=5)),
                                      max_size=6).map(lambda d: repr(d).encode())))
def test_the_numbering_note_reads_only_stream_seqs_whatever_it_holds(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("n") / "sync.db.expect"
    path.write_bytes(data)
    got = recovery.read_numbering(path)
    assert all(k.startswith("out:") and type(v) is int and 0 <= v < 2**62
               for k, v in got.items())


def test_the_numbering_note_round_trips_and_a_directory_reads_as_nothing(tmp_path):
    path = tmp_path / "sync.db.expect"
    recovery.write_numbering(path, {"out:events": 41, "out:receipts": 3})
    assert recovery.read_numbering(path) == {"out:events": 41, "out:receipts": 3}
    path.unlink()
    path.mkdir()
    assert recovery.read_numbering(path) == {}


def test_a_failure_line_never_quotes_the_data():
    exc = sqlite3.IntegrityError("UNIQUE constraint failed: 'att-secret-42'")
    assert "att-secret-42" not in recovery.describe(exc)
    assert recovery.is_damage(sqlite3.DatabaseError("file is not a database"))
    assert not recovery.is_damage(sqlite3.OperationalError("database or disk is full"))


def test_read_back_of_something_that_is_not_a_database_is_empty(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 4096)
    found = recovery.read_back(junk)
    assert all(rows == [] for rows in found.rows.values()) and found.seqs == []
    assert recovery.read_back(tmp_path).seqs == []  # a directory
