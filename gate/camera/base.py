"""The camera contract: open, read frames into one preallocated buffer, close.

Every backend writes each frame into the same H×W×3 uint8 RGB buffer, so no frame
outlives the next one and :meth:`Camera.wipe` can zero the only copy (promise P2).
``captures`` counts the frames actually taken from the sensor: the gate's tests use it to
prove nothing is captured while nobody is in the lane (promise P3). Faults (unplugged,
timeout, wrong format) raise :class:`CameraError`; the gate then stays closed, reports it
and retries with back-off.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from types import TracebackType

import numpy as np

from gate.errors import GateError
from gate.types import Image


class CameraError(GateError, OSError):
    """The camera cannot deliver frames (unplugged, timeout, wrong format)."""


class Camera(abc.ABC):
    """A frame source. Constructors never touch hardware; :meth:`open` does."""

    def __init__(self, *, width: int, height: int, fps: float) -> None:
        if not (16 <= width <= 8192 and 16 <= height <= 8192 and 0 < fps <= 240):
            raise CameraError(f"camera: unusable mode {width}x{height} at {fps} fps")
        self.width, self.height, self.fps = width, height, fps
        self.frame = np.zeros((height, width, 3), np.uint8)
        self.captures = 0
        self.is_open = False

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _grab(self, out: Image) -> None:
        """Write the next frame into ``out`` (raise CameraError on a fault)."""

    @abc.abstractmethod
    def _close(self) -> None: ...

    def open(self) -> None:
        """Start the sensor."""
        if not self.is_open:
            self._open()
            self.is_open = True

    def read(self) -> Image:
        """The next frame, in the camera's one buffer (overwritten by the next read)."""
        if not self.is_open:
            raise CameraError("camera: read while closed")
        self._grab(self.frame)
        self.captures += 1
        return self.frame

    def frames(self) -> Iterator[Image]:
        """Frames until closed."""
        while self.is_open:
            yield self.read()

    def wipe(self) -> None:
        """Zero the frame buffer."""
        self.frame.fill(0)

    def close(self) -> None:
        """Stop the sensor and zero the buffer."""
        if self.is_open:
            self.is_open = False
            self._close()
        self.wipe()

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
