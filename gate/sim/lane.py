"""A simulated lane: the real gate loop with gpiozero's mock pins and a replay camera.

The runtime, the judge, the policy, the pipeline, the models and the matcher are the real
ones; only the world is simulated. A scripted queue of people walks up: the simulator
drives the presence pin, shows the person's photo to the replay camera (composited into
a 1280×720 frame), waits for the lane's answer, walks through the flapper (passage pin)
when it opens, and leaves. Used by ``make demo``, the privacy tests and the lane
benchmark.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gate.camera.base import Mode
from gate.camera.replay import ReplayCamera, ReplayOptions
from gate.config import Config
from gate.io.devices import GateIO, idle_mock_factory
from gate.match.matcher import Matcher
from gate.pipeline import FacePipeline
from gate.policy import Phase
from gate.runtime import EntryLog, GateRuntime
from gate.types import Image


class Kind(enum.Enum):
    """What a scripted visitor does."""

    WALK = "walk"  # walks up, goes through if the flapper opens
    STAY = "stay"  # walks up, never goes through (passage timeout)
    EMERGENCY = "emergency"  # the fire panel trips for a moment


@dataclass
class Visitor:
    """One scripted arrival. ``photos``: one face, or two side by side."""

    label: str
    photos: tuple[Image, ...] = ()
    kind: Kind = Kind.WALK


@dataclass
class Outcome:
    """How a visitor's turn ended, as the simulator saw it."""

    label: str
    opened: bool
    denied: bool
    entered: bool
    seconds: float
    last_event: str


def at_lane_distance(photo: Image, pipeline: FacePipeline, *, margin: float = 1.2) -> Image:
    """The photo as the lane camera would frame that person: a square around the face,
    ``2 × margin`` face widths across (head and shoulders). The photo is used whole when
    no face is found in it."""
    faces = pipeline.detector.detect(photo)
    pipeline.wipe()
    if not faces:
        return photo.copy()
    f = max(faces, key=lambda d: d.width)
    half = int(f.width * margin)
    # Pad with the lane's grey so the square is whole even for a tightly cut portrait.
    padded = cv2.copyMakeBorder(photo, half, half, half, half, cv2.BORDER_CONSTANT,
                                value=(40, 40, 40))
    cx, cy = int((f.box[0] + f.box[2]) / 2) + half, int((f.box[1] + f.box[3]) / 2) + half
    crop = np.ascontiguousarray(padded[cy - half:cy + int(half * 1.2), cx - half:cx + half],
                                np.uint8)
    padded.fill(0)
    return crop.copy()


def compose(photos: tuple[Image, ...], width: int = 640, height: int = 480) -> Image:
    """A camera frame with the visitors' photos side by side, on a grey background."""
    frame = np.full((height, width, 3), 40, np.uint8)
    slot = width // max(1, len(photos))
    for k, photo in enumerate(photos):
        s = min(slot / photo.shape[1], height / photo.shape[0])
        w, h = int(photo.shape[1] * s), int(photo.shape[0] * s)
        x, y = k * slot + (slot - w) // 2, (height - h) // 2
        cv2.resize(photo, (w, h), dst=frame[y:y + h, x:x + w], interpolation=cv2.INTER_AREA)
    return frame


class SimulatedLane:
    """The gate loop in a thread, driven by a scripted world in the caller's thread."""

    def __init__(self, cfg: Config, *, pipeline: FacePipeline, matcher: Matcher,
                 entries: EntryLog, report: Callable[[dict[str, Any]], None] | None = None,
                 fps: float | None = None, pace: float = 1.0) -> None:
        self.cfg = cfg
        # How much slower than a gate the host runs the models (qemu-user: a decision took
        # 2.2-3.8 s against ~50 ms on x86): the simulator's own waits stretch by it.
        self.pace = pace
        self.factory = idle_mock_factory(cfg.gpio)
        g = cfg.gpio
        self.io = GateIO(g, pin_factory=self.factory).open()
        self.scene: Image | None = None
        mode = Mode(cfg.camera.width, cfg.camera.height, fps or cfg.camera.fps)
        self.camera = ReplayCamera(mode, ReplayOptions(lambda: self.scene))
        self.runtime = GateRuntime(cfg, camera=self.camera, io=self.io, pipeline=pipeline,
                                   matcher=matcher, entries=entries, report=report)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.runtime.run, args=(self._stop,),
                                        name="lane", daemon=True)

    def _set(self, pin: int, high: bool) -> None:
        p = self.factory.pin(pin)
        if high:
            p.drive_high()
        else:
            p.drive_low()

    def presence(self, on: bool) -> None:
        """Someone steps into / out of the lane."""
        self._set(self.cfg.gpio.presence_pin, on == self.cfg.gpio.presence_active_high)

    def passage(self, on: bool) -> None:
        """Someone is in / out of the beam after the flapper."""
        self._set(self.cfg.gpio.passage_pin, on == self.cfg.gpio.passage_active_high)

    def emergency(self, on: bool) -> None:
        """The fire panel trips / resets."""
        self._set(self.cfg.gpio.emergency_pin, on == self.cfg.gpio.emergency_active_high)

    def start(self) -> None:
        """Start the gate loop."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop (the runtime leaves the lane safe) and release the pins."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        else:  # stepped by hand (tests): leave it safe the same way the loop would
            self.runtime.close()
        self.io.close()

    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout * self.pace
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.005)
        return False

    def visit(self, v: Visitor, *, walk_s: float = 0.6, patience_s: float = 12.0) -> Outcome:
        """Play one visitor's turn and report how it ended."""
        start = time.monotonic()
        entries_before = self.runtime.stats.entries
        if v.kind is Kind.EMERGENCY:
            self.emergency(True)
            self._wait(lambda: self.io.flapper_open, 2.0)
            time.sleep(walk_s)
            self.emergency(False)
            self._wait(lambda: self.runtime.policy.phase is Phase.IDLE, 2.0)
            return Outcome(v.label, True, False, False, time.monotonic() - start,
                           self.runtime.stats.last_event)
        self.scene = compose(v.photos, self.cfg.camera.width, self.cfg.camera.height)
        self.presence(True)
        phase = self.runtime.policy
        decided = self._wait(lambda: phase.phase in (Phase.OPEN, Phase.DENIED), patience_s)
        opened = phase.phase is Phase.OPEN
        denied = phase.phase is Phase.DENIED
        if opened and v.kind is Kind.WALK:
            time.sleep(walk_s)  # steps forward through the open flapper
            self.passage(True)
            self.scene = None
            self.presence(False)
            self._wait(lambda: phase.phase is Phase.PASSED, 2.0)
            time.sleep(walk_s / 2)
            self.passage(False)
        elif opened:  # stands still until the flapper gives up (the config's timeout is the
            # gate's own, already set for this host: not stretched a second time)
            self._wait(lambda: phase.phase is not Phase.OPEN,
                       self.cfg.lane.open_timeout_s / self.pace + 2)
        self.scene = None
        self.presence(False)
        self._wait(lambda: phase.phase is Phase.IDLE, 3.0)
        del decided
        return Outcome(v.label, opened, denied, self.runtime.stats.entries > entries_before,
                       time.monotonic() - start, self.runtime.stats.last_event)
