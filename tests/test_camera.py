"""Camera backends: replay (folder, video, scene), OpenCV on a video file, faults."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from gate.camera import CameraError, open_camera
from gate.camera.opencv import OpenCVCamera
from gate.camera.replay import ReplayCamera


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
    cam = OpenCVCamera(str(video), width=160, height=120, fps=30)
    with cam:
        means = [float(cam.read().mean()) for _ in range(5)]
    assert means == pytest.approx([0, 10, 20, 30, 40], abs=3)
    assert cam.captures == 5 and not cam.frame.any()  # closed: buffer wiped


def test_opencv_backend_resizes_a_camera_that_ignores_the_size(video):
    with OpenCVCamera(str(video), width=320, height=240, fps=30) as cam:
        assert cam.read().shape == (240, 320, 3)


def test_opencv_faults_are_camera_errors(tmp_path, video):
    with pytest.raises(CameraError, match="cannot open"):
        OpenCVCamera(str(tmp_path / "unplugged.avi"), width=160, height=120, fps=30).open()
    cam = OpenCVCamera(str(video), width=160, height=120, fps=30)
    cam.open()
    cam._cap.release()  # the cable is pulled mid-stream
    with pytest.raises(CameraError, match="no frame"):
        cam.read()
    cam.close()


def test_replay_folder_video_and_scene(tmp_path, photos, video):
    with open_camera("replay", str(photos), width=320, height=240, fps=200) as cam:
        frames = [cam.read().copy() for _ in range(3)]
    assert all(f.shape == (240, 320, 3) and f.std() > 10 for f in frames)
    with ReplayCamera(video, width=160, height=120, fps=200) as cam:
        assert [round(float(cam.read().mean()) / 10) for _ in range(3)] == [0, 1, 2]
    scene: list[np.ndarray | None] = [None]
    with ReplayCamera(lambda: scene[0], width=64, height=48, fps=200) as cam:
        assert cam.read().mean() == 40  # empty lane
        scene[0] = np.full((100, 100, 3), 200, np.uint8)
        assert cam.read()[24, 32].tolist() == [200, 200, 200]


def test_replay_paces_at_the_frame_rate():
    with ReplayCamera(lambda: None, width=64, height=48, fps=50) as cam:
        t = time.monotonic()
        for _ in range(10):
            cam.read()
        assert time.monotonic() - t >= 9 / 50 * 0.9


@pytest.mark.parametrize("bad", ["/nonexistent", ""])
def test_replay_faults(bad, tmp_path):
    with pytest.raises(CameraError):
        ReplayCamera(bad or tmp_path, width=64, height=48, fps=30).open()
    with ReplayCamera(lambda: np.zeros((10, 10), np.uint8), width=64, height=48,
                      fps=200) as cam, pytest.raises(CameraError, match="not RGB"):
        cam.read()


def test_read_while_closed_and_bad_modes():
    cam = ReplayCamera(lambda: None, width=64, height=48, fps=30)
    with pytest.raises(CameraError, match="closed"):
        cam.read()
    with pytest.raises(CameraError, match="unusable mode"):
        ReplayCamera(lambda: None, width=0, height=48, fps=30)
    with pytest.raises(CameraError, match="unknown camera backend"):
        open_camera("webcam9000", "", width=64, height=48, fps=30)


def test_picamera2_missing_is_a_clear_camera_error():
    pytest.importorskip("sys")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        cam = open_camera("picamera2", "", width=640, height=480, fps=30)
        with pytest.raises(CameraError, match="picamera2 is not installed"):
            cam.open()
    else:
        pytest.skip("a real Picamera2 is installed: hardware tier")
