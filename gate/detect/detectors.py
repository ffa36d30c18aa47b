"""The face detectors the gate can run, as a registry: ``[models] detector`` names one.

A detector finds faces in an RGB uint8 image and returns them as
:class:`~gate.detect.face.Detection` (box, score, six keypoints in BlazeFace order), most
confident first; ``wipe`` zero-fills every buffer that held pixels (promise P2). Each
entry names its pinned model file (manifest role) and the class that decodes it; every
class takes the model and the ``[detect]`` thresholds as keywords. The config's choices
are this table's keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gate.detect.blazeface import BlazeFaceDetector
from gate.detect.face import Detection
from gate.inference import Model
from gate.types import Array


class Detector(Protocol):
    """What the pipeline needs of a detector."""

    model: Model

    def detect(self, image: Array) -> list[Detection]:
        """Faces in ``image``."""

    def wipe(self) -> None:
        """Zero every pixel buffer."""


class DetectorFactory(Protocol):
    """How a detector is built: the model, then the ``[detect]`` thresholds."""

    def __call__(self, model: Model, *, min_score: float, nms_iou: float,
                 antialias: bool) -> Detector: ...


@dataclass(frozen=True)
class DetectorSpec:
    """One detector: its name in the config, its model file's role, its class."""

    name: str
    role: str
    build: DetectorFactory


#: Every detector, by the name ``[models] detector`` uses.
DETECTORS: dict[str, DetectorSpec] = {
    s.name: s for s in (DetectorSpec("blazeface", "detector", BlazeFaceDetector),)}
