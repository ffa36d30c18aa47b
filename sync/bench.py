"""``make bench-sync``: the sync protocol's numbers through a local TLS Mosquitto.

* revocation end to end: central publishes, the gate applies it and answers with a
  signed receipt, central verifies it; p50/p99 over many revocations;
* a 100k-template snapshot: publish + transfer + verify + apply, with the gate in its own
  process so its peak RSS is its own;
* the outbox: entry events per second with the broker up, and how fast a backlog built
  during an outage drains.
Everything runs in a temporary venue (``init_venue``); synthetic unit templates.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gate.match.store import Enrolment
from sync.central import Central
from sync.localbroker import Broker
from sync.pki import init_venue
from sync.sim import open_gate

DAY = 86400


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.002)


def _templates(central: Central, n: int, rng: np.random.Generator) -> list[Enrolment]:
    until = int(time.time()) + 7 * DAY
    raw = rng.standard_normal((n, 192)).astype(np.float32)
    prot = central.protector.protect(raw / np.linalg.norm(raw, axis=1, keepdims=True))
    return [Enrolment(f"b{i:07d}", 1, until, prot[i:i + 1]) for i in range(n)]


def revocations(venue: Path, broker: Broker, central: Central, count: int) -> dict[str, Any]:
    """Revocation round trips (publish → applied → signed receipt verified)."""
    central.import_templates(_templates(central, count + 100, np.random.default_rng(1)))
    store, sync = open_gate(venue, "lane-1", venue.parent / "state-rev", host="127.0.0.1",
                            port=broker.port)
    sync.start()
    sync.wait_connected(10)
    central.snapshot("lane-1")
    _wait(lambda: store.status().attendees == count + 100, 60)
    times = []
    for i in range(count):
        attendee = f"b{i:07d}"
        t = time.perf_counter()
        seq = central.revoke([attendee], gates=["lane-1"])[attendee]
        _wait(lambda a=attendee, s=seq: central.deletion_receipt("lane-1", a, s) is not None,
              10)
        times.append((time.perf_counter() - t) * 1000)
    sync.stop()
    sync.db.close()
    return {"count": count, "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "max_ms": float(max(times))}


GATE = """
import json, resource, sys, time
from pathlib import Path
from sync.sim import open_gate
store, sync = open_gate(Path(sys.argv[1]), "lane-2", Path(sys.argv[2]), host="127.0.0.1",
                        port=int(sys.argv[3]))
sync.start(); sync.wait_connected(10)
print("ready", flush=True)
n = int(sys.argv[4])
while store.status().attendees < n:
    time.sleep(0.01)
print(json.dumps({"applied_at": time.time(),
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
      flush=True)
sync.stop()
"""


def snapshot(venue: Path, broker: Broker, central: Central, templates: int) -> dict[str, Any]:
    """A full snapshot of ``templates`` to a gate running in its own process."""
    with central._lock:
        central.db.execute("DELETE FROM attendees")
    central.import_templates(_templates(central, templates, np.random.default_rng(2)))
    proc = subprocess.Popen([sys.executable, "-c", GATE, str(venue),
                             str(venue.parent / "state-snap"), str(broker.port), str(templates)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("gate process did not start")
    start = time.time()
    central.snapshot("lane-2")
    published = time.time() - start
    result = json.loads(proc.stdout.readline())
    proc.wait(30)
    return {"templates": templates, "publish_s": published,
            "total_s": result["applied_at"] - start, "gate_max_rss_mb": result["max_rss_mb"]}


def outbox(venue: Path, broker: Broker, central: Central, events: int) -> dict[str, Any]:
    """Events/s with the broker up; drain rate of a backlog built during an outage."""
    _, sync = open_gate(venue, "lane-1", venue.parent / "state-out", host="127.0.0.1",
                        port=broker.port)
    sync.start()
    sync.wait_connected(10)
    before = central.event_count()
    t = time.perf_counter()
    for i in range(events):
        sync.publish_event(f"b{i % 1000:07d}")
    _wait(lambda: central.event_count() >= before + events, 120)
    sustained = events / (time.perf_counter() - t)
    broker.stop()
    for i in range(events):
        sync.publish_event(f"b{i % 1000:07d}")
    backlog = sync.db.depth()
    broker.start()
    _wait(lambda: sync.wait_connected(0), 60)  # reconnect back-off is not drain time
    t = time.perf_counter()
    sync.flush()
    _wait(lambda: sync.db.depth() == 0 and central.event_count() >= before + 2 * events, 300)
    drain = backlog / (time.perf_counter() - t)
    sync.stop()
    sync.db.close()
    return {"events": events, "sustained_per_s": sustained, "backlog": backlog,
            "drain_per_s": drain}


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print JSON or text."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--revocations", type=int, default=200)
    p.add_argument("--templates", type=int, default=100_000)
    p.add_argument("--events", type=int, default=2000)
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
                    "outbox": outbox(venue, broker, central, args.events)}
            finally:
                central.close()
    report["bench_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    r, s, o = report["revocation"], report["snapshot"], report["outbox"]
    print(f"revocation end to end over TLS ({r['count']}): p50 {r['p50_ms']:.1f} ms, "
          f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms")
    print(f"snapshot of {s['templates']} templates: published in {s['publish_s']:.1f} s, "
          f"applied at the gate {s['total_s']:.1f} s after the start; gate peak RSS "
          f"{s['gate_max_rss_mb']:.0f} MB")
    print(f"outbox: {o['sustained_per_s']:.0f} events/s delivered with the broker up; a "
          f"backlog of {o['backlog']} drained at {o['drain_per_s']:.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
