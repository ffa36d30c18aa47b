"""The replay camera on folders and videos that are not what they should be: every bad
file is one CameraError, the camera is past it before decoding it, and the good files
around it still show, in order."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.camera import Camera, CameraError, Mode
from gate.camera import replay as replay_mod
from gate.camera.replay import ReplayCamera, ReplayOptions, fit_into
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "bad frames"
MODE = Mode(64, 48, 240)
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def _solid(value: int, ext: str = ".png", size: tuple[int, int] = (40, 50)) -> bytes:
    ok, buf = cv2.imencode(ext, np.full((*size, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + \
        struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _bad_files(folder: Path) -> dict[str, str]:
    """Write every kind of bad 'image' into ``folder``; name -> what it is."""
    good = _solid(90, ".jpg")
    bad: dict[str, bytes] = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "truncated.jpg": good[: len(good) // 3],
        "empty.png": b"",
        "huge-header.png": _png_header(50_000, 50_000),
        "notes.jpg": b"shopping list: milk, eggs",
        "tiny.png": _solid(7, ".png", (4, 4)),
        "flipped.jpg": bytes(b ^ 0xFF if 200 < i < 400 else b for i, b in enumerate(good)),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "dir.jpg").mkdir()
    (folder / "dangling.jpg").symlink_to(folder / "nowhere")
    return {**dict.fromkeys(bad, "bad"), "fifo.jpg": "bad", "zero.png": "bad",
            "dir.jpg": "bad", "dangling.jpg": "bad"}


def _read(cam: Camera[Any]) -> int | None:
    """The grey level at the frame's centre, or None on a CameraError."""
    try:
        frame = cam.read()
    except CameraError as exc:
        message = str(exc)
    else:
        return int(frame[24, 32, 0])
    assert "\n" not in message and message.startswith("replay: ")
    return None


def test_a_folder_of_bad_files_is_read_past_file_by_file(tmp_path, ledger: Ledger):
    folder = tmp_path / "frames"
    folder.mkdir()
    kinds = _bad_files(folder)
    for k, value in enumerate((30, 60, 120, 240)):  # good ones between the bad ones
        name = f"{'bcdfkt'[k]}-good.png"
        (folder / name).write_bytes(_solid(value))
        kinds[name] = str(value)
    order = sorted(kinds)
    expected = [None if kinds[n] == "bad" else int(kinds[n]) for n in order]
    bad = sum(kind == "bad" for kind in kinds.values())
    with ledger.case(CLASS, n=bad):  # one camera read past them all, twice round
        with ReplayCamera(MODE, ReplayOptions(folder)) as cam:
            seen = [_read(cam) for _ in range(2 * len(order))]
            assert cam.frame.shape == (48, 64, 3)
        assert seen == expected * 2  # every file once per round, bad ones are errors only


def test_a_reopened_camera_continues_after_the_bad_file(tmp_path, ledger: Ledger):
    """The runtime closes the camera on a fault and reopens it: it must not start over
    and meet the same bad file first every time."""
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "b.png").write_bytes(_solid(100))
    with ledger.case(CLASS):
        cam = ReplayCamera(MODE, ReplayOptions(folder))
        for _ in range(3):
            cam.open()
            assert _read(cam) is None
            cam.close()
            cam.open()
            assert _read(cam) == 100
            cam.close()
        assert not cam.frame.any()


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(junk=st.lists(st.binary(max_size=300) |
                     st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF"])
                     .flatmap(lambda m: st.binary(max_size=200).map(lambda r: m + r)),
                     min_size=1, max_size=6))
