"""Anything in place of a cache file, older formats, the way out of invalid (and what
it keeps for inspection), holds, and the stream sequence numbers that reveal a rollback.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from gate.credentials import Key
from gate.errors import CacheError, TemplateError
from gate.match import cachefile, journal, offline
from gate.match.decision import Outcome
from gate.match.embedders import embedder_spec
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE, erase
from tests.gate.match import faults
from tests.gate.match.test_cache import BINDING, PEOPLE, T0, enrol, probe
from tests.gate.match.test_cache_tamper import state_of
from tests.ledger import Ledger
from tests.support import DAY, KEK, MODEL, Clock

pytestmark = pytest.mark.hostile

CLASS = "journal and cache damage"
NAMES = sorted(PEOPLE)


@pytest.fixture
def state(make_store, tmp_path) -> Path:
    """A closed cache: 10 attendees, two revoked in the journal."""
    t = make_store()
    t.cache.load()
    t.cache.upsert([enrol(n) for n in NAMES[:10]], source=("templates", 1))
    t.cache.revoke("att-001", 2, source=("revocations", 1))
    t.cache.revoke("att-002", 2, source=("revocations", 2))
    t.close()
    return tmp_path / "state"


def invalid_untouched(make_store, state: Path) -> str:
    """Load: must be invalid, refuse everyone, write nothing; returns the reason."""
    before = faults.files(state)
    t = make_store(state)
    st = t.cache.load()
    assert st.state == "invalid" and st.needs_resync and "\n" not in st.reason
    assert t.matcher.identify(probe("att-003")).outcome is Outcome.CACHE_INVALID
    assert faults.files(state) == before
    return st.reason


# --- not a regular file ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [CACHE_FILE, JOURNAL_FILE, KEY_FILE])
@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink", "huge", "socket-like"])
def test_anything_but_a_regular_file_makes_the_cache_invalid_in_one_line(
        state, make_store, tmp_path, name, kind, *, ledger: Ledger):
    path = state / name
    good = tmp_path / f"good-{name}"
    shutil.move(path, good)
    if kind == "directory":
        path.mkdir()
        why = "is a directory, not a regular file"
    elif kind == "fifo":
        os.mkfifo(path)  # a plain open() would block the gate forever
        why = "is a FIFO, not a regular file"
    elif kind == "symlink":
        path.symlink_to(good)  # even to the right content
        why = "is a symbolic link, refused"
    elif kind == "huge":
        limit = {CACHE_FILE: cachefile.MAX_FILE, JOURNAL_FILE: journal.MAX_JOURNAL,
                 KEY_FILE: 4096}[name]
        with open(path, "wb") as f:
            f.truncate(limit + 1)  # sparse
        why = "more than its format allows"
    else:
        path.symlink_to(tmp_path / "nowhere")  # dangling
        why = "symbolic link"
    with ledger.case(CLASS):
        reason = invalid_untouched(make_store, state)
        assert reason.startswith(f"{name}: ") and why in reason, reason
        info = offline.inspect(state, Key(KEK, "test"), BINDING, now=T0)
        assert info.state == "invalid" and info.reason == reason


def test_a_verified_snapshot_sets_a_directory_aside_and_recovers(state, make_store,
                                                                   ledger: Ledger):
    (state / JOURNAL_FILE).unlink()
    (state / JOURNAL_FILE).mkdir()
    with ledger.case(CLASS):
        t = make_store(state)
        assert t.cache.load().state == "invalid"
        assert t.cache.replace([enrol("att-005", seq=3)]).state == "ok"
        aside = sorted(p.name for p in state.glob("templates.*.invalid-*"))
        assert len(aside) == 2 and (state / aside[1]).is_dir()
        assert make_store(state).cache.load().attendees == 1


# --- older formats -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [(CACHE_FILE, 1), (CACHE_FILE, 2), (JOURNAL_FILE, 1)])
def test_files_of_an_older_format_ask_for_a_resync(state, make_store, ledger: Ledger, name,
                                                   fmt):
    path = state / name
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 4, fmt)  # as an earlier firmware wrote
    path.write_bytes(bytes(data))
    with ledger.case(CLASS):
        reason = invalid_untouched(make_store, state)
        assert reason == f"{name}: format {fmt} of an older firmware; re-sync needed"
    # Format 3 of the cache names its template model; the journal is unchanged.
    assert (cachefile.FORMAT, journal.FORMAT) == (3, 2)


def test_a_cache_of_another_template_model_asks_for_a_resync(state, make_store,
                                                             ledger: Ledger):
    """The embedder was changed in the config: the templates on disk live in the other
    model's space and must not be matched against; the files stay as they were."""
    before = faults.files(state)
    with ledger.case(CLASS):
        other = "mobilefacenet-int8" if MODEL.id == "sface" else "sface-int8"
        t = make_store(state, embedder=other)
        st = t.cache.load()
        assert st.state == "invalid" and st.needs_resync
        assert st.reason == (f"templates.cache: holds {MODEL.id!r} templates, the configured "
                             f"embedder makes {embedder_spec(other).model.id!r} ones; "
                             "re-sync needed")
        assert faults.files(state) == before
    assert make_store(state).cache.load().attendees == 8  # the right model opens it again


