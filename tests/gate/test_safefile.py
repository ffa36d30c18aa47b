"""Reading what a path names, without trusting it: regular files only, bounded, once."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.safefile import kind, open_regular, read_regular, shown
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "unbounded local files"


class RefusedError(Exception):
    pass


def read(path: str | Path, limit: int = 1000) -> bytes:
    return read_regular(path, limit=limit, what="thing", fail=RefusedError)


@pytest.fixture
def specials(tmp_path) -> Iterator[dict[str, Path]]:
    """One of each kind of thing a path can name that is not a regular file, and links
    to them."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    folder = tmp_path / "folder"
    folder.mkdir()
    things = {"fifo": fifo, "socket": sock_path, "folder": folder,
              "zero": Path("/dev/zero"), "null": Path("/dev/null"),
              "urandom": Path("/dev/urandom")}
    for name, target in list(things.items()):
        link = tmp_path / f"link-to-{name}"
        link.symlink_to(target)
        things[f"link-to-{name}"] = link
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    things["loop"] = loop
    try:
        yield things
    finally:
        sock.close()


def test_only_regular_files_are_read_and_nothing_else_is_even_opened(specials, monkeypatch,
                                                                      ledger: Ledger):
    opened: list[str] = []
    real_open = os.open

    def spy(path, *a, **kw):
        opened.append(str(path))
        return real_open(path, *a, **kw)
    monkeypatch.setattr(os, "open", spy)
    for name, path in specials.items():
        with ledger.case(CLASS):
            with pytest.raises(RefusedError) as err:
                read(path)
            message = str(err.value)
            assert "\n" not in message and \
                message.startswith(("thing is ", "cannot read thing")), (name, message)
            if name != "loop":
                assert "not a regular file" in message, (name, message)
            # /dev/watchdog would arm on open: a device is refused from its stat alone.
            assert opened == [], name


def test_a_link_to_a_regular_file_is_followed(tmp_path):
    target = tmp_path / "real.toml"
    target.write_bytes(b"x = 1\n")
    link = tmp_path / "gate.toml"
    link.symlink_to(target)
    assert read(link) == b"x = 1\n"
    chain = tmp_path / "chain"
    chain.symlink_to(link)
    assert read(chain) == b"x = 1\n"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 300), limit=st.integers(0, 300))
def test_the_limit_is_exact(tmp_path, ledger: Ledger, size, limit):
    f = tmp_path / "f"
    f.write_bytes(bytes(range(256)) * 2 * (size // 512 + 1))
    with open(f, "r+b") as fh:
        fh.truncate(size)
    with ledger.case(CLASS):
        if size <= limit:
            assert read(f, limit) == f.read_bytes()
        else:
            with pytest.raises(RefusedError,
                               match=f"of {size} bytes exceeds the limit of {limit}"):
                read(f, limit)


def test_a_big_file_is_refused_without_reading_it(tmp_path, monkeypatch, ledger: Ledger):
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(5 * 1024 * 1024)  # sparse: cheap
    reads: list[int] = []
    real_read = os.read

    def spy(fd, n):
        reads.append(n)
        return real_read(fd, n)
    monkeypatch.setattr(os, "read", spy)
    with ledger.case(CLASS):
        with pytest.raises(RefusedError, match="exceeds"):
            read(big, 1024)
        assert reads == []


def test_a_file_larger_than_its_size_says_is_cut_at_limit_plus_one(monkeypatch,
                                                                    ledger: Ledger):
    """/proc files say 0 bytes; whatever a file says, no more than limit + 1 bytes are
    read and the file is refused."""
    reads: list[int] = []
    real_read = os.read

    def spy(fd, n):
        data = real_read(fd, n)
        reads.append(len(data))
        return data
    monkeypatch.setattr(os, "read", spy)
    status = Path("/proc/self/status")
    assert os.stat(status).st_size == 0 and len(status.read_bytes()) > 64
    with ledger.case(CLASS):
        with pytest.raises(RefusedError, match="grew past the limit of 64"):
            read(status, 64)
        assert sum(reads) == 65
    reads.clear()
    assert read(status, 1 << 20).startswith(b"Name:")  # under the limit: read whole


def test_missing_and_unreadable(tmp_path, ledger: Ledger):
    with ledger.case(CLASS), \
            pytest.raises(RefusedError, match=r"cannot read thing \(No such file or directory\)"):
        read(tmp_path / "nope")
    with ledger.case(CLASS), pytest.raises(RefusedError, match="NUL byte"):
        read(str(tmp_path / "a\x00b"))
    (tmp_path / "file").write_text("x")
    with ledger.case(CLASS), pytest.raises(RefusedError, match="Not a directory"):
        read(tmp_path / "file" / "below")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked"
        locked.write_text("x")
        locked.chmod(0)
        with ledger.case(CLASS), pytest.raises(RefusedError, match="Permission denied"):
            read(locked)


def test_open_regular_gives_a_descriptor_of_the_checked_file(tmp_path, ledger: Ledger):
    f = tmp_path / "clip.avi"
    f.write_bytes(b"RIFF")
    fd = open_regular(f, what="video", fail=RefusedError)
    try:
        assert os.read(fd, 10) == b"RIFF"
    finally:
        os.close(fd)
    with ledger.case(CLASS), \
            pytest.raises(RefusedError, match="video is a character device, not a regular file"):
        open_regular("/dev/zero", what="video", fail=RefusedError)


def test_kinds_and_shown_paths(tmp_path):
    assert kind(os.stat(tmp_path).st_mode) == "a directory"
    assert kind(os.stat("/dev/null").st_mode) == "a character device"
    assert shown(tmp_path / "gate.toml") == str(tmp_path / "gate.toml")
    odd = shown("/etc/ga\nte.toml")
    assert "\n" not in odd and "\\n" in odd
