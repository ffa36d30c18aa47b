"""``facepass-central`` (or ``python -m central``): the reference central's command line.

    init-venue DIR --venue V --event E --gates G1 G2 …   keys, certificates, broker config
    add-gate --venue-dir DIR --gate G --csr FILE --sign-pub B64 --seal-pub B64 --proof B64
                                                          enrol a gate that made its own keys
    broker DIR [--port N]                                 run the venue's Mosquitto (local)
    enrol DIR ATTENDEE PHOTO [PHOTO …] [--days N]        photo → protected template → gates
    revoke DIR ATTENDEE [ATTENDEE …]                      revoke everywhere, await receipts
    snapshot DIR [--gate G]                               full sealed snapshot
    rotate-key DIR --kid NEW                              new central signing key
    listen DIR [--seconds N] [--events N]                 collect events, receipts, status
    events DIR | receipts DIR                             what was collected

Errors print one line; exit codes: 0 ok, 1 failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from central.broker import Broker
from central.core import Central
from central.enrol import enrol_photos, pipeline, template_model
from central.errors import CentralError
from central.pki import (
    DEFAULT_EMBEDDER,
    enrol_gate,
    gate_instructions,
    init_venue,
    instructions,
)
from sync.errors import SyncError

PROG = "facepass-central"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-venue", help="provision a test venue")
    init.add_argument("dir", type=Path)
    init.add_argument("--venue", required=True)
    init.add_argument("--event", required=True)
    init.add_argument("--gates", nargs="+", required=True)
    init.add_argument("--host", default="localhost")
    init.add_argument("--port", type=int, default=8883)
    init.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                      help="the gates' [models] embedder; central enrols with it "
                           f"(default {DEFAULT_EMBEDDER})")
    add = sub.add_parser("add-gate", help="enrol a gate from its CSR and public keys "
                                          "(gatectl keys init)")
    add.add_argument("--venue-dir", type=Path, required=True, help="the init-venue directory")
    add.add_argument("--gate", required=True, help="the gate id (the CSR's CN)")
    add.add_argument("--csr", type=Path, required=True, help="the gate's gate.csr")
    add.add_argument("--sign-pub", required=True, help="the gate's signing key (B64 or G=B64)")
    add.add_argument("--seal-pub", required=True, help="the gate's sealing key (B64)")
    add.add_argument("--proof", required=True,
                     help="the signing key's signature from gatectl keys init (B64)")
    add.add_argument("--days", type=int, default=30, help="certificate validity")
    add.add_argument("--replace", action="store_true", help="re-key a gate already enrolled")
    b = sub.add_parser("broker", help="run the venue's Mosquitto on loopback until stopped "
                                      "(tests, demos)")
    b.add_argument("dir", type=Path, help="the init-venue directory")
    b.add_argument("--port", type=int, help="port (default: a free one)")
    for name in ("enrol", "revoke", "snapshot", "rotate-key", "listen", "events", "receipts"):
        s = sub.add_parser(name)
        s.add_argument("dir", type=Path, help="the init-venue directory")
        s.add_argument("--port", type=int, help="broker port (default: venue.json)")
        if name in ("events", "receipts"):
            s.add_argument("--json", action="store_true", help="one JSON object per line")
        if name == "enrol":
            s.add_argument("attendee")
            s.add_argument("photos", nargs="+", type=Path)
            s.add_argument("--days", type=float, default=2.0, help="valid for N days")
        elif name == "revoke":
            s.add_argument("attendees", nargs="+")
        elif name == "snapshot":
            s.add_argument("--gate", action="append")
        elif name == "rotate-key":
            s.add_argument("--kid", required=True)
        elif name == "listen":
            s.add_argument("--seconds", type=float, default=10.0, help="listen at most this long")
            s.add_argument("--events", type=int, default=None,
                           help="stop as soon as this many entry events were collected")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (CentralError, SyncError, OSError, ValueError, ConnectionError,
            sqlite3.Error) as exc:
        print(f"central: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "init-venue":
        init_venue(args.dir, venue=args.venue, event=args.event, gates=args.gates,
                   host=args.host, port=args.port, embedder=args.embedder,
                   model=template_model(args.embedder))
        print(instructions(args.dir))
        return 0
    if args.command == "add-gate":
        enrol_gate(args.venue_dir, args.gate, csr_pem=args.csr.read_bytes(),
                   sign_pub=args.sign_pub, seal_pub=args.seal_pub, proof=args.proof,
                   days=args.days, replace=args.replace)
        print(gate_instructions(args.venue_dir, args.gate))
        return 0
    if args.command == "broker":
        return _broker(args.dir, args.port)
    central = Central(args.dir, port=args.port)
    try:
        if args.command == "events":
            for event_id, gate, attendee, at_ms in central.events():
                print(json.dumps({"event_id": event_id, "gate": gate, "attendee": attendee,
                                  "at": at_ms}) if args.json else
                      (event_id, gate, attendee, at_ms))
            return 0
        if args.command == "receipts":
            for receipt in central.receipts():
                print(json.dumps(receipt) if args.json else receipt)
            return 0
        central.connect()
        if args.command == "enrol":
            seq = enrol_photos(central, args.attendee, args.photos,
                               pipe=pipeline(embedder=central.embedder),
                               valid_until=int(time.time() + args.days * 86400))
            print(f"enrolled {args.attendee} (seq {seq}) on {len(central.gates)} gates; "
                  "the photos were read, embedded and dropped: none is stored")
        elif args.command == "revoke":
            _revoke(central, args.attendees)
        elif args.command == "snapshot":
            for gate in args.gate or list(central.gates):
                print(f"snapshot to {gate}: {central.snapshot(gate)} attendees")
        elif args.command == "rotate-key":
            central.rotate_signing_key(args.kid)
            print(f"signing key rotated to {args.kid}; the old key is central/sign.old")
        else:  # listen
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline and \
                    (args.events is None or central.event_count() < args.events):
                time.sleep(0.05)
            print(f"{len(central.events())} events, {len(central.receipts())} receipts")
        time.sleep(0.2)  # let in-flight acknowledgements land before disconnecting
        return 0
    finally:
        central.close()


def _revoke(central: Central, attendees: list[str]) -> None:
    seqs = central.revoke(attendees)
    deadline = time.monotonic() + 10
    missing = {(g, a) for g in central.gates for a in seqs}
    while missing and time.monotonic() < deadline:
        missing = {(g, a) for g, a in missing
                   if central.deletion_receipt(g, a, seqs[a]) is None}
        time.sleep(0.1)
    for g, a in sorted({(g, a) for g in central.gates for a in seqs} - missing):
        print(f"deleted: {a} on {g} (signed receipt verified)")
    for g, a in sorted(missing):
        print(f"pending: {a} on {g} (no receipt yet; it will come when the gate is back)")


def _broker(venue_dir: Path, port: int | None) -> int:
    """Run Mosquitto for the venue until SIGTERM/SIGINT; the first line gives its port."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Broker(venue_dir, port) as broker:
        print(f"broker listening on {broker.host}:{broker.port}", flush=True)
        while not stop.wait(0.2):
            if not broker.running:
                print(f"central: mosquitto exited:\n{broker.log_tail()}", file=sys.stderr)
                return 1
    return 0


def entry() -> None:
    """Console-script entry point (``facepass-central``)."""
    sys.exit(main())
