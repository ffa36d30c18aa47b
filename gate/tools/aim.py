"""Aiming and focusing the lane camera by text: numbers in, a report and hints out.

``gatectl camera aim`` shows no picture (promise P1): a technician sees where the face
sits on a coarse character grid, how big it is, and whether light and focus pass the
configured quality limits, with a hint for whatever does not. Everything here works on
plain numbers (boxes, :class:`~gate.detect.quality.Measures`, limits) and imports nothing
but the standard library and the pure quality module, so it is tested without a camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gate.detect.quality import Measures, QualityLimits

#: (x0, y0, x1, y1) in pixels of the frame.
Box = tuple[float, float, float, float]

#: 32×12 characters: a terminal cell is about twice as tall as wide, so this grid has
#: the 4:3 shape of a 640×480 frame and fits beside nothing else on an 80×24 screen.
GRID_COLS, GRID_ROWS = 32, 12
#: A face box closer than this share of the frame to an edge is "near the edge": people
#: standing a little off the mark would be cut off.
EDGE_MARGIN = 0.05
#: A face wider than this share of the frame leaves no room for taller, shorter or
#: off-centre people; the gate needs the eyes ≥ min_interocular_px apart, not a close-up.
LARGE_FACE = 0.6

_MAIN, _OTHER, _CENTRE = "#", "o", "+"


@dataclass(frozen=True)
class Reading:
    """What one frame says about the camera's aim, as plain numbers.

    ``boxes`` holds every detected face, the main (widest) one first; ``measures`` are the
    quality measures of the main face (None without a face); ``scene_brightness`` is the
    mean luminance of the whole frame (0-255), the only exposure figure without a face.
    """

    width: int
    height: int
    boxes: tuple[Box, ...] = ()
    measures: Measures | None = None
    scene_brightness: float = math.nan
    fps: float | None = None
    ms: float | None = None

    @property
    def face(self) -> Box | None:
        """The main face's box, if any."""
        return self.boxes[0] if self.boxes else None

    @property
    def face_width_px(self) -> float | None:
        """Width of the main face's box in pixels."""
        f = self.face
        return f[2] - f[0] if f else None

    @property
    def face_width_share(self) -> float | None:
        """Width of the main face as a share of the frame width."""
        w = self.face_width_px
        return w / self.width if w is not None else None


@dataclass(frozen=True)
class Hint:
    """One thing to fix: a stable code and a sentence for the technician."""

    code: str
    text: str


def hints(r: Reading, limits: QualityLimits) -> list[Hint]:
    """What to change, most fundamental first; empty when the aim is good."""
    out: list[Hint] = []
    m = r.measures
    if r.face is None or m is None:
        out.append(Hint("no_face", "no face: stand where people will stand, facing the camera"))
        if r.scene_brightness < limits.min_brightness:
            out.append(Hint("too_dark", "too dark: add light or raise the exposure"))
        elif r.scene_brightness > limits.max_brightness:
            out.append(Hint("too_bright", "too bright: reduce glare or lower the exposure"))
        return out
    if m.faces_sizeable > 1:
        out.append(Hint("several_faces", f"{m.faces_sizeable} faces of similar size: frame "
                                         "only the spot in front of the flapper"))
    if m.brightness < limits.min_brightness or m.dark_fraction > limits.max_clipped_fraction:
        out.append(Hint("too_dark", "too dark: add light or raise the exposure"))
    elif m.brightness > limits.max_brightness or m.bright_fraction > limits.max_clipped_fraction:
        out.append(Hint("too_bright", "too bright: reduce glare or lower the exposure"))
    if m.sharpness < limits.min_sharpness:
        out.append(Hint("blur", "out of focus: turn the focus ring (and keep still)"))
    if m.interocular_px < limits.min_interocular_px:
        out.append(Hint("too_small", "face too small: move the camera closer or zoom"))
    share = r.face_width_share
    if share is not None and share > LARGE_FACE:
        out.append(Hint("too_large", "face fills the frame: zoom out or move the camera back"))
    x0, y0, x1, y1 = r.face
    mx, my = EDGE_MARGIN * r.width, EDGE_MARGIN * r.height
    for code, near in (("left", x0 < mx), ("right", x1 > r.width - mx),
                       ("top", y0 < my), ("bottom", y1 > r.height - my)):
        if near:
            out.append(Hint(f"edge_{code}", f"face near the {code} edge: re-aim so it sits "
                                            "in the middle"))
    if m.outside_fraction > limits.max_outside_fraction:
        out.append(Hint("cut_off", "face cut off by the edge of the picture"))
    if not math.isfinite(m.pitch_deg) or abs(m.pitch_deg) > limits.max_pitch_deg:
        out.append(Hint("pitch", f"face seen from above or below (pitch {m.pitch_deg:.0f}°): "
                                 "mount the camera nearer face height"))
    if not math.isfinite(m.yaw_deg) or abs(m.yaw_deg) > limits.max_yaw_deg:
        out.append(Hint("yaw", f"face seen from the side (yaw {m.yaw_deg:.0f}°): point the "
                               "camera along the lane"))
    return out


