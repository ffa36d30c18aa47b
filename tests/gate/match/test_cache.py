"""The template cache and its matcher: encrypted cache, fail-closed loading, revocation,
expiry, erase."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gate.config import from_dict
from gate.credentials import Key
from gate.errors import CacheError, KeyMaterialError, TemplateError
from gate.match import cachefile, commit, head
from gate.match.datakey import DataKey
from gate.match.decision import Outcome
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE
from gate.match.threshold import CALIBRATIONS
from gate.templates import Templates, binding, open_templates
from sync.templates import Enrolment
from tests import support
from tests.gate.match import faults
from tests.support import DAY, DIM, KEK, MODEL, TKEY, Clock, store_config, unit

#: The gate of :func:`tests.support.store_config` (fixed threshold 0.5, margin 0.05).
BINDING = binding(store_config())
T0 = Clock().now

RNG = np.random.default_rng(11)
PEOPLE = {f"att-{i:03d}": unit(RNG.standard_normal(DIM)) for i in range(20)}
PROTECTOR = support.protector()


def enrol(name: str, seq: int = 1, until: float = T0 + 7 * DAY) -> Enrolment:
    return Enrolment(name, seq, int(until), PROTECTOR.protect(PEOPLE[name])[None])


def probe(name: str) -> np.ndarray:
    return unit(PEOPLE[name] + RNG.standard_normal(DIM).astype(np.float32) * 0.02)


@pytest.fixture
def store(make_store) -> Templates:
    s = make_store()
    s.cache.load()
    s.cache.upsert([enrol(n) for n in PEOPLE])
    return s


def test_round_trip_through_the_encrypted_file(store, make_store):
    assert store.matcher.identify(probe("att-003")).attendee == "att-003"
    again = make_store()
    status = again.cache.load()
    assert status.state == "ok" and status.attendees == 20 and \
        status.version == store.cache.version
    assert again.matcher.identify(probe("att-007")).attendee == "att-007"
    assert again.matcher.identify(unit(RNG.standard_normal(DIM))).outcome is \
        Outcome.BELOW_THRESHOLD


def test_file_holds_no_plaintext_template(store, tmp_path):
    raw = (tmp_path / "state" / CACHE_FILE).read_bytes()
    template = PROTECTOR.protect(PEOPLE["att-001"]).tobytes()
    assert template[:16] not in raw and b"att-001" not in raw
    assert raw.startswith(b"FPGC") and b"venue-1" in raw  # only the binding is in clear


def _regions(path: Path) -> dict[str, int]:
    raw = path.read_bytes()
    fields = ("venue-1", "event-1", "gate-1", MODEL.id)
    header_end = cachefile._FIXED.size + sum(2 + len(f.encode()) for f in fields)
    assert header_end == faults.header_end(path)
    return {"magic": 0, "format": 4, "flags": 6, "version field": 8, "nonce prefix": 44,
            "journal id": 50, "previous journal id": 70, "stream seqs": 84,
            "binding": header_end - (2 + len(MODEL.id)) - 3, "model id": header_end - 2,
            "ciphertext": header_end + head.SIZE + 100,
            "tag": len(raw) - 5}


@pytest.mark.parametrize("region", ["magic", "format", "flags", "version field",
                                    "nonce prefix", "journal id", "previous journal id",
                                    "stream seqs", "binding", "model id", "ciphertext",
                                    "tag"])
def test_a_flipped_bit_anywhere_fails_closed_and_changes_nothing(store, tmp_path, make_store,
                                                                 region):
    path = tmp_path / "state" / CACHE_FILE
    data = bytearray(path.read_bytes())
    data[_regions(path)[region]] ^= 0x10
    path.write_bytes(bytes(data))
    again = make_store()
    status = again.cache.load()
    assert status.state == "invalid" and str(status).startswith("cache: invalid (")
    assert again.matcher.identify(probe("att-001")).outcome is Outcome.CACHE_INVALID
    with pytest.raises(CacheError, match="snapshot"):
        again.cache.upsert([enrol("att-001", seq=2)])
    again.cache.revoke("att-002", 5)  # revocations still apply (in RAM) on a broken cache...
    assert path.read_bytes() == bytes(data)  # ...but the broken file is left untouched


@pytest.mark.parametrize("cut", [3, 40, 1000, -17, -1])
def test_truncated_cache_fails_closed(store, tmp_path, make_store, cut):
    path = tmp_path / "state" / CACHE_FILE
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    assert make_store().cache.load().state == "invalid"


def test_trailing_garbage_fails_closed(store, tmp_path, make_store):
    path = tmp_path / "state" / CACHE_FILE
    path.write_bytes(path.read_bytes() + b"x")
    assert make_store().cache.load().reason.endswith("trailing data")


def test_wrong_key_and_wrong_gate_fail_closed(store, make_store):
    other_key = make_store(kek=bytes(32))
    assert "wrong cache key" in other_key.cache.load().reason
    copied = make_store(cfg=store_config(gate="gate-2"))
    assert copied.cache.binding == cachefile.Binding("venue-1", "event-1", "gate-2", MODEL.id)
    assert copied.cache.load().state == "invalid"


def test_a_verified_snapshot_recovers_an_invalid_store(store, tmp_path, make_store):
    path = tmp_path / "state" / CACHE_FILE
    path.write_bytes(path.read_bytes()[:100])
    broken = make_store()
    assert broken.cache.load().state == "invalid"
    status = broken.cache.replace([enrol("att-001"), enrol("att-002")],
                                  [("att-009", 3, int(T0 + DAY))])
    assert status.state == "ok" and status.attendees == 2 and status.tombstones == 1
    assert make_store().cache.load().attendees == 2


def test_revocation_is_immediate_durable_and_wins_over_late_upserts(store, make_store, clock):
    r = store.cache.revoke("att-004", 2)
    assert r.applied and r.attendee == "att-004" and r.seq == 2
    assert r.cache_version == store.cache.version and r.applied_at == clock.now
    assert store.matcher.identify(probe("att-004")).attendee is None
    reloaded = make_store()
    reloaded.cache.load()
    assert "att-004" not in reloaded.cache
    assert reloaded.matcher.identify(probe("att-004")).attendee is None
    # A stale upsert (seq 1 or 2, sent before the revoke) arriving late changes nothing.
    assert reloaded.cache.upsert([enrol("att-004", seq=2)]) == (0, 1)
    assert reloaded.matcher.identify(probe("att-004")).attendee is None
    # A newer enrolment (the attendee signed up again) is accepted.
    assert reloaded.cache.upsert([enrol("att-004", seq=3)]) == (1, 0)
    assert reloaded.matcher.identify(probe("att-004")).attendee == "att-004"


def test_a_stale_revoke_is_reported_and_ignored(store):
    store.cache.upsert([enrol("att-005", seq=7)])
    r = store.cache.revoke("att-005", 6)
    assert not r.applied and "att-005" in store.cache


def test_expired_templates_are_purged_offline_and_at_load(make_store, clock):
    s = make_store().cache
    s.load()
    s.upsert([enrol("att-001", until=T0 + DAY), enrol("att-002", until=T0 + 3 * DAY)])
    s.revoke("att-003", 1, valid_until=int(T0 + 2 * DAY))
    assert s.next_expiry() == T0 + DAY
    clock.now = T0 + DAY + 1
    assert s.purge_expired() == 1
    assert "att-001" not in s and s.status().tombstones == 1
    clock.now = T0 + 10 * DAY  # the gate was off past the end of the event
    after = make_store()
    status = after.cache.load()
    assert status.attendees == 0 and status.tombstones == 0


def test_an_attendee_expiring_between_purges_is_refused_and_purged(make_store, clock):
    """P7 at decision time: no purge has run since att-001 expired, yet they must not
    match, in 1:N or 1:1, and their templates go at once."""
    s = make_store()
    s.cache.load()
    s.cache.upsert([enrol("att-001", until=T0 + DAY), enrol("att-002", until=T0 + 3 * DAY)])
    assert s.matcher.identify(probe("att-001")).attendee == "att-001"
    clock.now = T0 + DAY
    assert s.matcher.verify("att-001", probe("att-001")).outcome is Outcome.EXPIRED
    assert "att-001" not in s.cache
    s.cache.upsert([enrol("att-003", until=T0 + 2 * DAY)])
    clock.now = T0 + 2 * DAY + 1
    decision = s.matcher.identify(probe("att-003"))
    assert decision.outcome is Outcome.EXPIRED and decision.attendee is None
    assert "att-003" not in s.cache
    assert s.matcher.identify(probe("att-002")).attendee == "att-002"


@pytest.mark.parametrize(("change", "message"), [
    ({"templates": np.zeros((1, 100), np.float32)}, f"vectors of {DIM}"),
    ({"templates": np.zeros((4, DIM), np.float32)}, "1-3 vectors"),
    ({"templates": np.full((1, DIM), np.nan, np.float32)}, "finite"),
    ({"templates": np.full((1, DIM), np.inf, np.float32)}, "finite"),
    ({"templates": np.ones((1, DIM), np.float32)}, "unit-length"),
    ({"attendee": "bad\nid"}, "attendee id"),
    ({"attendee": "x" * 65}, "attendee id"),
    ({"attendee": ""}, "attendee id"),
    ({"attendee": "name@example.com"}, "attendee id"),
    ({"seq": -1}, "seq"),
    ({"seq": True}, "seq"),
    ({"valid_until": int(T0 - 1)}, "in the past"),
    ({"valid_until": int(T0 + 5000 * DAY)}, "days ahead"),
    ({"valid_until": 1.5e9}, "integer"),
])
def test_bad_enrolments_are_refused_and_change_nothing(store, tmp_path, change, message):
    path = tmp_path / "state" / CACHE_FILE
    before = (path.read_bytes(), store.cache.version, store.cache.status())
    good = enrol("att-010", seq=5)
    fields = {"attendee": good.attendee, "seq": good.seq, "valid_until": good.valid_until,
              "templates": good.templates, **change}
    with pytest.raises(TemplateError, match=message):
        store.cache.upsert([enrol("att-011", seq=5), Enrolment(**fields)])
    assert (path.read_bytes(), store.cache.version, store.cache.status()) == before


def test_duplicate_ids_in_a_batch_are_refused(store):
    with pytest.raises(TemplateError, match="twice"):
        store.cache.upsert([enrol("att-001", seq=5), enrol("att-001", seq=6)])
    with pytest.raises(TemplateError, match="twice"):
        store.cache.replace([enrol("att-001"), enrol("att-001")])


def test_crypto_erase_leaves_nothing_the_gate_can_decrypt(store, tmp_path):
    state = tmp_path / "state"
    old_cache = (state / CACHE_FILE).read_bytes()
    old_key = (state / KEY_FILE).read_bytes()
    store.cache.wipe()
    assert not (state / CACHE_FILE).exists() and not (state / KEY_FILE).exists()
    assert store.cache.status().attendees == 0
    assert store.matcher.identify(probe("att-001")).attendee is None
    store.cache.upsert([enrol("att-001", seq=9)])  # the gate carries on with a fresh data key
    assert (state / KEY_FILE).read_bytes() != old_key
    # Everything the gate now holds: its credential key and its new data key.
    new_dek = DataKey(state / KEY_FILE, Key(KEK, "test"), BINDING.encode()).load()
    assert new_dek is not None
    (tmp_path / "old.cache").write_bytes(old_cache)
    for key in (new_dek, KEK):
        with pytest.raises(CacheError, match="authentication failed"):
            cachefile.open_cache(tmp_path / "old.cache", key, BINDING)


def test_keys_and_templates_never_reach_the_log(store, caplog):
    caplog.set_level(logging.DEBUG)
    store.cache.upsert([enrol("att-012", seq=4)])
    store.cache.revoke("att-013", 2)
    store.matcher.identify(probe("att-012"))
    text = caplog.text
    assert "att-012" not in text and "att-013" not in text
    assert KEK.hex() not in text and TKEY.hex() not in text
    assert "upsert applied=1" in text and "revoked=1" in text


#: A child process that writes the cache in a loop until it is killed. It builds its
#: cache and matcher the way the tests do (tests.support.open_store) and enrols the same
#: people as this module.
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.gate.match.test_cache import PEOPLE, enrol
    from tests.support import Clock, open_store
    templates = open_store(Path(sys.argv[1]), clock=Clock())
    cache = templates.cache
    cache.load()
    seq = cache.version + 10
    names = sorted(PEOPLE)
    while True:
        seq += 1
        cache.upsert([enrol(n, seq=seq) for n in names[: 1 + seq % len(names)]])
        print(cache.version, flush=True)
""")


