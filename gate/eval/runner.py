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
  published LFW figures do, and the report says how many such pairs were genuine and how
  many impostor; accuracy is cross-validated over the folds the file's header declares
  (8 for lfw-dev, 10 for full LFW).
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
from gate.eval.calibration import calibrate_split
from gate.eval.datasets import all_pairs
from gate.eval.det import curve
from gate.images import load_image
from gate.pipeline import MODELS, STAGES, FacePipeline
from gate.types import Array, Image

FARS = (1e-3, 1e-4)
FPIRS = (1e-1, 1e-2, 1e-3)


@dataclass
class Embedded:
    """Embeddings of a list of images; ``row[i]`` is -1 when image i had no usable face."""

    embeddings: Array
    row: Array
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Per image: its face passed every quality check (False when no face was found).
    passed: Array | None = None
    #: Quality refusals among the images embedded anyway (quality gate off), by reason.
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
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
    passed = np.zeros(len(paths), bool)
    out = Embedded(embeddings=np.zeros((len(paths), pipeline.embedder.dim), np.float32),
                   row=np.full(len(paths), -1, np.int64),
                   stage_ms={s: [] for s in (*STAGES, MODELS)}, passed=passed)
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
            passed[i] = result.usable
            if not result.usable:
                out.refused[result.issues[0].reason.value] += 1
            n += 1
        else:
            out.reasons[result.issues[0].reason.value] += 1
        image.fill(0)
        pipeline.wipe()
        bar.update(i + 1)
    return out


def gated(emb: Embedded) -> Embedded:
    """The same embeddings as if the quality gate had been on: images whose face failed a
    check become unusable, counted under their reason."""
    if emb.passed is None:
        return emb
    row = np.where(emb.passed, emb.row, -1)
    reasons = collections.Counter(emb.reasons)
    reasons.update(emb.refused)
    return Embedded(embeddings=emb.embeddings, row=row, reasons=reasons, passed=emb.passed,
                    ms=emb.ms, stage_ms=emb.stage_ms)


def _no_face(issues: Sequence[Any]) -> bool:
    return any(i.reason.value == "no_face" for i in issues)


#: Reasons that mean the image has no face the pipeline could use at all (failure to
#: acquire); every other reason is a quality check refusing a face it found.
NO_FACE = frozenset({"no_face", "unreadable"})