def _cells(box: Box, width: int, height: int, cols: int, rows: int
           ) -> tuple[int, int, int, int] | None:
    """Grid cells (c0, r0, c1, r1), inclusive, that a box touches; None if off-frame."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[2], float(width)), min(box[3], float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    c0 = min(cols - 1, int(x0 / width * cols))
    r0 = min(rows - 1, int(y0 / height * rows))
    c1 = max(c0, min(cols - 1, math.ceil(x1 / width * cols) - 1))
    r1 = max(r0, min(rows - 1, math.ceil(y1 / height * rows) - 1))
    return c0, r0, c1, r1


def grid(r: Reading, cols: int = GRID_COLS, rows: int = GRID_ROWS) -> list[str]:
    """The frame as a box of characters: ``#`` outlines the main face, ``o`` the others,
    ``+`` marks the frame centre (where the face should sit)."""
    cells = [[" "] * cols for _ in range(rows)]
    cells[rows // 2][cols // 2] = _CENTRE
    # Others first, so the main face's outline wins where they overlap.
    for k, box in reversed(list(enumerate(r.boxes))):
        span = _cells(box, r.width, r.height, cols, rows)
        if span is None:
            continue
        c0, r0, c1, r1 = span
        mark = _MAIN if k == 0 else _OTHER
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                if row in (r0, r1) or col in (c0, c1):
                    cells[row][col] = mark
    edge = "+" + "-" * cols + "+"
    return [edge, *("|" + "".join(line) + "|" for line in cells), edge]


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def text(r: Reading, limits: QualityLimits) -> list[str]:
    """The human report: a status line, the grid, the measures against the limits, hints."""
    faces = len(r.boxes)
    rate = f" · {r.fps:.1f} fps" if r.fps else ""
    took = f" · {r.ms:.0f} ms" if r.ms is not None else ""
    lines = [f"frame {r.width}×{r.height} · {faces} face{'s' if faces != 1 else ''}"
             f"{rate}{took}", *grid(r)]
    m = r.measures
    w, share = r.face_width_px, r.face_width_share
    if m is None or w is None or share is None:
        lit = limits.min_brightness <= r.scene_brightness <= limits.max_brightness
        lines.append("face        none")
        lines.append(f"scene       brightness {r.scene_brightness:.0f} {_mark(lit)} "
                     f"{limits.min_brightness:.0f}–{limits.max_brightness:.0f}")
    else:
        lines.append(f"face        {w:.0f} px wide, {share:.0%} of the frame width")
        lines.append(f"eyes        {m.interocular_px:.0f} px apart "
                     f"{_mark(m.interocular_px >= limits.min_interocular_px)} min "
                     f"{limits.min_interocular_px:.0f}")
        lit = limits.min_brightness <= m.brightness <= limits.max_brightness
        lines.append(f"brightness  {m.brightness:.0f} {_mark(lit)} "
                     f"{limits.min_brightness:.0f}–{limits.max_brightness:.0f}"
                     f" (scene {r.scene_brightness:.0f})")
        lines.append(f"sharpness   {m.sharpness:.2f} "
                     f"{_mark(m.sharpness >= limits.min_sharpness)} min "
                     f"{limits.min_sharpness:.2f}")
    found = hints(r, limits)
    lines += [f"→ {h.text}" for h in found] or ["→ good: face centred, lit and in focus"]
    return lines


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def as_dict(r: Reading, limits: QualityLimits) -> dict[str, Any]:
    """The report for ``--json``: numbers, limits and hint codes (no pixels)."""
    m = r.measures
    face: dict[str, Any] | None = None
    if r.face is not None and m is not None:
        face = {"box": [round(v) for v in r.face], "width_px": _round(r.face_width_px),
                "width_share": _round(r.face_width_share, 3),
                "interocular_px": _round(m.interocular_px), "brightness": _round(m.brightness),
                "sharpness": _round(m.sharpness, 3), "yaw_deg": _round(m.yaw_deg),
                "pitch_deg": _round(m.pitch_deg), "roll_deg": _round(m.roll_deg),
                "outside_share": _round(m.outside_fraction, 3)}
    found = hints(r, limits)
    return {"width": r.width, "height": r.height, "faces": len(r.boxes),
            "fps": _round(r.fps), "ms": _round(r.ms),
            "scene_brightness": _round(r.scene_brightness), "face": face,
            "limits": {"min_interocular_px": limits.min_interocular_px,
                       "min_brightness": limits.min_brightness,
                       "max_brightness": limits.max_brightness,
                       "min_sharpness": limits.min_sharpness},
            "hints": [h.code for h in found], "advice": [h.text for h in found],
            "ok": not found}
