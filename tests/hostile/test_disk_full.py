"""A full disk under the outbox: nothing lost, nothing corrupted, all written later.

The outbox lives on a real tmpfs of a few hundred kilobytes. Entry events keep coming
while it is full: the link keeps what SQLite cannot take in RAM, in order, says so in its
health line, and writes everything once space returns. (The template cache's own
disk-full behaviour is in ``tests/gate/match/``.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gate.sim.venue import lone_gate
from sync.templates import Enrolment
from tests.ledger import Ledger
from tests.linkrig import Rig
from tests.support import DAY, protector, random_unit

pytestmark = pytest.mark.hostile

CLASS = "disk full"


def _fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem with one file."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast


def test_entry_events_wait_in_ram_while_the_disk_is_full_and_none_is_lost(
        tiny_fs, ledger: Ledger):
    state_dir = tiny_fs(4 << 20)
    gate = lone_gate(state_dir)
    link = gate.link
    try:
        for k in range(20):
            link.publish_event(f"att-{k}", at=1_800_000_000.0 + k)
        ballast = _fill(state_dir)
        ids = [link.publish_event(f"att-{k}", at=1_800_000_100.0 + k) for k in range(300)]
        waiting = link.outbox_depth()
        health = link.health()
        held = waiting == 320 and any("waiting in RAM" in h for h in health)
        # Anti-passback still sees the entries that wait in RAM.
        held = held and link.entered_since("att-299", 1_800_000_000.0) != []
        os.unlink(ballast)
        left = link.retry_backlog()
        rows = {m for m, _, _ in link.state.pending(1000)}
        held = held and left == 0 and set(ids) <= rows and link.state.depth() == 320
        assert ledger.record(CLASS, held, n=300), (waiting, health, left, len(rows))
    finally:
        gate.close()


def test_a_deletion_receipt_waits_until_the_revocation_is_on_disk(tiny_fs, make_store,
                                                                   ledger: Ledger, clock):
    """A receipt is proof of deletion: while the disk is full the revocation is enforced
    in RAM at once, but the signed receipt goes out only when it has reached the disk."""
    directory = tiny_fs(4 << 20)
    rig = Rig(make_store(directory / "cache"), directory, clock)
    try:
        face = random_unit(np.random.default_rng(2))
        until = int(clock() + 2 * DAY)
        rig.upsert([Enrolment("att-0", 1, until, protector().protect(face)[None])])
        receipts = len(rig.receipts)
        ballast = _fill(directory)
        # Enough revocations that their journal record needs new blocks of the full disk
        # (a small one could still fit in the journal's last, partly used block).
        items = [{"attendee": f"att-{k}", "seq": 2} for k in range(200)]
        rig.send(*rig.central.message("revocations", "revoke", {"items": items}))
        enforced = rig.matcher.identify(face).attendee is None and "att-0" not in rig.cache
        waiting = len(rig.receipts) == receipts and rig.handler.unproven == 200
        os.unlink(ballast)
        rig.cache.flush_pending()
        rig.handler.prove()
        proven = len(rig.receipts) == receipts + 200 and \
            {r["kind"] for r in rig.receipts[receipts:]} == {"deleted"}
        held = enforced and waiting and proven and rig.handler.unproven == 0
        assert ledger.record(CLASS, held), (enforced, waiting, proven)
    finally:
        rig.state.close()
