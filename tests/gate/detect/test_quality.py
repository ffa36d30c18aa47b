"""Quality: the pure policy with plain values, then real photos with real degradations."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from gate.detect.face import Detection
from gate.detect.measure import KEYPOINT_YAW_SCALE, count_sizeable
from gate.detect.quality import Issue, Measures, QualityLimits, Reason, assess
from gate.eval import degrade, pose
from gate.eval.datasets import load_folder
from gate.pipeline import FacePipeline

GOOD = Measures(faces_sizeable=1, presence=0.99, interocular_px=60.0, yaw_deg=3.0,
                pitch_deg=-2.0, roll_deg=1.0, outside_fraction=0.0, sharpness=3.0,
                brightness=120.0, dark_fraction=0.0, bright_fraction=0.0, eye_visibility=0.7)
LIMITS = QualityLimits()


def reasons(m: Measures, limits: QualityLimits = LIMITS) -> set[Reason]:
    return {i.reason for i in assess(m, limits)}


def test_a_good_face_passes():
    assert assess(GOOD, LIMITS) == []


@pytest.mark.parametrize(("change", "reason"), [
    ({"presence": 0.2}, Reason.NO_FACE),
    ({"faces_sizeable": 2}, Reason.MULTIPLE_FACES),
    ({"outside_fraction": 0.2}, Reason.CUT_OFF),
    ({"interocular_px": 20.0}, Reason.TOO_SMALL),
    ({"yaw_deg": 45.0}, Reason.POSE),
    ({"pitch_deg": -40.0}, Reason.POSE),
    ({"roll_deg": 50.0}, Reason.POSE),
    ({"yaw_deg": float("nan")}, Reason.POSE),
    ({"sharpness": 0.1}, Reason.BLUR),
    ({"brightness": 10.0}, Reason.TOO_DARK),
    ({"dark_fraction": 0.9}, Reason.TOO_DARK),
    ({"brightness": 250.0}, Reason.TOO_BRIGHT),
    ({"bright_fraction": 0.8}, Reason.TOO_BRIGHT),
])
def test_each_check_fires_on_its_own_measure(change, reason):
    assert reasons(dataclasses.replace(GOOD, **change)) == {reason}


def test_limits_are_inclusive_at_the_boundary():
    at_limit = dataclasses.replace(GOOD, interocular_px=LIMITS.min_interocular_px,
                                   yaw_deg=LIMITS.max_yaw_deg, sharpness=LIMITS.min_sharpness)
    assert assess(at_limit, LIMITS) == []


def test_eye_check_is_off_by_default_and_fires_when_enabled():
    covered = dataclasses.replace(GOOD, eye_visibility=0.05)
    assert assess(covered, LIMITS) == []
    strict = dataclasses.replace(LIMITS, min_eye_visibility=0.3)
    assert reasons(covered, strict) == {Reason.EYES_OCCLUDED}


def test_several_problems_are_all_reported():
    bad = dataclasses.replace(GOOD, interocular_px=10.0, sharpness=0.0, faces_sizeable=3)
    assert reasons(bad) == {Reason.TOO_SMALL, Reason.BLUR, Reason.MULTIPLE_FACES}


def test_every_reason_has_a_prompt_and_issues_say_the_measure():
    for reason in Reason:
        assert reason.prompt and reason.prompt[0].isupper()
    issue = assess(dataclasses.replace(GOOD, interocular_px=12.0), LIMITS)[0]
    assert isinstance(issue, Issue) and "12 px" in str(issue) and "28 px" in str(issue)


# --- real photos, real models -------------------------------------------------------

def _reasons(pipeline: FacePipeline, image: np.ndarray) -> set[Reason]:
    res = pipeline.process(image)
    pipeline.wipe()
    return {i.reason for i in res.issues}


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg",
                                  "32bit.png"])
def test_clean_photos_pass(name, photo, pipeline):
    assert _reasons(pipeline, photo(name)) == set()


@pytest.mark.parametrize("name", ["obama_partial_face.jpg", "obama_partial_face2.jpg"])
def test_partial_faces_are_refused_as_cut_off(name, photo, pipeline):
    assert Reason.CUT_OFF in _reasons(pipeline, photo(name))


def _iod(pipeline: FacePipeline, image: np.ndarray) -> float:
    m = pipeline.process(image).measures
    assert m is not None
    return m.interocular_px


def test_blur_that_breaks_matching_is_refused_and_mild_blur_is_not(photo, pipeline):
    image = photo("obama.jpg")
    scale = _iod(pipeline, image) / 35.0  # blur sigma given in aligned-crop pixels
    assert Reason.BLUR not in _reasons(pipeline, degrade.blur(image, 1.0 * scale))
    assert Reason.BLUR in _reasons(pipeline, degrade.blur(image, 4.0 * scale))


def test_exposure(photo, pipeline):
    image = photo("obama2.jpg")
    assert _reasons(pipeline, degrade.exposure(image, 0.5)) == set()
    assert _reasons(pipeline, degrade.exposure(image, 0.06)) & {Reason.TOO_DARK, Reason.NO_FACE}
    assert Reason.TOO_BRIGHT in _reasons(pipeline, degrade.exposure(image, 5.0))


def test_a_distant_face_is_too_small(photo, pipeline):
    image = photo("obama.jpg")
    s = 20.0 / _iod(pipeline, image)  # eyes 20 px apart, below the 28 px limit
    small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    assert Reason.TOO_SMALL in _reasons(pipeline, small)


def test_a_tilted_head_is_refused_for_pose(photo, pipeline):
    image = photo("obama.jpg")
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 3), 50, 1.0)
    tilted = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    assert Reason.POSE in _reasons(pipeline, tilted)


def test_two_people_abreast_are_refused_but_a_smaller_face_behind_is_not_counted(photo, pipeline):
    a, b = photo("obama.jpg"), photo("biden.jpg")
    h = min(a.shape[0], b.shape[0])
    assert Reason.MULTIPLE_FACES in _reasons(pipeline, np.hstack([a[:h], b[:h]]))
    faces = pipeline.detector.detect(np.hstack([a[:h], b[:h]]))
    main = faces[0]
    behind = Detection(box=(0.0, 0.0, main.width * 0.4, main.height * 0.4), score=0.9,
                       keypoints=main.keypoints * 0.4)
    assert count_sizeable([main, behind], LIMITS.sizeable_face_ratio) == 1
    assert count_sizeable([main, faces[1]], LIMITS.sizeable_face_ratio) == 2
    pipeline.wipe()


def test_dark_glasses_are_refused_when_the_eye_check_is_on(photo, config):
    strict_cfg = dataclasses.replace(
        config, quality=dataclasses.replace(config.quality, min_eye_visibility=0.3))
    pipe = FacePipeline.from_config(strict_cfg)
    assert pipe.measure_eyes
    image = photo("biden.jpg")
    res = pipe.process(image)
    assert res.usable and res.measures is not None and res.measures.eye_visibility > 0.3
    assert pipe.mesh is not None and res.face is not None
    eyes = pipe.mesh.run(image, res.face).five()[:2]
    covered = degrade.occlude_eyes(image, eyes, "dark_glasses")
    assert Reason.EYES_OCCLUDED in _reasons(pipe, covered)


def test_eye_visibility_is_not_measured_when_the_check_is_off(photo, pipeline):
    assert not pipeline.measure_eyes
    m = pipeline.process(photo("biden.jpg")).measures
    assert m is not None and m.eye_visibility != m.eye_visibility  # NaN: not measured
    pipeline.wipe()


def test_an_unmeasured_eye_check_that_is_on_fails_closed():
    strict = dataclasses.replace(LIMITS, min_eye_visibility=0.3)
    unmeasured = dataclasses.replace(GOOD, eye_visibility=float("nan"))
    assert reasons(unmeasured, strict) == {Reason.EYES_OCCLUDED}
    assert assess(unmeasured, LIMITS) == []


def test_the_blazeface_only_yaw_is_scaled_to_the_face_mesh(pipeline, faces94):
    """Without the mesh, yaw comes from BlazeFace's nose and ears, scaled by the factor
    fitted on lfw-dev (gate/eval/pose.py); on faces94, which that fit never saw, the scaled
    estimate lands within a few degrees of the mesh's and the raw one does not."""
    folder = load_folder(faces94)
    mesh, raw, _ = pose.measure(pipeline, folder.images[::4], folder.labels[::4])
    scaled = KEYPOINT_YAW_SCALE * raw
    assert 0.3 < KEYPOINT_YAW_SCALE < 0.6
    err_scaled = float(np.median(np.abs(scaled - mesh)))
    err_raw = float(np.median(np.abs(raw - mesh)))
    assert err_scaled < 3.0 and err_scaled < err_raw, (err_scaled, err_raw)
