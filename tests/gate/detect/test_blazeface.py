"""BlazeFace: anchors, decoding, weighted NMS, and a cross-check against MediaPipe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.detect.anchors import ssd_anchor_centres
from gate.detect.blazeface import BlazeFaceDetector, decode, weighted_nms
from gate.detect.face import LEFT_EYE, RIGHT_EYE, Detection, iou
from gate.inference import Model
from gate.models import read_verified

PHOTOS = ["32bit.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg",
          "obama_partial_face.jpg", "obama_partial_face2.jpg"]


def test_anchor_layout_matches_the_model():
    a = ssd_anchor_centres()
    assert a.shape == (896, 2)
    # 16×16 map with 2 anchors per cell, then 8×8 with 6.
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[511], [15.5 / 16, 15.5 / 16])
    assert np.allclose(a[512], [0.5 / 8, 0.5 / 8]) and np.allclose(a[517], a[512])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_decode_applies_anchor_offsets_and_sigmoid():
    anchors = np.array([[0.5, 0.5], [0.25, 0.75]], np.float32)
    reg = np.zeros((2, 16), np.float32)
    reg[0, :4] = [12.8, -6.4, 32, 64]  # +0.1 x, -0.05 y, 0.25 wide, 0.5 high (of 128)
    reg[0, 4:6] = [-12.8, 0]  # right eye 0.1 left of the anchor
    logits = np.array([[2.0], [-3.0]], np.float32)
    boxes, kps, scores = decode(reg, logits, anchors, min_score=0.5)
    assert boxes.shape == (1, 4) and kps.shape == (1, 6, 2)
    np.testing.assert_allclose(boxes[0], [0.475, 0.2, 0.725, 0.7], atol=1e-6)
    np.testing.assert_allclose(kps[0, 0], [0.4, 0.5], atol=1e-6)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0))])


def test_decode_survives_extreme_logits():
    anchors = np.zeros((3, 2), np.float32)
    _, _, scores = decode(np.zeros((3, 16), np.float32),
                          np.array([[1e9], [-1e9], [np.float32(300)]]), anchors, min_score=0.5)
    assert np.all(np.isfinite(scores)) and len(scores) == 2


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), min_score=st.floats(0.05, 0.99),
       spread=st.sampled_from([0.01, 1.0, 10.0, 300.0]))
def test_decode_keeps_exactly_the_anchors_whose_sigmoid_reaches_the_score(seed, min_score,
                                                                        spread):
    """Selecting on the logit first is only a shortcut: the same anchors, the same scores
    as scoring every anchor (values at the boundary included)."""
    rng = np.random.default_rng(seed)
    anchors = ssd_anchor_centres()
    boundary = np.log(min_score / (1 - min_score))
    logits = (boundary + rng.normal(0, spread, (896, 1))).astype(np.float32)
    logits[:5, 0] = np.float32(boundary)  # right at the threshold
    regressors = rng.normal(0, 5, (896, 16)).astype(np.float32)
    _, _, scores = decode(regressors, logits, anchors, min_score=min_score)
    every = 1 / (1 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100, 100)))
    np.testing.assert_array_equal(scores, every[every >= min_score])


def test_weighted_nms_averages_a_cluster_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float64)
    kps = np.zeros((3, 6, 2))
    kps[1] += 1.0
    scores = np.array([0.9, 0.6, 0.8])
    out = weighted_nms(boxes, kps, scores, iou_threshold=0.3)
    assert len(out) == 2
    box, kp, score = out[0]
    assert score == 0.9
    np.testing.assert_allclose(box, [0.4, 0, 10.4, 10])  # (0*0.9 + 1*0.6) / 1.5
    np.testing.assert_allclose(kp[0], [0.4, 0.4])
    np.testing.assert_allclose(out[1][0], boxes[2])


def test_weighted_nms_of_nothing_is_nothing():
    assert weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0),
                        iou_threshold=0.3) == []


@pytest.fixture(scope="module")
def mediapipe_faces():
    mp = pytest.importorskip("mediapipe", reason="mediapipe is in the dev extra")
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                         min_detection_confidence=0.5)

    def run(image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        found = detector.process(image).detections or []
        out = []
        for d in found:
            bb = d.location_data.relative_bounding_box
            kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints])
            out.append(Detection(box=(bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w,
                                      (bb.ymin + bb.height) * h), score=d.score[0],
                                 keypoints=kps))
        return out
    yield run
    detector.close()


@pytest.fixture(scope="module")
def detectors(models_dir):
    content = read_verified(models_dir, "detector")[0]
    return {aa: BlazeFaceDetector(Model(content, name="det"), antialias=aa)
            for aa in (False, True)}


def _compare(ours: list[Detection], ref: list[Detection]) -> tuple[float, float]:
    assert len(ours) == len(ref) >= 1
    worst_iou, worst_eye = 1.0, 0.0
    for r in ref:
        o = max(ours, key=lambda d: iou(d.box, r.box))
        worst_iou = min(worst_iou, iou(o.box, r.box))
        for k in (RIGHT_EYE, LEFT_EYE):
            err = float(np.linalg.norm(o.keypoints[k] - r.keypoints[k])) / r.width
            worst_eye = max(worst_eye, err)
    return worst_iou, worst_eye


@pytest.mark.parametrize("name", PHOTOS)
def test_same_faces_as_mediapipe_on_the_full_photo(name, photo, detectors, mediapipe_faces):
    """With MediaPipe's sampling (no pre-averaging) our decode reproduces its detector."""
    image = photo(name)
    worst_iou, worst_eye = _compare(detectors[False].detect(image), mediapipe_faces(image))
    assert worst_iou >= 0.9 and worst_eye <= 0.02


