"""``gatectl cache info|wipe`` and ``gatectl events pending`` on real caches and outboxes
in a temporary state directory: counts only (never an id), nothing modified by reading,
crypto-erase that really makes the cache undecryptable, and garbage of every kind."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate import config as config_mod
from gate.cli.main import main
from gate.exitcodes import EXIT_CANCELLED, EXIT_FAIL, EXIT_OK, EXIT_SERVICE
from gate.link.state import SyncState
from gate.match.cache import Status
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE
from gate.service.control import ControlServer, Handler
from gate.templates import Templates
from sync.templates import Enrolment
from tests.support import DAY, KEK, TKEY, open_store, random_unit

SECRET = "secret-attendee"  # every id in these tests contains it; no output may
RNG = np.random.default_rng(5)


@pytest.fixture
def conf(tmp_path) -> Path:
    """A config file with key files (0600), a state dir and a control socket nobody
    answers on."""
    keys = tmp_path / "keys"
    keys.mkdir()
    # The tests' keys, so that tests.support.open_store builds the same cache as gatectl.
    for name, key in (("cache.key", KEK), ("template.key", TKEY)):
        (keys / name).write_text(key.hex())
        (keys / name).chmod(0o600)
    f = tmp_path / "gate.toml"
    f.write_text('[gate]\nid = "gate-7"\nvenue = "venue-x"\nevent = "event-y"\n'
                 f'[cache]\ndir = "{tmp_path / "state"}"\n'
                 f'key_file = "{keys / "cache.key"}"\n'
                 f'template_key_file = "{keys / "template.key"}"\n'
                 f'[service]\ncontrol_socket = "{tmp_path / "none.sock"}"\n')
    return f


def _store(conf: Path, clock: Callable[[], float] = time.time) -> Templates:
    """The gate's cache and matcher as the service builds them from ``conf`` (its
    identity, state dir and calibrated threshold), loaded."""
    cfg = config_mod.load(conf)
    templates = open_store(Path(cfg.cache.dir), clock=clock, cfg=cfg)
    templates.cache.load()
    return templates


def _status(conf: Path) -> Status:
    """What the gate's own load of the cache finds (a load may write: purge, repair)."""
    templates = _store(conf)
    try:
        return templates.cache.status()
    finally:
        templates.close()


@pytest.fixture
def state(conf) -> Path:
    """A cache with 6 attendees (1-3 templates each), then one revoked: a snapshot and a
    journal entry."""
    cache = _store(conf).cache
    now = int(time.time())
    cache.upsert([Enrolment(f"{SECRET}-{i}", 1, now + (i + 2) * DAY, random_unit(RNG, 1 + i % 3))
                  for i in range(6)])
    cache.revoke(f"{SECRET}-0", 2)
    cache.close()
    return Path(config_mod.load(conf).cache.dir)


