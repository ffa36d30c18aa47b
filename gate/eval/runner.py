"""Running the pipeline over an evaluation set and turning embeddings into reports.

Images are read, processed and dropped one at a time; only their embeddings (in RAM,
zero-filled at the end) and counts of reasons survive. Nothing about them is written
anywhere.

Conventions, stated in every report:
* folder-per-person sets: every pair of usable images; images without a usable face
  are left out of the pairs and counted as failures to acquire (ISO/IEC 19795-1), so
  the rejection rate is reported beside the accuracy, not hidden in it. Accuracy is the
  balanced accuracy (mean of genuine and impostor accept/reject rates, because impostor
  pairs outnumber genuine ones ~20:1) with a threshold chosen on the *other*
  subject-disjoint folds, never on the pairs it is measured on.
* LFW-style pairs files: a pair with an unusable image scores −1 (a non-match), as
  published LFW figures do; accuracy is 10-fold cross-validated when the header gives
  folds.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gate.errors import EvalError, ImageError
from gate.eval import metrics
from gate.eval.datasets import all_pairs
from gate.images import load_image
from gate.match.threshold import Calibration
from gate.pipeline import STAGES, FacePipeline
from gate.types import Array, Image

FARS = (1e-3, 1e-4)
FPIRS = (1e-1, 1e-2, 1e-3)


@dataclass
class Embedded:
    """Embeddings of a list of images; ``row[i]`` is -1 when image i had no usable face."""

    embeddings: Array
    row: Array
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def usable(self) -> Array:
        """Boolean mask of images with a usable face."""
        return self.row >= 0

    def wipe(self) -> None:
        """Zero-fill the embeddings (they are biometric data, even in an evaluation)."""
        self.embeddings.fill(0)


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()

    def update(self, done: int) -> None:
        """Redraw after ``done`` items."""
        if self.enabled and (done == self.total or done % 5 == 0):
            width = 30
            filled = width * done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
            if done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def embed_all(pipeline: FacePipeline, paths: Sequence[Path], *, progress: bool = False,
              quality_gate: bool = True,
              transform: Callable[[Image], Image] | None = None) -> Embedded:
    """Embed the most prominent face of each image.

    With ``quality_gate`` False, faces that fail a quality check are embedded anyway
    (to measure what the checks are worth); images with no face stay unusable.
    ``transform`` degrades each image first (e.g. blur: a worse camera or motion).
    """
    out = Embedded(embeddings=np.zeros((len(paths), pipeline.embedder.dim), np.float32),
                   row=np.full(len(paths), -1, np.int64),
                   stage_ms={s: [] for s in STAGES})
    bar = Progress(len(paths), enabled=progress)
    n = 0
    for i, path in enumerate(paths):
        try:
            image = load_image(path)
        except ImageError as exc:
            out.reasons["unreadable"] += 1
            del exc
            bar.update(i + 1)
            continue
        if transform is not None:
            degraded = transform(image)
            image.fill(0)
            image = degraded
        start = time.perf_counter()
        result = pipeline.process(image, embed_rejected=not quality_gate)
        out.ms.append((time.perf_counter() - start) * 1000.0)
        for stage, ms in result.times_ms.items():
            out.stage_ms[stage].append(ms)
        if result.embedding is not None and (result.usable or not quality_gate) \
                and not _no_face(result.issues):
            out.embeddings[n] = result.embedding
            out.row[i] = n
            n += 1
        else:
            out.reasons[result.issues[0].reason.value] += 1
        image.fill(0)
        pipeline.wipe()
        bar.update(i + 1)
    return out


def _no_face(issues: Sequence[Any]) -> bool:
    return any(i.reason.value == "no_face" for i in issues)


def _rate_block(emb: Embedded, total: int) -> dict[str, Any]:
    unusable = int((~emb.usable).sum())
    ms = np.asarray(emb.ms) if emb.ms else np.zeros(1)
    return {
        "images": total,
        "unusable": unusable,
        "unusable_rate": unusable / max(total, 1),
        "unusable_reasons": dict(emb.reasons.most_common()),
        "ms_per_image_p50": float(np.percentile(ms, 50)),
        "ms_per_image_mean": float(ms.mean()),
    }


def _far_block(genuine: Array, impostor: Array) -> list[dict[str, Any]]:
    out = []
    for far in FARS:
        r = metrics.tar_at_far(genuine, impostor, far)
        out.append({"far": far, "tar": r.tar, "threshold": r.threshold,
                    "resolvable": r.resolvable, "impostors": r.impostors})
    return out


def verify_folder(emb: Embedded, labels: Sequence[str], *, folds: int = 10,
                  seed: int = 0) -> dict[str, Any]:
    """Verification report over all pairs of usable images of a folder-per-person set."""
    keep = np.flatnonzero(emb.usable)
    kept_labels = [labels[k] for k in keep]
    if len(set(kept_labels)) < 2:
        raise EvalError(f"fewer than two people have a usable image "
                        f"({len(kept_labels)} usable of {len(labels)})")
    vecs = emb.embeddings[emb.row[keep]]
    i, j, _ = all_pairs(kept_labels)
    scores = np.einsum("ij,ij->i", vecs[i], vecs[j]).astype(np.float64)
    report = {"mode": "folder", "people": len(set(labels)), **_rate_block(emb, len(labels)),
              **pair_metrics(scores, kept_labels, folds=folds, seed=seed)}
    scores.fill(0)
    vecs.fill(0)
    return report


def pair_metrics(scores: Array, labels: Sequence[str], *, folds: int = 10,
                 seed: int = 0) -> dict[str, Any]:
    """Verification metrics of all-pairs ``scores`` (in ``all_pairs(labels)`` order)."""
    if len(set(labels)) < 2:
        raise EvalError("fewer than two people have a usable image")
    i, j, same = all_pairs(list(labels))
    if not same.any():
        raise EvalError("no person has two usable images: no genuine pairs")
    lab = np.asarray(labels)
    k = min(folds, len(set(labels)))
    best_acc, best_thr = metrics.best_threshold_accuracy(scores, same)
    try:
        fold_ids = metrics.subject_folds(lab[i], lab[j], k, seed)
        cv_mean, cv_std = metrics.kfold_accuracy(scores, same, fold_ids, balanced=True)
        protocol = f"balanced, {k}-fold subject-disjoint cross-validated threshold"
    except EvalError:
        # Too few people for every fold to hold both kinds of pair.
        cv_mean, cv_std = best_acc, 0.0
        protocol = "best threshold on these pairs (optimistic: too few people for folds)"
    return {
        "pairs": {"genuine": int(same.sum()), "impostor": int((~same).sum())},
        "accuracy": cv_mean,
        "accuracy_std": cv_std,
        "accuracy_protocol": protocol,
        "best_threshold_accuracy": best_acc,
        "best_threshold": best_thr,
        "auc": metrics.roc_auc(scores[same], scores[~same]),
        "tar_at_far": _far_block(scores[same], scores[~same]),
        "genuine_min": float(scores[same].min()),
        "impostor_max": float(scores[~same].max()),
    }


def verify_pairs(emb: Embedded, pairs: Sequence[tuple[int, int, bool]],
                 folds: Sequence[int] | None, total: int) -> dict[str, Any]:
    """Verification report for an LFW-style pairs list (indices into the embedded images)."""
    scores = np.full(len(pairs), -1.0)
    same = np.array([p[2] for p in pairs], dtype=bool)
    missing = 0
    for n, (a, b, _) in enumerate(pairs):
        ra, rb = emb.row[a], emb.row[b]
        if ra < 0 or rb < 0:
            missing += 1
            continue
        scores[n] = float(emb.embeddings[ra] @ emb.embeddings[rb])
    report: dict[str, Any] = {"mode": "pairs", **_rate_block(emb, total),
                              "pairs": {"genuine": int(same.sum()),
                                        "impostor": int((~same).sum()),
                                        "with_unusable_image": missing}}
    if folds is not None:
        acc, std = metrics.kfold_accuracy(scores, same, np.asarray(folds), balanced=False)
        report.update(accuracy=acc, accuracy_std=std,
                      accuracy_protocol=f"{len(set(folds))}-fold cross-validated threshold")
    else:
        acc, thr = metrics.best_threshold_accuracy(scores, same)
        report.update(accuracy=acc, best_threshold=thr,
                      accuracy_protocol="best threshold on these pairs (optimistic: no folds)")
    report["auc"] = metrics.roc_auc(scores[same], scores[~same])
    report["tar_at_far"] = _far_block(scores[same], scores[~same])
    return report


def _probes(vectors: Array, owners: list[int], fuse: int) -> tuple[Array, list[int]]:
    """Probes as the gate would form them: with ``fuse`` > 1, the normalised mean of each
    run of ``fuse`` consecutive images of one person (multi-frame fusion)."""
    if fuse <= 1:
        return vectors, owners
    out, ids = [], []
    start = 0
    while start < len(owners):
        end = start
        while end < len(owners) and owners[end] == owners[start] and end - start < fuse:
            end += 1
        if end - start == fuse:
            mean = vectors[start:end].sum(axis=0)
            out.append(mean / np.linalg.norm(mean))
            ids.append(owners[start])
        start = end
    return np.asarray(out, np.float32).reshape(-1, vectors.shape[1]), ids


def openset_folder(emb: Embedded, labels: Sequence[str], *, gallery_sizes: Sequence[int],
                   margin: float, splits: int = 10, seed: int = 0,
                   fuse: int = 1) -> dict[str, Any]:
    """Open-set identification: enrol one image per gallery person, search with the rest.

    For each gallery size, ``splits`` random draws of enrolled people (and of the image
    each enrols) are pooled; people not drawn supply the non-mated searches. With
    ``fuse`` > 1 every probe is the mean of that many images of one person.
    """
    usable = emb.usable
    by_person: dict[str, list[int]] = collections.defaultdict(list)
    for idx, lab in enumerate(labels):
        if usable[idx]:
            by_person[lab].append(int(emb.row[idx]))
    people = sorted(p for p, rows in by_person.items() if rows)
    eligible = [p for p in people if len(by_person[p]) >= 2]
    rng = np.random.default_rng(seed)
    results = []
    for size in gallery_sizes:
        if size < 2 or size > len(eligible) or size >= len(people):
            raise EvalError(f"gallery size {size}: need 2 ≤ size ≤ {len(eligible)} people with "
                            f"two usable images and at least one person left out "
                            f"({len(people)} people usable)")
        pools: dict[str, list[Array]] = collections.defaultdict(list)
        for _ in range(splits):
            enrolled = rng.choice(eligible, size=size, replace=False)
            gallery_rows, gallery_ids, mated_rows, mated_ids = [], [], [], []
            for pid, person in enumerate(enrolled):
                rows = list(by_person[str(person)])
                pick = int(rng.integers(len(rows)))
                gallery_rows.append(rows.pop(pick))
                gallery_ids.append(pid)
                mated_rows += rows
                mated_ids += [pid] * len(rows)
            outsider_rows, outsider_ids = [], []
            for k, p in enumerate(q for q in people if q not in set(enrolled)):
                outsider_rows += by_person[p]
                outsider_ids += [-1 - k] * len(by_person[p])
            gal = emb.embeddings[gallery_rows]
            ids = np.asarray(gallery_ids)
            mated, mated_ids = _probes(emb.embeddings[mated_rows], mated_ids, fuse)
            strangers, _ = _probes(emb.embeddings[outsider_rows], outsider_ids, fuse)
            best_id, m_best, m_second = metrics.search(gal, ids, mated)
            _, n_best, n_second = metrics.search(gal, ids, strangers)
            pools["correct"].append(best_id == np.asarray(mated_ids))
            pools["m_best"].append(m_best)
            pools["m_second"].append(m_second)
            pools["n_best"].append(n_best)
            pools["n_second"].append(n_second)
        cat = {k: np.concatenate(v) for k, v in pools.items()}
        for rule_margin in (0.0, margin):
            res = metrics.openset_points(cat["correct"], cat["m_best"], cat["m_second"],
                                         cat["n_best"], cat["n_second"], fpirs=FPIRS,
                                         margin=rule_margin, gallery_size=size)
            results.append({
                "gallery_size": size, "margin": rule_margin, "splits": splits, "fuse": fuse,
                "mated_searches": res.mated, "nonmated_searches": res.nonmated,
                "rank1": res.rank1,
                "fnir_at_fpir": [{"fpir": p.fpir, "fnir": p.fnir, "threshold": p.threshold,
                                  "resolvable": p.resolvable} for p in res.points],
            })
            if margin == 0.0:
                break
    return {"mode": "openset", "people": len(set(labels)), **_rate_block(emb, len(labels)),
            "results": results}


def stage_summary(emb: Embedded) -> dict[str, float]:
    """Median milliseconds per pipeline stage over the images that reached it."""
    return {s: float(np.median(v)) for s, v in emb.stage_ms.items() if v}



def calibrate(emb: Embedded, labels: Sequence[str], *, model: str,
              source: str) -> dict[str, Any]:
    """Fit the impostor-tail calibration behind the match threshold table."""
    keep = np.flatnonzero(emb.usable)
    kept = [labels[k] for k in keep]
    if len(set(kept)) < 150:
        raise EvalError(f"calibration needs ≥ 150 different people, got {len(set(kept))}")
    vecs = emb.embeddings[emb.row[keep]]
    i, j, same = all_pairs(kept)
    scores = np.einsum("ij,ij->i", vecs[i[~same]], vecs[j[~same]]).astype(np.float64)
    vecs.fill(0)
    cal = Calibration.fit(scores, source=source, model=model)
    scores.fill(0)
    c = {"source": cal.source, "model": cal.model, "pairs": cal.pairs,
         "points": [list(p) for p in cal.points], "tail_start": cal.tail_start,
         "tail_rate": cal.tail_rate, "tail_scale": cal.tail_scale}
    return {"mode": "calibration", "people": len(set(labels)),
            **_rate_block(emb, len(labels)), "calibration": c, "table": cal.table()}
