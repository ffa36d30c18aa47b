"""Key and model files replaced by something that is not a file: one line, nothing big read.

A technician (or an attacker) with write access can swap a credential, a key file or a
model file for a FIFO (which would block a read forever), a link to ``/dev/zero`` (which
never ends) or a huge sparse file. The gate must refuse each with one line of its own
exception tree, having read at most the file's limit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gate.credentials import MAX_SECRET_BYTES, load_key
from gate.errors import GateError, KeyMaterialError, ModelError
from gate.models import manifest, read_verified
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "unbounded local files"



def _swap(path: Path, how: str) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif how == "directory":
        path.mkdir()
    elif how == "huge sparse file":
        with open(path, "wb") as f:
            f.truncate(8 << 30)
    elif how == "dangling link":
        path.symlink_to(path.with_name("nowhere"))


HOW = ["fifo", "link to /dev/zero", "directory", "huge sparse file", "dangling link"]


def _one_line(call: Callable[[], object], errors: type[Exception]) -> bool:
    try:
        call()
    except errors as exc:
        return "\n" not in str(exc) and bool(str(exc))
    except GateError:
        return False
    return False


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("where", ["credential", "key file"])
def test_a_secret_that_is_not_a_file_is_refused_in_one_line(tmp_path, ledger: Ledger,
                                                             how, where):
    creds = tmp_path / "creds"
    creds.mkdir()
    path = (creds / "cache-key") if where == "credential" else tmp_path / "cache.key"
    _swap(path, how)
    if where == "credential":
        call: Callable[[], object] = lambda: load_key(  # noqa: E731
            "cache-key", credentials_dir=str(creds))
    else:
        call = lambda: load_key("cache-key", key_file=path, credentials_dir="")  # noqa: E731
    held = _one_line(call, KeyMaterialError)
    if where == "credential" and how in ("directory", "dangling link"):
        # Not a credential file at all: the lookup passes on to "no key", also one line.
        held = _one_line(call, KeyMaterialError)
    assert ledger.record(CLASS, held), (where, how)
    assert MAX_SECRET_BYTES < 1 << 20


@pytest.mark.parametrize("how", HOW)
def test_a_model_file_that_is_not_a_file_is_refused_in_one_line(tmp_path, ledger: Ledger,
                                                                how):
    pin = manifest()["detector"]
    _swap(tmp_path / pin.name, how)
    held = _one_line(lambda: read_verified(tmp_path, "detector"), ModelError)
    assert ledger.record(CLASS, held), how
