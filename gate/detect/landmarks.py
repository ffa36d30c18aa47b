"""Refined alignment points from MediaPipe's face-mesh model (``face_landmark.tflite``).

BlazeFace's keypoints come from a 128-pixel view of the whole frame and give only one
mouth point. The face-mesh model looks at a 192×192 crop around the face, levelled on
the eyes, and returns 468 points; from them we take the five ArcFace points: each eye
centre as the mean of its two corners, the nose tip and the two mouth corners.

The crop follows MediaPipe's face-mesh ROI: the detection box, squared on its long
side and enlarged 1.5×, rotated so the BlazeFace eyes are level. The model's input is
RGB scaled to [0, 1]; it also returns a face-presence logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gate.detect.face import LEFT_EYE, RIGHT_EYE, Detection
from gate.detect.warp import Warper
from gate.inference import Model
from gate.types import Array

INPUT_SIZE = 192
#: uint8 → [0, 1] as a float32 scalar (a Python float makes numpy compute in float64).
_TO_UNIT = np.float32(1.0 / 255.0)
ROI_SCALE = 1.5

# Face-mesh indices (the subject's right eye appears on the image's left).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)
NOSE_TIP = 1
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
# Eyelid midpoints (upper, lower) used for eye openness.
RIGHT_EYE_LIDS = (159, 145)
LEFT_EYE_LIDS = (386, 374)


@dataclass(frozen=True)
class Landmarks:
    """Face-mesh output mapped back to image pixels."""

    points: Array  # (468, 3): x, y in image pixels; z in the same pixel scale
    presence: float  # probability that the crop holds a face

    def five(self) -> Array:
        """The five ArcFace points (right eye, left eye, nose, right/left mouth corner)."""
        p = self.points[:, :2]
        return np.array([
            p[list(RIGHT_EYE_CORNERS)].mean(axis=0),
            p[list(LEFT_EYE_CORNERS)].mean(axis=0),
            p[NOSE_TIP],
            p[MOUTH_RIGHT],
            p[MOUTH_LEFT],
        ], dtype=np.float64)


def roi_matrix(det: Detection) -> Array:
    """2×3 matrix from image pixels to the 192×192 face-mesh crop for a detection."""
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    side = max(det.width, det.height) * ROI_SCALE
    dx, dy = det.keypoints[LEFT_EYE] - det.keypoints[RIGHT_EYE]
    theta = float(np.arctan2(dy, dx))
    c, s = np.cos(theta), np.sin(theta)
    k = INPUT_SIZE / side
    rt = k * np.array([[c, s], [-s, c]])  # scaled inverse rotation
    return np.hstack([rt, (np.array([INPUT_SIZE / 2, INPUT_SIZE / 2]) - rt @ (cx, cy))[:, None]])


class FaceMesh:
    """Runs the face-mesh model on a detection; buffers are preallocated and wipeable."""

    def __init__(self, model: Model, *, antialias: bool = True) -> None:
        if model.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"{model.name}: not a 192×192 face-mesh model")
        self.model = model
        self.antialias = antialias
        self._crop = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        self._warper = Warper()

    def run(self, image: Array, det: Detection) -> Landmarks:
        """Landmarks for the face ``det`` in ``image`` (RGB uint8)."""
        m = roi_matrix(det)
        if self.antialias:
            self._warper.warp(image, m, self._crop)
        else:
            cv2.warpAffine(image, m, (INPUT_SIZE, INPUT_SIZE), dst=self._crop,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        out = self.model.run_into(self._fill)
        raw = out["conv2d_21"].reshape(-1, 3).astype(np.float64)
        logit = float(out["conv2d_31"].reshape(-1)[0])
        # OpenCV's 2×3 inverse, not numpy's LAPACK (its thread pool wakes slowly on a
        # busy gate: ~1 ms for a 3×3 while the models run).
        inv = cv2.invertAffineTransform(m)
        xy = raw[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = raw[:, 2:] * math.sqrt(abs(float(inv[0, 0] * inv[1, 1] - inv[0, 1] * inv[1, 0])))
        presence = 1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0)))
        return Landmarks(points=np.hstack([xy, z]), presence=float(presence))

    def _fill(self, tensor: Array) -> None:
        """The crop as the model's input, [0, 1], written into its input tensor."""
        np.multiply(self._crop, _TO_UNIT, out=tensor[0], casting="unsafe")

    def wipe(self) -> None:
        """Zero-fill the crop and the interpreter's tensors (P2)."""
        self._crop.fill(0)
        self._warper.wipe()
        self.model.wipe()
