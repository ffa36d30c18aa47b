"""Measuring a face for the quality checks (numbers in, no decisions here).

Pose comes from the face mesh's 3-D points: yaw from the depth difference across the
cheeks, pitch from forehead to chin, roll from the eye line. Sharpness, exposure and
eye visibility are measured on the aligned 112×112 crop, where the face always has the
same size and position, so one threshold fits every camera distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from gate.detect.align import ARCFACE_112
from gate.detect.face import LEFT_EAR, LEFT_EYE, NOSE_TIP, RIGHT_EAR, RIGHT_EYE, Detection
from gate.detect.landmarks import Landmarks
from gate.detect.quality import Measures
from gate.types import Array, Image

# Face-mesh indices: cheek edges (right, left) and forehead top / chin bottom.
_CHEEKS = (234, 454)
_FOREHEAD_CHIN = (10, 152)
# Inner face of the aligned crop (brows to chin, cheek to cheek): exposure and blur are
# judged here, not on the background or hair around it.
_INNER = (slice(34, 104), slice(26, 86))
# Eye patch half-size in the aligned crop (the template's eyes are 35 px apart), the
# cheeks under each eye as the skin reference, and tolerances of the eye-visibility test.
_EYE_HALF_W, _EYE_HALF_H = 11, 6
_CHEEK_R, _CHEEK_L = (slice(64, 80), slice(24, 40)), (slice(64, 80), slice(72, 88))
_SKIN_FLOOR = np.array([6.0, 3.0, 3.0], np.float32)
_SKIN_SIGMAS = 3.0
_SCLERA_CHROMA = 13.0


def count_sizeable(faces: Sequence[Detection], ratio: float) -> int:
    """Faces at least ``ratio`` times as wide as the widest (people behind don't count)."""
    if not faces:
        return 0
    widest = max(f.width for f in faces)
    return sum(1 for f in faces if f.width >= ratio * widest)


def pose_degrees(points: Array, five: Array) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 468 mesh points (x, y, z) and the five points."""
    eye_vec = five[1] - five[0]
    roll = math.degrees(math.atan2(float(eye_vec[1]), float(eye_vec[0])))
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    # Undo roll in the image plane so yaw and pitch are measured on level axes.
    r, left = _CHEEKS
    top, chin = _FOREHEAD_CHIN
    pts = points[[r, left, top, chin]]
    xy = pts[:, :2] @ np.array([[c, -s], [s, c]])
    z = pts[:, 2]
    yaw = math.degrees(math.atan2(float(z[1] - z[0]), float(xy[1, 0] - xy[0, 0])))
    pitch = math.degrees(math.atan2(float(z[3] - z[2]), float(xy[3, 1] - xy[2, 1])))
    return yaw, pitch, roll


def outside_fraction(points: Array, shape: tuple[int, ...]) -> float:
    """Fraction of mesh points that fall outside the picture (a face cut by the edge)."""
    h, w = shape[:2]
    x, y = points[:, 0], points[:, 1]
    outside = (x < 0) | (y < 0) | (x > w - 1) | (y > h - 1)
    return float(outside.mean())


def crop_measures(crop: Image, gray: Image, *, eyes: bool = True
                  ) -> tuple[float, float, float, float, float]:
    """(sharpness, brightness, dark fraction, bright fraction, eye visibility) of a crop.

    ``gray`` is a preallocated 112×112 uint8 buffer the caller wipes. With ``eyes``
    False the (0.8 ms) eye-visibility measure is skipped and reported as NaN.

    Sharpness is the variance of the Laplacian of the inner face divided by the variance
    of its intensities: dimensionless, so it does not change with exposure or skin tone,
    only with how much fine detail survives (blur, focus, motion).
    """
    cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY, dst=gray)
    inner = gray[_INNER].astype(np.float32)
    lap = cv2.Laplacian(inner, cv2.CV_32F, ksize=3)
    sharpness = float(lap.var()) / max(float(inner.var()), 1.0)
    brightness = float(inner.mean())
    dark = float((inner <= 10).mean())
    bright = float((inner >= 250).mean())
    lap.fill(0)
    inner.fill(0)
    return sharpness, brightness, dark, bright, eye_visibility(crop) if eyes else math.nan


def eye_visibility(crop: Image) -> float:
    """Share of the better eye's patch that looks like this face's skin or like sclera.

    A visible eye is mostly eyelid skin, white sclera and a small iris. Hair hanging over
    it, a hand or dark glasses replace that with something of another colour or a flat
    dark area. The skin reference is the person's own cheeks, so the measure does not
    depend on skin tone or exposure. The better of the two eyes counts: one covered eye
    barely changes the embedding (measured), two do.

    Known limit: an occluder of nearly the same colour as the skin is not seen; such a
    face then tends to score lower and goes to the staffed lane, it is not let in.
    """
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    cheeks = np.concatenate([lab[_CHEEK_R].reshape(-1, 3), lab[_CHEEK_L].reshape(-1, 3)])
    ref = np.median(cheeks, axis=0)
    # Robust spread (MAD) plus a floor, so a very even complexion is not too strict.
    spread = np.median(np.abs(cheeks - ref), axis=0) * 1.4826 + _SKIN_FLOOR
    best = 0.0
    for ex, ey in ARCFACE_112[:2]:
        x, y = round(ex), round(ey)
        patch = lab[y - _EYE_HALF_H:y + _EYE_HALF_H, x - _EYE_HALF_W:x + _EYE_HALF_W].reshape(-1, 3)
        skin = (np.abs(patch - ref) / spread).max(axis=1) <= _SKIN_SIGMAS
        sclera = ((patch[:, 0] >= ref[0]) & (np.abs(patch[:, 1] - 128) < _SCLERA_CHROMA)
                  & (np.abs(patch[:, 2] - 128) < _SCLERA_CHROMA))
        best = max(best, float((skin | sclera).mean()))
        patch.fill(0)
    lab.fill(0)
    cheeks.fill(0)
    return best


def measure(image: Array, sizeable: int, landmarks: Landmarks, *, five: Array,
            crop: Image, gray: Image, eyes: bool = True) -> Measures:
    """All quality numbers for a face with face-mesh landmarks.

    ``sizeable`` is how many faces of comparable size the frame holds (itself included).
    """
    yaw, pitch, roll = pose_degrees(landmarks.points, five)
    sharpness, brightness, dark, bright, vis = crop_measures(crop, gray, eyes=eyes)
    return Measures(
        faces_sizeable=sizeable,
        presence=landmarks.presence,
        interocular_px=float(np.linalg.norm(five[1] - five[0])),
        yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll,
        outside_fraction=outside_fraction(landmarks.points, image.shape),
        sharpness=sharpness, brightness=brightness,
        dark_fraction=dark, bright_fraction=bright, eye_visibility=vis,
    )


#: Face-mesh yaw per degree of :func:`keypoint_yaw`: least squares through the origin over
#: the faces of the calibration half of lfw-dev's people (faces the mesh puts within
#: ±45°), checked on the other half (``gatectl eval DIR --pose``; docs/measurements.md).
#: The nose-between-the-ears estimate reads about twice the mesh's yaw.
KEYPOINT_YAW_SCALE = 0.427


def keypoint_yaw(face: Detection) -> float:
    """Uncalibrated yaw in degrees from where BlazeFace's nose tip sits between its two ear
    tragions (asin of the nose's offset over half the ear distance)."""
    kp = face.keypoints
    ears = float(kp[LEFT_EAR, 0] - kp[RIGHT_EAR, 0])
    rel = (float(kp[NOSE_TIP, 0]) - float(kp[LEFT_EAR, 0] + kp[RIGHT_EAR, 0]) / 2) / \
        max(abs(ears) / 2, 1e-6)
    return math.degrees(math.asin(min(1.0, max(-1.0, rel))))


def measure_without_mesh(image: Array, sizeable: int, face: Detection, *,
                         crop: Image, gray: Image, eyes: bool = True) -> Measures:
    """Quality numbers from BlazeFace alone (the fallback when landmarks are off).

    Yaw is estimated from where the nose sits between the two ear tragions, scaled to
    the face mesh's yaw (:data:`KEYPOINT_YAW_SCALE`); pitch is not observable from these
    keypoints and is reported as 0; the cut-off check uses
    the detection box instead of the mesh.
    """
    kp = face.keypoints.astype(np.float64)
    eye_vec = kp[LEFT_EYE] - kp[RIGHT_EYE]
    roll = math.degrees(math.atan2(float(eye_vec[1]), float(eye_vec[0])))
    yaw = KEYPOINT_YAW_SCALE * keypoint_yaw(face)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = face.box
    inside = max(0.0, min(x1, w) - max(x0, 0)) * max(0.0, min(y1, h) - max(y0, 0))
    outside = 1.0 - inside / max(face.width * face.height, 1e-6)
    sharpness, brightness, dark, bright, vis = crop_measures(crop, gray, eyes=eyes)
    return Measures(
        faces_sizeable=sizeable, presence=1.0, interocular_px=face.interocular,
        yaw_deg=yaw, pitch_deg=0.0, roll_deg=roll, outside_fraction=outside,
        sharpness=sharpness, brightness=brightness,
        dark_fraction=dark, bright_fraction=bright, eye_visibility=vis,
    )
