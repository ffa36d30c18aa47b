"""The camera contract: open, read frames into one preallocated buffer, close.

Every backend writes each frame into the same H×W×3 uint8 RGB buffer, so no frame
outlives the next one and :meth:`Camera.wipe` can zero the only copy (promise P2).
``captures`` counts the frames actually taken from the sensor: the gate's tests use it to
prove nothing is captured while nobody is in the lane (promise P3). Faults (unplugged,
timeout, wrong format) raise :class:`CameraError`; the gate then stays closed, reports it
and retries with back-off.

Writing a backend (the registry in :mod:`gate.camera` lists them):

* it **must** set ``name`` (the ``[camera] backend`` value) and ``Options``, a frozen
  dataclass of its own settings with a classmethod ``from_source(source: str)`` that
  reads ``[camera] source``; every backend is built the same way,
  ``Backend(mode, options)``, and its constructor touches no hardware;
* it **must** implement ``_open`` (start the sensor), ``_grab(out)`` (write the next
  frame into ``out`` or raise :class:`CameraError`) and ``_close``;
* it **may** import its hardware library, but only inside those methods, so that
  ``import gate`` works on a machine without it;
* it **must not** keep a frame anywhere but ``out`` beyond ``_grab`` (zero any scratch
  copy there and in ``_close``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from gate.errors import GateError
from gate.types import Image


class CameraError(GateError, OSError):
    """The camera cannot deliver frames (unplugged, timeout, wrong format)."""


@dataclass(frozen=True)
class Mode:
    """Frame size and rate asked of every backend (``[camera] width, height, fps``)."""

    width: int
    height: int
    fps: float

    def __post_init__(self) -> None:
        if not (16 <= self.width <= 8192 and 16 <= self.height <= 8192 and
                0 < self.fps <= 240):
            raise CameraError(f"camera: unusable mode {self.width}x{self.height} at "
                              f"{self.fps} fps")


OptionsT = TypeVar("OptionsT")


class Camera(abc.ABC, Generic[OptionsT]):
    """A frame source; see the module docstring for what a backend must provide."""

    #: The ``[camera] backend`` value that selects this class.
    name: ClassVar[str]
    #: The backend's own settings (a frozen dataclass with ``from_source``).
    Options: ClassVar[type[Any]]

    def __init__(self, mode: Mode, options: OptionsT) -> None:
        self.mode = mode
        self.options = options
        self.width, self.height, self.fps = mode.width, mode.height, mode.fps
        self.frame = np.zeros((mode.height, mode.width, 3), np.uint8)
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

    def __enter__(self) -> Camera[OptionsT]:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
