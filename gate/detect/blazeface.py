"""BlazeFace short-range face detector: letterboxing, box decoding and weighted NMS.

The decoding mirrors MediaPipe's ``TensorsToDetectionsCalculator`` and
``NonMaxSuppressionCalculator`` for ``face_detection_short_range`` (scales 128,
score clipping at ±100, sigmoid, weighted NMS at IoU 0.3) and is cross-checked against
MediaPipe's own detector in ``tests/gate/detect/test_blazeface.py``. Decoding and NMS are
pure numpy functions so they can be tested without the model.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gate.detect.anchors import INPUT_SIZE, ssd_anchor_centres
from gate.detect.face import Detection
from gate.detect.warp import BoxPyramid, halvings
from gate.inference import Model
from gate.types import Array

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0
# float32 scalars: with a Python float numpy would compute the uint8 → [-1, 1] scaling
# in float64 and cast (3× slower per frame).
_TO_UNIT = np.float32(2.0 / 255.0)
_MINUS_ONE = np.float32(-1.0)


def decode(regressors: Array, logits: Array, anchors: Array,
           *, min_score: float) -> tuple[Array, Array, Array]:
    """Decode raw outputs into boxes, keypoints and scores in normalised input coords.

    ``regressors`` is (896, 16): box centre x/y, width, height, then six (x, y)
    keypoints, all in input pixels relative to the anchor centre. Returns boxes
    (K, 4) as x0, y0, x1, y1, keypoints (K, 6, 2) and scores (K,) for the anchors whose
    sigmoid score reaches ``min_score``.
    """
    logits = logits.reshape(-1)
    # The sigmoid is monotonic: select on the logit, then score only the few kept.
    keep = np.flatnonzero(logits >= _logit(min_score))
    clipped = np.clip(logits[keep].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-clipped))
    sure = scores >= min_score  # rounding at the boundary decides as the sigmoid does
    keep, scores = keep[sure], scores[sure]
    raw = regressors.reshape(-1, 4 + 2 * NUM_KEYPOINTS)[keep] / INPUT_SIZE
    centre = anchors[keep]
    cx = raw[:, 0] + centre[:, 0]
    cy = raw[:, 1] + centre[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + centre[:, None, :]
    return boxes, keypoints, scores


def _logit(p: float) -> float:
    """The logit of probability ``p``, a hair lower so that no anchor the sigmoid keeps
    is dropped by rounding (the exact comparison follows)."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p)) - 1e-6


def _iou_one_to_many(box: Array, boxes: Array) -> Array:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: Array, keypoints: Array, scores: Array,
                 *, iou_threshold: float) -> list[tuple[Array, Array, float]]:
    """MediaPipe's weighted non-maximum suppression.

    The best remaining box absorbs every box overlapping it by more than
    ``iou_threshold`` (itself included); its coordinates and keypoints become the
    score-weighted mean of that cluster and it keeps the best score. BlazeFace fires
    on several neighbouring anchors per face, so averaging them is more stable than
    keeping only the top one.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        overlap = _iou_one_to_many(boxes[top], boxes[order])
        cluster = order[overlap > iou_threshold]
        if cluster.size == 0:  # degenerate (zero-area) top box: keep it alone
            cluster = order[:1]
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(axis=0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(axis=0) / w.sum()
        out.append((box, kps, float(scores[top])))
        order = order[overlap <= iou_threshold]
        order = order[order != top]
    return out


class BlazeFaceDetector:
    """Finds faces in an RGB uint8 image with the BlazeFace short-range model.

    The model sees the image letterboxed to 128×128 (aspect kept, zero padding), as
    MediaPipe feeds it. Pixel buffers are preallocated and reused, the input is written
    straight into the interpreter's tensor; :meth:`wipe` zero-fills them all (promise P2).
    """

    def __init__(self, model: Model, *, min_score: float = 0.5, nms_iou: float = 0.3,
                 antialias: bool = True) -> None:
        if model.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"{model.name}: not a 128×128 BlazeFace model")
        self.model = model
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.antialias = antialias
        self._anchors = ssd_anchor_centres()
        self._canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        self._pyramid = BoxPyramid()

    def _letterbox(self, image: Array) -> tuple[float, float, float]:
        """Fit ``image`` into the 128×128 input, centred, aspect kept, zero padded.

        The geometry is MediaPipe's (image corners map to input corners, fractional
        padding, bilinear sampling), which is what the model was run with; with it the
        decoded faces equal MediaPipe's to float precision. With ``antialias`` large
        frames are first halved with 2×2 box averaging to at most twice the input size,
        so the bilinear step never skips pixels; the geometry stays the same.
        """
        h, w = image.shape[:2]
        scale = INPUT_SIZE / max(h, w)
        px, py = (INPUT_SIZE - w * scale) / 2, (INPUT_SIZE - h * scale) / 2
        src, f = image, 1
        if self.antialias:
            # Box-average by powers of 2 until the bilinear warp shrinks by at most 2×.
            src, f = self._pyramid.halve(image, halvings(scale))
        # Corner-aligned map: source corner x lands on x * scale + pad (MediaPipe's).
        m = np.array([[scale * f, 0, px], [0, scale * f, py]])
        cv2.warpAffine(src, m, (INPUT_SIZE, INPUT_SIZE), dst=self._canvas,
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=(0, 0, 0))
        return scale, px, py

    def _fill(self, tensor: Array) -> None:
        """The canvas as the model's input, [-1, 1], written into its input tensor."""
        np.multiply(self._canvas, _TO_UNIT, out=tensor[0], casting="unsafe")
        np.add(tensor, _MINUS_ONE, out=tensor)

    def detect(self, image: Array) -> list[Detection]:
        """Return the faces in ``image`` (H×W×3 RGB uint8), best score first."""
        scale, px, py = self._letterbox(image)
        out = self.model.run_into(self._fill)
        boxes, kps, scores = decode(out["regressors"][0], out["classificators"][0],
                                    self._anchors, min_score=self.min_score)
        faces = []
        for box, kp, score in weighted_nms(boxes, kps, scores, iou_threshold=self.nms_iou):
            # Undo the letterbox: normalised 128-square coords -> image pixels.
            b = (box * INPUT_SIZE - (px, py, px, py)) / scale
            k = (kp * INPUT_SIZE - (px, py)) / scale
            faces.append(Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                                   score=score, keypoints=k.astype(np.float32)))
        return faces

    def wipe(self) -> None:
        """Zero-fill the detector's image buffers and the interpreter's tensors."""
        self._canvas.fill(0)
        self._pyramid.wipe()
        self.model.wipe()
