"""Central at rest: the templates in central.db are AES-256-GCM ciphertext under the
central data key (``central-db-key``), bound to venue, event and attendee.

The key's sources and the refusals come first (no broker), then a Central with its real
Mosquitto: central.db holds no template-shaped vector, and a tampered, moved or
truncated blob, a wrong, loose or missing key each fail with one line, never a traceback
or an attendee silently left out of a snapshot.
"""

from __future__ import annotations

import os
import queue
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import atrest
from central.cli import main
from central.core import Central
from central.errors import CentralError, DataKeyError, StoreError
from central.pki import init_venue
from sync.templates import ID_PATTERN, Enrolment
from tests import broker as tb
from tests.central.conftest import EVENT, GATES, VENUE, Site, T, unit_vectors
from tests.support import DAY, DIM, random_unit

ATTENDEE_IDS = st.from_regex(ID_PATTERN, fullmatch=True)
FIXED = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def venue(tmp_path: Path) -> Path:
    out = tmp_path / "venue"
    init_venue(out, venue=VENUE, event=EVENT, gates=GATES)
    return out


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


# --- the key ----------------------------------------------------------------------------

def test_init_venue_writes_a_private_32_byte_key(venue):
    path = venue / "central" / "db.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.geteuid()
    key, source = atrest.load_key(venue)
    assert key == path.read_bytes() and len(key) == 32
    assert source == f"file {path}"


@pytest.mark.parametrize("form", ["raw", "hex", "hex-newline", "HEX"])
def test_the_key_file_holds_raw_bytes_or_hex(venue, form):
    key = os.urandom(32)
    text = {"raw": key, "hex": key.hex().encode(), "hex-newline": key.hex().encode() + b"\n",
            "HEX": key.hex().upper().encode()}[form]
    path = venue / "central" / "db.key"
    path.write_bytes(text)
    assert atrest.load_key(venue)[0] == key


@FIXED
@given(raw=st.binary(max_size=200).filter(lambda b: atrest.parse_key(b) is None))
def test_a_malformed_key_is_one_line(venue, raw):
    path = venue / "central" / "db.key"
    path.write_bytes(raw)
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert one_line(err.value) == f"{path}: the central-db-key must be 32 raw bytes or 64 " \
                                  "hex digits"  # and never quotes what it read


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o610, 0o601, 0o620])
def test_a_key_file_open_to_others_is_refused(venue, mode):
    path = venue / "central" / "db.key"
    path.chmod(mode)
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert one_line(err.value).endswith(f"key file mode {mode:04o} is open to others; "
                                        "chmod 0600")
    with pytest.raises(DataKeyError):
        Central(venue)
    assert not (venue / "central" / "central.db").exists()  # nothing opened or created


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_file_is_accepted(venue, mode):
    (venue / "central" / "db.key").chmod(mode)
    assert len(atrest.load_key(venue)[0]) == 32


