"""Picamera2 backend: the Raspberry Pi CSI camera (``picamera2`` from Raspberry Pi OS,
the ``pi`` extra). Untested off a Pi; the contract is the same as every backend's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gate.camera.base import Camera, CameraError, Mode
from gate.types import Image


@dataclass(frozen=True)
class Picamera2Options:
    """``camera``: which CSI camera (0 on a board with one)."""

    camera: int = 0

    @classmethod
    def from_source(cls, source: str) -> Picamera2Options:
        """``[camera] source``: empty, or the camera's number."""
        if not source:
            return cls()
        if not source.isdigit():
            raise CameraError(f"picamera2: source must be a camera number, got {source!r}")
        return cls(int(source))


class Picamera2Camera(Camera[Picamera2Options]):
    """RGB888 main stream at the configured size; each capture copied into the buffer."""

    name = "picamera2"
    Options = Picamera2Options

    def __init__(self, mode: Mode, options: Picamera2Options) -> None:
        super().__init__(mode, options)
        self._cam: Any = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            if exc.name == "picamera2":
                raise CameraError("picamera2 is not installed (apt install python3-picamera2)"
                                  ) from None
            # PyPI's picamera2 installs without libcamera's bindings, which only Raspberry
            # Pi OS ships: say which module is missing and where it comes from.
            raise CameraError(f"picamera2 cannot load {exc.name or exc} (apt install "
                              "python3-libcamera python3-picamera2, from Raspberry Pi OS)"
                              ) from None
        try:
            cam = Picamera2(self.options.camera)
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
