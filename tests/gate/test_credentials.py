"""Key material: credentials first, strict key files, ephemeral only when allowed;
crash-safe writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gate.credentials import load_key
from gate.errors import KeyMaterialError
from gate.match import atomic

RAW = bytes(range(32))


def _key_file(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_credential_wins_over_key_file(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cache-key").write_bytes(RAW)
    other = _key_file(tmp_path / "k", bytes(32))
    key = load_key("cache-key", key_file=other, credentials_dir=str(creds))
    assert key.material == RAW and key.source == "credential cache-key"
    assert RAW.hex() not in repr(key)


def test_hex_key_file_with_newline(tmp_path):
    f = _key_file(tmp_path / "k", (RAW.hex() + "\n").encode())
    assert load_key("cache-key", key_file=f, credentials_dir="").material == RAW


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    f = _key_file(tmp_path / "k", RAW, mode)
    with pytest.raises(KeyMaterialError, match="chmod 0600") as err:
        load_key("cache-key", key_file=f, credentials_dir="")
    assert "\n" not in str(err.value) and RAW.hex() not in str(err.value)


def test_key_file_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    f = _key_file(tmp_path / "k", RAW)
    os.chown(f, 4321, 4321)
    with pytest.raises(KeyMaterialError, match="owned by uid 4321"):
        load_key("cache-key", key_file=f, credentials_dir="")


def test_symlinked_or_missing_key_file_is_refused(tmp_path):
    real = _key_file(tmp_path / "real", RAW)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(KeyMaterialError, match="regular file"):
        load_key("cache-key", key_file=link, credentials_dir="")
    with pytest.raises(KeyMaterialError, match="not found"):
        load_key("cache-key", key_file=tmp_path / "nope", credentials_dir="")


@pytest.mark.parametrize("content", [b"", b"short", b"z" * 64, RAW + b"x", b"\x00" * 33])
def test_malformed_keys_are_refused(tmp_path, content):
    f = _key_file(tmp_path / "k", content)
    with pytest.raises(KeyMaterialError, match="32 raw bytes or 64 hex digits"):
        load_key("cache-key", key_file=f, credentials_dir="")


def test_no_key_is_an_error_unless_ephemeral_is_allowed(caplog):
    with pytest.raises(KeyMaterialError, match="systemd credential cache-key"):
        load_key("cache-key", credentials_dir="")
    caplog.set_level(logging.WARNING)
    a = load_key("cache-key", allow_ephemeral=True, credentials_dir="")
    b = load_key("cache-key", allow_ephemeral=True, credentials_dir="")
    assert a.source == "ephemeral" and a.material != b.material
    assert "demo/dev only" in caplog.text and a.material.hex() not in caplog.text


def test_atomic_write_failure_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f"
    atomic.atomic_write(target, [b"old"])
    assert oct(target.stat().st_mode & 0o777) == "0o600"

    def power_cut(*args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        atomic.atomic_write(target, [b"new", b" contents"])
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_destroy_overwrites_then_removes(tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 100)
    atomic.destroy(target)
    assert not target.exists()
    atomic.destroy(target)  # already gone: fine
