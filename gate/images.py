"""Decoding still images (enrolment photos, evaluation sets, replayed frames) to RGB.

Whatever comes in (JPEG with EXIF rotation, grayscale, RGBA PNG, 16-bit) leaves as an
H×W×3 uint8 RGB array, or as an :class:`~gate.errors.ImageError` with a one-line
reason. Only JPEG, PNG, BMP, WebP and PNM (the formats the gate's folders hold) are
decoded, and only after their pixel dimensions were read from the header, so a small file
that would inflate to gigabytes is refused without being decoded. A file is read once,
as a regular file of at most :data:`MAX_BYTES` (:mod:`gate.safefile`): a device, FIFO or
directory, or a link to one, is refused without reading it.
Images are only ever read: nothing here writes pixels anywhere (promise P1).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from gate.errors import ImageError
from gate.safefile import read_regular, shown
from gate.types import Array

#: Largest picture accepted, in pixels (a 40 MP camera still; frames are far smaller).
MAX_PIXELS = 40_000_000
#: Largest file accepted, in bytes.
MAX_BYTES = 64 * 1024 * 1024
#: Smallest side accepted: below this there cannot be a face worth checking.
MIN_SIDE = 32
#: The formats decoded, by what their files start with.
FORMATS = "JPEG, PNG, BMP, WebP or PNM"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the picture size (not DHT/JPG/DAC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNM_SPACE = b" \t\r\n\v\f"


def image_format(data: bytes) -> str | None:
    """The format ``data`` is in, by its first bytes: jpeg, png, bmp, webp, pnm or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"123456" and \
            data[2:3].isspace():
        return "pnm"
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, BMP, WebP or PNM file, or None if
    not found."""
    try:
        return _SIZE_READERS[image_format(data) or ""](data)
    except (KeyError, struct.error, IndexError):
        return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length, as libjpeg
            pos += 2
            continue
        if marker in (0xD8, 0xD9):  # a second SOI, or EOI before any frame: not a picture
            return None
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return int(width), int(height)
        if length < 2:  # a segment cannot be shorter than its own length field
            return None
        pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
        return int(width), int(height)
    if header >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(width & 0x3FFF), int(height & 0x3FFF)
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = struct.unpack("<I", data[21:25])[0]
        return int(bits & 0x3FFF) + 1, int((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """Width and height: decimals after the magic, between whitespace and #-comments
    (a plain scan of the first 4 KiB: no pattern that could backtrack)."""
    head, pos = data[:4096], 2
    numbers: list[int] = []
    while len(numbers) < 2:
        while pos < len(head) and head[pos] in _PNM_SPACE:
            pos += 1
        if pos < len(head) and head[pos:pos + 1] == b"#":
            end = head.find(b"\n", pos)
            if end < 0:
                return None
            pos = end + 1
            continue
        start = pos
        while pos < len(head) and 48 <= head[pos] <= 57 and pos - start < 9:
            pos += 1
        if pos == start or pos >= len(head) or head[pos] not in _PNM_SPACE + b"#":
            return None  # no number, a number too long, or one not ended
        numbers.append(int(head[start:pos]))
    return numbers[0], numbers[1]


_SIZE_READERS = {"png": _png_size, "jpeg": _jpeg_size, "bmp": _bmp_size, "webp": _webp_size,
                 "pnm": _pnm_size}


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> Array:
    """Decode encoded image bytes to an RGB uint8 array (EXIF orientation applied)."""
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file of {len(data)} bytes exceeds {MAX_BYTES}")
    if image_format(data) is None:
        raise ImageError(f"{name}: not a decodable image (not a {FORMATS} file)")
    size = header_size(data)
    if size is None:
        raise ImageError(f"{name}: not a decodable image (no picture size in its header)")
    if not size[0] or not size[1]:
        raise ImageError(f"{name}: not a decodable image (its header says "
                         f"{size[0]}×{size[1]} pixels)")
    if size[0] * size[1] > max_pixels:
        raise ImageError(f"{name}: {size[0]}×{size[1]} pixels exceeds the {max_pixels} limit")
    # IMREAD_COLOR turns grayscale/RGBA/16-bit into 8-bit BGR and applies EXIF rotation.
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise ImageError(f"{name}: not a decodable image")
    h, w = bgr.shape[:2]
    if h * w > max_pixels:
        bgr.fill(0)
        raise ImageError(f"{name}: {w}×{h} pixels exceeds the {max_pixels} limit")
    if min(h, w) < MIN_SIDE:
        bgr.fill(0)
        raise ImageError(f"{name}: {w}×{h} pixels is too small to hold a face")
    rgb: Array = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    bgr.fill(0)  # the decoder's copy of the picture does not outlive this call
    return rgb


def load_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> Array:
    """Read (a regular file of at most :data:`MAX_BYTES`, links followed) and decode an
    image file to RGB uint8."""
    name = shown(path)

    def fail(reason: str) -> ImageError:
        return ImageError(f"{name}: {reason}")

    data = read_regular(path, limit=MAX_BYTES, what="image", fail=fail)
    return decode_image(data, name=name, max_pixels=max_pixels)