def snapshot(directory: Path) -> dict[str, str]:
    """Every file's name and content hash (side files of SQLite included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def gatectl(conf: Path, *argv: str) -> int:
    return main(["--config", str(conf), *argv])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("gatectl: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def service() -> Iterator[Callable[[dict[str, Any]], tuple[Path, list[str]]]]:
    """Start a control server with the given handlers; returns its socket and the log of
    commands it received."""
    servers: list[ControlServer] = []

    def start(handlers: dict[str, Any]) -> tuple[Path, list[str]]:
        sock = Path(tempfile.mkdtemp(prefix="g", dir="/tmp")) / "c.sock"
        calls: list[str] = []

        def logged(name: str, handler: Handler) -> Handler:
            def answer(params: dict[str, Any]) -> dict[str, Any]:
                calls.append(name)
                return dict(handler(params))
            return answer
        server = ControlServer(sock, {n: logged(n, h) for n, h in handlers.items()})
        server.start()
        servers.append(server)
        return sock, calls

    yield start
    for server in servers:
        server.stop()
        server.path.parent.rmdir()


def _point_at(conf: Path, sock: Path) -> None:
    conf.write_text(conf.read_text().replace(
        str(conf.parent / "none.sock"), str(sock)))


# --- cache info ----------------------------------------------------------------------------


def test_info_counts_what_the_store_holds_and_changes_nothing(conf, state, capsys):
    templates = _store(conf)
    expected = templates.cache.status()
    threshold = templates.matcher.threshold
    templates.close()
    before = snapshot(state)
    assert gatectl(conf, "cache", "info", "--json") == EXIT_OK
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["source"] == "files" and info["state"] == "ok"
    assert (info["attendees"], info["templates"], info["version"], info["tombstones"]) == \
        (expected.attendees, expected.templates, expected.version, 1) == (5, 11, 2, 1)
    assert info["threshold"] == pytest.approx(threshold, abs=1e-4)
    assert info["valid_until_max"] == expected.valid_until
    assert info["expired"] == 0 and info["key_source"].startswith("file ")
    assert set(info["files"]) == {CACHE_FILE, JOURNAL_FILE, KEY_FILE}
    assert info["bytes"] == sum((state / n).stat().st_size for n in info["files"])
    assert SECRET not in out
    assert snapshot(state) == before


def test_info_human_output(conf, state, capsys):
    assert gatectl(conf, "cache", "info") == EXIT_OK
    out = capsys.readouterr().out
    assert "read from the files; the service is not running" in out
    assert "attendees    5 (11 templates; 1 revoked, kept as tombstones)" in out
    assert "version      2" in out and "next purge" in out and "key          file " in out
    assert SECRET not in out


def test_info_reads_without_the_repairs_a_load_would_make(conf, tmp_path, capsys):
    """A torn journal tail and an expired attendee: the gate's load truncates the one and
    purges the other (writing), ``cache info`` reports both and leaves every byte."""
    past = time.time() - 10 * DAY
    cache = _store(conf, clock=lambda: past).cache
    cache.upsert([Enrolment(f"{SECRET}-old", 1, int(past) + DAY, random_unit(RNG, 2))])
    cache.upsert([Enrolment(f"{SECRET}-new", 1, int(time.time()) + 30 * DAY, random_unit(RNG, 1))])
    cache.close()
    directory = tmp_path / "state"
    with open(directory / JOURNAL_FILE, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x02")  # a record cut short by a power cut
    before = snapshot(directory)
    assert gatectl(conf, "cache", "info", "--json") == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert (info["attendees"], info["templates"], info["expired"]) == (1, 1, 1)
    assert snapshot(directory) == before
    # The contrast that makes this test meaningful: the store's own load does write
    # (here a purge entry in the journal, which ``info`` then replays like the store).
    assert _status(conf).attendees == 1
    assert snapshot(directory) != before
    assert gatectl(conf, "cache", "info", "--json") == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert (info["attendees"], info["expired"], info["version"]) == (1, 0, 3)


def test_info_of_an_empty_state_dir(conf, tmp_path, capsys):
    (tmp_path / "state").mkdir()
    assert gatectl(conf, "cache", "info", "--json") == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["state"] == "empty" and info["attendees"] == 0 and info["files"] == {}
    assert list((tmp_path / "state").iterdir()) == []


def test_info_of_a_corrupted_cache_fails_in_one_line_and_leaves_it(conf, state, capsys):
    data = bytearray((state / CACHE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (state / CACHE_FILE).write_bytes(bytes(data))
    before = snapshot(state)
    assert gatectl(conf, "cache", "info") == EXIT_FAIL
    err = one_line_error(capsys)
    assert "cache invalid" in err and "authentication failed" in err
    assert snapshot(state) == before


def test_info_of_a_cache_from_another_key(conf, state, tmp_path, capsys):
    key = tmp_path / "keys" / "cache.key"
    key.write_text(os.urandom(32).hex())
    assert gatectl(conf, "cache", "info", "--json") == EXIT_FAIL
    assert json.loads(capsys.readouterr().out)["state"] == "invalid"


def test_info_without_the_state_dir_does_not_create_it(conf, tmp_path, capsys):
    assert gatectl(conf, "cache", "info") == EXIT_FAIL
    assert "does not exist" in one_line_error(capsys)
    assert not (tmp_path / "state").exists()


def test_info_without_a_usable_key_is_locked(conf, state, tmp_path, capsys):
    (tmp_path / "keys" / "cache.key").chmod(0o644)
    assert gatectl(conf, "cache", "info", "--json") == EXIT_FAIL
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert info["state"] == "locked" and info["attendees"] is None
    assert info["files"] and "chmod 0600" in captured.err


def test_info_asks_the_running_service(conf, state, service, capsys):
    cache = {"state": "ok", "valid": True, "reason": None, "version": 41, "templates": 1234,
             "attendees": 600, "valid_until_max": 1_900_000_000, "next_expiry": 1_899_000_000,
             "threshold": 0.62}
    sock, calls = service({"status": lambda _p: {"state": "idle", "cache": cache}})
    _point_at(conf, sock)
    assert gatectl(conf, "cache", "info", "--json") == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert calls == ["status"] and info["source"] == "service"
    assert (info["version"], info["templates"], info["attendees"]) == (41, 1234, 600)
    assert info["threshold"] == 0.62 and info["bytes"] > 0
    assert gatectl(conf, "cache", "info") == EXIT_OK
    assert "from the running service" in capsys.readouterr().out


def test_info_of_an_invalid_cache_in_the_service_exits_1(conf, state, service, capsys):
    sock, _ = service({"status": lambda _p: {"cache": {"state": "invalid", "valid": False,
                                                       "reason": "tampered"}}})
    _point_at(conf, sock)
    assert gatectl(conf, "cache", "info") == EXIT_FAIL
    assert "cache invalid: tampered" in one_line_error(capsys)


# --- cache wipe ----------------------------------------------------------------------------


def test_wipe_makes_the_cache_undecryptable(conf, state, capsys):
    old_cache = (state / CACHE_FILE).read_bytes()
    assert gatectl(conf, "cache", "wipe", "-y") == EXIT_OK
    assert "crypto-erased" in capsys.readouterr().out
    assert not any((state / n).exists() for n in (KEY_FILE, CACHE_FILE, JOURNAL_FILE))
    assert _status(conf).state == "empty"
    # The old file brought back has nothing left to decrypt it with.
    (state / CACHE_FILE).write_bytes(old_cache)
    st = _status(conf)
    assert st.state == "invalid" and "without its data key" in st.reason


def test_declined_wipe_erases_nothing(conf, state, monkeypatch, capsys):
    before = snapshot(state)
    assert gatectl(conf, "cache", "wipe") == EXIT_CANCELLED  # no terminal: not confirmed
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _q: "no")
    assert gatectl(conf, "cache", "wipe") == EXIT_CANCELLED
    assert capsys.readouterr().out.count("nothing was erased") == 2
    assert snapshot(state) == before
    assert _status(conf).attendees == 5


def test_wipe_goes_through_the_running_service(conf, state, service, capsys):
    sock, calls = service({"status": lambda _p: {"cache": {"state": "ok"}},
                           "cache-wipe": lambda _p: {"erased": True}})
    _point_at(conf, sock)
    before = snapshot(state)
    assert gatectl(conf, "cache", "wipe", "-y", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"by": "service", "erased": True,
                                                   "files": []}
    assert calls[-1] == "cache-wipe"
    assert snapshot(state) == before  # the service does it, not gatectl behind its back


def test_wipe_fails_when_the_service_does_not_confirm(conf, state, service, capsys):
    sock, _ = service({"status": lambda _p: {}, "cache-wipe": lambda _p: {"erased": False}})
    _point_at(conf, sock)
    assert gatectl(conf, "cache", "wipe", "-y") == EXIT_SERVICE
    assert "did not confirm" in one_line_error(capsys)


def test_wipe_without_a_cache_or_state_dir(conf, tmp_path, capsys):
    assert gatectl(conf, "cache", "wipe", "-y") == EXIT_FAIL
    assert "does not exist" in one_line_error(capsys)
    assert not (tmp_path / "state").exists()
    (tmp_path / "state").mkdir()
    assert gatectl(conf, "cache", "wipe", "-y") == EXIT_OK
    assert "nothing to erase" in capsys.readouterr().out


def test_wipe_needs_no_key(conf, state, tmp_path):
    """A stopped production gate's key is a systemd credential gatectl cannot read."""
    (tmp_path / "keys" / "cache.key").unlink()
    assert gatectl(conf, "cache", "wipe", "-y") == EXIT_OK
    assert not (state / KEY_FILE).exists()


