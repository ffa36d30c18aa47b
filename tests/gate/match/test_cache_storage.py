"""Disk full and I/O errors: nothing corrupts, revocations are enforced at once, every
change waits in order and is applied once space returns, and a reload then gives the
same state. First on a real, tiny filesystem filled to the last byte, then with injected
faults (EIO, short writes, a head slot that cannot be written, a snapshot that cannot be
written, too much waiting).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gate.credentials import Key
from gate.errors import StorageError
from gate.match import cachefile, head, offline, pending
from gate.match.decision import Outcome
from gate.match.erase import CACHE_FILE, JOURNAL_FILE
from gate.templates import Templates
from tests.gate.match import faults
from tests.gate.match.test_cache import BINDING, PEOPLE, enrol, probe
from tests.gate.match.test_cache_tamper import State, state_of
from tests.ledger import Ledger
from tests.support import DIM, KEK, ROOT, Clock, open_store

pytestmark = pytest.mark.hostile

CLASS = "disk full"
NAMES = sorted(PEOPLE)
#: Enough revocations in one message for its journal record to need a fresh page (a
#: small record may still fit in the last, partly used page of a full filesystem).
BULK = [f"gone-{i:03d}" for i in range(60)]


def matches(t: Templates, name: str) -> bool:
    return t.matcher.identify(probe(name)).attendee == name


def contents(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state.iterdir()) if p.is_file()}


def reloaded(state: Path) -> State:
    t = open_store(state, clock=Clock())
    try:
        assert t.cache.load().state in ("ok", "empty")
        return state_of(t)
    finally:
        t.close()


# --- a real filesystem, filled up ----------------------------------------------------------


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (1 << 16, 4096, 1):
            while _wrote(fd, block):
                pass
    finally:
        os.close(fd)
    return filler


def _wrote(fd: int, size: int) -> bool:
    try:
        return os.write(fd, b"\0" * size) == size
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False


def disk_full(mnt: Path) -> None:
    """The whole story on one full filesystem (run in-process or in a namespace)."""
    state = mnt / "state"
    t = open_store(state, clock=Clock())
    c = t.cache
    c.load()
    c.upsert([enrol(n) for n in NAMES[:12]], source=("templates", 1))
    c.revoke("att-000", 2, source=("revocations", 1))
    on_disk, durable = contents(state), state_of(t)
    filler = fill(mnt)

    # An upsert that cannot be written waits and is not applied; no exception.
    assert c.upsert([enrol(n, seq=2) for n in NAMES[12:20]], source=("templates", 2)) == (8, 0)
    st = c.status()
    assert (st.pending, st.storage) == (1, "disk full: 1 change waiting")
    assert not any(n in c or matches(t, n) for n in NAMES[12:20])
    # Revocations that cannot be written are enforced at once, and reported not durable.
    rs = c.revoke_many([(n, 3, None) for n in NAMES[1:6] + BULK], source=("revocations", 2))
    assert all(r.applied and not r.durable for r in rs)
    assert not any(n in c or matches(t, n) for n in NAMES[1:6])
    assert matches(t, "att-007") and t.matcher.identify(probe("att-007")).outcome is \
        Outcome.MATCH  # the gate keeps serving from RAM
    # A revocation of an attendee whose upsert is still waiting: judged after it.
    assert c.revoke(NAMES[12], 3, source=("revocations", 3)).applied
    # Single small revocations until one no longer fits in a partly used page: each is
    # enforced at once, whether it was written or waits.
    for n in NAMES[6:9]:
        c.revoke(n, 4, source=("revocations", 4))
        assert not matches(t, n)
    assert c.status().pending == 6  # once one waits, every later one queues behind it
    assert c.durable_version < c.version
    # Nothing on disk changed, nothing half-written stayed; a read-only look agrees.
    assert contents(state) == on_disk
    info = offline.inspect(state, Key(KEK, "test"), BINDING, now=Clock().now)
    assert (info.state, info.version) == ("ok", durable.version)
    # A snapshot from central that cannot be written: the old files stay as they were,
    # what it removes is applied now, what it adds waits.
    snap = [enrol(n, seq=5) for n in NAMES[9:16]]
    st = c.replace(snap, seqs={"templates": 5, "revocations": 4})
    assert contents(state) == on_disk and st.pending == 1  # nobody left to match: "empty"
    assert not any(matches(t, n) for n in NAMES[:9] + NAMES[16:])
    assert not any(matches(t, n) for n in NAMES[9:16])  # not written: not applied yet
    assert reloaded(state) == durable

    # Space returns: a new change writes what waits first, in order.
    filler.unlink()
    c.revoke("att-015", 6, source=("revocations", 6))
    st = c.status()
    assert (st.pending, st.storage) == (0, "") and c.durable_version == c.version
    assert [n for n in NAMES if matches(t, n)] == [n for n in NAMES[9:16] if n != "att-015"]
    assert (c.stream_seq("templates"), c.stream_seq("revocations")) == (5, 6)
    assert reloaded(state) == state_of(t)

    # And once more, emptied by the timer's flush_pending rather than a change.
    filler = fill(mnt)
    c.revoke_many([(n, 7, None) for n in ["att-009", *BULK]], source=("revocations", 7))
    assert c.status().pending == 1 and not matches(t, "att-009")
    assert c.flush_pending() == 1  # still full
    filler.unlink()
    assert c.flush_pending() == 0 and c.status().storage == ""
    assert reloaded(state) == state_of(t)
    t.close()


def _mount(mnt: Path) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs",
                           str(mnt)], capture_output=True, check=False).returncode == 0


def on_tiny_fs(request: pytest.FixtureRequest, tmp_path: Path,
               scenario: Callable[[Path], None]) -> None:
    """Run ``scenario`` on a 256 KiB tmpfs: mounted here as root, else inside a user and
    mount namespace (``unshare -rm``) in a subprocess; skipped if the kernel refuses."""
    inner = os.environ.get("GATE_TEST_TINY_FS")
    if inner:
        scenario(Path(inner))
        return
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    # GATE_TEST_TINY_FS_VIA=unshare tries the namespace path even as root.
    if os.environ.get("GATE_TEST_TINY_FS_VIA") != "unshare" and _mount(mnt):
        try:
            scenario(mnt)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        return
    if shutil.which("unshare") is None:
        pytest.skip("the kernel refused to mount a tmpfs (and there is no unshare)")
    script = (f"mount -t tmpfs -o size=256k tmpfs {mnt} || exit 77; "
              f"GATE_TEST_TINY_FS={mnt} {sys.executable} -m pytest -q -p no:cacheprovider "
              f"'{request.node.nodeid}' || exit 78")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True,
                       text=True, check=False)
    if r.returncode == 78:
        pytest.fail(f"on a tmpfs in a namespace:\n{r.stdout[-3000:]}")
    if r.returncode != 0:
        pytest.skip(f"the kernel refused to mount a tmpfs ({(r.stderr or '').strip()[:100]})")


def test_a_full_disk_on_a_real_filesystem(request, tmp_path, ledger: Ledger):
    with ledger.case(CLASS):  # in a namespace, the run inside records it too (its own table)
        on_tiny_fs(request, tmp_path, disk_full)


# --- injected faults -----------------------------------------------------------------------


@pytest.fixture
def store(make_store) -> Templates:
    s = make_store()
    s.cache.load()
    s.cache.upsert([enrol(n) for n in NAMES[:10]], source=("templates", 1))
    s.cache.revoke("att-000", 2, source=("revocations", 1))
    return s


@pytest.mark.parametrize(("err", "short", "problem"), [
    (errno.EIO, False, "I/O error"), (errno.ENOSPC, False, "disk full"),
    (errno.EROFS, False, "read-only filesystem"), (errno.ENOSPC, True, "disk full")])
def test_a_failing_journal_write_leaves_nothing_and_the_change_waits(store, tmp_path,
                                                                    monkeypatch, err, *,
                                                                    short, problem, ledger: Ledger):
    state = tmp_path / "state"
    with ledger.case(CLASS):
        before, durable = contents(state), state_of(store)
        with faults.failing_writes(monkeypatch, err, short=short):
            assert store.cache.upsert([enrol("att-015")], source=("templates", 2)) == (1, 0)
            r = store.cache.revoke("att-003", 2, source=("revocations", 2))
            assert r.applied and not r.durable and not matches(store, "att-003")
            assert not matches(store, "att-015")
            st = store.cache.status()
            assert st.pending == 2 and st.storage == f"{problem}: 2 changes waiting"
            assert str(st).endswith(f"; {problem}: 2 changes waiting")
            assert contents(state) == before  # a short write was cut back off
            assert store.cache.flush_pending() == 2
        assert reloaded(state) == durable
        assert store.cache.flush_pending() == 0
        assert matches(store, "att-015") and not matches(store, "att-003")
        assert reloaded(state) == state_of(store)


def test_an_unwritable_head_slot_keeps_the_change_and_commits_it_later(store, tmp_path,
                                                                       monkeypatch, ledger: Ledger):
    """The record is on stable storage when only its head slot fails: a reload takes it
    (one record ahead of the head is what a crash leaves), so it counts as written."""
    state = tmp_path / "state"

    def eio(*_a: object, **_k: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with ledger.case(CLASS):
        with monkeypatch.context() as m:
            m.setattr(head.Head, "write", eio)
            r = store.cache.revoke("att-004", 2)
            assert r.applied and r.durable and not matches(store, "att-004")
            assert store.cache.status().storage == "I/O error: retried before the next change"
            assert reloaded(state) == state_of(store)
            store.cache.revoke("att-005", 2)  # cannot commit the head first: waits
            assert store.cache.status().pending == 1 and not matches(store, "att-005")
        store.cache.revoke("att-006", 2)
        assert store.cache.status().pending == 0 and store.cache.status().storage == ""
        assert reloaded(state) == state_of(store)
        # Now committed, the records cannot be cut off unnoticed.
        path = state / JOURNAL_FILE
        path.write_bytes(path.read_bytes()[:faults.journal_records(state)[-1][0]])
        t = open_store(state, clock=Clock())
        assert t.cache.load().state == "invalid"
        t.close()


def test_a_snapshot_that_cannot_be_written_leaves_the_old_files(store, tmp_path,
                                                                monkeypatch, ledger: Ledger):
    state = tmp_path / "state"
    with ledger.case(CLASS):
        before, durable = contents(state), state_of(store)
        with faults.failing_writes(monkeypatch, errno.ENOSPC):
            st = store.cache.replace([enrol(n, seq=3) for n in NAMES[5:12]],
                                     [("att-007", 4, int(Clock().now) + 86400)],
                                     seqs={"templates": 7, "revocations": 7})
            assert st.pending == 1 and st.storage == "disk full: 1 change waiting"
            assert contents(state) == before and not list(state.glob(".*.tmp"))
            # What the snapshot removes is gone now; what it adds waits.
            assert not any(matches(store, n) for n in [*NAMES[:5], "att-007"])
            assert not any(matches(store, n) for n in NAMES[8:12])
            assert reloaded(state) == durable
        assert store.cache.flush_pending() == 0
        assert [n for n in NAMES if matches(store, n)] == ["att-005", "att-006", *NAMES[8:12]]
        assert (store.cache.stream_seq("templates"), store.cache.stream_seq("revocations")) == \
            (7, 7)
        assert reloaded(state) == state_of(store)


def test_a_failed_compaction_is_postponed_and_the_change_is_kept(store, tmp_path,
                                                                 monkeypatch, ledger: Ledger):
    from gate.match import commit  # noqa: PLC0415 - patched module

    monkeypatch.setattr(commit, "JOURNAL_MIN", 0)
    monkeypatch.setattr(store.cache._store, "snapshot_bytes", 0)

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with ledger.case(CLASS):
        with monkeypatch.context() as m:
            m.setattr(cachefile, "atomic_write", full)
            r = store.cache.revoke("att-001", 2)
            assert r.durable and store.cache.status().storage == \
                "disk full: snapshot rewrite postponed"
        store.cache.revoke("att-002", 2)  # compacts now
        assert store.cache.status().storage == ""
        assert faults.journal_records(tmp_path / "state") == []
        assert reloaded(tmp_path / "state") == state_of(store)


def test_the_first_write_of_a_gate_can_wait_too(make_store, tmp_path, monkeypatch, ledger: Ledger):
    t = make_store()
    t.cache.load()
    with ledger.case(CLASS):
        with faults.failing_writes(monkeypatch, errno.ENOSPC):
            t.cache.upsert([enrol("att-001")])
            t.cache.revoke("att-002", 3)
            assert t.cache.status().pending == 2 and not matches(t, "att-001")
            assert not (tmp_path / "state" / CACHE_FILE).exists()
        assert t.cache.flush_pending() == 0 and matches(t, "att-001")
        assert reloaded(tmp_path / "state") == state_of(t)


def test_too_much_waiting_refuses_upserts_in_one_line_but_never_revocations(
        store, monkeypatch, ledger: Ledger):
    limit = 10 * DIM  # room for two one-template upserts, not three
    monkeypatch.setattr(pending, "MAX_WAITING_BYTES", limit)
    monkeypatch.setattr("gate.match.cache.MAX_WAITING_BYTES", limit)
    with ledger.case(CLASS):
        with faults.failing_writes(monkeypatch, errno.ENOSPC):
            store.cache.upsert([enrol("att-011")])
            store.cache.upsert([enrol("att-012")])
            before = store.cache.status()
            with pytest.raises(StorageError, match=r"^disk full: 2 changes waiting; upsert "
                                                   r"refused until they are written$"):
                store.cache.upsert([enrol("att-013")])
            assert store.cache.status() == before
            assert store.cache.revoke("att-003", 9).applied and not matches(store, "att-003")
        assert store.cache.flush_pending() == 0


def test_changes_waiting_at_shutdown_are_lost_and_the_seqs_say_so(store, tmp_path,
                                                                  monkeypatch, ledger: Ledger):
    """A change that never reached the disk is gone after a restart, but the recorded
    stream seqs are behind central's, so the link holds the cache until it resends."""
    with ledger.case(CLASS):
        with faults.failing_writes(monkeypatch, errno.ENOSPC):
            store.cache.revoke("att-004", 2, source=("revocations", 2))
            assert store.cache.stream_seq("revocations") == 2
        store.close()
        t = open_store(tmp_path / "state", clock=Clock())
        t.cache.load()
        assert t.cache.stream_seq("revocations") == 1 and "att-004" in t.cache
        t.cache.hold("behind central: revocations 1 < 2")
        assert t.matcher.identify(probe("att-004")).outcome is Outcome.CACHE_INVALID
        t.close()


def test_no_unexpected_exception_on_odd_write_errors(store, monkeypatch, ledger: Ledger):
    errs = (errno.EACCES, errno.EDQUOT, errno.EFBIG, errno.ENOMEM)
    with ledger.case(CLASS, n=len(errs)):  # the flush at the end is checked for all four
        for err in errs:
            with faults.failing_writes(monkeypatch, err):
                store.cache.revoke(f"x-{err}", 1)
        assert store.cache.flush_pending() == 0
