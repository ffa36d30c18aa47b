"""Synthetic degradations of real photos, for calibrating and testing quality checks.

Each function returns a new degraded copy; the inputs are not changed. Blur and
exposure are applied in the photo's own pixel scale, the way a camera would produce
them; eye occluders are drawn relative to the eye distance so they cover the same
part of any face.
"""

from __future__ import annotations

import cv2
import numpy as np

from gate.types import Array, Image

OCCLUDERS = ("fringe", "strands", "dark_glasses", "one_eye")
#: Occluders of the lower face.
LOWER_FACE = ("mask",)


def blur(image: Image, sigma: float) -> Image:
    """Gaussian blur (defocus/motion stand-in) with ``sigma`` in image pixels."""
    if sigma <= 0:
        return image.copy()
    out = np.empty_like(image)
    cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, dst=out)
    return out


def exposure(image: Image, gain: float, *, noise: float = 2.0, seed: int = 0) -> Image:
    """Scale brightness by ``gain`` as a sensor would: photon noise, then 8-bit clipping.

    Under-exposure multiplies the signal down and the noise up relative to it;
    over-exposure clips highlights to 255.
    """
    rng = np.random.default_rng(seed)
    signal = image.astype(np.float32) * gain
    shot = rng.normal(0.0, 1.0, image.shape).astype(np.float32) * np.sqrt(np.maximum(signal, 0))
    read = rng.normal(0.0, noise, image.shape).astype(np.float32)
    out: Image = np.clip(signal + 0.25 * shot + read, 0, 255).astype(np.uint8)
    return out


def occlude_eyes(image: Image, eyes: Array, kind: str, *, seed: int = 0) -> Image:
    """Cover the eyes: a hair ``fringe``, hair ``strands``, ``dark_glasses`` or ``one_eye``.

    ``eyes`` is a (2, 2) array: the right then left eye centre in image pixels.
    """
    if kind not in OCCLUDERS:
        raise ValueError(f"unknown occluder {kind!r}")
    out = image.copy()
    rng = np.random.default_rng(seed)
    e0, e1 = np.asarray(eyes[0], float), np.asarray(eyes[1], float)
    iod = float(np.linalg.norm(e1 - e0))
    cy = (e0[1] + e1[1]) / 2
    x0, x1 = e0[0] - 0.7 * iod, e1[0] + 0.7 * iod
    # Hair hangs from the forehead to just below the eyes, not over the cheeks.
    top, low = cy - 1.0 * iod, cy + 0.25 * iod
    if kind == "fringe":
        pts = np.array([[x0, top], [x1, top], [x1, low], [x0, low]], np.int32)
        cv2.fillPoly(out, [pts], (45, 32, 25))
        _strands(out, x0=x0, x1=x1, y0=top, y1=low, iod=iod, rng=rng, density=0.6)
    elif kind == "strands":
        _strands(out, x0=x0, x1=x1, y0=top, y1=low, iod=iod, rng=rng, density=2.5)
    elif kind == "dark_glasses":
        for e in (e0, e1):
            cv2.ellipse(out, (round(e[0]), round(e[1])), (round(0.45 * iod), round(0.32 * iod)),
                        0, 0, 360, (18, 18, 22), -1)
        cv2.line(out, (round(e0[0] + 0.45 * iod), round(cy)), (round(e1[0] - 0.45 * iod),
                 round(cy)), (18, 18, 22), max(1, round(iod / 25)))
    else:  # one_eye
        cv2.ellipse(out, (round(e0[0]), round(e0[1])), (round(0.5 * iod), round(0.4 * iod)),
                    0, 0, 360, (45, 32, 25), -1)
    return out


def occlude_lower_face(image: Image, keypoints: Array, kind: str = "mask") -> Image:
    """Cover nose tip to chin and cheek to cheek as a surgical ``mask`` does.

    ``keypoints`` are BlazeFace's six (right eye, left eye, nose tip, mouth centre, right
    ear, left ear) in image pixels; the mask is drawn relative to the eye distance.
    """
    if kind not in LOWER_FACE:
        raise ValueError(f"unknown occluder {kind!r}")
    out = image.copy()
    kp = np.asarray(keypoints, float)
    e0, e1, nose = kp[0], kp[1], kp[2]
    iod = float(np.linalg.norm(e1 - e0))
    across = (e1 - e0) / max(iod, 1e-6)
    down = np.array([-across[1], across[0]])  # image y grows downwards
    # Outline in eye distances, from the nose tip: over the bridge, cheek to cheek, to
    # under the chin.
    outline = [(-0.95, -0.3), (0.95, -0.3), (0.95, 0.5), (0.6, 1.3), (0.0, 1.5),
               (-0.6, 1.3), (-0.95, 0.5)]
    pts = np.array([nose + iod * (a * across + d * down) for a, d in outline])
    cv2.fillPoly(out, [np.round(pts).astype(np.int32)], (150, 185, 205), cv2.LINE_AA)
    return out


def _strands(out: Image, *, x0: float, x1: float, y0: float, y1: float, iod: float,
             rng: np.random.Generator, density: float) -> None:
    width = max(1, round(iod / 30))
    for _ in range(int(density * iod)):
        xs = rng.uniform(x0, x1)
        phase, amp = rng.uniform(0, 6.3), rng.uniform(0.05, 0.25) * iod
        t = np.linspace(0, 1, 16)
        pts = np.stack([xs + amp * np.sin(3 * t + phase), y0 + t * (y1 - y0)], axis=1)
        # Hair shades from near-black to mid brown (R ≥ G ≥ B).
        base = float(rng.uniform(15, 90))
        shade = (round(base), round(base * 0.75), round(base * 0.55))
        cv2.polylines(out, [pts.astype(np.int32)], False, shade, width, cv2.LINE_AA)