# --- events pending ------------------------------------------------------------------------


def _outbox(directory: Path) -> SyncState:
    db = SyncState(directory / "sync.db")
    for i in range(3):
        db.enqueue(f"ev-{i}", "gate/v1/venue-x/gate-7/events",
                   json.dumps({"attendee": f"{SECRET}-{i}"}).encode())
    db.enqueue("rc-1", "gate/v1/venue-x/gate-7/receipts", f'{{"a": "{SECRET}"}}'.encode())
    db.enqueue("odd-1", "not/a/gate/topic", b"x")
    db.ack("ev-2")
    return db


def _age_oldest(directory: Path, seconds: float) -> None:
    with sqlite3.connect(directory / "sync.db") as db:
        db.execute("UPDATE outbox SET created_ms = ? WHERE id = 'ev-0'",
                   (int((time.time() - seconds) * 1000),))
    db.close()


def test_pending_counts_kinds_and_age_without_ids_or_payloads(conf, tmp_path, capsys):
    directory = tmp_path / "state"
    _outbox(directory).close()
    _age_oldest(directory, 3600)
    before = snapshot(directory)
    assert gatectl(conf, "events", "pending", "--json") == EXIT_OK
    out = capsys.readouterr().out
    p = json.loads(out)
    assert p["depth"] == 4 and p["kinds"] == {"events": 2, "receipts": 1, "unknown": 1}
    assert p["oldest_age_s"] == pytest.approx(3600, abs=30)
    assert SECRET not in out and "ev-0" not in out and "rc-1" not in out
    assert snapshot(directory) == before  # no -wal/-shm side files either
    assert gatectl(conf, "events", "pending") == EXIT_OK
    human = capsys.readouterr().out
    assert "4 messages waiting" in human and "oldest     60 min ago" in human
    assert "events     2" in human and SECRET not in human


