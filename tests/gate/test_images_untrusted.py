"""Image files as an attacker or a broken disk would make them: devices and links to them,
lying headers in every accepted format, random bytes. Each is one ImageError line;
nothing is decoded whose header announces more than the pixel limit."""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gate import images
from gate.errors import ImageError
from gate.images import MAX_BYTES, MAX_PIXELS, decode_image, header_size, load_image
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "unbounded local files"
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def _encode(image: np.ndarray, ext: str, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _bomb(fmt: str, width: int, height: int) -> bytes:
    """A small file whose header announces ``width`` × ``height`` pixels."""
    if fmt == "png":
        return _png(width, height)
    if fmt == "jpeg":
        real = bytearray(_encode(np.zeros((40, 40, 3), np.uint8), ".jpg"))
        sof = next(i for i in range(2, len(real) - 1)
                   if real[i] == 0xFF and real[i + 1] in (0xC0, 0xC2))
        real[sof + 5:sof + 9] = struct.pack(">HH", height, width)
        return bytes(real)
    if fmt == "bmp":
        real = bytearray(_encode(np.zeros((40, 40, 3), np.uint8), ".bmp"))
        real[18:26] = struct.pack("<ii", width, height)
        return bytes(real)
    if fmt == "webp":
        vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + \
            (height - 1).to_bytes(3, "little")
        body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + vp8x
        return b"RIFF" + struct.pack("<I", len(body)) + body
    assert fmt == "pnm"
    return f"P6\n# big\n{width} {height}\n255\n".encode() + b"\x00" * 64


FORMATS = ["png", "jpeg", "bmp", "webp", "pnm"]


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from(FORMATS), width=st.integers(1, 16383), height=st.integers(1, 16383))
@example(fmt="png", width=16383, height=16383)
def test_lying_headers_are_refused_before_decoding(ledger: Ledger, fmt, width, height):
    data = _bomb(fmt, width, height)
    with ledger.case(CLASS):
        assert header_size(data) == (width, height)
        if width * height <= MAX_PIXELS:
            return
        with pytest.raises(ImageError, match="exceeds the") as err:
            decode_image(data, name="bomb")
        assert "\n" not in str(err.value)


def test_nothing_with_a_big_header_reaches_the_decoder(monkeypatch, ledger: Ledger):
    def no(*a, **kw):
        raise AssertionError("decoded")
    monkeypatch.setattr(cv2, "imdecode", no)
    for fmt in FORMATS:
        with ledger.case(CLASS), pytest.raises(ImageError, match="exceeds"):
            decode_image(_bomb(fmt, 10_000, 10_000))
        if fmt != "webp":  # WebP stores size - 1: it cannot say 0
            with ledger.case(CLASS), \
                    pytest.raises(ImageError, match="its header says 0×480 pixels"):
                decode_image(_bomb(fmt, 0, 480))


@pytest.mark.parametrize(("data", "word"), [
    (b"II*\x00" + b"\x00" * 100, "not a JPEG, PNG, BMP, WebP or PNM file"),  # TIFF
    (b"GIF89a" + b"\x00" * 100, "not a JPEG, PNG, BMP, WebP or PNM file"),
    (b"\x76\x2f\x31\x01" + b"\x00" * 100, "not a JPEG, PNG, BMP, WebP or PNM file"),  # EXR
    (b"P7\nWIDTH 9999\n", "not a JPEG, PNG, BMP, WebP or PNM file"),  # PAM
    (b"\xff\xd8\xff\xe0\x00\x00", "no picture size in its header"),
    (b"\x89PNG\r\n\x1a\n", "no picture size in its header"),
    (b"BM" + b"\x00" * 12 + struct.pack("<I", 20) + b"\x00" * 40, "no picture size"),
])
def test_formats_and_headers_the_gate_does_not_decode(ledger: Ledger, data, word):
    with ledger.case(CLASS):
        with pytest.raises(ImageError) as err:
            decode_image(data, name="upload")
        assert word in str(err.value) and "not a decodable image" in str(err.value)


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from([".jpg", ".png", ".bmp", ".webp", ".ppm", ".pgm"]),
       h=st.integers(32, 200), w=st.integers(32, 200), alpha=st.booleans())
def test_every_accepted_format_decodes_to_its_header_size(fmt, h, w, alpha):
    rng = np.random.default_rng(h * 1000 + w)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    if fmt == ".pgm":
        image = image[..., 0]
    elif alpha and fmt in (".png", ".webp"):
        image = np.dstack([image, np.full((h, w), 128, np.uint8)])
    data = _encode(image, fmt)
    assert header_size(data) == (w, h)
    out = decode_image(data)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600) |
       st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"P6\n", b"RIFF"])
       .flatmap(lambda magic: st.binary(max_size=400).map(lambda rest: magic + rest)))
def test_random_bytes_decode_or_give_one_image_error(ledger: Ledger, data):
    with ledger.case(CLASS):
        try:
            out = decode_image(data, name="fuzz")
        except ImageError as err:
            message = str(err)
        else:
            assert out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 32
            return
        assert "\n" not in message and message.startswith("fuzz: ")


@settings(max_examples=100, deadline=None)
@given(cut=st.floats(0.0, 0.99), flips=st.lists(st.integers(0, 10**6), max_size=8))
def test_damaged_real_images_decode_or_give_one_image_error(ledger: Ledger, cut, flips):
    good = _encode(np.random.default_rng(7).integers(0, 255, (64, 80, 3), np.uint8), ".jpg")
    data = bytearray(good[: max(1, int(len(good) * cut))] if cut else good)
    for f in flips:
        data[f % len(data)] ^= 0x5A
    with ledger.case(CLASS):
        try:
            decode_image(bytes(data), name="damaged")
        except ImageError as err:
            message = str(err)
        else:
            return
        assert "\n" not in message and message.startswith("damaged: ")


