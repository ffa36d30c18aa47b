"""From a false-positive identification target to a cosine threshold.

A non-enrolled person searched against ``N`` templates is falsely accepted when any one
of them scores above the threshold ``T``. With impostor comparisons independent,
``FPIR(T, N) = 1 − (1 − FMR(T))^N``, so the threshold for a target FPIR at the cache's size
is the one whose false-match rate is ``FMR = 1 − (1 − FPIR)^(1/N) ≈ FPIR / N``.

``FMR(T)`` comes from a calibration: the impostor pairs of half the people of a large
set (``gatectl eval DIR --threshold-table``, run on lfw-dev by ``make calibrate``; the
other half checks the result, :mod:`gate.eval.calibration`). Where the calibration has
at least 10 impostor pairs above ``T`` the empirical rate is used. Further out (a target
the set cannot resolve, e.g. FPIR 1e-3 with 10,000 enrolled) the published table says
*unresolvable*; the running gate still needs a threshold there and takes the tail
extrapolated as exponential (a generalised Pareto tail with shape 0) from the pairs above
the 99.9th percentile. Real impostor tails of face embeddings fall off at least that fast,
so such thresholds err high (fewer false accepts, more people sent to the staffed lane);
``gatectl cache`` says when the threshold in force is extrapolated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from gate.errors import ConfigError
from gate.types import Array

#: Empirical rates need at least this many impostor pairs above the threshold.
MIN_EVENTS = 10


def fmr_for(fpir: float, enrolled: int) -> float:
    """Per-comparison false-match rate that gives ``fpir`` against ``enrolled`` templates."""
    if not 0 < fpir < 1 or enrolled < 1:
        raise ConfigError("match.target_fpir", f"must be in (0, 1), got {fpir}")
    return -math.expm1(math.log1p(-fpir) / enrolled)


@dataclass(frozen=True)
class Calibration:
    """Impostor score tail of one embedder, measured on a named set of portraits."""

    source: str
    model: str
    pairs: int
    #: (score, fraction of impostor pairs scoring at or above it), score ascending.
    points: tuple[tuple[float, float], ...]
    tail_start: float
    tail_rate: float
    tail_scale: float

    @classmethod
    def fit(cls, impostor: Array, *, source: str, model: str) -> Calibration:
        """Fit from impostor scores (needs ≥ 10,000 pairs for a usable tail)."""
        s = np.sort(np.asarray(impostor, np.float64))[::-1]
        if s.size < 10_000:
            raise ValueError(f"calibration needs ≥ 10000 impostor pairs, got {s.size}")
        points = []
        # Log-spaced ranks from 10 pairs (the last measurable rate) to 10 % of them, 40
        # per decade: a target rate between two points takes the stricter one, and
        # points this close keep that from costing more than ~6 % in rate.
        decades = math.log10(s.size / 10) - 1
        count = max(2, round(40 * decades))
        for k in np.unique(np.round(np.logspace(1, math.log10(s.size / 10), count))).astype(int):
            # Ceil to 4 decimals: a tabulated threshold never admits more than measured.
            points.append((math.ceil(float(s[k - 1]) * 1e4) / 1e4, float(k / s.size)))
        k_tail = max(MIN_EVENTS * 10, s.size // 1000)
        start = float(s[k_tail - 1])
        scale = float(np.mean(s[:k_tail] - start))
        return cls(source, model, int(s.size), tuple(sorted(points)), round(start, 4),
                   k_tail / s.size, round(scale, 5))

    def threshold_for_fmr(self, fmr: float) -> tuple[float, bool]:
        """(threshold, measured?) for a false-match rate; False means extrapolated."""
        for score, rate in self.points:  # ascending score: first rate ≤ fmr wins
            if rate <= fmr:
                return score, True
        t = self.tail_start + self.tail_scale * math.log(self.tail_rate / fmr)
        # Never below the strictest measured point: a heavy measured tail (labelling
        # errors, look-alikes) must not be undercut by a lighter fitted one.
        return max(round(t, 4), self.points[-1][0]), False

    def threshold_for(self, fpir: float, enrolled: int) -> tuple[float, bool]:
        """(threshold, measured?) for a target FPIR with ``enrolled`` templates."""
        return self.threshold_for_fmr(fmr_for(fpir, max(1, enrolled)))

    def table(self, fpirs: Sequence[float] = (1e-1, 1e-2, 1e-3),
              sizes: Sequence[int] = (100, 1000, 10_000, 100_000)) -> list[dict[str, Any]]:
        """Rows of the threshold table (docs/measurements.md)."""
        rows: list[dict[str, Any]] = []
        for fpir in fpirs:
            for n in sizes:
                t, measured = self.threshold_for(fpir, n)
                rows.append({"fpir": fpir, "enrolled": n, "fmr": fmr_for(fpir, n),
                             "threshold": t, "measured": measured})
        return rows


def load_calibrations(text: str | None = None) -> dict[str, Calibration]:
    """The shipped calibrations (``gate/match/calibrations.json``, written by
    ``make calibrate``), by embedder name."""
    if text is None:
        text = resources.files("gate.match").joinpath("calibrations.json").read_text(
            encoding="utf-8")
    data = json.loads(text)
    out = {}
    for name, entry in data["models"].items():
        c = entry["calibration"]
        out[name] = Calibration(source=c["source"], model=c["model"], pairs=int(c["pairs"]),
                                points=tuple((float(a), float(b)) for a, b in c["points"]),
                                tail_start=float(c["tail_start"]),
                                tail_rate=float(c["tail_rate"]),
                                tail_scale=float(c["tail_scale"]))
    return out


#: Measured with ``make calibrate`` on lfw-dev (quality gate on: the faces a gate meets),
#: from the impostor pairs of the calibration half of its people; the other half checked
#: them (``calibrations.json`` holds both, and docs/measurements.md the table).
CALIBRATIONS: dict[str, Calibration] = load_calibrations()


@dataclass(frozen=True)
class ThresholdPolicy:
    """The threshold in force: fixed, or from the calibration for the cache's size."""

    target_fpir: float
    calibration: Calibration
    fixed: float = 0.0

    def for_size(self, templates: int) -> float:
        """Cosine threshold with ``templates`` enrolled."""
        if self.fixed > 0:
            return self.fixed
        return self.calibration.threshold_for(self.target_fpir, templates)[0]

    def basis(self, templates: int) -> str:
        """Where :meth:`for_size` comes from: ``fixed``, ``measured`` or ``extrapolated``
        (the target FPIR at this size lies beyond what the calibration set resolves)."""
        if self.fixed > 0:
            return "fixed"
        measured = self.calibration.threshold_for(self.target_fpir, templates)[1]
        return "measured" if measured else "extrapolated"
