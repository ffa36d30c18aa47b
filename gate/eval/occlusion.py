"""Occluding faces the way masks and sunglasses do, for measuring what they cost.

:class:`Occluder` finds the face with the pipeline's own detector and draws the occluder
(:mod:`gate.eval.degrade`) at its keypoints, so it covers the same part of every face
whatever its size. It is a ``transform`` for :func:`gate.eval.runner.embed_all`.
Measured, not tuned: nothing in the gate changes with these figures.
"""

from __future__ import annotations

from gate.detect.detectors import Detector
from gate.eval import degrade
from gate.types import Image

#: What ``gatectl eval --occlude`` accepts.
KINDS = (*degrade.LOWER_FACE, *degrade.OCCLUDERS)


class Occluder:
    """Callable: an image in, a copy with the occluder ``kind`` drawn on its largest face
    out (an unchanged copy when no face is found)."""

    def __init__(self, detector: Detector, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown occluder {kind!r} (known: {', '.join(KINDS)})")
        self.detector = detector
        self.kind = kind

    def __call__(self, image: Image) -> Image:
        faces = self.detector.detect(image)
        self.detector.wipe()  # its canvas held the photo's pixels (P2), face or not
        if not faces:
            return image.copy()
        keypoints = max(faces, key=lambda f: f.width).keypoints.copy()
        if self.kind in degrade.LOWER_FACE:
            return degrade.occlude_lower_face(image, keypoints, self.kind)
        return degrade.occlude_eyes(image, keypoints[:2], self.kind)
