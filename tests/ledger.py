"""The hostile suite's ledger: every attack case tried, and whether the gate held.

Each test records its cases under a *class* of attack (``ledger.record(CLASS, held)``)
before asserting on them, so a broken case is both a failing test and a row of the table
that ``make attack`` (and ``make test``) prints at the end: class, cases tried, held,
broke. A case checked by many assertions (a helper full of them, a scenario) is tried in
``with ledger.case(CLASS):`` instead: held if the block returns, broke if it raises.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis.errors import StopTest, UnsatisfiedAssumption

#: What ends a block without a verdict on the case: a skip, hypothesis discarding the
#: example (``assume``, an exhausted draw), an interrupt.
_NO_VERDICT = (pytest.skip.Exception, StopTest, UnsatisfiedAssumption, KeyboardInterrupt)

#: The classes of attack, in the order the table shows them.
CLASSES = (
    "mqtt poison (gate certificate)",
    "mqtt poison (central's key)",
    "mqtt flood",
    "broker identity",
    "link supervision",
    "journal and cache damage",
    "outbox damage",
    "disk full",
    "unbounded local files",
    "bad frames",
    "config garbage",
)


class Ledger:
    """Counts of cases tried and held, per class (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tried: dict[str, int] = defaultdict(int)
        self.held: dict[str, int] = defaultdict(int)

    def record(self, cls: str, held: bool, n: int = 1) -> bool:
        """Note ``n`` cases of ``cls``; returns ``held`` for the caller's assertion."""
        if cls not in CLASSES:
            raise ValueError(f"unknown attack class {cls!r}")
        with self._lock:
            self.tried[cls] += n
            if held:
                self.held[cls] += n
        return held

    @contextmanager
    def case(self, cls: str, n: int = 1) -> Iterator[None]:
        """Try ``n`` cases of ``cls`` in the block, which asserts on them: recorded held
        when it returns, broke when it raises (a failed assertion, ``pytest.fail``, an
        error), and the exception goes on; a skip records nothing."""
        if cls not in CLASSES:
            raise ValueError(f"unknown attack class {cls!r}")
        try:
            yield
        except BaseException as exc:
            if not isinstance(exc, _NO_VERDICT):
                self.record(cls, False, n)
            raise
        self.record(cls, True, n)

    def table(self) -> list[str]:
        """The lines of the summary table."""
        width = max(len(c) for c in CLASSES)
        lines = [f"{'class':<{width}}  {'tried':>7}  {'held':>7}  {'broke':>7}"]
        for cls in CLASSES:
            tried, held = self.tried.get(cls, 0), self.held.get(cls, 0)
            if tried:
                lines.append(f"{cls:<{width}}  {tried:>7}  {held:>7}  {tried - held:>7}")
        total_t, total_h = sum(self.tried.values()), sum(self.held.values())
        lines.append(f"{'all':<{width}}  {total_t:>7}  {total_h:>7}  {total_t - total_h:>7}")
        return lines


LEDGER = Ledger()
