"""The face pipeline: detect → landmarks → align → quality → embed, on one image.

Every buffer that holds pixels or an embedding is allocated once, reused for every
frame, and zero-filled by :meth:`FacePipeline.wipe` (promise P2); the caller wipes
after each decision. The pipeline takes the most prominent face (widest box) and
counts how many others are of comparable size; people further back are ignored.

A frame it cannot analyse (not an H×W×3 uint8 array, a side shorter than
:data:`gate.images.MIN_SIDE`, more than :data:`gate.images.MAX_PIXELS`) is refused up
front with a one-line :class:`~gate.errors.ImageError`, never with an error from deep
inside a model's pre-processing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from gate.config import Config
from gate.detect.align import Aligner
from gate.detect.detectors import DETECTORS, Detector
from gate.detect.face import Detection
from gate.detect.landmarks import FaceMesh, Landmarks
from gate.detect.measure import count_sizeable, measure, measure_without_mesh
from gate.detect.quality import Issue, Measures, QualityLimits, Reason, assess
from gate.errors import ImageError
from gate.images import MAX_PIXELS, MIN_SIDE
from gate.inference import Model
from gate.match.embedder import Embedder
from gate.match.embedders import embedder_spec
from gate.models import read_verified
from gate.types import Array

STAGES = ("detect", "landmarks", "align", "quality", "embed")
#: ``FaceResult.times_ms`` also holds this: the part of the stages spent inside the models.
MODELS = "models"


@dataclass
class FaceResult:
    """What the pipeline found in one image.

    ``embedding`` is a view of the embedder's buffer: valid until the next
    :meth:`FacePipeline.process` or :meth:`FacePipeline.wipe`; copy it to keep it.
    """

    faces: list[Detection] = field(default_factory=list)
    face: Detection | None = None
    issues: list[Issue] = field(default_factory=list)
    measures: Measures | None = None
    embedding: Array | None = None
    times_ms: dict[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """True when a face passed every check and has an embedding."""
        return self.embedding is not None and not self.issues


class FacePipeline:
    """Runs the configured models on RGB uint8 images."""

    def __init__(self, detector: Detector, mesh: FaceMesh | None, embedder: Embedder,
                 *, limits: QualityLimits) -> None:
        self.detector = detector
        self.mesh = mesh
        self.embedder = embedder
        self.aligner = Aligner()
        self.limits = limits
        #: Measure eye visibility even when its check is off (calibration, diagnostics).
        self.measure_eyes = limits.min_eye_visibility > 0
        self._gray = np.zeros((112, 112), np.uint8)

    @classmethod
    def from_config(cls, cfg: Config, *, embedder: str | None = None) -> FacePipeline:
        """Load and verify the models named by ``cfg`` (``embedder`` overrides it)."""
        def load(role: str) -> Model:
            content, pin = read_verified(cfg.models_dir, role)
            return Model(content, name=pin.name, threads=cfg.models.threads,
                         backend=cfg.models.runtime)

        d = DETECTORS[cfg.models.detector]
        detector = d.build(load(d.role), min_score=cfg.detect.min_score,
                           nms_iou=cfg.detect.nms_iou, antialias=cfg.detect.antialias)
        mesh = FaceMesh(load("landmarks"), antialias=cfg.detect.antialias) \
            if cfg.detect.landmarks else None
        spec = embedder_spec(embedder or cfg.models.embedder)
        emb = Embedder(load(spec.role), spec=spec, flip_average=cfg.embed.flip_average)
        return cls(detector, mesh, emb, limits=cfg.quality)

    @staticmethod
    def roles(cfg: Config, *, embedder: str | None = None) -> list[str]:
        """The manifest roles of the model files :meth:`from_config` loads."""
        roles = [DETECTORS[cfg.models.detector].role]
        if cfg.detect.landmarks:
            roles.append("landmarks")
        roles.append(embedder_spec(embedder or cfg.models.embedder).role)
        return roles

    def process(self, image: Array, *, embed_rejected: bool = False,
                embed: bool = True) -> FaceResult:
        """Analyse one image. Faces failing a quality check are not embedded unless
        ``embed_rejected`` (evaluation uses it to study what the checks cost); with
        ``embed=False`` nothing is (``gatectl camera aim`` needs the measures only)."""
        check_frame(image)
        res = FaceResult()
        t = time.perf_counter()
        res.faces = self.detector.detect(image)
        t = _lap(res, "detect", t)
        inside = self.detector.model.invoke_ms
        if not res.faces:
            res.issues.append(Issue(Reason.NO_FACE, "no face detected"))
            res.times_ms[MODELS] = inside
            return res
        face = res.face = max(res.faces, key=lambda f: f.width)
        sizeable = count_sizeable(res.faces, self.limits.sizeable_face_ratio)
        landmarks: Landmarks | None = None
        if self.mesh is not None:
            landmarks = self.mesh.run(image, face)
            inside += self.mesh.model.invoke_ms
            points = landmarks.five()
        else:
            points = face.keypoints[:4].astype(np.float64)
        t = _lap(res, "landmarks", t)
        crop = self.aligner.align(image, points)
        t = _lap(res, "align", t)
        if landmarks is not None:
            res.measures = measure(image, sizeable, landmarks, five=points, crop=crop,
                                   gray=self._gray, eyes=self.measure_eyes)
        else:
            res.measures = measure_without_mesh(image, sizeable, face, crop=crop,
                                                gray=self._gray, eyes=self.measure_eyes)
        res.issues = assess(res.measures, self.limits)
        t = _lap(res, "quality", t)
        res.times_ms[MODELS] = inside
        if not embed or (res.issues and not embed_rejected):
            return res
        res.embedding = self.embedder.embed(crop)
        _lap(res, "embed", t)
        res.times_ms[MODELS] = inside + self.embedder.model.invoke_ms
        return res

    def wipe(self) -> None:
        """Zero-fill every buffer that held pixels or an embedding (promise P2)."""
        self.wipe_analysis()
        self.embedder.wipe()

    def wipe_analysis(self) -> None:
        """Zero-fill the buffers of detection, landmarks, alignment and quality: all but
        the embedder's (which :class:`gate.overlap.EmbedAhead` may be using)."""
        self.detector.wipe()
        if self.mesh is not None:
            self.mesh.wipe()
        self.aligner.wipe()
        self._gray.fill(0)


def check_frame(image: object) -> None:
    """Raise a one-line :class:`ImageError` unless ``image`` is a frame the pipeline can
    analyse: an H×W×3 uint8 array, each side at least ``MIN_SIDE``, at most
    ``MAX_PIXELS``."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"frame: expected an H×W×3 uint8 RGB image, got "
                         f"{type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"frame: expected an H×W×3 uint8 RGB image, got shape "
                         f"{image.shape} of {image.dtype}")
    h, w = int(image.shape[0]), int(image.shape[1])
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"frame: {w}×{h} pixels is too small to analyse (each side needs "
                         f"≥ {MIN_SIDE})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"frame: {w}×{h} pixels exceeds the {MAX_PIXELS} limit")


def _lap(res: FaceResult, stage: str, start: float) -> float:
    now = time.perf_counter()
    res.times_ms[stage] = (now - start) * 1000.0
    return now
