"""Replay backend: a folder of images, a video file, or a live scene, at a frame rate.

A real backend, not a test double: the demo, the tests and the benchmarks see frames
through exactly the path a sensor's frames take. ``source`` is a directory (images in
name order, looped), a video file (looped), or, from code, a callable returning the scene
in front of the lane right now (``None`` = empty lane) — the simulator uses that. Frames
are letterboxed into the configured size and paced at ``fps`` (``fps=0`` would be
unlimited; use a large value for benchmarks instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gate.camera.base import Camera, CameraError, Mode
from gate.images import load_image
from gate.types import Image

Scene = Callable[[], "Image | None"]
_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class ReplayOptions:
    """``source``: a folder of images, a video file, or (from code) a scene callable;
    ``pace``: wait for each frame's time as a sensor would; ``clock``: for pacing."""

    source: str | Path | Scene = ""
    pace: bool = True
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def from_source(cls, source: str) -> ReplayOptions:
        """``[camera] source``: the folder or video to replay."""
        return cls(source)


class ReplayCamera(Camera[ReplayOptions]):
    """Frames from files or a scene callable, paced like a sensor."""

    name = "replay"
    Options = ReplayOptions

    def __init__(self, mode: Mode, options: ReplayOptions) -> None:
        super().__init__(mode, options)
        self.source = options.source
        self.pace = options.pace
        self.clock = options.clock
        self._next_at = 0.0
        self._files: list[Path] = []
        self._video: Any = None
        self._index = 0

    def _open(self) -> None:
        if callable(self.source):
            return
        path = Path(self.source)
        if path.is_dir():
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
            if not self._files:
                raise CameraError(f"replay: no images in {path}")
        elif path.is_file():
            self._video = cv2.VideoCapture(str(path))
            if not self._video.isOpened():
                raise CameraError(f"replay: cannot open video {path}")
        else:
            raise CameraError(f"replay: {path} does not exist")
        self._index = 0

    def _wait(self) -> None:
        if not self.pace:
            return
        now = self.clock()
        if self._next_at > now:
            time.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + 1.0 / self.fps

    def _grab(self, out: Image) -> None:
        self._wait()
        if callable(self.source):
            scene = self.source()
            if scene is None:
                out.fill(40)  # an empty, dimly lit lane
                return
            fit_into(scene, out)
            return
        if self._files:
            image = load_image(self._files[self._index % len(self._files)])
            self._index += 1
            fit_into(image, out)
            image.fill(0)
            return
        ok, bgr = self._video.read()
        if not ok:  # end of the file: loop
            self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._video.read()
            if not ok:
                raise CameraError("replay: video delivers no frames")
        fit_into(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), out)
        bgr.fill(0)

    def _close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None


def fit_into(image: Image, out: Image) -> None:
    """Scale ``image`` to fit ``out`` (aspect kept, centred on grey)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CameraError(f"replay: frame is not RGB uint8 ({image.shape}, {image.dtype})")
    h, w = out.shape[:2]
    s = min(w / image.shape[1], h / image.shape[0])
    nw, nh = max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s))
    out.fill(40)
    x, y = (w - nw) // 2, (h - nh) // 2
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    cv2.resize(image, (nw, nh), dst=out[y:y + nh, x:x + nw], interpolation=interp)