# --- the way out of invalid, and what it keeps -----------------------------------------------


def test_a_snapshot_sets_the_damaged_files_aside_and_erase_destroys_them(state, make_store,
                                                                         clock, ledger: Ledger):
    path = state / JOURNAL_FILE
    path.write_bytes(path.read_bytes()[:-5])  # a committed revocation cut off
    damaged = {n: (state / n).read_bytes() for n in (CACHE_FILE, JOURNAL_FILE)}
    with ledger.case(CLASS):
        t = make_store(state)
        assert t.cache.load().state == "invalid"
        assert t.cache.revoke("att-003", 4).durable is False  # enforced, nothing written
        with pytest.raises(CacheError, match="full snapshot is needed"):
            t.cache.upsert([enrol("att-004", seq=9)])
        assert {p.name for p in state.iterdir()} == {KEY_FILE, CACHE_FILE, JOURNAL_FILE}
        st = t.cache.replace([enrol(n, seq=1) for n in NAMES[:6]], [("att-002", 2, int(T0 + DAY))],
                             seqs={"templates": 1, "revocations": 2})
        assert st.state == "ok" and t.matcher.identify(probe("att-004")).attendee == "att-004"
        # The revocation that arrived while invalid still wins over the snapshot's record.
        assert "att-003" not in t.cache and "att-002" not in t.cache
        stamp = int(clock.now)
        for name, data in damaged.items():
            assert (state / f"{name}.invalid-{stamp}").read_bytes() == data  # kept as it was
        assert offline.disk_usage(state).keys() == {
            KEY_FILE, CACHE_FILE, JOURNAL_FILE, f"{CACHE_FILE}.invalid-{stamp}",
            f"{JOURNAL_FILE}.invalid-{stamp}"}
        again = make_store(state)
        assert again.cache.load().attendees == 4
        assert (again.cache.stream_seq("templates"), again.cache.stream_seq("revocations")) == \
            (1, 2)
        gone = erase(state)
        assert gone[0] == KEY_FILE and f"{CACHE_FILE}.invalid-{stamp}" in gone
        assert list(state.iterdir()) == []


def test_a_data_key_that_does_not_unwrap_is_set_aside_too(state, make_store, clock, ledger: Ledger):
    data = bytearray((state / KEY_FILE).read_bytes())
    data[-1] ^= 1
    (state / KEY_FILE).write_bytes(bytes(data))
    with ledger.case(CLASS):
        t = make_store(state)
        assert "does not unwrap" in t.cache.load().reason
        t.cache.replace([enrol("att-009")])
        assert (state / f"{KEY_FILE}.invalid-{int(clock.now)}").read_bytes() == bytes(data)
        assert make_store(state).cache.load().attendees == 1
        assert erase(state)[:2] == [KEY_FILE, f"{KEY_FILE}.invalid-{int(clock.now)}"]


def test_a_snapshot_older_than_a_revocation_does_not_undo_it(state, make_store):
    t = make_store(state)
    t.cache.load()
    # Built by central before att-001's revocation (seq 2) reached its stream.
    t.cache.replace([enrol(n, seq=1) for n in NAMES[:4]], seqs={"templates": 1})
    assert "att-001" not in t.cache and t.matcher.identify(probe("att-001")).attendee is None
    assert "att-003" in t.cache
    # A snapshot with a newer record (re-enrolled after the revocation) wins.
    t.cache.replace([enrol("att-001", seq=3)])
    assert "att-001" in t.cache


# --- holds ---------------------------------------------------------------------------------


def test_a_hold_refuses_everyone_writes_nothing_and_releases(state, make_store):
    t = make_store(state)
    t.cache.load()
    before = faults.files(state)
    t.cache.hold("behind central: revocations 2 < 5")
    st = t.cache.status()
    assert (st.state, st.reason) == ("invalid", "behind central: revocations 2 < 5")
    assert str(st) == "cache: invalid (behind central: revocations 2 < 5)"
    assert t.matcher.identify(probe("att-003")).outcome is Outcome.CACHE_INVALID
    assert t.matcher.verify("att-003", probe("att-003")).outcome is Outcome.CACHE_INVALID
    assert faults.files(state) == before and t.cache.valid and t.cache.held
    t.cache.revoke("att-004", 9, source=("revocations", 5))  # catching up while held
    t.cache.hold(None)
    assert t.cache.status().state == "ok" and t.cache.held is None
    assert t.matcher.identify(probe("att-003")).attendee == "att-003"
    assert t.matcher.identify(probe("att-004")).attendee is None