@pytest.mark.slow
def test_killing_the_writer_at_random_moments_never_leaves_a_broken_cache(tmp_path,
                                                                          make_store):
    """A power cut at any instant leaves the old or the new cache, never a mix."""
    state = tmp_path / "state"
    root = str(support.ROOT)
    rng = random.Random(5)
    last_durable = 0
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(state), root],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": root})
        time.sleep(rng.uniform(0.35, 0.9))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        printed = [int(v) for v in out.split()]
        reader = make_store(state)
        status = reader.cache.load()
        reader.close()
        assert status.state in ("ok", "empty"), status.reason
        if printed:
            # Everything reported saved survived; at most the write in flight is newer.
            assert printed[-1] <= status.version <= printed[-1] + 1
        assert status.version >= last_durable
        last_durable = status.version
    assert last_durable > 0
    assert not list(state.glob(".*.tmp"))  # loading cleared the interrupted writes' temps


def test_single_changes_go_to_the_journal_and_replay_on_load(store, tmp_path, make_store,
                                                            clock):
    state = tmp_path / "state"
    snapshot = (state / CACHE_FILE).read_bytes()
    snapshot_copy = tmp_path / "snapshot-copy"
    snapshot_copy.write_bytes(snapshot)
    store.cache.upsert([enrol("att-001", seq=2)])
    store.cache.revoke("att-002", 2)
    clock.now += 1
    store.cache.upsert([enrol("att-003", seq=2, until=T0 + 2 * DAY)])
    # No full rewrite per change: only the journal head slots move, in place.
    assert faults.without_head(state / CACHE_FILE) == faults.without_head(snapshot_copy)
    assert (state / CACHE_FILE).read_bytes() != snapshot
    again = make_store()
    status = again.cache.load()
    assert status.version == store.cache.version and status.tombstones == 1
    assert "att-002" not in again.cache
    assert again.matcher.identify(probe("att-003")).attendee == "att-003"


