"""Decoding still images (enrolment photos, evaluation sets, replayed frames) to RGB.

Whatever comes in (JPEG with EXIF rotation, grayscale, RGBA PNG, 16-bit) leaves as an
H×W×3 uint8 RGB array, or as an :class:`~gate.errors.ImageError` with a one-line
reason. Pixel dimensions are read from the PNG/JPEG header before decoding so a small
file that would inflate to gigabytes is refused without being decoded.
Images are only ever read: nothing here writes pixels anywhere (promise P1).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from gate.errors import ImageError
from gate.types import Array

#: Largest picture accepted, in pixels (a 40 MP camera still; frames are far smaller).
MAX_PIXELS = 40_000_000
#: Largest file accepted, in bytes.
MAX_BYTES = 64 * 1024 * 1024
#: Smallest side accepted: below this there cannot be a face worth checking.
MIN_SIDE = 32

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the picture size (not DHT/JPG/DAC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None if not found."""
    if data.startswith(_PNG_MAGIC) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
            if marker in _SOF_MARKERS and pos + 9 <= len(data):
                height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                return int(width), int(height)
            pos += 2 + length
    return None


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> Array:
    """Decode encoded image bytes to an RGB uint8 array (EXIF orientation applied)."""
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file of {len(data)} bytes exceeds {MAX_BYTES}")
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(f"{name}: {size[0]}×{size[1]} pixels exceeds the {max_pixels} limit")
    # IMREAD_COLOR turns grayscale/RGBA/16-bit into 8-bit BGR and applies EXIF rotation.
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{name}: not a decodable image")
    h, w = bgr.shape[:2]
    if h * w > max_pixels:
        raise ImageError(f"{name}: {w}×{h} pixels exceeds the {max_pixels} limit")
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {w}×{h} pixels is too small to hold a face")
    rgb: Array = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    bgr.fill(0)  # the decoder's copy of the picture does not outlive this call
    return rgb


def load_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> Array:
    """Read and decode an image file to RGB uint8."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageError(f"{path}: file of {size} bytes exceeds {MAX_BYTES}")
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, name=str(path), max_pixels=max_pixels)
