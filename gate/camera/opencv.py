"""OpenCV backend: V4L2 USB cameras (``/dev/video0`` or an index) or a GStreamer pipeline
string (e.g. ``nvarguscamerasrc ! … ! appsink`` for a Jetson CSI camera)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gate.camera.base import Camera, CameraError, Mode
from gate.types import Image

#: A read that takes longer than this is a fault (a camera that stopped delivering).
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class OpenCVOptions:
    """``source``: a device path (``/dev/video0``), an index (``0``) or a GStreamer
    pipeline (anything with a ``!``)."""

    source: str = "0"

    @classmethod
    def from_source(cls, source: str) -> OpenCVOptions:
        """``[camera] source``; empty means the first camera."""
        return cls(source or "0")


class OpenCVCamera(Camera[OpenCVOptions]):
    """cv2.VideoCapture, converted to RGB into the frame buffer."""

    name = "opencv"
    Options = OpenCVOptions

    def __init__(self, mode: Mode, options: OpenCVOptions) -> None:
        super().__init__(mode, options)
        self.source = options.source
        self._cap: Any = None
        self._resized: Image | None = None  # for a camera that ignores the size asked for

    def _open(self) -> None:
        src: int | str = int(self.source) if self.source.isdigit() else self.source
        backend = cv2.CAP_GSTREAMER if "!" in self.source else cv2.CAP_ANY
        cap = cv2.VideoCapture(src, backend)
        if not cap.isOpened():
            raise CameraError(f"opencv camera {self.source!r}: cannot open (unplugged?)")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def _grab(self, out: Image) -> None:
        start = time.monotonic()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError(f"opencv camera {self.source!r}: no frame (unplugged?)")
        if time.monotonic() - start > TIMEOUT_S:
            raise CameraError(f"opencv camera {self.source!r}: frame took too long")
        if bgr.ndim != 3 or bgr.shape[2] != 3:
            raise CameraError(f"opencv camera {self.source!r}: wrong format {bgr.shape}")
        if bgr.shape[:2] != out.shape[:2]:
            if self._resized is None or self._resized.shape != out.shape:
                self._resized = np.zeros(out.shape, np.uint8)
            cv2.resize(bgr, (out.shape[1], out.shape[0]), dst=self._resized)
            bgr.fill(0)
            bgr = self._resized
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)
        bgr.fill(0)

    def _close(self) -> None:
        if self._resized is not None:
            self._resized.fill(0)
        if self._cap is not None:
            self._cap.release()
            self._cap = None

