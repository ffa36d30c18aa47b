"""Match-threshold calibration on many people, with a held-out check.

People are split in two by a hash of their name (stable across runs, machines and
models): the *calibration* half gives the impostor scores the threshold table is read
from, the *check* half, whom the calibration never saw, measures what those thresholds
really do. A table cell is a threshold only where the calibration half has at least
:data:`~gate.match.threshold.MIN_EVENTS` impostor pairs at or above it; beyond that the
cell says *unresolvable* and how many comparisons it would need, and nothing is
extrapolated into the table.

Impostor scores are computed block by block (the Gram matrix of tens of thousands of
embeddings never exists whole), kept as float32 in RAM and zero-filled once read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gate.errors import EvalError
from gate.match.threshold import MIN_EVENTS, Calibration, fmr_for
from gate.types import Array

#: Target FPIR × enrolled of the table (docs/measurements.md).
TABLE_FPIRS = (1e-1, 1e-2, 1e-3)
TABLE_SIZES = (1_000, 10_000, 100_000)
#: Gallery size of the direct FPIR check (real searches, no independence assumption).
DIRECT_GALLERY = 1_000


def calibration_half(name: str) -> bool:
    """True for people in the calibration half, False for the check half."""
    return hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()[0] & 1 == 0


def impostor_scores(vecs: Array, owner: Array, *, block: int = 2048) -> Array:
    """Cosine scores of every pair of rows ``i < j`` with different owners (float32)."""
    n = len(vecs)
    out = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        gram = vecs[start:stop] @ vecs[start:].T
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        keep = (cols > rows) & (owner[start:stop, None] != owner[None, start:])
        out.append(gram[keep].astype(np.float32))
        gram.fill(0)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _rate_at(sorted_desc: Array, threshold: float) -> tuple[float, int]:
    """(fraction, count) of scores at or above ``threshold`` in a descending array."""
    count = int(np.searchsorted(-sorted_desc, -threshold, side="right"))
    return count / max(len(sorted_desc), 1), count


def _direct_fpir(vecs: Array, owner: Array, thresholds: Sequence[float], *, size: int,
                 splits: int, seed: int) -> dict[str, Any] | None:
    """FPIR of real searches: ``size`` people enrolled with one image each, every image
    of everyone else searched; pooled over ``splits`` random galleries."""
    people = np.unique(owner)
    if len(people) <= size:
        return None
    rng = np.random.default_rng(seed)
    hits = np.zeros(len(thresholds), np.int64)
    searches = 0
    probes_seen: set[int] = set()
    for _ in range(splits):
        enrolled = rng.choice(people, size=size, replace=False)
        gallery_rows = [int(rng.choice(np.flatnonzero(owner == p))) for p in enrolled]
        probe_rows = np.flatnonzero(~np.isin(owner, enrolled))
        best = np.max(vecs[probe_rows] @ vecs[gallery_rows].T, axis=1)
        hits += (best[:, None] >= np.asarray(thresholds)[None, :]).sum(axis=0)
        searches += len(probe_rows)
        probes_seen.update(int(r) for r in probe_rows)
        best.fill(0)
    return {"gallery": size, "splits": splits, "searches": searches,
            "distinct_probes": len(probes_seen),
            "fpir": [int(h) / searches for h in hits], "false_matches": [int(h) for h in hits]}


def calibrate_split(vecs: Array, labels: Sequence[str], *, model: str, source: str,
                    seed: int = 0, fpirs: Sequence[float] = TABLE_FPIRS,
                    sizes: Sequence[int] = TABLE_SIZES) -> dict[str, Any]:
    """Fit on the calibration half, check on the other; the report behind the table.

    ``vecs`` are unit embeddings of usable images, ``labels`` their people; ``fpirs`` ×
    ``sizes`` are the table's cells.
    """
    lab = np.asarray(labels)
    in_cal = np.array([calibration_half(str(p)) for p in lab], dtype=bool)
    halves = {}
    for name, mask in (("calibration", in_cal), ("check", ~in_cal)):
        people = len(set(lab[mask]))
        if people < 150:
            raise EvalError(f"the {name} half has {people} people: need ≥ 150 per half "
                            "(a set of ≥ 300 different people)")
        _, owner = np.unique(lab[mask], return_inverse=True)
        scores = impostor_scores(vecs[mask], owner)
        scores[::-1].sort()
        halves[name] = (scores, owner, people, int(mask.sum()))
    cal_scores, _, cal_people, cal_images = halves["calibration"]
    chk_scores, chk_owner, chk_people, chk_images = halves["check"]
    cal = Calibration.fit(cal_scores, source=source, model=model)
    floor = MIN_EVENTS / len(cal_scores)
    cells = []
    for fpir in fpirs:
        for n in sizes:
            fmr = fmr_for(fpir, n)
            cell: dict[str, Any] = {"fpir": fpir, "enrolled": n, "fmr": fmr,
                                    "comparisons": len(cal_scores),
                                    "expected_events": fmr * len(cal_scores)}
            if fmr < floor:
                cell.update(threshold=None, resolvable=False,
                            comparisons_needed=math.ceil(MIN_EVENTS / fmr))
            else:
                # The lowest threshold whose measured rate is ≤ the target rate.
                k = max(MIN_EVENTS, math.floor(fmr * len(cal_scores)))
                t = math.ceil(float(cal_scores[k - 1]) * 1e4) / 1e4
                rate, _ = _rate_at(cal_scores, t)
                check_rate, check_events = _rate_at(chk_scores, t)
                cell.update(threshold=t, resolvable=True, calibration_fmr=rate,
                            check_fmr=check_rate, check_events=check_events,
                            check_comparisons=len(chk_scores),
                            check_fpir=-math.expm1(n * math.log1p(-check_rate))
                            if check_rate < 1 else 1.0)
            cells.append(cell)
    thresholds = [c["threshold"] for c in cells
                  if c["enrolled"] == DIRECT_GALLERY and c["resolvable"]]
    chk_mask = ~in_cal
    direct = _direct_fpir(vecs[chk_mask], chk_owner, thresholds, size=DIRECT_GALLERY,
                          splits=5, seed=seed) if thresholds else None
    if direct is not None:
        direct["thresholds"] = thresholds
    c = {"source": cal.source, "model": cal.model, "pairs": cal.pairs,
         "points": [list(p) for p in cal.points], "tail_start": cal.tail_start,
         "tail_rate": cal.tail_rate, "tail_scale": cal.tail_scale}
    report = {
        "split": "people by blake2b(name) parity: calibration half / check half",
        "calibration_half": {"people": cal_people, "images": cal_images,
                             "impostor_pairs": len(cal_scores),
                             "highest_impostor": float(cal_scores[0])},
        "check_half": {"people": chk_people, "images": chk_images,
                       "impostor_pairs": len(chk_scores),
                       "highest_impostor": float(chk_scores[0])},
        "calibration": c, "cells": cells, "direct_check": direct,
    }
    cal_scores.fill(0)
    chk_scores.fill(0)
    return report