@pytest.fixture
def specials(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "sock.jpg"))
    (tmp_path / "folder.jpg").mkdir()
    links = {}
    for name, target in (("zero", "/dev/zero"), ("urandom", "/dev/urandom"),
                         ("fifo", str(fifo))):
        links[name] = tmp_path / f"link-{name}.jpg"
        links[name].symlink_to(target)
    try:
        yield {"fifo": fifo, "socket": tmp_path / "sock.jpg", "folder": tmp_path / "folder.jpg",
               "/dev/zero": "/dev/zero", **{f"link to {k}": v for k, v in links.items()}}
    finally:
        sock.close()


def test_only_regular_files_are_read(specials, ledger: Ledger):
    for name, path in specials.items():
        with ledger.case(CLASS):
            with pytest.raises(ImageError) as err:
                load_image(path)
            text = str(err.value)
            assert "\n" not in text and "not a regular file" in text, (name, text)


def test_a_file_over_the_byte_limit_is_refused_unread(tmp_path, monkeypatch, ledger: Ledger):
    f = tmp_path / "huge.jpg"
    with open(f, "wb") as fh:
        fh.write(b"\xff\xd8\xff")
        fh.truncate(MAX_BYTES + 1)
    monkeypatch.setattr(images, "decode_image", lambda *_, **__: pytest.fail("decoded"))
    with ledger.case(CLASS), pytest.raises(ImageError, match=f"exceeds the limit of {MAX_BYTES}"):
        load_image(f)


def test_a_link_to_a_photo_is_followed(tmp_path):
    real = tmp_path / "real.png"
    real.write_bytes(_encode(np.zeros((40, 50, 3), np.uint8), ".png"))
    link = tmp_path / "link.png"
    link.symlink_to(real)
    assert load_image(link).shape == (40, 50, 3)


@pytest.mark.parametrize("data", [
    b"P6" + b" " * 4000 + b"x", b"P6" + b"\n#" * 2000, b"P6 " + b"9" * 4000,
    b"\xff\xd8" + b"\xff" * 100_000, b"\xff\xd8" + b"\xff\xe0\x00\x02" * 50_000,
    b"BM" + b"\x00" * 100_000, b"RIFF\x00\x00\x00\x00WEBP" + b"VP8X" * 25_000])
def test_headers_are_read_in_linear_time(ledger: Ledger, data):
    with ledger.case(CLASS):
        start = time.perf_counter()
        header_size(data)
        with pytest.raises(ImageError):
            decode_image(data)
        assert time.perf_counter() - start < 0.5


_GAP = st.lists(st.sampled_from([b" ", b"\n", b"\t", b"\r\n", b"# a comment\n", b"#\n"]),
                min_size=1, max_size=4).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(w=st.integers(32, 90), h=st.integers(32, 90), gaps=st.tuples(_GAP, _GAP, _GAP))
@example(w=40, h=33, gaps=(b" ", b"\n", b"\n"))
@example(w=40, h=33, gaps=(b"\n# made by a camera\n", b" ", b"\n"))
def test_pnm_headers_are_read_like_the_decoder_reads_them(ledger: Ledger, w, h, gaps):
    """Whatever layout of spaces and comments the decoder accepts, the header is read
    the same way (the size check cannot be dodged); what it refuses stays refused."""
    head = b"P6" + gaps[0] + str(w).encode() + gaps[1] + str(h).encode() + gaps[2] + b"255\n"
    data = head + bytes(range(256)) * (w * h * 3 // 256 + 1)
    data = data[:len(head) + w * h * 3]
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    with ledger.case(CLASS):
        if reference is None:
            with pytest.raises(ImageError):
                decode_image(data)
            return
        assert header_size(data) == (w, h)
        assert decode_image(data).shape == (h, w, 3) == reference.shape


@settings(max_examples=60, deadline=None)
@given(extra=st.lists(st.sampled_from([b"\xff\x01", b"\xff\xd0", b"\xff\xd7", b"\xff\xff",
                                       b"\xff\xfe\x00\x05abc", b"\xff\xe1\x00\x02"]),
                      max_size=4), w=st.integers(32, 120), h=st.integers(32, 120))
def test_jpeg_segments_are_walked_like_libjpeg_walks_them(ledger: Ledger, extra, w, h):
    """Markers without a length (TEM, RSTn), fill bytes, comments, empty APPn before the
    frame header: wherever libjpeg finds the picture size, the header check finds the
    same one, so a bomb cannot hide its size behind them."""
    real = _encode(np.full((h, w, 3), 128, np.uint8), ".jpg")
    data = real[:2] + b"".join(extra) + real[2:]
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    with ledger.case(CLASS):
        if reference is not None:
            assert header_size(data) == (w, h) and reference.shape == (h, w, 3)
        bomb = bytearray(data)
        sof = next(i for i in range(2, len(bomb) - 1)
                   if bomb[i] == 0xFF and bomb[i + 1] in (0xC0, 0xC2))
        bomb[sof + 5:sof + 9] = struct.pack(">HH", 10_000, 10_000)
        with pytest.raises(ImageError, match=r"exceeds" if reference is not None else r"image"):
            decode_image(bytes(bomb))
