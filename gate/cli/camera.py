"""``gatectl camera aim``: aim and focus the lane camera by text, with no picture at all.

Each frame is analysed by the real face pipeline and reported as a coarse character grid
(where the face sits), its size, the eye distance, brightness and sharpness against the
configured quality limits, and hints. Frames stay in the camera's one buffer and are
zero-filled after every reading, as are the pipeline's buffers (P1, P2). The running
service owns the camera, so this refuses to start while it runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from typing import Any, TextIO

import cv2

from gate.camera import Camera, open_camera
from gate.cli.guard import ensure_stopped
from gate.config import Config
from gate.detect.quality import QualityLimits
from gate.pipeline import FacePipeline
from gate.tools import aim
from gate.types import Image

#: Readings per second over this many frames (smooths the camera's own jitter).
_RATE_WINDOW = 10


def add_parser(sub: Any) -> None:
    """Register ``camera aim``."""
    p = sub.add_parser("camera", help="the lane camera: aim and focus",
                       description="Diagnostics for the lane camera.")
    cs = p.add_subparsers(dest="camera_command", metavar="ACTION")
    cs.required = True
    a = cs.add_parser("aim", help="live text view for aiming and focusing (no picture)",
                      description="Open the configured camera and, for every reading, print "
                                  "where the face sits on a character grid, its size, eye "
                                  "distance, brightness and sharpness against the quality "
                                  "limits, and what to fix. No image is shown or saved. "
                                  "Refuses while the gate service runs (it owns the camera).")
    a.add_argument("--frames", type=_count, default=None, metavar="N",
                   help="stop after N readings (default: until Ctrl-C)")
    a.add_argument("--interval", type=_seconds, default=0.25, metavar="S",
                   help="seconds between readings (default 0.25; 0 = as fast as possible)")
    a.add_argument("--json", action="store_true", help="one JSON object per reading")
    a.set_defaults(run=run)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"must be seconds between 0 and 3600, got {text!r}")
    return value


def run(args: argparse.Namespace, cfg: Config, *, pipeline: FacePipeline | None = None) -> int:
    """Report readings until ``--frames`` or Ctrl-C; the camera is closed on every path.

    ``pipeline`` lets tests reuse a loaded one; by default the configured one is loaded.
    """
    ensure_stopped(cfg, "the camera")
    pipe = pipeline or FacePipeline.from_config(cfg)
    c = cfg.camera
    cam = open_camera(c.backend, c.source, c.mode)
    screen = _Screen(sys.stdout, json_lines=args.json)
    try:
        cam.open()
        if not args.json:
            source = f" {c.source}" if c.source else ""
            print(f"camera aim: {c.backend}{source} {c.width}×{c.height} at {c.fps:g} fps; "
                  "nothing is shown or saved (Ctrl-C to stop)", flush=True)
        times: collections.deque[float] = collections.deque(maxlen=_RATE_WINDOW)
        done, next_at = 0, time.monotonic()
        while args.frames is None or done < args.frames:
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            next_at = time.monotonic() + args.interval
            screen.show(read_one(cam, pipe, times), cfg.quality)
            done += 1
    except KeyboardInterrupt:
        if not args.json:
            print("stopped", flush=True)
    finally:
        cam.close()
        pipe.wipe()
    return 0


def read_one(cam: Camera[Any], pipe: FacePipeline, times: collections.deque[float]) -> aim.Reading:
    """Capture and analyse one frame, keep only numbers, and wipe every pixel buffer."""
    frame = cam.read()
    times.append(time.monotonic())
    start = time.perf_counter()
    try:
        res = pipe.process(frame, embed=False)  # aiming needs no embedding
        scene = luminance(frame)
        main = res.face
        boxes = [] if main is None else [main.box] + [f.box for f in res.faces if f is not main]
        fps = (len(times) - 1) / (times[-1] - times[0]) \
            if len(times) > 1 and times[-1] > times[0] else None
        return aim.Reading(width=int(frame.shape[1]), height=int(frame.shape[0]),
                           boxes=tuple(_box(b) for b in boxes), measures=res.measures,
                           scene_brightness=scene, fps=fps,
                           ms=(time.perf_counter() - start) * 1000.0)
    finally:
        # P2: the frame, crops and embedding are zeroed before anything is printed.
        cam.wipe()
        pipe.wipe()


def luminance(frame: Image) -> float:
    """Mean luminance (Rec. 601) of an RGB frame, 0-255, without a copy of its pixels."""
    r, g, b, _ = cv2.mean(frame)
    return float(0.299 * r + 0.587 * g + 0.114 * b)


def _box(b: tuple[float, float, float, float]) -> aim.Box:
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


class _Screen:
    """Where readings go: redrawn in place on a terminal, appended otherwise, or JSON."""

    def __init__(self, stream: TextIO, *, json_lines: bool) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.redraw = not json_lines and stream.isatty()
        self._drawn = 0

    def show(self, reading: aim.Reading, limits: QualityLimits) -> None:
        if self.json_lines:
            self.write(json.dumps(aim.as_dict(reading, limits), sort_keys=True))
            return
        lines = aim.text(reading, limits)
        if self.redraw and self._drawn:
            # Back to the first line of the previous report, then clear below it.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
        self.write("\n".join(lines) if self.redraw else "\n".join(lines) + "\n")
        self._drawn = len(lines)

    def write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
