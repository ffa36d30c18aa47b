"""``make bench-lane``: the whole lane in simulation, timed (real models, replay camera at
30 fps, mock pins, no broker: entries are signed and go to the outbox).

* latency from the first frame that shows the face to the relay command, for k = 1 and
  k = 2 agreeing frames;
* the same for k = 2 with ``[lane] overlap`` off and on, with the camera at 30 fps and at
  120 fps (there the models, not the camera, set the pace, as on a Pi at 30 fps);
* throughput of a queue of people (walk-in and passage times below), persons per minute;
* CPU share and RSS while the lane is empty (camera off) and while it is busy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gate.config import Config, from_dict
from gate.images import load_image
from gate.pipeline import FacePipeline
from gate.sim.lane import SimulatedLane, Visitor, at_lane_distance
from gate.sim.venue import SimGate, lone_gate
from sync.templates import Enrolment

ROOT = Path(__file__).resolve().parent.parent.parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _lane(cfg: Config, pipe: FacePipeline, work: Path, people: dict[str, Any],
          fps: float | None = None) -> tuple[SimulatedLane, SimGate]:
    gate = lone_gate(work / f"state-{time.monotonic_ns()}", cfg=cfg)
    until = int(time.time()) + 86400
    protect = gate.matcher.protector.protect
    gate.cache.upsert([Enrolment(name, 1, until, protect(p["embedding"])[None])
                       for name, p in people.items()])
    lane = SimulatedLane(cfg, pipeline=pipe, matcher=gate.matcher, entries=gate.link,
                         report=lambda _e: None, fps=fps)
    return lane, gate


def _people(pipe: FacePipeline, photos: Path, portraits: Path, n: int) -> dict[str, Any]:
    sources = [(photos / "obama.jpg", photos / "obama3.jpg")]
    sources += [(p, p) for p in sorted(portraits.glob("*.jpg"))[:n - 1]]
    people = {}
    for k, (enrol, probe) in enumerate(sources):
        crop = at_lane_distance(load_image(enrol), pipe)
        result = pipe.process(crop)
        if result.embedding is None:
            continue
        people[f"p{k:03d}"] = {"embedding": result.embedding.copy(),
                               "probe": at_lane_distance(load_image(probe), pipe)}
        pipe.wipe()
    return people


def latency(cfg: Config, pipe: FacePipeline, work: Path, people: dict[str, Any], *,
            k: int, visits: int, overlap: bool = False,
            fps: float | None = None) -> dict[str, Any]:
    """First face to relay command over ``visits`` enrolled people."""
    c = dataclasses.replace(cfg, lane=dataclasses.replace(cfg.lane, k=k, n=max(k, 3),
                                                          overlap=overlap))
    lane, gate = _lane(c, pipe, work, people, fps)
    lane.start()
    names = list(people)
    for i in range(visits):
        lane.visit(Visitor("x", (people[names[i % len(names)]]["probe"],)), walk_s=0.2)
    lane.stop()
    gate.close()
    lat = lane.runtime.stats.latencies_ms
    return {"k": k, "visits": len(lat), "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "overlap": overlap,
            "fps": fps or cfg.camera.fps}


def throughput(cfg: Config, pipe: FacePipeline, work: Path, people: dict[str, Any], *,
               count: int, walk_s: float) -> dict[str, float]:
    """A queue of ``count`` people, each stepping in as the one before leaves."""
    lane, gate = _lane(cfg, pipe, work, people)
    lane.start()
    time.sleep(1.0)
    cpu0, t0 = _cpu(), time.monotonic()
    time.sleep(5.0)  # nobody in the lane: the camera is off
    idle_cpu = (_cpu() - cpu0) / (time.monotonic() - t0)
    idle_rss = _rss_mb()
    names = list(people)
    cpu0, t0 = _cpu(), time.monotonic()
    entered = 0
    for i in range(count):
        out = lane.visit(Visitor("x", (people[names[i % len(names)]]["probe"],)),
                         walk_s=walk_s)
        entered += out.entered
    busy_s = time.monotonic() - t0
    busy_cpu = (_cpu() - cpu0) / busy_s
    busy_rss = _rss_mb()
    lane.stop()
    gate.close()
    return {"people": count, "entered": entered, "seconds": busy_s,
            "per_minute": count / busy_s * 60, "walk_s": walk_s,
            "idle_cpu_pct": 100 * idle_cpu, "busy_cpu_pct": 100 * busy_cpu,
            "idle_rss_mb": idle_rss, "busy_rss_mb": busy_rss}


def main(argv: list[str] | None = None) -> int:
    """Run the lane benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=ROOT / "build/testdata/face_recognition")
    p.add_argument("--portraits", type=Path, default=ROOT / "build/calibration/radar")
    p.add_argument("--people", type=int, default=200)
    p.add_argument("--visits", type=int, default=40)
    p.add_argument("--walk", type=float, default=0.5, help="seconds from open to the beam")
    p.add_argument("--threads", type=int, default=2, choices=range(1, 17), metavar="N",
                   help="threads per model")
    p.add_argument("--overlap-fps", type=float, nargs="+", default=[30.0, 120.0],
                   metavar="FPS", help="camera rates of the overlap off/on comparison")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if any(not 1 <= f <= 1000 for f in args.overlap_fps):
        p.error("--overlap-fps: each rate must be between 1 and 1000")
    cfg = from_dict({"gpio": {"backend": "mock"}, "models": {"threads": args.threads},
                     "lane": {"reentry": True, "open_timeout_s": 3.0,
                              "decide_timeout_s": 4.0}})
    pipe = FacePipeline.from_config(cfg)
    people = _people(pipe, args.photos, args.portraits, 20)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report: dict[str, Any] = {
            "latency": [latency(cfg, pipe, work, people, k=k, visits=args.visits)
                        for k in (1, 2)],
            "overlap": [latency(cfg, pipe, work, people, k=2, visits=args.visits,
                                overlap=o, fps=fps)
                        for fps in args.overlap_fps for o in (False, True)],
            "throughput": throughput(cfg, pipe, work, people, count=args.people,
                                     walk_s=args.walk)}
    report["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for r in report["latency"]:
        print(f"first face → relay, k={r['k']}: p50 {r['p50_ms']:.0f} ms, p95 "
              f"{r['p95_ms']:.0f} ms ({r['visits']} visits, {len(people)} enrolled, replay "
              "camera at 30 fps)")
    for r in report["overlap"]:
        print(f"k=2, camera at {r['fps']:.0f} fps, overlap {'on ' if r['overlap'] else 'off'}: "
              f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms ({r['visits']} visits)")
    t = report["throughput"]
    print(f"queue of {t['people']}: {t['per_minute']:.0f} persons/min ({t['entered']} entered, "
          f"{t['seconds']:.0f} s; {t['walk_s']} s from open to the beam, half that in it"
          ")")
    print(f"CPU: {t['idle_cpu_pct']:.1f} % of a core with the lane empty (camera off), "
          f"{t['busy_cpu_pct']:.0f} % busy; RSS {t['idle_rss_mb']:.0f} MB idle, "
          f"{t['busy_rss_mb']:.0f} MB busy (peak {report['max_rss_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
