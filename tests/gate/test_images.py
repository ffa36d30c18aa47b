"""Decoding untrusted image files: every kind of garbage gives one clear line."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from gate.errors import ImageError
from gate.images import MAX_PIXELS, decode_image, header_size, load_image


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _one_line(err: pytest.ExceptionInfo[ImageError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "empty file"),
    (b"hello, I am not a picture", "not a decodable image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "not a decodable image"),
])
def test_garbage_bytes(data, expected):
    with pytest.raises(ImageError) as err:
        decode_image(data, name="upload.jpg")
    assert expected in _one_line(err) and "upload.jpg" in str(err.value)


def test_decompression_bomb_refused_from_the_header_alone():
    bomb = _png(50_000, 50_000)  # 2.5 gigapixels announced in a 57-byte file
    assert header_size(bomb) == (50_000, 50_000)
    with pytest.raises(ImageError) as err:
        decode_image(bomb, name="bomb.png")
    assert "exceeds" in _one_line(err) and str(MAX_PIXELS) in str(err.value)


def test_jpeg_header_size_is_read():
    data = _encode(np.zeros((48, 64, 3), np.uint8))
    assert header_size(data) == (64, 48)


def test_huge_but_allowed_image_decodes(photo):
    big = cv2.resize(photo("obama.jpg"), (6000, 4800), interpolation=cv2.INTER_LINEAR)
    out = decode_image(_encode(big), name="big.jpg")
    assert out.shape == (4800, 6000, 3)


def test_a_limit_below_the_picture_size_refuses_it(photo):
    data = _encode(photo("obama.jpg"))
    with pytest.raises(ImageError, match="exceeds"):
        decode_image(data, max_pixels=100_000)


def test_tiny_image_refused():
    with pytest.raises(ImageError, match="too small"):
        decode_image(_encode(np.zeros((8, 8, 3), np.uint8)))


def test_grayscale_16bit_and_rgba_become_rgb_uint8():
    gray = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    out = decode_image(_encode(gray, ".png"))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray)
    deep = (gray.astype(np.uint16) * 257)
    assert decode_image(_encode(deep, ".png")).dtype == np.uint8
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 2] = 255  # BGRA red
    rgba[..., 3] = 128
    out = decode_image(_encode(rgba, ".png"))
    assert out.shape == (64, 64, 3) and out[0, 0].tolist() == [255, 0, 0]


def test_truncated_jpeg_of_a_real_photo(photo):
    data = _encode(photo("obama.jpg"))
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) // 3], name="cut.jpg")
    assert "cut.jpg" in _one_line(err)


def test_load_image_file_errors(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.jpg").write_text("shopping list")
    with pytest.raises(ImageError, match="not a decodable image"):
        load_image(tmp_path / "notes.jpg")
