"""``make bench-sync``: the protocol's numbers through a local TLS Mosquitto, measured from
central's side with each gate in a process of its own (``python -m gate.sim.process``), as
at a venue:

* revocation end to end: central publishes, the gate applies it and answers with a
  signed receipt, central verifies it; p50/p99 over many revocations;
* a 100k-template snapshot: publish + transfer + verify + apply, and the gate's peak RSS;
* the outbox: entry events per second with the broker up, and how fast a backlog built
  during an outage drains;
* losses: a gate killed with SIGKILL at random moments while it queues entry events,
  and a broker stopped and started while a gate queues them: every event the gate
  reported as queued must reach central (once, after central removes duplicates).

Everything runs in a temporary venue (:func:`central.pki.init_venue`); synthetic unit
templates.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from central.broker import Broker
from central.core import Central
from central.pki import init_venue
from sync.templates import Enrolment

DAY = 86400


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.002)


def _templates(central: Central, n: int, rng: np.random.Generator) -> list[Enrolment]:
    until = int(time.time()) + 7 * DAY
    raw = rng.standard_normal((n, central.model.dim)).astype(np.float32)
    prot = central.protector.protect(raw / np.linalg.norm(raw, axis=1, keepdims=True))
    return [Enrolment(f"b{i:07d}", 1, until, prot[i:i + 1]) for i in range(n)]


class GateProcess:
    """A gate of the venue in its own process (:mod:`gate.sim.process`)."""

    def __init__(self, venue: Path, gate: str, state: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gate.sim.process", str(venue), gate, str(state),
             "--port", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        if self._line() != "ready":
            raise RuntimeError(f"gate {gate} did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, *words: object) -> dict[str, Any]:
        """Send one command; its JSON reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self._line())
        if "error" in reply:
            raise RuntimeError(f"gate: {reply['error']}")
        return reply

    def emit(self, count: int, every_ms: float) -> None:
        """Start queueing ``count`` events; their ids come back with :meth:`queued`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"emit {count} {every_ms}\n")
        self.proc.stdin.flush()

    def kill(self) -> list[str]:
        """SIGKILL; the ids of the events it reported as durably queued."""
        self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate()
        return [w for w in out.split() if len(w) == 36]

    def close(self) -> None:
        """Ask it to quit and wait."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def revocations(venue: Path, broker: Broker, central: Central, count: int) -> dict[str, Any]:
    """Revocation round trips (publish → applied → signed receipt verified)."""
    central.import_templates(_templates(central, count + 100, np.random.default_rng(1)))
    gate = GateProcess(venue, "lane-1", venue.parent / "state-rev", broker.port)
    try:
        central.snapshot("lane-1")
        if not gate.ask("wait-attendees", count + 100, 60)["ok"]:
            raise TimeoutError("the snapshot did not arrive")
        times = []
        for i in range(count):
            attendee = f"b{i:07d}"
            t = time.perf_counter()
            seq = central.revoke([attendee], gates=["lane-1"])[attendee]
            _wait(lambda a=attendee, s=seq: central.deletion_receipt("lane-1", a, s)
                  is not None, 10)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        gate.close()
    return {"count": count, "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "max_ms": float(max(times))}


def snapshot(venue: Path, broker: Broker, central: Central, templates: int) -> dict[str, Any]:
    """A full snapshot of ``templates`` to a gate running in its own process."""
    with central._lock:
        central.db.execute("DELETE FROM attendees")
    central.import_templates(_templates(central, templates, np.random.default_rng(2)))
    gate = GateProcess(venue, "lane-2", venue.parent / "state-snap", broker.port)
    try:
        start = time.time()
        central.snapshot("lane-2")
        published = time.time() - start
        result = gate.ask("wait-attendees", templates, 300)
    finally:
        gate.close()
    return {"templates": templates, "publish_s": published,
            "total_s": result["at"] - start, "gate_max_rss_mb": result["max_rss_mb"]}


def outbox(venue: Path, broker: Broker, central: Central, events: int) -> dict[str, Any]:
    """Events/s with the broker up; drain rate of a backlog built during an outage."""
    gate = GateProcess(venue, "lane-1", venue.parent / "state-out", broker.port)
    try:
        before = central.event_count()
        t = time.perf_counter()
        gate.ask("events", events)
        _wait(lambda: central.event_count() >= before + events, 120)
        sustained = events / (time.perf_counter() - t)
        broker.stop()
        backlog = gate.ask("events", events)["outbox"]
        broker.start()
        # Reconnect back-off is not drain time.
        if not gate.ask("wait-connected", 60)["ok"]:
            raise TimeoutError("the gate did not reconnect")
        t = time.perf_counter()
        gate.ask("flush")
        _wait(lambda: gate.ask("status")["outbox"] == 0 and
              central.event_count() >= before + 2 * events, 300)
        drain = backlog / (time.perf_counter() - t)
    finally:
        gate.close()
    return {"events": events, "sustained_per_s": sustained, "backlog": backlog,
            "drain_per_s": drain}


def losses(venue: Path, broker: Broker, central: Central, *, kills: int,
           restarts: int) -> dict[str, Any]:
    """Events reported as queued that never reached central, across SIGKILLs of the gate
    and restarts of the broker (both must be 0)."""
    rng = random.Random(9)
    state = venue.parent / "state-loss"
    queued: list[str] = []
    for _ in range(kills):
        gate = GateProcess(venue, "lane-1", state, broker.port)
        gate.emit(100_000, 5)
        time.sleep(rng.uniform(0.5, 1.5))
        queued += gate.kill()
    gate = GateProcess(venue, "lane-1", state, broker.port)
    gate.emit(100_000, 5)
    for _ in range(restarts):
        time.sleep(rng.uniform(0.3, 0.8))
        broker.stop()
        time.sleep(rng.uniform(0.3, 0.8))
        broker.start()
    time.sleep(0.5)
    queued += gate.kill()
    gate = GateProcess(venue, "lane-1", state, broker.port)  # drains what is left
    try:
        want = set(queued)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = {e[0] for e in central.events()} & want
            if got == want:
                break
            time.sleep(0.2)
        got = {e[0] for e in central.events()} & want
    finally:
        gate.close()
    return {"kills": kills, "broker_restarts": restarts, "queued": len(want),
            "received": len(got), "lost": len(want - got),
            "duplicates_removed": central.duplicates}


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print JSON or text."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--revocations", type=int, default=200)
    p.add_argument("--templates", type=int, default=100_000)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        venue = Path(tmp) / "venue"
        init_venue(venue, venue="bench", event="bench", gates=["lane-1", "lane-2"])
        with Broker(venue) as broker:
            central = Central(venue, port=broker.port)
            central.connect()
            try:
                report: dict[str, Any] = {
                    "revocation": revocations(venue, broker, central, args.revocations),
                    "snapshot": snapshot(venue, broker, central, args.templates),
                    "outbox": outbox(venue, broker, central, args.events),
                    "losses": losses(venue, broker, central, kills=args.kills,
                                     restarts=args.restarts)}
            finally:
                central.close()
    report["bench_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    r, s, o, lo = report["revocation"], report["snapshot"], report["outbox"], report["losses"]
    print(f"revocation end to end over TLS ({r['count']}): p50 {r['p50_ms']:.1f} ms, "
          f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms")
    print(f"snapshot of {s['templates']} templates: published in {s['publish_s']:.1f} s, "
          f"applied at the gate {s['total_s']:.1f} s after the start; gate peak RSS "
          f"{s['gate_max_rss_mb']:.0f} MB")
    print(f"outbox: {o['sustained_per_s']:.0f} events/s delivered with the broker up; a "
          f"backlog of {o['backlog']} drained at {o['drain_per_s']:.0f} events/s")
    print(f"losses: {lo['kills']} SIGKILLs of the gate and {lo['broker_restarts']} broker "
          f"restarts while queueing: {lo['queued']} events reported queued, "
          f"{lo['received']} at central, {lo['lost']} lost ({lo['duplicates_removed']} "
          "duplicates removed by central)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
