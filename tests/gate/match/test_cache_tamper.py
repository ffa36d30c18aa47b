"""The corruption matrix: damage of every class to a cache whose journal holds upserts and
revocations, and for each the only two acceptable outcomes (promise P6).

* **invalid**: the matcher refuses everyone (staffed lane) and *no file was touched*
  (bytes and mtimes, and no file added or removed), so the damage stays for inspection;
* **a crash state**: only for damage a power cut can also produce. Then the state is
  exactly the committed one, or (a truncation inside a last record whose append never
  returned) exactly the state before that change.

Never a state in which a revoked attendee matches, never a committed change silently
gone. Damage is generated with hypothesis: bit flips anywhere in journal and snapshot,
truncation at any offset, deletion, older copies, another lineage's or another gate's
files, records duplicated, dropped, reordered, head slots swapped, junk appended. Each
example's outcome is *predicted* from the damage alone (:func:`expected`), so a loader
that is too lenient and one that is too strict both fail.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.errors import CacheError
from gate.match import commit
from gate.match.decision import Outcome
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE
from gate.templates import Templates
from tests.gate.match import faults
from tests.gate.match.test_cache import PEOPLE, enrol, probe
from tests.ledger import Ledger
from tests.support import Clock, open_store, store_config

pytestmark = pytest.mark.hostile

CLASS = "journal and cache damage"

NAMES = sorted(PEOPLE)
FULL, BEFORE, EMPTY, INVALID = "full", "before", "empty", "invalid"
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@dataclass(frozen=True)
class State:
    """What a load must give: who is enrolled (and at which seq), tombstones, seqs."""

    enrolled: frozenset[str]
    revoked: frozenset[str]
    version: int
    seqs: tuple[int, int]


def state_of(t: Templates) -> State:
    c = t.cache
    return State(frozenset(n for n in NAMES if n in c),
                 frozenset(c._state.tombs), c.version,
                 (c.stream_seq("templates"), c.stream_seq("revocations")))


@dataclass
class Golden:
    """A cache after a compaction, with committed journal records, and what it was."""

    dir: Path
    #: Snapshot bytes after each journal record of the current snapshot (index = head).
    snapshots: list[bytes] = field(default_factory=list)
    #: Journal bytes after each record (index = records).
    journals: list[bytes] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    previous: dict[str, bytes] = field(default_factory=dict)  # before the compaction
    other: dict[str, bytes] = field(default_factory=dict)  # another lineage, same key
    other_state: State | None = None
    gate2: dict[str, bytes] = field(default_factory=dict)  # another gate
    crash: Path | None = None  # plus one complete record whose head was never written
    crash_state: State | None = None  # the state that record leads to


def _read(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in (KEY_FILE, CACHE_FILE, JOURNAL_FILE)}


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Golden:
    root = tmp_path_factory.mktemp("golden")
    clock = Clock()
    g = Golden(root / "state")
    t = open_store(g.dir, clock=clock)
    c = t.cache
    c.load()
    c.upsert([enrol(n) for n in NAMES], source=("templates", 1))
    c.revoke("att-000", 2, source=("revocations", 1))
    g.previous = _read(g.dir)
    with pytest.MonkeyPatch.context() as m:  # the next change also compacts
        m.setattr(commit, "JOURNAL_MIN", 0)
        m.setattr(c._store, "snapshot_bytes", 0)
        c.upsert([enrol("att-001", seq=2)], source=("templates", 2))
    assert len(faults.journal_records(g.dir)) == 0

    def snap() -> None:
        g.snapshots.append((g.dir / CACHE_FILE).read_bytes())
        g.journals.append((g.dir / JOURNAL_FILE).read_bytes())
        g.states.append(state_of(t))

    snap()
    c.revoke("att-002", 2, source=("revocations", 2))
    snap()
    c.upsert([enrol("att-003", seq=2)], source=("templates", 3))
    snap()
    c.revoke("att-004", 2, source=("revocations", 3))
    snap()
    c.note_seq("templates", 4)
    snap()
    c.revoke("att-005", 2, source=("revocations", 4))  # the last change: a revocation
    snap()
    assert len(faults.journal_records(g.dir)) == 5
    t.close()

    # Another lineage with the same data key (so only the journal binding tells them
    # apart), and another gate.
    other = root / "other"
    other.mkdir()
    shutil.copy(g.dir / KEY_FILE, other / KEY_FILE)
    o = open_store(other, clock=clock)
    o.cache.load()
    o.cache.upsert([enrol(n) for n in NAMES[:5]])
    o.cache.revoke("att-001", 5)
    g.other = _read(other)
    g.other_state = state_of(o)
    o.close()
    gate2 = open_store(root / "gate2", clock=clock, cfg=store_config(gate="gate-2"))
    gate2.cache.load()
    gate2.cache.upsert([enrol(n) for n in NAMES[:5]])
    gate2.cache.revoke("att-001", 5)
    g.gate2 = _read(root / "gate2")
    gate2.close()

    # A power cut after the journal record of one more revocation, before its head slot.
    g.crash = root / "crash"
    shutil.copytree(g.dir, g.crash)
    t = open_store(g.crash, clock=clock)
    t.cache.load()
    with pytest.MonkeyPatch.context() as m:
        faults.cut_power_before_head_write(m)
        with pytest.raises(faults.PowerCut):
            t.cache.revoke("att-006", 2, source=("revocations", 5))
    t.close()
    g.crash_state = State(g.states[-1].enrolled - {"att-006"},
                          g.states[-1].revoked | {"att-006"}, g.states[-1].version + 1,
                          (4, 5))
    return g


# --- running one example -------------------------------------------------------------------


def check(ledger: Ledger, golden: Golden, damage: Callable[[Path], None], expect: str, *,
          source: Path | None = None, full: State | None = None,
          before: State | None = None) -> None:
    """One case of damage, recorded in the attack ledger: :func:`outcome`."""
    with ledger.case(CLASS):
        outcome(golden, damage, expect, source=source, full=full, before=before)


def outcome(golden: Golden, damage: Callable[[Path], None], expect: str, *,
            source: Path | None = None, full: State | None = None,
            before: State | None = None) -> None:
    """Copy the cache, damage it, load it, and hold the outcome to ``expect``."""
    full = full or golden.states[-1]
    before = before or golden.states[-2]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "state"
        shutil.copytree(source or golden.dir, d, symlinks=True)
        damage(d)
        files = faults.files(d)
        t = open_store(d, clock=Clock())
        try:
            status = t.cache.load()
            got = state_of(t)
            decisions = {n: t.matcher.identify(probe(n)) for n in NAMES}
            outcome = status.state
            if outcome == "invalid":
                assert "\n" not in status.reason and status.reason
                assert faults.files(d) == files, "an invalid cache was written to"
                assert all(x.outcome is Outcome.CACHE_INVALID for x in decisions.values())
                with pytest.raises(CacheError):
                    t.cache.upsert([enrol("att-019", seq=50)])
                t.cache.revoke("att-018", 50)  # enforced in RAM, still writes nothing
                assert faults.files(d) == files
                assert expect == INVALID, f"expected {expect}, got invalid: {status.reason}"
                return
            want = {FULL: full, BEFORE: before}.get(expect)
            if expect == EMPTY:
                assert got.enrolled == frozenset() and outcome == "empty"
            else:
                assert want is not None, f"expected invalid, loaded {outcome}"
                assert got == want
            # Whoever is not enrolled in the state that was loaded never matches.
            for n, x in decisions.items():
                assert x.attendee == (n if n in got.enrolled else None), n
            for n in full.revoked - got.enrolled:
                assert decisions[n].attendee is None
        finally:
            t.close()


# --- damage ---------------------------------------------------------------------------------


def flip(name: str, offset: int, bit: int) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        data = bytearray((d / name).read_bytes())
        data[offset % len(data)] ^= 1 << bit
        (d / name).write_bytes(bytes(data))
    return damage


def truncate(name: str, size: int) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        with open(d / name, "r+b") as f:
            f.truncate(size)
    return damage


def put(name: str, content: bytes) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / name).write_bytes(content)
    return damage


def delete(*names: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        for name in names:
            (d / name).unlink()
    return damage


def records_as(order: Callable[[list[bytes]], list[bytes]]) -> Callable[[Path], None]:
    """Rewrite the journal with its records rearranged by ``order``."""
    def damage(d: Path) -> None:
        data = (d / JOURNAL_FILE).read_bytes()
        spans = faults.journal_records(d)
        recs = [data[a:b] for a, b in spans]
        (d / JOURNAL_FILE).write_bytes(data[:spans[0][0]] + b"".join(order(recs)))
    return damage


# --- the matrix ------------------------------------------------------------------------------


def _head(golden: Golden) -> tuple[int, int, int]:
    """(start of the head slots, slot size, position of the current slot)."""
    a, b = faults.head_region(golden.dir / CACHE_FILE)
    return a, (b - a) // 2, (len(golden.states) - 1) % 2


@given(offset=st.integers(0, 1 << 20), bit=st.integers(0, 7))
@SETTINGS
def test_a_bit_flip_anywhere_in_the_journal_fails_closed(golden, ledger: Ledger, offset, bit):
    check(ledger, golden, flip(JOURNAL_FILE, offset, bit), INVALID)


@given(offset=st.integers(0, 1 << 20), bit=st.integers(0, 7))
@SETTINGS
def test_a_bit_flip_anywhere_in_the_snapshot_fails_closed(golden, ledger: Ledger, offset, bit):
    size = len(golden.snapshots[-1])
    start, slot, current = _head(golden)
    at = offset % size
    # A flip in the newest head slot is what a torn slot write leaves: the journal holds
    # every record it committed, so the state is complete (and the slot is rewritten).
    torn_slot = start + current * slot <= at < start + (current + 1) * slot
    check(ledger, golden, flip(CACHE_FILE, offset, bit), FULL if torn_slot else INVALID)


@given(data=st.data())
@SETTINGS
def test_head_slots_are_flipped_precisely(golden, ledger: Ledger, data):
    """The same rule, aimed at the 80 bytes of the head (random offsets rarely hit)."""
    start, slot, current = _head(golden)
    at = data.draw(st.integers(start, start + 2 * slot - 1))
    bit = data.draw(st.integers(0, 7))
    in_current = start + current * slot <= at < start + (current + 1) * slot
    check(ledger, golden, flip(CACHE_FILE, at, bit), FULL if in_current else INVALID)


@given(cut=st.integers(0, 1 << 20))
@SETTINGS
def test_truncating_the_journal_anywhere_fails_closed(golden, ledger: Ledger, cut):
    """Every record in it was committed: a cut anywhere, on a record boundary or not,
    loses a committed change (here, at the end, a revocation)."""
    size = len(golden.journals[-1])
    check(ledger, golden, truncate(JOURNAL_FILE, cut % size), INVALID)


@given(cut=st.integers(0, 1 << 20))
@SETTINGS
def test_truncating_the_snapshot_anywhere_fails_closed(golden, ledger: Ledger, cut):
    check(ledger, golden, truncate(CACHE_FILE, cut % len(golden.snapshots[-1])), INVALID)


@pytest.mark.parametrize(("names", "expect"), [
    ((JOURNAL_FILE,), INVALID), ((CACHE_FILE,), INVALID), ((KEY_FILE,), INVALID),
    ((KEY_FILE, JOURNAL_FILE), INVALID), ((KEY_FILE, CACHE_FILE), INVALID),
    # What a power cut in the very first write leaves (a data key alone), and a wipe:
    # nothing is enrolled, so nobody matches (and the stream seqs, -1, are behind).
    ((CACHE_FILE, JOURNAL_FILE), EMPTY), ((KEY_FILE, CACHE_FILE, JOURNAL_FILE), EMPTY),
])
def test_deleted_files(golden, ledger: Ledger, names, expect):
    check(ledger, golden, delete(*names), expect)


@given(k=st.integers(0, 4))
@SETTINGS
def test_an_older_copy_of_the_journal_fails_closed(golden, ledger: Ledger, k):
    check(ledger, golden, put(JOURNAL_FILE, golden.journals[k]), INVALID)


@given(k=st.integers(0, 4))
@SETTINGS
def test_an_older_copy_of_the_snapshot(golden, ledger: Ledger, k):
    """The head lives in the snapshot: an older copy commits fewer records than the
    journal holds. One fewer is what a crash before the last slot write leaves (every
    record is still there and taken); more is damage."""
    check(ledger, golden, put(CACHE_FILE, golden.snapshots[k]), FULL if k == 4 else INVALID)


@pytest.mark.parametrize("which", ["journal", "snapshot", "both"])
@pytest.mark.parametrize("origin", ["previous", "other", "gate2"])
def test_files_from_another_snapshot_lineage_or_gate_fail_closed(golden, ledger: Ledger,
                                                                  which, origin):
    files = getattr(golden, origin)
    names = {"journal": [JOURNAL_FILE], "snapshot": [CACHE_FILE],
             "both": [CACHE_FILE, JOURNAL_FILE]}[which]

    def damage(d: Path) -> None:
        for name in names:
            (d / name).write_bytes(files[name])

    # A snapshot with its own journal, both written by this gate (same data key), is a
    # complete cache of this gate: a full rollback, which nothing local can reveal. Its
    # stream seqs ((1, 1), or none) are behind central's, which is how the link catches
    # it (test_cache_storage.py: hold).
    if origin in ("previous", "other") and which == "both":
        rolled_back = State(golden.states[0].enrolled, frozenset({"att-000"}), 2, (1, 1)) \
            if origin == "previous" else golden.other_state
        assert rolled_back is not None and rolled_back.seqs < golden.states[-1].seqs
        check(ledger, golden, damage, FULL, full=rolled_back)
        return
    check(ledger, golden, damage, INVALID)


@given(data=st.data())
@SETTINGS
def test_records_duplicated_dropped_or_reordered_fail_closed(golden, ledger: Ledger, data):
    n = 5
    kind = data.draw(st.sampled_from(["duplicate", "drop", "swap", "reverse", "move"]))
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))

    def order(recs: list[bytes]) -> list[bytes]:
        out = list(recs)
        if kind == "duplicate":
            out.insert(j, recs[i])
        elif kind == "drop":
            del out[i]
        elif kind == "swap":
            out[i], out[j] = out[j], out[i]
        elif kind == "reverse":
            out.reverse()
        else:
            out.insert(j, out.pop(i))
        return out
    check(ledger, golden, records_as(order), INVALID)


def test_swapped_head_slots_fail_closed(golden, ledger: Ledger):
    start, slot, _ = _head(golden)

    def damage(d: Path) -> None:
        data = bytearray((d / CACHE_FILE).read_bytes())
        a, b = data[start:start + slot], data[start + slot:start + 2 * slot]
        data[start:start + 2 * slot] = b + a
        (d / CACHE_FILE).write_bytes(bytes(data))
    check(ledger, golden, damage, INVALID)


@given(junk=st.binary(min_size=1, max_size=200))
@SETTINGS
def test_bytes_appended_to_the_journal_never_lose_a_change(golden, ledger: Ledger, junk):
    """Bytes after the last committed record may be an append cut by a power cut, so a
    strict prefix of a record (or zeros) is accepted and ignored; anything else fails
    closed. Either way every committed change is there."""
    def damage(d: Path) -> None:
        with open(d / JOURNAL_FILE, "ab") as f:
            f.write(junk)
    length = int.from_bytes(junk[:4], "little")
    torn = len(junk) < 16 or not any(junk) or \
        (length + 16 > len(junk) and 16 <= length <= 64 << 20)
    check(ledger, golden, damage, FULL if torn else INVALID)


# --- the one legitimate crash artefact -----------------------------------------------------


@given(cut=st.integers(0, 1 << 20))
@SETTINGS
def test_a_power_cut_during_an_append_is_the_only_tolerated_truncation(golden, ledger: Ledger, cut):
    """The crash copy holds one more record (a revocation) whose head slot was never
    written. Cut anywhere inside that record: the state before it. Not cut: the record
    is complete and durable, and taken. Cut into a committed record: invalid."""
    assert golden.crash is not None
    data = (golden.crash / JOURNAL_FILE).read_bytes()
    last = faults.journal_records(golden.crash)[-1]
    size = cut % (len(data) + 1)
    expect = FULL if size == len(data) else BEFORE if size >= last[0] else INVALID
    check(ledger, golden, truncate(JOURNAL_FILE, size), expect, source=golden.crash,
          full=golden.crash_state, before=golden.states[-1])


@given(offset=st.integers(0, 1 << 20), bit=st.integers(0, 7))
@SETTINGS
def test_a_flip_in_the_uncommitted_record_fails_closed(golden, ledger: Ledger, offset, bit):
    """A complete record that does not verify is not what a power cut leaves, even after
    the head: invalid (unless the flip is in its length and makes it look cut short)."""
    assert golden.crash is not None
    data = (golden.crash / JOURNAL_FILE).read_bytes()
    start, end = faults.journal_records(golden.crash)[-1]
    at = start + offset % (end - start)
    expect = INVALID
    if at < start + 4:
        raw = bytearray(data[start:start + 4])
        raw[at - start] ^= 1 << bit
        length = int.from_bytes(raw, "little")
        if 16 <= length <= 64 << 20 and length + 16 > end - start:
            expect = BEFORE
    check(ledger, golden, flip(JOURNAL_FILE, at, bit), expect, source=golden.crash,
          full=golden.crash_state, before=golden.states[-1])


def test_the_crash_copy_loads_and_commits_its_last_record(golden, ledger: Ledger,
                                                          make_store):
    """Sanity of the fixture, and the repair: the record is taken and its head written,
    after which cutting it is damage like any other."""
    assert golden.crash is not None
    d = Path(tempfile.mkdtemp()) / "state"
    shutil.copytree(golden.crash, d)
    t = make_store(d)
    assert t.cache.load().state == "ok" and state_of(t) == golden.crash_state
    t.close()
    with ledger.case(CLASS):
        truncate(JOURNAL_FILE, len((d / JOURNAL_FILE).read_bytes()) - 3)(d)
        assert make_store(d).cache.load().state == "invalid"
    shutil.rmtree(d.parent)


def test_the_golden_cache_loads_complete(golden):
    assert golden.states[-1].seqs == (4, 4) and golden.states[-1].version == 7
    assert {"att-000", "att-002", "att-004", "att-005"} == golden.states[-1].revoked
    outcome(golden, lambda _d: None, FULL)  # undamaged: not an attack case


# --- exhaustive sweeps of the journal (small enough to try every byte) ---------------------


def test_every_truncation_of_the_journal_fails_closed(golden, ledger: Ledger):
    for size in range(len(golden.journals[-1])):
        check(ledger, golden, truncate(JOURNAL_FILE, size), INVALID)


def test_every_byte_of_the_journal_flipped_fails_closed(golden, ledger: Ledger):
    for at in range(len(golden.journals[-1])):
        check(ledger, golden, flip(JOURNAL_FILE, at, at % 8), INVALID)


def test_every_byte_of_the_snapshot_header_and_head_flipped(golden, ledger: Ledger):
    start, slot, current = _head(golden)
    for at in range(start + 2 * slot + 64):
        in_current = start + current * slot <= at < start + (current + 1) * slot
        check(ledger, golden, flip(CACHE_FILE, at, (at * 5) % 8),
              FULL if in_current else INVALID)
