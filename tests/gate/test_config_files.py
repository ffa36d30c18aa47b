"""Config files that are not what they should be: devices, FIFOs, folders, sockets, links
to those, files too big, not UTF-8, not TOML, nested without end. Each is one line and
exit 3 in ``gatectl config check``, in every command that loads the config (``--config``
and ``$GATE_CONFIG``) and in ``gatectl run``; nothing is read past the limit."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate import config as config_mod
from gate.cli.main import main
from gate.configcheck import MAX_CONFIG_BYTES
from gate.errors import ConfigError
from gate.exitcodes import EXIT_CONFIG, EXIT_OK
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "config garbage"
LANE = '[gate]\nid = "lane-1"\nvenue = "arena"\nevent = "final"\n'
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture
def bad_files(tmp_path) -> Iterator[dict[str, tuple[Path, str]]]:
    """Config paths that must be refused, with a word the reason must contain."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.toml"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    (tmp_path / "folder.toml").mkdir()
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    sparse = tmp_path / "sparse.toml"
    with open(sparse, "wb") as fh:
        fh.truncate(4 * 1024 ** 3)  # 4 GiB announced, nothing on disk
    out = {
        "/dev/zero": (Path("/dev/zero"), "a character device"),
        "/dev/null": (Path("/dev/null"), "a character device"),
        "/dev/urandom": (Path("/dev/urandom"), "a character device"),
        "fifo": (fifo, "a FIFO"),
        "socket": (sock_path, "a socket"),
        "folder": (tmp_path / "folder.toml", "a directory"),
        "big": (big, f"exceeds the limit of {MAX_CONFIG_BYTES}"),
        "sparse": (sparse, f"exceeds the limit of {MAX_CONFIG_BYTES}"),
        "missing": (tmp_path / "missing.toml", "cannot read config"),
    }
    for name in ("/dev/zero", "fifo", "folder"):
        link = tmp_path / f"link-{name.strip('/').replace('/', '-')}.toml"
        link.symlink_to(out[name][0])
        out[f"link to {name}"] = (link, out[name][1])
    for name, data, word in (
            ("latin-1", "[gate]\nid = 'caf\xe9'\n".encode("latin-1"), "not UTF-8"),
            ("utf-16", LANE.encode("utf-16"), "not UTF-8"),
            ("binary", bytes(range(256)), "not UTF-8"),
            ("not toml", b"[gpio\nrelay_pin = 2\n", "not valid TOML"),
            ("nested arrays", b"a = " + b"[" * 200_000 + b"]" * 200_000, "not valid TOML"),
            ("nested tables", b"a = " + b"{b = " * 100_000 + b"1" + b"}" * 100_000,
             "not valid TOML"),
            ("nul", b"[gate]\nid = \"a\x00\"\n", "not valid TOML")):
        f = tmp_path / f"{name.replace(' ', '-')}.toml"
        f.write_bytes(data)
        out[name] = (f, word)
    try:
        yield out
    finally:
        sock.close()


def _one_line(text: str) -> str:
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_config_check_refuses_each_in_one_line_with_exit_3(bad_files, capsys,
                                                           ledger: Ledger):
    for name, (path, word) in bad_files.items():
        with ledger.case(CLASS):
            assert main(["config", "check", str(path)]) == EXIT_CONFIG, name
            out = capsys.readouterr().out.splitlines()
            assert out[0].startswith(f"✗ {path}: ") and word in out[0], (name, out)
            assert out[1:] == [f"{path}: 1 error"], (name, out)
            assert main(["config", "check", "--service", "--json", str(path)]) == EXIT_CONFIG
            report = json.loads(capsys.readouterr().out)
            assert [e["path"] for e in report["errors"]] == [""], name
            assert word in report["errors"][0]["reason"] and \
                "\n" not in report["errors"][0]["reason"], name


def test_every_command_that_loads_the_config_refuses_it(bad_files, capsys, monkeypatch,
                                                        ledger: Ledger):
    for name, (path, word) in bad_files.items():
        with ledger.case(CLASS):
            assert main(["--config", str(path), "models"]) == EXIT_CONFIG, name
            err = _one_line(capsys.readouterr().err)
            assert err.startswith(f"gatectl: config: {path}: ") and word in err, (name, err)
            monkeypatch.setenv("GATE_CONFIG", str(path))
            assert main(["status"]) == EXIT_CONFIG, name
            assert word in _one_line(capsys.readouterr().err), name
            monkeypatch.delenv("GATE_CONFIG")


