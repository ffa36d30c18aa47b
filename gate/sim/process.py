"""A simulated gate as a process of its own, driven by one-line commands on stdin.

``python -m gate.sim.process VENUE_DIR GATE STATE_DIR --port N`` opens ``GATE`` of a
provisioned venue (:func:`gate.sim.venue.open_gate`), starts its link and prints
``ready``; then each command line gets one JSON line back:

    status                  cache counts, outbox depth, connected?
    wait-attendees N SECS   until the cache holds N attendees: when, and the peak RSS
    wait-connected SECS     until the link is up
    events N                queue N entry events (synthetic attendee ids)
    emit N MS               queue N entry events, one every MS ms, printing each event id
                            as soon as it is durably queued (for kill -9 tests)
    flush                   hand the outbox to the broker now
    quit                    stop the link and exit

Central's protocol benchmark (``central.bench``) runs gates this way, so that central
and gate meet only through the broker, as at a venue.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from gate.sim.venue import SimGate, open_gate


def _until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def answer(gate: SimGate, words: list[str]) -> dict[str, Any]:
    """The reply to one command."""
    name, rest = words[0], words[1:]
    if name == "status":
        st = gate.cache.status()
        return {"attendees": st.attendees, "version": st.version,
                "outbox": gate.link.outbox_depth(), "connected": gate.link.wait_connected(0)}
    if name == "wait-attendees":
        n, timeout = int(rest[0]), float(rest[1])
        ok = _until(lambda: gate.cache.status().attendees >= n, timeout)
        return {"ok": ok, "at": time.time(),
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if name == "wait-connected":
        return {"ok": gate.link.wait_connected(float(rest[0]))}
    if name == "events":
        for i in range(int(rest[0])):
            gate.link.publish_event(f"b{i % 1000:07d}")
        return {"queued": int(rest[0]), "outbox": gate.link.outbox_depth()}
    if name == "emit":
        for i in range(int(rest[0])):
            print(gate.link.publish_event(f"e{i % 1000:07d}"), flush=True)
            time.sleep(float(rest[1]) / 1000)
        return {"emitted": int(rest[0])}
    if name == "flush":
        gate.link.flush()
        return {"outbox": gate.link.outbox_depth()}
    raise ValueError(f"unknown command {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Serve commands until ``quit`` or end of input."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("venue", type=Path)
    p.add_argument("gate")
    p.add_argument("state", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    gate = open_gate(args.venue, args.gate, args.state, host=args.host, port=args.port)
    gate.link.start()
    try:
        if not gate.link.wait_connected(10):
            print(json.dumps({"error": "no connection to the broker"}), flush=True)
            return 1
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            try:
                reply = answer(gate, words)
            except (ValueError, IndexError) as exc:
                reply = {"error": str(exc)}
            print(json.dumps(reply), flush=True)
    finally:
        gate.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