def test_a_link_a_directory_or_a_missing_file_is_refused(venue, tmp_path):
    path = venue / "central" / "db.key"
    real = tmp_path / "elsewhere.key"
    shutil.move(path, real)
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert "no central-db-key: provide the systemd credential central-db-key or the key " \
           "file" in one_line(err.value)
    path.symlink_to(real)
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert "not a link" in one_line(err.value)
    path.unlink()
    path.mkdir(mode=0o700)
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert "regular file" in one_line(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_key_file_owned_by_someone_else_is_refused(venue):
    path = venue / "central" / "db.key"
    os.chown(path, 65534, 65534)
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert "owned by uid 65534" in one_line(err.value)


def test_the_systemd_credential_comes_first(venue, tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    key = os.urandom(32)
    (creds / "central-db-key").write_bytes(key.hex().encode())
    (creds / "central-db-key").chmod(0o644)  # systemd's own directory: modes are its job
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    (venue / "central" / "db.key").unlink()
    assert atrest.load_key(venue) == (key, "credential central-db-key")
    # A credentials directory without this credential (a gate's, say): the file is used.
    (creds / "central-db-key").unlink()
    (venue / "central" / "db.key").write_bytes(key)
    (venue / "central" / "db.key").chmod(0o600)
    assert atrest.load_key(venue) == (key, f"file {venue / 'central' / 'db.key'}")
    (creds / "central-db-key").write_bytes(b"short")
    with pytest.raises(DataKeyError) as err:
        atrest.load_key(venue)
    assert str(creds / "central-db-key") in one_line(err.value)


# --- the blobs --------------------------------------------------------------------------

def box(key: bytes = b"k" * 32, venue: str = VENUE, event: str = EVENT) -> atrest.TemplateBox:
    return atrest.TemplateBox(key, venue=venue, event=event)


def opened(b: atrest.TemplateBox, attendee: str, blob: bytes) -> bytes:
    out = bytearray(len(blob) - b.sealed_size(0))
    b.open_into(attendee, blob, out)
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(attendee=ATTENDEE_IDS, other=ATTENDEE_IDS, rows=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_a_blob_opens_only_for_its_attendee_venue_event_and_key(attendee, other, rows, seed):
    plain = random_unit(np.random.default_rng(seed), rows).tobytes()
    b = box()
    blob = b.seal(attendee, plain)
    assert len(blob) == b.sealed_size(len(plain))
    assert opened(b, attendee, blob) == plain
    assert plain not in blob and unit_vectors(blob) == 0
    assert b.seal(attendee, plain) != blob  # a fresh nonce every time
    strangers = [(box(venue="hall"), attendee), (box(event="e2"), attendee),
                 (box(key=b"K" * 32), attendee)]
    if other != attendee:
        strangers.append((box(), other))
    for wrong, who in strangers:
        with pytest.raises(StoreError) as err:
            opened(wrong, who, blob)
        assert one_line(err.value).startswith("central.db: a stored template does not "
                                              "decrypt")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_change_to_a_blob_is_caught(data):
    b = box()
    blob = b.seal("att-1", random_unit(np.random.default_rng(1), 2).tobytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        bad = blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1:]
    elif kind == "truncate":
        bad = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        bad = blob + data.draw(st.binary(min_size=1, max_size=64))
    out = bytearray(len(blob) - b.sealed_size(0))
    with pytest.raises(StoreError) as err:
        b.open_into("att-1", bad, out)
    one_line(err.value)


def test_the_aad_fields_cannot_be_shifted_into_each_other():
    # Length-prefixed: venue "a-b" + event "c" is not venue "a" + event "b-c".
    blob = box(venue="ab", event="c").seal("att", b"x" * 8)
    with pytest.raises(StoreError):
        opened(box(venue="a", event="bc"), "att", blob)
    blob = box(event="e").seal("att-1", b"x" * 8)
    with pytest.raises(StoreError):
        opened(box(event="eatt"), "-1", blob)


# --- central.db with a real broker ------------------------------------------------------

@pytest.fixture
def central(site: Site) -> Iterator[Central]:
    # A fresh database per test, in the module's venue (its broker and keys).
    for suffix in ("", "-wal", "-shm"):
        (site.dir / "central" / f"central.db{suffix}").unlink(missing_ok=True)
    c = Central(site.dir, port=site.broker.port)
    c.connect()
    yield c
    c.close()


def db_files(venue: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (venue / "central").glob("central.db*")}


def test_central_db_holds_no_template_shaped_vector(site, central):
    rng = np.random.default_rng(5)
    until = int(time.time()) + DAY
    protected = []
    for i in range(20):
        raw = random_unit(rng, 1 + i % 3)
        central.enrol_embeddings(f"att-{i:03d}", raw, valid_until=until)
        protected.append(central.protector.protect(raw))
    bulk = [Enrolment(f"bulk-{i:04d}", 1, until,
                      central.protector.protect(random_unit(rng, 1 + i % 3)))
            for i in range(300)]
    central.import_templates(bulk)
    central.revoke(["att-001"])
    assert central.snapshot("gate-1", chunk_records=50) == 19 + 300
    with central._lock:
        central.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    files = db_files(site.dir)
    assert "central.db" in files
    for name, data in files.items():
        assert unit_vectors(data) == 0, f"a template-shaped vector in {name}"
        for p in protected + [e.templates for e in bulk[:50]]:
            assert np.asarray(p, np.float32).tobytes()[:64] not in data, name
    # Not vacuous: the same templates in the clear are found, and rows do hold blobs.
    assert unit_vectors(b"".join(np.asarray(p, np.float32).tobytes() for p in protected)) >= 20
    with central._lock:
        sizes = [len(t) for (t,) in central.db.execute(
            "SELECT templates FROM attendees WHERE templates IS NOT NULL")]
    assert len(sizes) == 319 and all((s - 29) % (DIM * 4) == 0 for s in sizes)


def test_central_db_is_private_from_its_first_byte(site, central):
    enrol_three(central)
    for path in (site.dir / "central").glob("central.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def tamper(central: Central, sql: str, *args: object) -> None:
    with central._lock:
        central.db.execute(sql, args)


def enrol_three(central: Central) -> None:
    rng = np.random.default_rng(9)
    for name in ("att-a", "att-b", "att-c"):
        central.enrol_embeddings(name, random_unit(rng, 2), valid_until=int(time.time()) + DAY)


def blob_of(central: Central, attendee: str) -> bytes:
    with central._lock:
        return bytes(central.db.execute("SELECT templates FROM attendees WHERE id = ?",
                                        (attendee,)).fetchone()[0])


def no_snapshot_published(site: Site, central: Central, gate: str = "gate-2") -> None:
    """Calls snapshot (which must raise StoreError in one line) and checks that nothing at
    all reached the gate's templates topic."""
    admin = tb.connect(site.dir, "admin", client_id="admin")
    try:
        seen, _ = tb.subscribe(admin, f"{T}/{gate}/templates")
        with pytest.raises(StoreError) as err:
            central.snapshot(gate)
        msg = one_line(err.value)
        assert "att-" not in msg
        central.command(gate, "purge")  # a marker: whatever was published came before it
        with pytest.raises(queue.Empty):
            seen.get(timeout=0.3)
    finally:
        tb.close(admin)


@pytest.mark.parametrize("how", ["flip", "swap", "truncate", "null", "text", "from-elsewhere"])
def test_a_tampered_blob_stops_the_snapshot_in_one_line(site, central, how):
    enrol_three(central)
    a, b = blob_of(central, "att-a"), blob_of(central, "att-b")
    if how == "flip":
        tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-b'",
               b[:40] + bytes([b[40] ^ 1]) + b[41:])
    elif how == "swap":  # each row keeps a valid blob, of the other attendee
        tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-a'", b)
        tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-b'", a)
    elif how == "truncate":
        tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-c'", a[:-1])
    elif how == "null":
        tamper(central, "UPDATE attendees SET templates = NULL WHERE id = 'att-c'")
    elif how == "text":
        tamper(central, "UPDATE attendees SET templates = 'plain' WHERE id = 'att-c'")
    else:  # the same attendee id, sealed under another venue's key
        other = atrest.TemplateBox(os.urandom(32), venue=VENUE, event=EVENT)
        tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-c'",
               other.seal("att-c", np.zeros(2 * DIM, np.float32).tobytes()))
    no_snapshot_published(site, central)


@FIXED
@given(index=st.integers(0, 2 * DIM * 4 + 28), mask=st.integers(1, 255))
def test_every_byte_of_a_stored_blob_is_checked(central, index, mask):
    if central.db.execute("SELECT COUNT(*) FROM attendees").fetchone()[0] == 0:
        enrol_three(central)
    good = blob_of(central, "att-b")
    assert len(good) == 2 * DIM * 4 + 29
    bad = good[:index] + bytes([good[index] ^ mask]) + good[index + 1:]
    tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-b'", bad)
    try:
        with pytest.raises(StoreError) as err:
            central.snapshot("gate-2")
        one_line(err.value)
    finally:
        tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-b'", good)


def test_a_wrong_key_is_refused_at_open_in_one_line(site, central, capsys):
    enrol_three(central)
    central.close()
    key_file = site.dir / "central" / "db.key"
    good = key_file.read_bytes()
    try:
        key_file.write_bytes(os.urandom(32))
        with pytest.raises(DataKeyError) as err:
            Central(site.dir, port=site.broker.port)
        assert "written under another central-db-key" in one_line(err.value)
        assert isinstance(err.value, CentralError)
        for command in (["events", str(site.dir)], ["receipts", str(site.dir)],
                        ["snapshot", str(site.dir), "--port", str(site.broker.port)]):
            assert main(command) == 1
            err_text = capsys.readouterr().err
            assert err_text.count("\n") == 1 and "another central-db-key" in err_text, err_text
            assert "Traceback" not in err_text
    finally:
        key_file.write_bytes(good)
    reopened = Central(site.dir, port=site.broker.port)  # the right key opens it again
    reopened.close()


def test_a_missing_or_loose_key_via_the_command_line_is_one_line(site, central, capsys):
    central.close()
    key_file = site.dir / "central" / "db.key"
    key_file.chmod(0o640)
    try:
        assert main(["events", str(site.dir)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.strip().endswith("is open to others; chmod 0600")
        key_file.chmod(0o600)
        moved = key_file.with_name("db.key.away")
        key_file.rename(moved)
        try:
            assert main(["events", str(site.dir)]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "no central-db-key" in err
        finally:
            moved.rename(key_file)
    finally:
        key_file.chmod(0o600)
    assert main(["events", str(site.dir)]) == 0


def test_a_tampered_blob_via_the_command_line_is_one_line(site, central, capsys):
    enrol_three(central)
    b = blob_of(central, "att-b")
    tamper(central, "UPDATE attendees SET templates = ? WHERE id = 'att-a'", b)
    central.close()
    assert main(["snapshot", str(site.dir), "--port", str(site.broker.port),
                 "--gate", "gate-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not decrypt" in err and "att-" not in err, err


def test_a_database_from_before_encryption_is_refused_not_migrated(venue):
    # The old layout: float32 templates in the clear, no key check.
    db = sqlite3.connect(venue / "central" / "central.db")
    db.executescript("CREATE TABLE attendees (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
                     "valid_until INTEGER NOT NULL, templates BLOB, revoked INTEGER NOT NULL "
                     "DEFAULT 0);")
    db.execute("INSERT INTO attendees VALUES ('att-1', 1, 9999999999, ?, 0)",
               (random_unit(np.random.default_rng(1), 1).tobytes(),))
    db.commit()
    db.close()
    with pytest.raises(StoreError) as err:
        Central(venue)
    assert "before encryption at rest; there is no migration" in one_line(err.value)


def test_an_empty_old_database_just_gets_the_key_check(venue):
    db = sqlite3.connect(venue / "central" / "central.db")
    db.execute("CREATE TABLE out_seq (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
    db.commit()
    db.close()
    Central(venue).close()
    (venue / "central" / "db.key").write_bytes(os.urandom(32))
    with pytest.raises(DataKeyError):
        Central(venue)
