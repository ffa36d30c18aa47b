"""The detected face, as the rest of the pipeline sees it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gate.types import Array

# BlazeFace keypoint order (subject's right eye appears on the image's left).
RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH_CENTRE, RIGHT_EAR, LEFT_EAR = range(6)


@dataclass(frozen=True)
class Detection:
    """A face found by the detector, in pixel coordinates of the analysed image.

    ``box`` is (x0, y0, x1, y1); ``keypoints`` is a (6, 2) array in BlazeFace order
    (right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion).
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: Array

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.box[3] - self.box[1]

    @property
    def interocular(self) -> float:
        """Distance between the two eye keypoints in pixels."""
        return float(np.linalg.norm(self.keypoints[LEFT_EYE] - self.keypoints[RIGHT_EYE]))


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
