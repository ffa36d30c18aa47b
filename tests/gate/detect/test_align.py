"""Face-mesh refinement (cross-checked against MediaPipe's FaceMesh) and 5-point alignment."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gate.detect.align import ARCFACE_112, Aligner, umeyama
from gate.detect.blazeface import BlazeFaceDetector
from gate.detect.landmarks import FaceMesh
from gate.inference import Model
from gate.models import read_verified

WHOLE_FACES = ["32bit.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg"]


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_umeyama_recovers_a_known_similarity():
    m = _similarity(0.3, 2.5, 40.0, -7.0)
    src = np.random.default_rng(0).uniform(0, 200, (5, 2))
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(umeyama(src, dst), m, atol=1e-9)


def test_umeyama_least_squares_and_no_reflection():
    src = ARCFACE_112.copy()
    mirrored = src * [-1, 1]  # a mirror image cannot be reached by a similarity
    m = umeyama(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    noisy = src + np.random.default_rng(1).normal(0, 0.5, src.shape)
    m = umeyama(noisy, src)
    residual = np.linalg.norm(noisy @ m[:, :2].T + m[:, 2] - src, axis=1)
    assert residual.max() < 2.0


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros((1, 2)), np.zeros((5, 3))])
def test_umeyama_refuses_degenerate_points(bad):
    with pytest.raises(ValueError, match="umeyama"):
        umeyama(bad, np.zeros(bad.shape))


@pytest.fixture(scope="module")
def parts(models_dir):
    det = BlazeFaceDetector(Model(read_verified(models_dir, "detector")[0], name="d"),
                            antialias=False)
    mesh = FaceMesh(Model(read_verified(models_dir, "landmarks")[0], name="m"),
                    antialias=False)
    return det, mesh


@pytest.mark.parametrize("name", WHOLE_FACES)
def test_landmarks_match_mediapipe_face_mesh(name, photo, parts):
    mp = pytest.importorskip("mediapipe", reason="mediapipe is in the dev extra")
    det, mesh = parts
    image = photo(name)
    h, w = image.shape[:2]
    face = det.detect(image)[0]
    ours = mesh.run(image, face)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=False) as ref_mesh:
        ref = ref_mesh.process(image).multi_face_landmarks[0].landmark
    ref_xy = np.array([[p.x * w, p.y * h] for p in ref])
    err = np.linalg.norm(ours.points[:, :2] - ref_xy, axis=1) / face.width
    assert ours.presence > 0.9
    assert err.mean() < 0.005 and err.max() < 0.02


def test_aligned_face_lands_on_the_template(photo, parts):
    """Re-running the face mesh on the aligned crop finds the five points on the template."""
    det, mesh = parts
    image = photo("obama.jpg")
    five = mesh.run(image, det.detect(image)[0]).five()
    aligner = Aligner()
    crop = aligner.align(image, five).copy()
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    canvas = np.zeros((336, 336, 3), np.uint8)  # give the detector some context
    canvas[112:224, 112:224] = crop
    again = mesh.run(canvas, det.detect(canvas)[0]).five() - 112
    m = umeyama(five, ARCFACE_112)
    expected = five @ m[:, :2].T + m[:, 2]  # where the warp put the five points
    assert np.abs(again - expected).max() < 2.0  # pixels of the 112×112 crop
    # The least-squares fit puts eyes and nose close to the template (a broad smile
    # spreads the mouth corners wider than the template's).
    assert np.abs(again[:3] - ARCFACE_112[:3]).max() < 3.5


def test_blazeface_four_point_alignment_fallback(photo, parts):
    det, _ = parts
    image = photo("obama.jpg")
    face = det.detect(image)[0]
    crop = Aligner().align(image, face.keypoints[:4].astype(np.float64))
    assert crop.shape == (112, 112, 3) and crop.mean() > 50


def test_large_face_is_averaged_not_aliased(photo, parts):
    """Shrinking a 2000-px photo 5× with plain bilinear skips pixels; the warper averages.
    Its crop must be closer to an area-averaged reference than plain bilinear is."""
    det, mesh = parts
    image = photo("obama3.jpg")
    five = mesh.run(image, det.detect(image)[0]).five()
    m = umeyama(five, ARCFACE_112)
    ours = Aligner().align(image, five).astype(np.float32)
    plain = cv2.warpAffine(image, m, (112, 112), flags=cv2.INTER_LINEAR).astype(np.float32)
    # Reference: warp at 8× resolution, then average down 8×8 blocks.
    big = cv2.warpAffine(image, m * 8 + [[0, 0, 3.5], [0, 0, 3.5]],
                         (896, 896), flags=cv2.INTER_LINEAR)
    ref = cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(ours - ref).mean() < np.abs(plain - ref).mean()


def test_wipe_zeroes_mesh_and_aligner(photo, parts):
    det, mesh = parts
    image = photo("obama.jpg")
    aligner = Aligner()
    aligner.align(image, mesh.run(image, det.detect(image)[0]).five())
    assert aligner.crop.any() and mesh._crop.any()
    aligner.wipe()
    mesh.wipe()
    assert not aligner.crop.any() and not mesh._crop.any()
    for index in mesh.model.io_indices:
        assert not mesh.model.read_tensor(index).any()
