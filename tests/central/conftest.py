"""Helpers for the reference central's tests: a venue with its real Mosquitto, a gate's
signed messages, and the scan for embedding-shaped vectors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.pki import init_venue
from sync import messages
from tests import broker as tb
from tests.support import DIM

VENUE, EVENT, GATES = "arena", "final-2026", ("gate-1", "gate-2")
T = f"gate/v1/{VENUE}"


def wait_for(condition: Callable[[], object], timeout: float = 10.0,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def unit_vectors(data: bytes, dim: int = DIM) -> int:
    """How many ``dim``-float, unit-length float32 vectors (any alignment) ``data`` holds:
    what a template looks like in memory (the scan of tests/system/test_privacy_session)."""
    found = 0
    for offset in range(4):
        usable = (len(data) - offset) // 4 * 4
        if usable < dim * 4:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            v = np.frombuffer(data, "<f4", usable // 4, offset).astype(np.float64)
        ok = np.isfinite(v) & (np.abs(v) < 1.0)
        sq = np.where(ok, v * v, 10.0)
        c = np.concatenate([[0.0], np.cumsum(sq)])
        window = c[dim:] - c[:-dim]
        found += int(np.sum(np.abs(window - 1.0) < 1e-3))
    return found


def gate_key(venue: Path, gate: str) -> Ed25519PrivateKey:
    """The gate's own signing key, as provisioned by init-venue."""
    return Ed25519PrivateKey.from_private_bytes(
        (venue / "gates" / gate / "credentials" / "sign-key").read_bytes())


def signed(venue: Path, gate: str, kind: str, body: dict[str, Any], *, seq: int,
           mtype: str | None = None) -> bytes:
    """A message as ``gate`` would sign it (its key, its kid) on its ``kind`` topic."""
    topic = messages.topic(VENUE, gate, kind)
    mtype = mtype or {"events": "event", "receipts": "receipt", "status": "status"}[kind]
    return messages.sign(topic, mtype=mtype, seq=seq, ts_ms=int(time.time() * 1000),
                         kid=gate, body=body, key=gate_key(venue, gate))


def event_body(gate: str, attendee: str = "att-1") -> dict[str, Any]:
    return {"event_id": messages.uuid7(), "attendee": attendee, "gate": gate,
            "at": int(time.time() * 1000)}


@dataclass
class Site:
    """A venue directory and its running broker."""

    dir: Path
    broker: tb.Broker


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One venue (init_venue) and its Mosquitto for the whole module."""
    d = tmp_path_factory.mktemp("central") / "venue"
    init_venue(d, venue=VENUE, event=EVENT, gates=GATES)
    b = tb.Broker(d).start()
    yield Site(d, b)
    b.stop()
