"""Affine warps of a face region into a small fixed-size buffer, without aliasing.

A gate camera sees a face a few hundred pixels wide and the models want 112-192
pixels, so warps shrink by 2-5×. Bilinear sampling alone then skips pixels (aliasing
that moves keypoints and changes embeddings); here the source region is first averaged
down with ``INTER_AREA`` so the final bilinear step shrinks by at most 2×.

Coordinates follow OpenCV's pixel-centre convention: ``m`` maps source pixel centres
to destination pixel centres, as ``cv2.warpAffine`` does.
"""

from __future__ import annotations

import cv2
import numpy as np

from gate.types import Array


class Warper:
    """Warps into caller-owned buffers; keeps one scratch buffer that it wipes itself."""

    def __init__(self) -> None:
        self._scratch = np.zeros(0, np.uint8)

    def warp(self, image: Array, m: Array, dst: Array,
             *, border: int = cv2.BORDER_CONSTANT) -> None:
        """Write ``image`` warped by the 2×3 matrix ``m`` into ``dst`` (H×W×3 uint8)."""
        out_h, out_w = dst.shape[:2]
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        src, mat = image, m
        if scale < 0.5:
            src, mat = self._shrink(image, m, scale, out_w, out_h)
        cv2.warpAffine(src, mat, (out_w, out_h), dst=dst, flags=cv2.INTER_LINEAR,
                       borderMode=border, borderValue=(0, 0, 0))
        if src is not image:
            src.fill(0)  # the shrunk copy held face pixels (promise P2)

    def _shrink(self, image: Array, m: Array, scale: float,
                out_w: int, out_h: int) -> tuple[Array, Array]:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[-1, -1, 1], [out_w, -1, 1], [-1, out_h, 1], [out_w, out_h, 1]],
                           np.float64)
        src_pts = corners @ inv.T
        h, w = image.shape[:2]
        x0 = int(np.clip(np.floor(src_pts[:, 0].min()), 0, w - 1))
        y0 = int(np.clip(np.floor(src_pts[:, 1].min()), 0, h - 1))
        x1 = int(np.clip(np.ceil(src_pts[:, 0].max()) + 1, x0 + 1, w))
        y1 = int(np.clip(np.ceil(src_pts[:, 1].max()) + 1, y0 + 1, h))
        f = 2.0 * scale  # after shrinking by f the warp itself shrinks by exactly 2×
        sw, sh = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
        fx, fy = sw / (x1 - x0), sh / (y1 - y0)
        need = sh * sw * 3
        if self._scratch.size < need:
            self._scratch = np.zeros(need, np.uint8)
        small = self._scratch[:need].reshape(sh, sw, 3)
        cv2.resize(image[y0:y1, x0:x1], (sw, sh), dst=small, interpolation=cv2.INTER_AREA)
        # Source pixel centre of small (i) is original (i + 0.5) / f - 0.5 + x0.
        a = np.array([[1 / fx, 0, 0.5 / fx - 0.5 + x0], [0, 1 / fy, 0.5 / fy - 0.5 + y0],
                      [0, 0, 1]])
        return small, m @ a

    def wipe(self) -> None:
        """Zero-fill the scratch buffer."""
        self._scratch.fill(0)
