"""Frame sources behind one small contract (see :mod:`gate.camera.base`).

Backends, each importing its hardware library only inside its own methods: ``replay``
(images, a video file or a live scene, paced at a frame rate), ``opencv`` (V4L2 USB
cameras or a GStreamer pipeline, e.g. a Jetson CSI camera) and ``picamera2`` (the
Raspberry Pi CSI camera). :data:`CAMERAS` is the registry the config's
``[camera] backend`` choices come from; :func:`open_camera` builds the configured one.
"""

from __future__ import annotations

from typing import Any

from gate.camera.base import Camera, CameraError, Mode
from gate.camera.opencv import OpenCVCamera
from gate.camera.picamera2 import Picamera2Camera
from gate.camera.replay import ReplayCamera

__all__ = ["CAMERAS", "Camera", "CameraError", "Mode", "open_camera"]

#: Every backend, by its ``[camera] backend`` name.
CAMERAS: dict[str, type[Camera[Any]]] = {
    c.name: c for c in (ReplayCamera, OpenCVCamera, Picamera2Camera)}


def open_camera(backend: str, source: str, mode: Mode) -> Camera[Any]:
    """The backend named ``backend`` (not opened yet), with ``source`` read by its options."""
    try:
        cls = CAMERAS[backend]
    except KeyError:
        raise CameraError(f"unknown camera backend {backend!r} (known: "
                          f"{', '.join(CAMERAS)})") from None
    return cls(mode, cls.Options.from_source(source))
