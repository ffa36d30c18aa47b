"""Frame sources behind one small contract (see :mod:`gate.camera.base`).

Backends, each importing its library only inside its own module: ``replay`` (images, a
video file or a live scene, paced at a frame rate), ``opencv`` (V4L2 USB cameras or a
GStreamer pipeline, e.g. a Jetson CSI camera) and ``picamera2`` (the Raspberry Pi CSI
camera). :func:`open_camera` builds the configured one.
"""

from __future__ import annotations

from typing import Any

from gate.camera.base import Camera, CameraError

__all__ = ["Camera", "CameraError", "open_camera"]


def open_camera(backend: str, source: str, *, width: int, height: int, fps: float,
                **options: Any) -> Camera:
    """The camera backend named by ``backend`` (``replay``, ``opencv``, ``picamera2``)."""
    if backend == "replay":
        from gate.camera.replay import ReplayCamera

        return ReplayCamera(source, width=width, height=height, fps=fps, **options)
    if backend == "opencv":
        from gate.camera.opencv import OpenCVCamera

        return OpenCVCamera(source, width=width, height=height, fps=fps)
    if backend == "picamera2":
        from gate.camera.picamera2 import Picamera2Camera

        return Picamera2Camera(width=width, height=height, fps=fps)
    raise CameraError(f"unknown camera backend {backend!r}")
