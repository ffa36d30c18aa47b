"""A venue on one machine for the tests: a real Mosquitto with mutual TLS, the reference
central, two gates (cache, matcher, link) and an admin client recording every message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from central.core import Central
from central.pki import init_venue
from gate.sim.venue import SimGate, open_gate
from tests import broker as tb

VENUE, EVENT, GATES = "arena", "final", ("lane-1", "lane-2")


def wait_for(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Venue:
    """Broker, central, two gates and an admin watching every message."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "venue"
        init_venue(self.dir, venue=VENUE, event=EVENT, gates=list(GATES))
        self.broker = tb.Broker(self.dir).start()
        self.seen: list[tuple[str, bytes]] = []
        self.admin = tb.connect(self.dir, "admin", client_id="admin")
        self.admin.on_message = lambda _c, _u, m: self.seen.append((m.topic, bytes(m.payload)))
        self.admin.subscribe("#", qos=1)
        self.central = Central(self.dir, port=self.broker.port)
        self.central.connect()
        self.gates: dict[str, SimGate] = {}
        self.states = {g: root / f"state-{g}" for g in GATES}
        for g in GATES:
            self.open(g)

    def open(self, gate: str) -> SimGate:
        g = open_gate(self.dir, gate, self.states[gate], host="127.0.0.1",
                      port=self.broker.port, fixed_threshold=0.5)
        g.link.start()
        assert g.link.wait_connected(10)
        self.gates[gate] = g
        return g

    def close_gate(self, gate: str) -> None:
        self.gates.pop(gate).close()

    def close(self) -> None:
        for g in list(self.gates):
            self.close_gate(g)
        self.central.close()
        tb.close(self.admin)
        self.broker.stop()