# --- stream sequence numbers ---------------------------------------------------------------


def test_stream_seqs_move_forward_only_and_survive_reloads_and_compaction(
        state, make_store, monkeypatch):
    from gate.match import commit  # noqa: PLC0415 - patched module

    t = make_store(state)
    t.cache.load()
    seqs = (t.cache.stream_seq("templates"), t.cache.stream_seq("revocations"))
    assert seqs == (1, 2)
    version = t.cache.version
    t.cache.note_seq("templates", 1)  # not newer: nothing written
    t.cache.note_seq("revocations", 0)
    assert t.cache.version == version
    assert t.cache.upsert([enrol("att-003")], source=("templates", 4)) == (0, 1)  # all stale
    # A sequence note is written, but changes nobody: the cache version stays.
    assert t.cache.stream_seq("templates") == 4 and t.cache.version == version
    assert t.cache.durable_version == version
    t.cache.revoke("att-001", 1, source=("revocations", 6))  # stale, seq still recorded
    t.cache.note_seq("revocations", 7)
    assert (make_store(state).cache.load().version, ) == (t.cache.version, )
    monkeypatch.setattr(commit, "JOURNAL_MIN", 0)
    monkeypatch.setattr(t.cache._store, "snapshot_bytes", 0)
    t.cache.note_seq("templates", 8)  # compacts: the seqs move into the snapshot header
    assert faults.journal_records(state) == []
    again = make_store(state)
    again.cache.load()
    assert (again.cache.stream_seq("templates"), again.cache.stream_seq("revocations")) == \
        (8, 7)
    info = offline.inspect(state, Key(KEK, "test"), BINDING, now=T0)
    assert info.stream_seqs == {"templates": 8, "revocations": 7}
    # A snapshot reflecting older seqs does not move them back.
    again.cache.replace([enrol("att-003", seq=5)], seqs={"templates": 3, "revocations": 3})
    assert (again.cache.stream_seq("templates"), again.cache.stream_seq("revocations")) == \
        (8, 7)
    for bad in [("templates", -1), ("templates", True), ("other", 1)]:
        with pytest.raises(TemplateError):
            again.cache.note_seq(*bad)
    with pytest.raises(TemplateError):
        again.cache.stream_seq("other")


def test_a_full_rollback_loads_but_its_seqs_are_behind(state, make_store, tmp_path, ledger: Ledger):
    """A consistent older copy of every file cannot be told from the real thing here; the
    recorded seqs are what the link compares with central's signed head."""
    old = tmp_path / "old"
    shutil.copytree(state, old)
    t = make_store(state)
    t.cache.load()
    t.cache.revoke("att-003", 2, source=("revocations", 3))
    t.close()
    shutil.rmtree(state)
    shutil.copytree(old, state)
    with ledger.case(CLASS):
        t = make_store(state)
        assert t.cache.load().state == "ok" and "att-003" in t.cache
        assert t.cache.stream_seq("revocations") == 2  # central is at 3
        t.cache.hold("behind central: revocations 2 < 3")
        assert t.matcher.identify(probe("att-003")).outcome is Outcome.CACHE_INVALID


# --- the read-only view agrees with the load -----------------------------------------------


def test_cache_info_matches_the_load_and_writes_nothing_even_after_a_crash(
        state, make_store, monkeypatch, tmp_path, ledger: Ledger):
    t = make_store(state)
    t.cache.load()
    faults.cut_power_before_head_write(monkeypatch)
    with pytest.raises(faults.PowerCut):
        t.cache.revoke("att-005", 2, source=("revocations", 3))
    monkeypatch.undo()
    with ledger.case(CLASS):
        before = faults.files(state)
        info = offline.inspect(state, Key(KEK, "test"), BINDING, now=T0)
        assert faults.files(state) == before  # the load below commits the head; info does not
        loaded = make_store(state)
        st = loaded.cache.load()
        assert (info.state, info.version, info.attendees, info.tombstones) == \
            (st.state, st.version, st.attendees, st.tombstones)
        assert info.stream_seqs == {"templates": 1, "revocations": 3}
        assert faults.files(state) != before
        assert state_of(loaded).revoked == {"att-001", "att-002", "att-005"}


def test_status_fields(state, make_store):
    t = make_store(state)
    st = t.cache.load()
    assert (st.pending, st.storage) == (0, "") and t.cache.durable_version == st.version
    assert Clock().now == T0


def test_a_snapshot_may_reflect_no_revocation_yet(state, make_store):
    t = make_store(state)
    t.cache.load()
    t.cache.replace([enrol("att-003", seq=4)], seqs={"templates": 9, "revocations": -1})
    assert (t.cache.stream_seq("templates"), t.cache.stream_seq("revocations")) == (9, 2)
    with pytest.raises(TemplateError):
        t.cache.replace([enrol("att-003", seq=5)], seqs={"templates": -2})
