"""Replay backend: a folder of images, a video file, or a live scene, at a frame rate.

A real backend, not a test double: the demo, the tests and the benchmarks see frames
through exactly the path a sensor's frames take. ``source`` is a directory (images in
name order, looped), a video file (looped), or, from code, a callable returning the scene
in front of the lane right now (``None`` = empty lane) — the simulator uses that. Frames
are letterboxed into the configured size and paced at ``fps`` (``fps=0`` would be
unlimited; use a large value for benchmarks instead).

A folder is untrusted input: each image is read as a regular file of bounded size
(:func:`gate.images.load_image`), and the camera moves past a file *before* decoding it,
so a corrupt, truncated, empty, huge or non-image file is one :class:`CameraError` (the
runtime's camera-fault path: reported, retried) and the next read shows the next file.
A reopened camera continues where it stopped, as a sensor shows what is in front of it
now rather than the start of a tape, so one bad file is not met again on every retry. A
video is opened once as a regular file (its descriptor is what the decoder reads) and
refused when its frames are larger than :data:`gate.images.MAX_PIXELS`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gate.camera.base import Camera, CameraError, Mode
from gate.errors import GateError
from gate.images import MAX_PIXELS, load_image
from gate.safefile import kind, open_regular, shown
from gate.types import Image

Scene = Callable[[], "Image | None"]
_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
#: Where the kernel shows a process its own descriptors (the decoder reads the video
#: through the descriptor checked here, not through the path a second time).
_FD_DIR = Path("/proc/self/fd")


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
        self._video_fd: int | None = None
        self._index = 0

    def _open(self) -> None:
        if callable(self.source):
            return
        path = Path(self.source)
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            raise CameraError(f"replay: {shown(path)} does not exist") from None
        if stat.S_ISDIR(mode):
            try:
                files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
            except OSError as exc:
                raise CameraError(f"replay: cannot list {shown(path)} ({exc.strerror})"
                                  ) from None
            if not files:
                raise CameraError(f"replay: no images in {shown(path)}")
            if files != self._files:  # another folder, or it changed: start again
                self._files, self._index = files, 0
        elif stat.S_ISREG(mode):
            self._open_video(path)
        else:
            raise CameraError(f"replay: {shown(path)} is {kind(mode)}, not a folder of "
                              "images or a video file")

    def _open_video(self, path: Path) -> None:
        def fail(reason: str) -> CameraError:
            return CameraError(f"replay: {shown(path)}: {reason}")

        fd = open_regular(path, what="video", fail=fail)
        via = _FD_DIR / str(fd)
        try:
            video = cv2.VideoCapture(str(via if via.exists() else path))
        except cv2.error:
            video = None
        if video is None or not video.isOpened():
            os.close(fd)
            raise CameraError(f"replay: cannot open video {shown(path)}")
        width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > MAX_PIXELS:
            video.release()
            os.close(fd)
            raise fail(f"{width}×{height} frames exceed the {MAX_PIXELS}-pixel limit")
        self._video, self._video_fd = video, fd

    def _wait(self) -> None:
        if not self.pace:
            return
        now = self.clock()
        if self._next_at > now:
            time.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + 1.0 / self.fps

    def _grab(self, out: Image) -> None:
        self._wait()
        try:
            self._grab_unpaced(out)
        except CameraError:
            raise
        except Exception as exc:  # a decoder's or a scene's own: still a camera fault
            # One line, without the library's message (it may quote the file's bytes).
            raise CameraError(f"replay: {self._what()} failed ({type(exc).__name__})"
                              ) from None

    def _what(self) -> str:
        if callable(self.source):
            return "the scene"
        if self._files:
            return shown(self._files[(self._index - 1) % len(self._files)])
        return "the video"

    def _grab_unpaced(self, out: Image) -> None:
        if callable(self.source):
            scene = self.source()
            if scene is None:
                out.fill(40)  # an empty, dimly lit lane
                return
            fit_into(scene, out)
            return
        if self._files:
            path = self._files[self._index % len(self._files)]
            self._index += 1  # past this file before decoding it: a bad one is left behind
            try:
                image = load_image(path)
            except GateError as exc:
                raise CameraError(f"replay: {exc}") from None
            try:
                fit_into(image, out)
            finally:
                image.fill(0)
            return
        ok, bgr = self._video.read()
        if not ok:  # end of the file: loop
            self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._video.read()
            if not ok:
                raise CameraError("replay: video delivers no frames")
        try:
            fit_into(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), out)
        finally:
            bgr.fill(0)

    def _close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._video_fd is not None:
            os.close(self._video_fd)
            self._video_fd = None


def fit_into(image: Image, out: Image) -> None:
    """Scale ``image`` to fit ``out`` (aspect kept, centred on grey)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or \
            image.dtype != np.uint8:
        shape = getattr(image, "shape", type(image).__name__)
        raise CameraError(f"replay: frame is not RGB uint8 ({shape}, "
                          f"{getattr(image, 'dtype', '-')})")
    if not image.shape[0] or not image.shape[1]:
        raise CameraError(f"replay: frame is empty ({image.shape[1]}×{image.shape[0]})")
    h, w = out.shape[:2]
    s = min(w / image.shape[1], h / image.shape[0])
    nw, nh = max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s))
    out.fill(40)
    x, y = (w - nw) // 2, (h - nh) // 2
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    cv2.resize(image, (nw, nh), dst=out[y:y + nh, x:x + nw], interpolation=interp)