def _rate_block(emb: Embedded, total: int) -> dict[str, Any]:
    unusable = int((~emb.usable).sum())
    no_face = sum(n for r, n in emb.reasons.items() if r in NO_FACE)
    ms = np.asarray(emb.ms) if emb.ms else np.zeros(1)
    return {
        "images": total,
        "unusable": unusable,
        "unusable_rate": unusable / max(total, 1),
        "no_face": no_face,
        "quality_refused": unusable - no_face,
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
    missing = {True: 0, False: 0}
    for n, (a, b, genuine) in enumerate(pairs):
        ra, rb = emb.row[a], emb.row[b]
        if ra < 0 or rb < 0:
            missing[bool(genuine)] += 1
            continue
        scores[n] = float(emb.embeddings[ra] @ emb.embeddings[rb])
    report: dict[str, Any] = {"mode": "pairs", **_rate_block(emb, total),
                              "pairs": {"genuine": int(same.sum()),
                                        "impostor": int((~same).sum()),
                                        "with_unusable_image": missing[True] + missing[False],
                                        "genuine_with_unusable_image": missing[True],
                                        "impostor_with_unusable_image": missing[False]}}
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
    report["det"] = curve("pairs", np.ones(int(same.sum()), bool), scores[same],
                          scores[~same]).as_dict()
    return report


def _probes(vectors: Array, owners: list[int], fuse: int
            ) -> tuple[Array, list[int], list[tuple[int, ...]]]:
    """Probes as the gate would form them: with ``fuse`` > 1, the normalised mean of each
    run of ``fuse`` consecutive images of one person (multi-frame fusion). Also returns
    which input rows each probe is made of."""
    if fuse <= 1:
        return vectors, owners, [(k,) for k in range(len(owners))]
    out, ids, groups = [], [], []
    start = 0
    while start < len(owners):
        end = start
        while end < len(owners) and owners[end] == owners[start] and end - start < fuse:
            end += 1
        if end - start == fuse:
            mean = vectors[start:end].sum(axis=0)
            out.append(mean / np.linalg.norm(mean))
            ids.append(owners[start])
            groups.append(tuple(range(start, end)))
        start = end
    return np.asarray(out, np.float32).reshape(-1, vectors.shape[1]), ids, groups


def default_gallery_size(eligible: int) -> int:
    """Enrolled people when none is asked for: up to 1,000, always leaving a quarter of
    the people with two usable images (at least one) out to search as strangers."""
    return max(2, min(1000, eligible - max(1, eligible // 4)))


def openset_folder(emb: Embedded, labels: Sequence[str], *, gallery_sizes: Sequence[int] = (),
                   margin: float, splits: int = 10, seed: int = 0, fuse: int = 1,
                   probes: Embedded | None = None) -> dict[str, Any]:
    """Open-set identification as a venue meets it.

    Each of ``splits`` random galleries enrols ``size`` people who have two or more usable
    images, one image each (most attendees enrol one photo); their other images are the
    mated searches. People with a single image are split in two: half join the gallery as
    distractors (enrolled, never searched for), half are searched as strangers, with every
    image of the people with several images who were not enrolled. Rank-1 and FNIR at each
    FPIR are pooled over the galleries; an FPIR is resolvable only with ≥ 10/FPIR
    *distinct* stranger images over all of them. With ``fuse`` > 1 every probe is the mean
    of that many images of one person (one-image strangers then drop out). With
    ``probes``, the searches use those embeddings of the same images (e.g. occluded)
    while the gallery enrols the clean ones: people enrol a clean photo and walk up
    wearing a mask.
    """
    source = probes or emb
    usable = emb.usable & source.usable
    by_person: dict[str, list[int]] = collections.defaultdict(list)
    for idx, lab in enumerate(labels):
        if usable[idx]:
            by_person[lab].append(idx)  # image indices: gallery from emb, probes from source
    people = sorted(by_person)
    eligible = [p for p in people if len(by_person[p]) >= 2]
    singles = [p for p in people if len(by_person[p]) == 1]
    sizes = list(gallery_sizes) or [default_gallery_size(len(eligible))]
    rng = np.random.default_rng(seed)
    results = []
    for size in sizes:
        if size < 2 or size >= len(eligible):
            raise EvalError(f"gallery size {size}: need 2 ≤ size < {len(eligible)} (the people "
                            "with two usable images, at least one left out to search as a "
                            "stranger)")
        pools: dict[str, list[Array]] = collections.defaultdict(list)
        distinct: set[tuple[int, ...]] = set()
        distractors = 0
        for _ in range(splits):
            enrolled = {str(p) for p in rng.choice(eligible, size=size, replace=False)}
            shuffled = [singles[k] for k in rng.permutation(len(singles))]
            extra, strangers_single = shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2:]
            distractors = len(extra)
            gallery_rows, gallery_ids, mated_rows, mated_ids = [], [], [], []
            for pid, person in enumerate(sorted(enrolled)):
                images = list(by_person[person])
                gallery_rows.append(int(emb.row[images.pop(int(rng.integers(len(images))))]))
                gallery_ids.append(pid)
                mated_rows += [int(source.row[i]) for i in images]
                mated_ids += [pid] * len(images)
            for k, person in enumerate(extra):
                gallery_rows.append(int(emb.row[by_person[person][0]]))
                gallery_ids.append(size + k)
            outsider_rows, outsider_ids = [], []
            outsiders = [p for p in eligible if p not in enrolled] + strangers_single
            for k, person in enumerate(outsiders):
                outsider_rows += [int(source.row[i]) for i in by_person[person]]
                outsider_ids += [-1 - k] * len(by_person[person])
            gal = emb.embeddings[gallery_rows]
            ids = np.asarray(gallery_ids)
            mated, mated_ids, _ = _probes(source.embeddings[mated_rows], mated_ids, fuse)
            strangers, _, groups = _probes(source.embeddings[outsider_rows], outsider_ids, fuse)
            # A stranger probe is new evidence only as a new set of images.
            distinct.update(tuple(outsider_rows[k] for k in g) for g in groups)
            best_id, m_best, m_second = metrics.search(gal, ids, mated)
            _, n_best, n_second = metrics.search(gal, ids, strangers)
            pools["correct"].append(best_id == np.asarray(mated_ids))
            pools["m_best"].append(m_best)
            pools["m_second"].append(m_second)
            pools["n_best"].append(n_best)
            pools["n_second"].append(n_second)
            gal.fill(0)
        cat = {k: np.concatenate(v) for k, v in pools.items()}
        det = curve(f"{size} enrolled + {distractors} distractors" +
                    (f", {fuse} images fused" if fuse > 1 else ""),
                    cat["correct"], cat["m_best"], cat["n_best"], distinct=len(distinct))
        for rule_margin in (0.0, margin):
            res = metrics.openset_points(cat["correct"], cat["m_best"], cat["m_second"],
                                         cat["n_best"], cat["n_second"], fpirs=FPIRS,
                                         margin=rule_margin, gallery_size=size,
                                         distinct_nonmated=len(distinct))
            results.append({
                "gallery_size": size, "distractors": distractors,
                "gallery_rows": size + distractors, "margin": rule_margin, "splits": splits,
                "fuse": fuse, "mated_searches": res.mated, "nonmated_searches": res.nonmated,
                "distinct_nonmated": res.distinct_nonmated, "rank1": res.rank1,
                "fnir_at_fpir": [{"fpir": p.fpir, "fnir": p.fnir, "threshold": p.threshold,
                                  "resolvable": p.resolvable} for p in res.points],
                **({"det": det.as_dict()} if rule_margin == 0.0 else {}),
            })
            if margin == 0.0:
                break
    return {"mode": "openset", "people": len(set(labels)), **_rate_block(emb, len(labels)),
            "people_with_two_images": len(eligible), "one_image_people": len(singles),
            "results": results}


def stage_summary(emb: Embedded) -> dict[str, float]:
    """Median milliseconds per pipeline stage over the images that reached it."""
    return {s: float(np.median(v)) for s, v in emb.stage_ms.items() if v}


def calibrate(emb: Embedded, labels: Sequence[str], *, model: str,
              source: str) -> dict[str, Any]:
    """The threshold table from this set's impostor pairs (calibration half) and its check
    on the other people (:mod:`gate.eval.calibration`)."""
    keep = np.flatnonzero(emb.usable)
    vecs = emb.embeddings[emb.row[keep]]
    report = calibrate_split(vecs, [labels[k] for k in keep], model=model, source=source)
    vecs.fill(0)
    return {"mode": "calibration", "people": len(set(labels)),
            **_rate_block(emb, len(labels)), **report}