@pytest.mark.parametrize("name", PHOTOS)
def test_same_faces_as_mediapipe_with_antialiasing(name, photo, detectors, mediapipe_faces):
    """The product default averages pixels before the 128-px view. On a photo already at
    the detector's scale that changes nothing, so the faces must equal MediaPipe's; on
    full-size photos the two views differ by sampling only (see the README)."""
    image = photo(name)
    h, w = image.shape[:2]
    s = 128 / max(h, w)
    small = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    worst_iou, worst_eye = _compare(detectors[True].detect(small), mediapipe_faces(small))
    assert worst_iou >= 0.9 and worst_eye <= 0.02
    # Full size: same faces found; boxes differ by how the 128-px view was sampled
    # (BlazeFace's box is sensitive to it: IoU 0.79-0.97 on these photos).
    full_iou, _ = _compare(detectors[True].detect(image), mediapipe_faces(image))
    assert full_iou >= 0.75


def test_no_face_in_a_blank_or_noise_frame(detectors):
    rng = np.random.default_rng(1)
    assert detectors[True].detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detectors[True].detect(rng.integers(0, 256, (480, 640, 3), np.uint8)) == []


def test_two_people_side_by_side_are_two_faces(photo, detectors):
    a, b = photo("obama.jpg"), photo("biden.jpg")
    h = min(a.shape[0], b.shape[0])
    both = np.hstack([a[:h], b[:h]])
    faces = detectors[True].detect(both)
    assert len(faces) == 2
    assert faces[0].box[0] < a.shape[1] < faces[1].box[0] or \
        faces[1].box[0] < a.shape[1] < faces[0].box[0]


def test_wipe_zeroes_the_detector_buffers(photo, detectors):
    det = detectors[True]
    det.detect(photo("obama3.jpg"))  # large: uses the pre-averaging buffer too
    levels = det._pyramid.levels
    assert det._canvas.any() and levels and all(level.any() for level in levels)
    det.wipe()
    assert not det._canvas.any()
    assert not any(level.any() for level in levels)
    for index in det.model.io_indices:
        assert not det.model.read_tensor(index).any()
