"""The hostile suite's ledger: every attack case tried, and whether the gate held.

Each test records its cases under a *class* of attack (``ledger.record(CLASS, held)``)
before asserting on them, so a broken case is both a failing test and a row of the table
that ``make attack`` (and ``make test``) prints at the end: class, cases tried, held,
broke.
"""

from __future__ import annotations

import threading
from collections import defaultdict

#: The classes of attack, in the order the table shows them.
CLASSES = (
    "mqtt poison (gate certificate)",
    "mqtt poison (central's key)",
    "mqtt flood",
    "broker identity",
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
