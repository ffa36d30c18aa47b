"""Fixtures of the hostile suite (the ledger and its table are in ``tests/conftest.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mounts tmpfs filesystems of a given size (bytes) under ``tmp_path`` and unmounts
    them afterwards: real ENOSPC, not a simulation. Needs root (CI runs the suite as
    root); skips with one line where the kernel refuses the mount."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"tiny{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                               "tmpfs", str(where)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
