"""Fixtures of the hostile suite and the table it prints at the end of the run."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.ledger import LEDGER, Ledger


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    """The session's attack ledger."""
    return LEDGER


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the attack table when any hostile case ran."""
    if not LEDGER.tried:
        return
    terminalreporter.section("hostile input: cases tried, held, broke")
    for line in LEDGER.table():
        terminalreporter.write_line(line)


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