def test_tampered_or_reordered_journal_fails_closed(store, tmp_path, make_store):
    state = tmp_path / "state"
    store.cache.upsert([enrol("att-001", seq=2)])
    store.cache.revoke("att-002", 2)
    path = state / JOURNAL_FILE
    original = path.read_bytes()
    spans = faults.journal_records(state)
    assert len(spans) == 2
    flipped = bytearray(original)
    flipped[spans[1][0] + 30] ^= 1
    path.write_bytes(bytes(flipped))
    assert make_store().cache.load().state == "invalid"
    (a0, a1), (b0, b1) = spans
    path.write_bytes(original[:a0] + original[b0:b1] + original[a0:a1])
    assert make_store().cache.load().state == "invalid"


def test_a_torn_last_journal_entry_is_dropped(store, tmp_path, make_store, monkeypatch):
    """A power cut in the middle of an append (which therefore never returned): the torn
    record is not committed, the state is the one before it, and appending works."""
    store.cache.upsert([enrol("att-001", seq=2)])
    version_before_last = store.cache.version
    faults.cut_power_in_journal_write(monkeypatch, keep=30)
    with pytest.raises(faults.PowerCut):
        store.cache.revoke("att-002", 2)
    monkeypatch.undo()
    again = make_store()
    status = again.cache.load()
    assert status.state == "ok" and status.version == version_before_last
    assert "att-002" in again.cache and "att-001" in again.cache
    again.cache.revoke("att-002", 2)  # appending after the repair works
    assert make_store().cache.load().version == version_before_last + 1


