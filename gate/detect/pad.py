"""Presentation-attack detection (is this a live face, not a photo or a screen?).

A pluggable stage: :class:`AttackDetector` is the interface the runtime calls on every
analysed face; a verdict of ``live=False`` makes that frame vote for nobody. The only
detector shipped is :class:`NoDetector`, and it is what ``[lane] pad = "off"`` selects:
**no presentation-attack protection is claimed.** None has been measured on real attack
data (ISO/IEC 30107-3 bona fide / attack presentation error rates), so none is enabled.
A printed photo of an enrolled attendee held up to this gate will be treated like the
attendee. Venues that need the protection should staff the lane or add a measured PAD
module (depth camera, NIR, or a model validated on their own attack set).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from gate.detect.face import Detection
from gate.types import Image


@dataclass(frozen=True)
class PadResult:
    """``live`` and the detector's score (higher = more likely live), with its name."""

    live: bool
    score: float
    detector: str


class AttackDetector(abc.ABC):
    """Decides whether the face in a frame is presented live."""

    name = "abstract"
    validated = False

    @abc.abstractmethod
    def check(self, frame: Image, face: Detection) -> PadResult:
        """Judge one face in one frame."""


class NoDetector(AttackDetector):
    """PAD off: every face passes. Labelled unvalidated; provides no protection."""

    name = "off"

    def check(self, frame: Image, face: Detection) -> PadResult:
        """Always live (there is no detector)."""
        del frame, face
        return PadResult(live=True, score=1.0, detector=self.name)


def make(name: str) -> AttackDetector:
    """The configured detector (only ``off`` exists)."""
    if name != "off":
        raise ValueError(f"unknown presentation-attack detector {name!r}")
    return NoDetector()