def test_pending_beside_a_running_writer_sees_its_wal(conf, tmp_path, capsys):
    directory = tmp_path / "state"
    db = _outbox(directory)  # still open, as the service holds it: pages in the WAL
    try:
        assert (directory / "sync.db-wal").exists()
        assert gatectl(conf, "events", "pending", "--json") == EXIT_OK
        assert json.loads(capsys.readouterr().out)["depth"] == 4
    finally:
        db.close()


def test_pending_without_an_outbox_or_state_dir(conf, tmp_path, capsys):
    assert gatectl(conf, "events", "pending") == EXIT_FAIL
    assert "does not exist" in one_line_error(capsys)
    assert not (tmp_path / "state").exists()
    (tmp_path / "state").mkdir()
    assert gatectl(conf, "events", "pending", "--json") == EXIT_OK
    p = json.loads(capsys.readouterr().out)
    assert p["depth"] == 0 and p["exists"] is False
    assert list((tmp_path / "state").iterdir()) == []


def test_pending_on_a_garbage_outbox_fails_in_one_line(conf, tmp_path, capsys):
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / "sync.db").write_bytes(b"this is not a database" * 100)
    before = snapshot(directory)
    assert gatectl(conf, "events", "pending") == EXIT_FAIL
    assert "cannot read the outbox" in one_line_error(capsys)
    assert snapshot(directory) == before