def test_a_committed_journal_record_cut_short_fails_closed(store, tmp_path, make_store):
    """The same cut on a record whose append returned is damage, not a crash: the
    revocation it holds must not silently disappear."""
    state = tmp_path / "state"
    store.cache.upsert([enrol("att-001", seq=2)])
    store.cache.revoke("att-002", 2)
    path = state / JOURNAL_FILE
    path.write_bytes(path.read_bytes()[:-7])
    before = faults.files(state)
    again = make_store()
    status = again.cache.load()
    assert status.state == "invalid" and "committed records missing" in status.reason
    assert again.matcher.identify(probe("att-002")).outcome is Outcome.CACHE_INVALID
    assert faults.files(state) == before


def test_a_journal_left_over_from_a_compaction_is_ignored(store, tmp_path, make_store,
                                                          monkeypatch):
    state = tmp_path / "state"
    store.cache.upsert([enrol("att-001", seq=2)])
    old_journal = (state / JOURNAL_FILE).read_bytes()
    monkeypatch.setattr(commit, "JOURNAL_MIN", 0)  # the next change compacts
    monkeypatch.setattr(store.cache._store, "snapshot_bytes", 0)
    store.cache.revoke("att-002", 2)
    assert (state / JOURNAL_FILE).read_bytes() != old_journal
    # Power cut after the new snapshot, before the journal was reset:
    (state / JOURNAL_FILE).write_bytes(old_journal)
    again = make_store()
    status = again.cache.load()
    assert status.state == "ok" and status.version == store.cache.version
    assert "att-002" not in again.cache and status.tombstones == 1


