"""Picamera2 backend: the Raspberry Pi CSI camera (``picamera2`` from Raspberry Pi OS,
the ``pi`` extra). Untested off a Pi; the contract is the same as every backend's."""

from __future__ import annotations

from typing import Any

from gate.camera.base import Camera, CameraError
from gate.types import Image


class Picamera2Camera(Camera):
    """RGB888 main stream at the configured size; each capture copied into the buffer."""

    def __init__(self, *, width: int, height: int, fps: float) -> None:
        super().__init__(width=width, height=height, fps=fps)
        self._cam: Any = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError("picamera2 is not installed (apt install python3-picamera2)"
                              ) from None
        try:
            cam = Picamera2()
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": self.fps})
            cam.configure(config)
            cam.start()
        except (RuntimeError, OSError, IndexError) as exc:
            raise CameraError(f"picamera2: cannot start the camera ({exc})") from None
        self._cam = cam

    def _grab(self, out: Image) -> None:
        try:
            array = self._cam.capture_array("main")
        except (RuntimeError, OSError) as exc:
            raise CameraError(f"picamera2: capture failed ({exc})") from None
        if array.shape[:2] != out.shape[:2] or array.ndim != 3:
            raise CameraError(f"picamera2: wrong format {array.shape}")
        # Picamera2's "RGB888" is BGR in memory order.
        out[...] = array[:, :, 2::-1]
        array.fill(0)

    def _close(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None
