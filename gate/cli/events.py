"""``gatectl events pending``: what waits in the outbox for the broker, in counts.

Entry events and receipts are written to the SQLite outbox (``sync.db`` in the state
directory) before they are published, and deleted when the broker acknowledges them. This
shows how many wait, how old the oldest is and how many of each kind (from the topic);
never a payload or a message id, which would name attendees (P10).

The database is opened read-only, so it works beside the running service and changes
nothing, not even SQLite's side files when the service is stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.config import Config
from gate.errors import GateError
from gate.link.state import STATE_FILE
from sync.errors import ProtocolError
from sync.messages import parse_topic

OUTBOX_FILE = STATE_FILE


def add_parser(sub: Any) -> None:
    """Register ``events pending``."""
    p = sub.add_parser("events", help="entry events and receipts: what waits to be sent",
                       description="The durable outbox of entry events and receipts.")
    es = p.add_subparsers(dest="events_command", metavar="ACTION")
    es.required = True
    e = es.add_parser("pending", help="outbox depth, oldest age, count per kind (no ids)",
                      description="How many messages wait for the broker, the age of the "
                                  "oldest, and how many of each kind. Reads the outbox "
                                  "read-only; works with or without the service.")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(run=run_pending)


@dataclass(frozen=True)
class Pending:
    """The outbox in counts."""

    depth: int
    oldest_ms: int | None
    kinds: dict[str, int]


def read_outbox(path: Path) -> Pending:
    """Count what waits in the outbox at ``path`` without writing anything.

    A database with no ``-wal`` file was closed cleanly and nobody writes to it, so it is
    opened as immutable (SQLite then creates no side files); otherwise read-only, which
    also counts what is still in the WAL.
    """
    if not path.exists():
        return Pending(0, None, {})
    wal = path.with_name(path.name + "-wal")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro" + \
        ("" if wal.exists() else "&immutable=1")
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise GateError(f"events: cannot open the outbox {path} ({exc})") from None
    try:
        rows = db.execute("SELECT topic, COUNT(*), MIN(created_ms) FROM outbox "
                          "GROUP BY topic").fetchall()
    except sqlite3.Error as exc:
        raise GateError(f"events: cannot read the outbox {path} ({exc})") from None
    finally:
        db.close()
    kinds: dict[str, int] = {}
    oldest: int | None = None
    for topic, count, first in rows:
        try:
            kind = parse_topic(str(topic))[2]
        except ProtocolError:
            kind = "unknown"
        kinds[kind] = kinds.get(kind, 0) + int(count)
        if first is not None:
            oldest = int(first) if oldest is None else min(oldest, int(first))
    return Pending(sum(kinds.values()), oldest, dict(sorted(kinds.items())))


def run_pending(args: argparse.Namespace, cfg: Config) -> int:
    """Print the outbox's depth, oldest age and kinds."""
    directory = Path(cfg.cache.dir)
    if not directory.is_dir():
        raise GateError(f"events: state directory {directory} does not exist (check "
                        "[cache] dir; the service creates it when it first starts)")
    path = directory / OUTBOX_FILE
    p = read_outbox(path)
    now = time.time()
    age = None if p.oldest_ms is None else max(0.0, now - p.oldest_ms / 1000)
    if args.json:
        print(json.dumps({"outbox": str(path), "exists": path.exists(), "depth": p.depth,
                          "oldest_age_s": None if age is None else round(age, 1),
                          "oldest_at": None if p.oldest_ms is None else p.oldest_ms / 1000,
                          "kinds": p.kinds}, indent=2, sort_keys=True))
        return 0
    if not path.exists():
        print(f"outbox {path}: none yet (nothing was ever queued)")
        return 0
    noun = "message" if p.depth == 1 else "messages"
    print(f"outbox {path}: {p.depth} {noun} waiting for the broker")
    if p.oldest_ms is not None and age is not None:
        at = dt.datetime.fromtimestamp(p.oldest_ms / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
        print(f"  oldest     {_age(age)} ago ({at})")
    for kind, count in p.kinds.items():
        print(f"  {kind:<10} {count}")
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