def test_templates_from_config_read_credentials_and_refuse_without_keys(tmp_path,
                                                                        monkeypatch):
    cfg = from_dict({"cache": {"dir": str(tmp_path / "state")},
                     "gate": {"id": "lane-3", "venue": "arena", "event": "final"}})
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(KeyMaterialError, match="cache-key"):
        open_templates(cfg)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cache-key").write_bytes(KEK)
    (creds / "template-key").write_bytes(TKEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    t = open_templates(cfg, clock=Clock())
    try:
        assert t.cache.load().state == "empty"
        assert t.cache.directory == tmp_path / "state"
        assert t.cache.binding == cachefile.Binding("arena", "final", "lane-3", MODEL.id)
        t.cache.upsert([enrol("att-001")])  # templates protected with the tests' key
        assert t.matcher.identify(probe("att-001")).attendee == "att-001"
        # The default policy: calibrated threshold for FPIR 1e-3 at the cache's size.
        cal = CALIBRATIONS[cfg.models.embedder]
        assert t.matcher.threshold == cal.threshold_for(1e-3, 1)[0]
        t.cache.upsert([enrol(n, seq=2) for n in PEOPLE])
        assert t.matcher.threshold == cal.threshold_for(1e-3, len(PEOPLE))[0]
    finally:
        t.close()


def test_the_probe_is_wiped_after_each_decision_and_garbage_probes_are_refused(store):
    store.matcher.identify(probe("att-001"))
    assert not store.matcher._probe.any()
    for bad in (np.zeros(100, np.float32), np.full(DIM, np.nan, np.float32),
                np.zeros((2, DIM), np.float32)):
        with pytest.raises(TemplateError, match="probe"):
            store.matcher.identify(bad)
    assert store.cache.status().needs_resync is False
