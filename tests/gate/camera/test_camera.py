"""Camera backends: replay (folder, video, scene), OpenCV on a video file, faults."""

from __future__ import annotations

import importlib.util
import sys
import time

import cv2
import numpy as np
import pytest

from gate.camera import CAMERAS, CameraError, Mode, open_camera
from gate.camera.opencv import OpenCVCamera, OpenCVOptions
from gate.camera.picamera2 import Picamera2Camera, Picamera2Options
from gate.camera.replay import ReplayCamera, ReplayOptions
from gate.config import from_dict


@pytest.fixture
def video(tmp_path):
    """A 20-frame video written with OpenCV: frame i is filled with value 10*i."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (160, 120))
    for i in range(20):
        writer.write(np.full((120, 160, 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_opencv_backend_reads_a_video_file(video):
    cam = OpenCVCamera(Mode(160, 120, 30), OpenCVOptions(str(video)))
    with cam:
        means = [float(cam.read().mean()) for _ in range(5)]
    assert means == pytest.approx([0, 10, 20, 30, 40], abs=3)
    assert cam.captures == 5 and not cam.frame.any()  # closed: buffer wiped


def test_opencv_backend_resizes_a_camera_that_ignores_the_size(video):
    with OpenCVCamera(Mode(320, 240, 30), OpenCVOptions(str(video))) as cam:
        assert cam.read().shape == (240, 320, 3)


def test_opencv_faults_are_camera_errors(tmp_path, video):
    with pytest.raises(CameraError, match="cannot open"):
        OpenCVCamera(Mode(160, 120, 30), OpenCVOptions(str(tmp_path / "unplugged.avi"))).open()
    cam = OpenCVCamera(Mode(160, 120, 30), OpenCVOptions(str(video)))
    cam.open()
    cam._cap.release()  # the cable is pulled mid-stream
    with pytest.raises(CameraError, match="no frame"):
        cam.read()
    cam.close()


def test_replay_folder_video_and_scene(tmp_path, photos, video):
    with open_camera("replay", str(photos), Mode(320, 240, 200)) as cam:
        frames = [cam.read().copy() for _ in range(3)]
    assert all(f.shape == (240, 320, 3) and f.std() > 10 for f in frames)
    with ReplayCamera(Mode(160, 120, 200), ReplayOptions(video)) as cam:
        assert [round(float(cam.read().mean()) / 10) for _ in range(3)] == [0, 1, 2]
    scene: list[np.ndarray | None] = [None]
    with ReplayCamera(Mode(64, 48, 200), ReplayOptions(lambda: scene[0])) as cam:
        assert cam.read().mean() == 40  # empty lane
        scene[0] = np.full((100, 100, 3), 200, np.uint8)
        assert cam.read()[24, 32].tolist() == [200, 200, 200]


def test_replay_paces_at_the_frame_rate():
    with ReplayCamera(Mode(64, 48, 50), ReplayOptions(lambda: None)) as cam:
        t = time.monotonic()
        for _ in range(10):
            cam.read()
        assert time.monotonic() - t >= 9 / 50 * 0.9


@pytest.mark.parametrize("bad", ["/nonexistent", ""])
def test_replay_faults(bad, tmp_path):
    with pytest.raises(CameraError):
        ReplayCamera(Mode(64, 48, 30), ReplayOptions(bad or tmp_path)).open()
    with ReplayCamera(Mode(64, 48, 200), ReplayOptions(lambda: np.zeros((10, 10), np.uint8))
                      ) as cam, pytest.raises(CameraError, match="not RGB"):
        cam.read()


def test_read_while_closed_and_bad_modes():
    cam = ReplayCamera(Mode(64, 48, 30), ReplayOptions(lambda: None))
    with pytest.raises(CameraError, match="closed"):
        cam.read()
    with pytest.raises(CameraError, match="unusable mode"):
        Mode(0, 48, 30)
    with pytest.raises(CameraError, match="unknown camera backend"):
        open_camera("webcam9000", "", Mode(64, 48, 30))


def test_every_backend_is_built_the_same_way_from_the_config():
    registry = CAMERAS
    assert registry == {"replay": ReplayCamera, "opencv": OpenCVCamera,
                        "picamera2": Picamera2Camera}
    mode = from_dict({"camera": {"width": 320, "height": 240, "fps": 15}}).camera.mode
    assert mode == Mode(320, 240, 15)
    cam = open_camera("opencv", "/dev/video2", mode)
    assert isinstance(cam, OpenCVCamera) and not cam.is_open  # no hardware touched
    assert (cam.options, cam.width, cam.height, cam.fps) == \
        (OpenCVOptions("/dev/video2"), 320, 240, 15)
    assert open_camera("opencv", "", mode).options == OpenCVOptions("0")
    assert open_camera("picamera2", "1", mode).options == Picamera2Options(1)
    with pytest.raises(CameraError, match="camera number"):
        open_camera("picamera2", "/dev/video0", mode)
    with pytest.raises(TypeError):  # unknown options are not swallowed
        ReplayOptions(lambda: None, fps=30)  # type: ignore[call-arg]


def test_picamera2_missing_is_a_clear_camera_error():
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("a real Picamera2 is installed: hardware tier")
    cam = open_camera("picamera2", "", Mode(640, 480, 30))
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        cam.open()


def test_picamera2_without_libcamera_says_what_is_missing(tmp_path, monkeypatch):
    """PyPI's picamera2 installs on any aarch64 Debian but imports libcamera, which only
    Raspberry Pi OS ships (what `make test-arm64` found)."""
    fake = tmp_path / "picamera2"
    fake.mkdir()
    (fake / "__init__.py").write_text("import libcamera_absent_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    cam = open_camera("picamera2", "", Mode(640, 480, 30))
    with pytest.raises(CameraError) as exc:
        cam.open()
    assert str(exc.value) == ("picamera2 cannot load libcamera_absent_here (apt install "
                              "python3-libcamera python3-picamera2, from Raspberry Pi OS)")
    assert not cam.is_open