def test_random_bytes_among_good_images(tmp_path_factory, ledger: Ledger, junk):
    folder = tmp_path_factory.mktemp("fuzz")
    for k, data in enumerate(junk):
        (folder / f"{k:02d}-junk.jpg").write_bytes(data)
    (folder / "99-good.png").write_bytes(_solid(200))
    with ledger.case(CLASS):
        with ReplayCamera(MODE, ReplayOptions(folder)) as cam:
            seen = [_read(cam) for _ in range(len(junk) + 1)]
        assert seen[-1] == 200  # the camera always got past every junk file
        assert all(v is None or isinstance(v, int) for v in seen)


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (160, 120))
    for i in range(5):
        writer.write(np.full((120, 160, 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_sources_that_are_not_a_folder_or_a_regular_file(tmp_path, video, ledger: Ledger):
    fifo = tmp_path / "fifo.avi"
    os.mkfifo(fifo)
    (tmp_path / "link.avi").symlink_to("/dev/zero")
    (tmp_path / "garbage.avi").write_bytes(b"\x00" * 1000)
    cases = {"/dev/zero": "is a character device", str(fifo): "is a FIFO",
             str(tmp_path / "link.avi"): "is a character device",
             str(tmp_path / "garbage.avi"): "cannot open video",
             str(tmp_path / "nothing"): "does not exist"}
    for source, word in cases.items():
        with ledger.case(CLASS):
            cam = ReplayCamera(MODE, ReplayOptions(source))
            with pytest.raises(CameraError) as err:
                cam.open()
            assert word in str(err.value) and "\n" not in str(err.value), source
            assert not cam.is_open
    link = tmp_path / "link-to-clip.avi"
    link.symlink_to(video)
    with ReplayCamera(Mode(160, 120, 240), ReplayOptions(link)) as linked:
        assert [round(float(linked.read().mean()) / 40) for _ in range(3)] == [0, 1, 2]


def test_the_video_is_read_through_the_checked_descriptor(video, monkeypatch):
    opened: list[str] = []
    real = cv2.VideoCapture

    def spy(source, *a):
        opened.append(str(source))
        return real(source, *a)
    monkeypatch.setattr(cv2, "VideoCapture", spy)
    cam = ReplayCamera(Mode(160, 120, 240), ReplayOptions(video))
    with cam:
        cam.read()
        fd = cam._video_fd
        assert fd is not None and opened == [f"/proc/self/fd/{fd}"]
    assert cam._video_fd is None
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # closed with the camera


def test_a_video_of_frames_over_the_pixel_limit_is_refused(video, monkeypatch,
                                                           ledger: Ledger):
    monkeypatch.setattr(replay_mod, "MAX_PIXELS", 160 * 120 - 1)
    with ledger.case(CLASS):
        cam = ReplayCamera(Mode(160, 120, 240), ReplayOptions(video))
        with pytest.raises(CameraError, match="frames exceed the 19199-pixel limit"):
            cam.open()
        assert cam._video_fd is None


@pytest.mark.parametrize("scene", [np.zeros((0, 0, 3), np.uint8), np.zeros((0, 10, 3), np.uint8),
                                   np.zeros((10, 0, 3), np.uint8), [[1, 2, 3]], "frame",
                                   np.zeros((10, 10, 3), np.float64)])
def test_scenes_it_cannot_show_are_camera_errors(ledger: Ledger, scene):
    with ledger.case(CLASS):
        with ReplayCamera(MODE, ReplayOptions(lambda: scene)) as cam, \
                pytest.raises(CameraError) as err:
            cam.read()
        assert "\n" not in str(err.value)


def test_a_scene_that_raises_is_a_camera_error_without_its_message(ledger: Ledger):
    def scene():
        raise RuntimeError("att-123 secret")
    with ledger.case(CLASS):
        with ReplayCamera(MODE, ReplayOptions(scene)) as cam, \
                pytest.raises(CameraError) as err:
            cam.read()
        assert str(err.value) == "replay: the scene failed (RuntimeError)"


@settings(max_examples=100, deadline=None)
@given(h=st.integers(0, 70), w=st.integers(0, 70))
def test_fit_into_any_size(ledger: Ledger, h, w):
    out = np.zeros((48, 64, 3), np.uint8)
    image = np.full((h, w, 3), 200, np.uint8)
    with ledger.case(CLASS):
        if h and w:
            fit_into(image, out)
            assert out.max() == 200
        else:
            with pytest.raises(CameraError, match="empty"):
                fit_into(image, out)
