"""Calibrating the BlazeFace-only yaw estimate against the face mesh's.

Without the face mesh (``[detect] landmarks = false``) yaw comes from BlazeFace's nose
and ear keypoints (:func:`gate.detect.measure.keypoint_yaw`), which reads larger than the
mesh's yaw, so the same ``max_yaw_deg`` refused many more faces. Over a set of faces this
measures both, fits the scale (least squares through the origin) on the calibration half
of the people (:func:`gate.eval.calibration.calibration_half`) and reports how well it
holds on the other half: the error against the mesh and how many faces each estimate
would refuse for pose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gate.detect.measure import keypoint_yaw
from gate.errors import EvalError, ImageError
from gate.eval.calibration import calibration_half
from gate.images import load_image
from gate.pipeline import FacePipeline
from gate.types import Array

#: Faces the mesh puts beyond this yaw are left out of the fit (the mesh itself is
#: unreliable there, and the gate refuses them anyway).
FIT_RANGE_DEG = 45.0


def measure(pipeline: FacePipeline, paths: Sequence[Path],
            labels: Sequence[str]) -> tuple[Array, Array, list[str]]:
    """(mesh yaw, keypoint yaw, person) of every image where a face was found."""
    mesh, raw, who = [], [], []
    for path, label in zip(paths, labels, strict=True):
        try:
            image = load_image(path)
        except ImageError:
            continue
        res = pipeline.process(image, embed=False)
        if res.face is not None and res.measures is not None:
            mesh.append(res.measures.yaw_deg)
            raw.append(keypoint_yaw(res.face))
            who.append(label)
        image.fill(0)
        pipeline.wipe()
    return np.asarray(mesh), np.asarray(raw), who


def fit(mesh: Array, raw: Array, people: Sequence[str], *,
        max_yaw: float) -> dict[str, Any]:
    """Fit on the calibration half, check on the other; the report."""
    cal = np.array([calibration_half(p) for p in people], dtype=bool)
    use = cal & (np.abs(mesh) <= FIT_RANGE_DEG)
    if use.sum() < 100 or (~cal).sum() < 100:
        raise EvalError("pose calibration needs ≥ 100 faces in each half of the people")
    scale = float((mesh[use] * raw[use]).sum() / (raw[use] ** 2).sum())
    chk = ~cal
    return {
        "mode": "pose", "faces": int(mesh.size), "fit_faces": int(use.sum()),
        "check_faces": int(chk.sum()), "scale": round(scale, 3),
        "median_mesh_yaw": float(np.median(np.abs(mesh[chk]))),
        "median_keypoint_yaw": float(np.median(np.abs(raw[chk]))),
        "median_abs_error_raw": float(np.median(np.abs(raw[chk] - mesh[chk]))),
        "median_abs_error_scaled": float(np.median(np.abs(scale * raw[chk] - mesh[chk]))),
        "max_yaw_deg": max_yaw,
        "refused_by_mesh": int((np.abs(mesh[chk]) > max_yaw).sum()),
        "refused_by_raw": int((np.abs(raw[chk]) > max_yaw).sum()),
        "refused_by_scaled": int((np.abs(scale * raw[chk]) > max_yaw).sum()),
    }