def test_gatectl_run_refuses_each_with_exit_3_before_touching_anything(bad_files, capsys,
                                                                      ledger: Ledger):
    for name, (path, word) in bad_files.items():
        with ledger.case(CLASS):
            assert main(["--config", str(path), "run"]) == EXIT_CONFIG, name
            out = capsys.readouterr()
            # The service logs to stdout (the journal): one error line, no traceback.
            errors = [line for line in out.out.splitlines() if " ERROR " in line]
            assert "Traceback" not in out.out + out.err, name
            assert len(errors) == 1 and "config invalid" in errors[0] and word in errors[0], \
                (name, errors)
            with pytest.raises(ConfigError) as exc:
                config_mod.load_for_service(path)
            assert exc.value.path == "" and word in str(exc.value) and \
                "\n" not in str(exc.value)


def test_no_more_than_the_limit_is_ever_read(bad_files, monkeypatch, ledger: Ledger):
    read = []
    real = os.read

    def spy(fd, n):
        data = real(fd, n)
        read.append(len(data))
        return data
    monkeypatch.setattr(os, "read", spy)
    for name, (path, _) in bad_files.items():
        with ledger.case(CLASS):  # checked after each file: the most read so far
            config_mod.check(path, service=True)
            assert max(read, default=0) <= MAX_CONFIG_BYTES + 1, name


def test_a_config_at_the_limit_is_read_and_one_byte_more_is_not(tmp_path, ledger: Ledger):
    f = tmp_path / "gate.toml"
    body = LANE.encode()
    f.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body)))
    assert config_mod.load_for_service(f).gate.id == "lane-1"
    f.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body) + 1))
    with ledger.case(CLASS), pytest.raises(ConfigError, match="exceeds the limit"):
        config_mod.load_for_service(f)


def test_a_linked_config_is_followed_and_its_paths_resolve_beside_the_link(tmp_path, capsys):
    """/etc/gate/gate.toml -> /opt/… is a normal install: the link is followed, and what
    it points to is what is checked."""
    (tmp_path / "opt").mkdir()
    (tmp_path / "etc").mkdir()
    real = tmp_path / "opt" / "gate.toml"
    real.write_text(LANE + '[cache]\ndir = "state"\n')
    link = tmp_path / "etc" / "gate.toml"
    link.symlink_to(real)
    assert main(["config", "check", "--service", str(link)]) == EXIT_OK
    capsys.readouterr()
    cfg = config_mod.load_for_service(link)
    assert cfg.cache.dir == str(tmp_path / "etc" / "state")


def test_load_for_service_reads_the_file_once(tmp_path, monkeypatch):
    f = tmp_path / "gate.toml"
    f.write_text(LANE)
    opened = []
    real = os.open

    def spy(path, *a, **kw):
        opened.append(str(path))
        return real(path, *a, **kw)
    monkeypatch.setattr(os, "open", spy)
    config_mod.load_for_service(f)
    assert opened == [str(f)]


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_random_bytes_are_a_config_or_one_line_errors(tmp_path, ledger: Ledger, data):
    f = tmp_path / "fuzz.toml"
    f.write_bytes(data)
    with ledger.case(CLASS):
        for service in (False, True):
            errors = config_mod.check(f, service=service)
            assert all(isinstance(e, ConfigError) for e in errors)
            assert all("\n" not in str(e) and "\r" not in str(e) for e in errors)
            assert all(len(str(e)) < 600 for e in errors)


_SCALARS = (st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=True) | st.booleans() |
            st.text(max_size=300) | st.datetimes())
_KEYS = st.sampled_from(["gate", "models", "match", "cache", "service", "camera", "gpio",
                         "lane", "quality", "sync", "detect", "embed"]) | st.text(max_size=20)
_FIELDS = st.sampled_from(["id", "dir", "threshold", "margin", "control_socket", "source",
                           "relay_pin", "k", "n", "embedder", "central_keys", "enabled",
                           "min_brightness", "fps", "width"]) | st.text(max_size=20)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(_KEYS, st.dictionaries(_FIELDS, _VALUES, max_size=6) | _VALUES,
                           max_size=6))
def test_any_document_validates_to_one_line_errors_with_their_keys(ledger: Ledger, doc):
    with ledger.case(CLASS):
        cfg, errors = config_mod.validate(doc, base_dir=Path("/etc/gate"))
        for e in errors:
            assert isinstance(e, ConfigError)
            text = str(e)
            assert "\n" not in text and "\r" not in text and len(text) < 600, text
            assert e.path.isprintable(), e.path
        if not errors:
            assert isinstance(cfg, config_mod.Config)
