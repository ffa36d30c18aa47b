"""Logging for the gate: journald-ready lines, ``key=value`` fields, no personal data.

Under systemd, stdout goes to the journal, and a ``<N>`` prefix (sd-daemon(3)) sets each
line's priority, so ``journalctl -p warning -u gate`` works without a journald library.
Attendee ids may appear only at DEBUG (P10); images and embeddings never.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

#: syslog priorities of Python's levels.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; one line per record (tracebacks folded)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " ⏎ ")
        prio = _PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {text}"


def kv(**fields: Any) -> str:
    """``key=value`` pairs, quoting values with spaces (for grep and log shippers)."""
    out = []
    for key, value in fields.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace('"', "'") + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


def setup(level: str = "info", *, journal: bool | None = None,
          stream: TextIO | None = None) -> None:
    """Send every log line to stdout (or ``stream``), journald-style under systemd."""
    if journal is None:
        journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JournalFormatter("%(message)s") if journal else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


class Throttle:
    """Logs a kind of event at most once per ``interval_s``; the rest are counted.

    A flood of bad messages must not become a flood of log lines: the first of each kind
    is logged, later ones within the interval only counted, and the next line of that kind
    says how many were left out. Messages never carry payloads or attendee ids.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, message: str, *args: Any) -> bool:
        """Log ``message`` unless ``kind`` was logged less than ``interval_s`` ago;
        True when it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        suffix = f" (+{held} more since the last such line)" if held else ""
        self.logger.log(level, message + suffix, *args)
        return True
