"""Five-point face alignment onto the 112×112 ArcFace template.

A least-squares similarity transform (Umeyama 1991: rotation, uniform scale,
translation; no shear, so the face is not distorted) maps the five detected points
(eye centres, nose tip, mouth corners) onto the template that MobileFaceNet-style
embedders are trained with. The estimate is pure numpy; only the warp uses OpenCV.
"""

from __future__ import annotations

import math

import numpy as np

from gate.detect.warp import Warper
from gate.types import Array

#: The standard ArcFace 112×112 template: right eye, left eye (subject's; they appear
#: left and right in the image), nose tip, right and left mouth corner. Pixel centres.
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

CROP_SIZE = 112


def umeyama(src: Array, dst: Array) -> Array:
    """Least-squares similarity transform taking points ``src`` (N×2) onto ``dst``.

    Returns the 2×3 matrix ``[sR | t]``. Reflections are excluded (a mirrored face is
    not the same face).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError("umeyama needs two N×2 arrays with N ≥ 2")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("umeyama: source points coincide")
    # In 2-D the least-squares rotation without reflection has a closed form (Umeyama's
    # SVD reduces to it): no LAPACK call, whose thread pool wakes up slowly on a busy
    # gate, for a 2×2 problem.
    a = float((sc * dc).sum())
    b = float((sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum())
    norm = math.hypot(a, b)
    if norm <= 1e-12:
        raise ValueError("umeyama: target points coincide")
    cos, sin = a / norm, b / norm
    rot = np.array([[cos, -sin], [sin, cos]])
    scale = norm / len(src) / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


class Aligner:
    """Warps a face into a preallocated 112×112 RGB buffer using five points."""

    def __init__(self, template: Array = ARCFACE_112) -> None:
        self.template = template
        self.crop = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
        self._warper = Warper()

    def align(self, image: Array, points: Array) -> Array:
        """Align onto the template; returns the internal crop buffer (reused each call).

        ``points`` must follow the template's order. With four points (BlazeFace has
        one mouth point) pass the matching rows of a four-point template.
        """
        tpl = self.template if len(points) == len(self.template) else _four_point(self.template)
        m = umeyama(points, tpl)
        self._warper.warp(image, m, self.crop)
        return self.crop

    def wipe(self) -> None:
        """Zero-fill the crop and scratch buffers (promise P2)."""
        self.crop.fill(0)
        self._warper.wipe()


def _four_point(template: Array) -> Array:
    """Eyes, nose and mouth centre: the points BlazeFace gives directly."""
    return np.vstack([template[:3], template[3:].mean(axis=0)])
