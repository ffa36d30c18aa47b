"""Verification and open-set identification metrics on similarity scores.

Scores are "higher = more similar" and a comparison is accepted when its score is
``>= threshold``. Operating points are strict: a threshold chosen for a false-accept
target is the smallest one whose *realised* rate on the data does not exceed the target,
never an interpolation that could. Pure numpy, so the gate can evaluate itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gate.errors import EvalError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

_NORM_TOLERANCE = 1e-3  # float32 rows normalised by the embedder are within ~1e-6 of 1
_PROBE_CHUNK = 1024


@dataclass(frozen=True)
class TarAtFar:
    """True-accept rate at the strict threshold for a false-accept target."""

    far: float
    tar: float | None
    threshold: float | None
    resolvable: bool
    impostors: int


@dataclass(frozen=True)
class FnirAtFpir:
    """False-negative identification rate at the strict threshold for an FPIR target.

    ``threshold`` is ``-inf`` when the margin alone keeps non-mated probes under target.
    """

    fpir: float
    threshold: float | None
    fnir: float | None
    resolvable: bool


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set identification summary (ISO/IEC 19795-1 terms).

    ``gallery_size`` counts enrolled identities, not gallery rows. ``rank1`` is the
    closed-set rank-1 rate: neither threshold nor margin applies to it.
    """

    gallery_size: int
    mated: int
    nonmated: int
    rank1: float
    margin: float
    points: tuple[FnirAtFpir, ...]
    #: Different images among the non-mated searches (pooled galleries reuse them).
    distinct_nonmated: int = 0


def _scores(name: str, values: npt.ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvalError(f"{name} must be numeric scores") from None
    if arr.ndim != 1:
        raise EvalError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise EvalError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise EvalError(f"{name} contains NaN or infinite scores")
    return arr


def _labels(name: str, values: npt.ArrayLike, size: int) -> BoolArray:
    arr = np.asarray(values)
    if arr.shape != (size,):
        raise EvalError(f"{name} must have shape ({size},) to match the scores, got {arr.shape}")
    if arr.dtype != np.bool_:
        # 0/1 integer labels are common in exported score files; anything else is a bug.
        if arr.dtype.kind not in "iu" or not np.all((arr == 0) | (arr == 1)):
            raise EvalError(f"{name} must be booleans (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(np.bool_)
    return arr


def _both_classes(same: BoolArray, what: str) -> None:
    if same.all() or not same.any():
        raise EvalError(f"{what} needs both genuine and impostor pairs")


def _target(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise EvalError(f"{name} target must be in (0, 1), got {value}")
    return float(value)


#: Distinct non-mated probes needed per 1/FPIR for an FPIR target to be resolvable.
MIN_DISTINCT_EVENTS = 10


def _min_events(target: float) -> int:
    # round() absorbs 1/0.001 == 1000.0000000000001 style noise before the ceiling.
    return math.ceil(round(1.0 / target, 9))


def _allowed(target: float, n: int) -> int:
    """Largest k with k / n <= target, robust to floor(0.29 * 100) == 28."""
    k = math.floor(target * n)
    if (k + 1) / n <= target:
        return k + 1
    return k - 1 if k / n > target else k


def _strict_threshold(negatives: FloatArray, target: float) -> float:
    """Smallest T with at most ``target`` of the negatives scoring >= T.

    ``-inf`` entries are negatives that returned no candidate and are never accepted.
    """
    allowed = _allowed(target, negatives.size)
    finite = np.sort(negatives[np.isfinite(negatives)])[::-1]
    if finite.size <= allowed:
        return -math.inf
    # Just above the first score that must be rejected: any lower threshold would accept
    # one negative too many, and ties at that score are all rejected together.
    return float(np.nextafter(finite[allowed], np.inf))


def _average_ranks(values: FloatArray) -> FloatArray:
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new_group = np.empty(values.size, dtype=np.bool_)
    new_group[0] = True
    new_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], values.size)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(new_group) - 1]
    return ranks


def roc_auc(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(genuine > impostor), ties counted half (Mann-Whitney U)."""
    g = _scores("genuine", genuine)
    i = _scores("impostor", impostor)
    ranks = _average_ranks(np.concatenate([g, i]))
    u = ranks[:g.size].sum() - g.size * (g.size + 1) / 2.0
    return float(u / (g.size * i.size))


def tar_at_far(genuine: npt.ArrayLike, impostor: npt.ArrayLike, far: float) -> TarAtFar:
    """TAR at the smallest threshold whose realised FAR on ``impostor`` is <= ``far``.

    Not resolvable (tar and threshold None) with fewer than ``ceil(1/far)`` impostor
    scores, because then even one false accept would exceed the target.
    """
    g = _scores("genuine", genuine)
    i = _scores("impostor", impostor)
    far = _target("FAR", far)
    if i.size < _min_events(far):
        return TarAtFar(far=far, tar=None, threshold=None, resolvable=False, impostors=i.size)
    threshold = _strict_threshold(i, far)
    tar = float(np.mean(g >= threshold))
    return TarAtFar(far=far, tar=tar, threshold=threshold, resolvable=True, impostors=i.size)


def _sweep(scores: FloatArray, same: BoolArray, *, balanced: bool) -> tuple[float, float]:
    """Best (accuracy, threshold) over every distinct score plus "reject all"."""
    candidates = np.append(np.unique(scores), np.nextafter(scores.max(), np.inf))
    genuine = np.sort(scores[same])
    impostor = np.sort(scores[~same])
    true_accepts = genuine.size - np.searchsorted(genuine, candidates, side="left")
    true_rejects = np.searchsorted(impostor, candidates, side="left")
    if balanced:
        accuracy = (true_accepts / genuine.size + true_rejects / impostor.size) / 2.0
    else:
        accuracy = (true_accepts + true_rejects) / scores.size
    best = int(np.argmax(accuracy))  # first maximum: the lowest of equally good thresholds
    return float(accuracy[best]), float(candidates[best])


def best_threshold_accuracy(scores: npt.ArrayLike, same: npt.ArrayLike) -> tuple[float, float]:
    """Return ``(accuracy, threshold)`` for the threshold that maximises plain accuracy.

    The threshold is fitted on the very pairs it is scored on, so the accuracy is
    optimistic; use :func:`kfold_accuracy` for an honest estimate.
    """
    s = _scores("scores", scores)
    labels = _labels("same", same, s.size)
    _both_classes(labels, "best_threshold_accuracy")
    return _sweep(s, labels, balanced=False)


def balanced_accuracy(scores: npt.ArrayLike, same: npt.ArrayLike, threshold: float) -> float:
    """Mean of the true-accept and true-reject rates at ``threshold``."""
    s = _scores("scores", scores)
    labels = _labels("same", same, s.size)
    _both_classes(labels, "balanced_accuracy")
    if math.isnan(threshold):
        raise EvalError("threshold is NaN")
    accepted = s >= threshold
    return float((np.mean(accepted[labels]) + np.mean(~accepted[~labels])) / 2.0)


def kfold_accuracy(scores: npt.ArrayLike, same: npt.ArrayLike, folds: npt.ArrayLike, *,
                   balanced: bool) -> tuple[float, float]:
    """Cross-validated accuracy: ``(mean, std)`` over folds (population std, ddof=0).

    Each fold is scored at the threshold that maximises accuracy (balanced or plain) on
    all the *other* folds, so no fold's threshold has seen its own pairs.
    """
    s = _scores("scores", scores)
    labels = _labels("same", same, s.size)
    fold_ids = np.asarray(folds)
    if fold_ids.shape != s.shape:
        raise EvalError(f"folds must have shape {s.shape} to match the scores, "
                        f"got {fold_ids.shape}")
    if fold_ids.dtype.kind not in "iu":
        raise EvalError(f"folds must be integer fold ids, got dtype {fold_ids.dtype}")
    distinct = np.unique(fold_ids)
    if distinct.size < 2:
        raise EvalError(f"k-fold accuracy needs at least 2 folds, got {distinct.size}")
    per_fold: list[float] = []
    for fold in distinct:
        held_out = fold_ids == fold
        train = ~held_out
        _both_classes(labels[train], f"training on the folds other than {fold}")
        _, threshold = _sweep(s[train], labels[train], balanced=balanced)
        if balanced:
            _both_classes(labels[held_out], f"balanced accuracy of fold {fold}")
            per_fold.append(balanced_accuracy(s[held_out], labels[held_out], threshold))
        else:
            per_fold.append(float(np.mean((s[held_out] >= threshold) == labels[held_out])))
    return float(np.mean(per_fold)), float(np.std(per_fold))


def subject_folds(labels_i: npt.ArrayLike, labels_j: npt.ArrayLike, k: int,
                  seed: int) -> IntArray:
    """Assign pairs to ``k`` folds by the person of their first image.

    The distinct people among the first images are shuffled with ``seed`` and split into
    ``k`` groups of near-equal size; a pair goes to its first person's group. Genuine
    pairs are therefore subject-disjoint across folds, but an impostor pair whose second
    person sits in another group shares that person with other folds, so the folds are
    only as disjoint as impostor pairs allow.
    """
    first = np.asarray(labels_i)
    second = np.asarray(labels_j)
    if first.ndim != 1 or first.size == 0:
        raise EvalError(f"labels_i must be a non-empty 1-D array, got shape {first.shape}")
    if second.shape != first.shape:
        raise EvalError(f"labels_j has shape {second.shape}, labels_i has {first.shape}")
    if k < 2:
        raise EvalError(f"need at least 2 folds, got {k}")
    # np.unique sorts, so the shuffle starts from the same order whatever the pair order.
    people, person_of_pair = np.unique(first, return_inverse=True)
    if people.size < k:
        raise EvalError(f"cannot split {people.size} people into {k} subject-disjoint folds")
    position = np.empty(people.size, dtype=np.intp)
    position[np.random.default_rng(seed).permutation(people.size)] = np.arange(people.size)
    group: IntArray = (position * k // people.size).astype(np.intp)
    fold_of_pair: IntArray = group[person_of_pair.reshape(-1)]
    return fold_of_pair


def _embeddings(name: str, values: npt.ArrayLike, dim: int | None = None) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvalError(f"{name} must be numeric embeddings") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EvalError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise EvalError(f"{name} has dimension {arr.shape[1]}, the gallery has {dim}")
    if not np.all(np.isfinite(arr)):
        raise EvalError(f"{name} contains NaN or infinite values")
    if not np.allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=0.0, atol=_NORM_TOLERANCE):
        raise EvalError(f"{name} rows are not L2-normalised")
    return arr


def _ids(name: str, values: npt.ArrayLike, rows: int) -> npt.NDArray[np.generic]:
    arr = np.asarray(values)
    if arr.shape != (rows,):
        raise EvalError(f"{name} must have shape ({rows},), got {arr.shape}")
    return arr


def search(gallery: npt.ArrayLike, gallery_ids: npt.ArrayLike, probes: npt.ArrayLike
           ) -> tuple[npt.NDArray[np.generic], FloatArray, FloatArray]:
    """1:N search of every probe: (best identity, its score, best *other* identity's score).

    Rows are L2-normalised embeddings, so a score is a cosine similarity; an identity's
    score is the best over its gallery rows. With one identity the second score is -inf.
    """
    g = _embeddings("gallery", gallery)
    g_ids = _ids("gallery_ids", gallery_ids, g.shape[0])
    p = _embeddings("probes", probes, g.shape[1])
    identities, row_identity = np.unique(g_ids, return_inverse=True)
    # Group gallery rows by identity so one reduceat gives every identity's best row.
    order = np.argsort(row_identity.reshape(-1), kind="stable")
    starts = np.searchsorted(row_identity.reshape(-1)[order], np.arange(identities.size))
    rows = g[order]
    # Chunked so a large probe set never needs the whole probes×gallery matrix at once.
    per_identity = np.concatenate([
        np.maximum.reduceat(p[k:k + _PROBE_CHUNK] @ rows.T, starts, axis=1)
        for k in range(0, p.shape[0], _PROBE_CHUNK)])
    best_index = np.argmax(per_identity, axis=1)
    best = per_identity[np.arange(p.shape[0]), best_index]
    if identities.size > 1:
        second = np.partition(per_identity, -2, axis=1)[:, -2]
    else:
        second = np.full(p.shape[0], -np.inf)
    return identities[best_index], best.astype(np.float64), second.astype(np.float64)


def openset_points(mated_correct: npt.ArrayLike, mated_best: npt.ArrayLike,
                   mated_second: npt.ArrayLike, nonmated_best: npt.ArrayLike,
                   nonmated_second: npt.ArrayLike, *, fpirs: Sequence[float],
                   margin: float = 0.0, gallery_size: int,
                   distinct_nonmated: int | None = None,
                   events: int = MIN_DISTINCT_EVENTS) -> OpenSetResult:
    """FNIR at each FPIR target from search results (possibly pooled over galleries).

    With ``margin > 0`` a probe returns a candidate only when its best identity beats
    the best *other* identity by at least ``margin``. A non-mated probe is a false
    positive when it returns a candidate scoring >= T; a mated probe is a miss unless it
    returns its own identity scoring >= T. T is the smallest threshold keeping realised
    FPIR <= target. A target is resolvable only with at least ``events / target``
    (default 10 / target) *distinct* non-mated probes (``distinct_nonmated``: searches
    pooled over several galleries reuse the same images, which adds no independent
    evidence); with fewer, the threshold would rest on a handful of images.
    """
    correct = np.asarray(mated_correct, dtype=np.bool_)
    m_best, m_second = np.asarray(mated_best, np.float64), np.asarray(mated_second, np.float64)
    n_best = np.asarray(nonmated_best, np.float64)
    n_second = np.asarray(nonmated_second, np.float64)
    if correct.size == 0 or n_best.size == 0:
        raise EvalError("open-set evaluation needs mated and non-mated probes")
    if not (correct.shape == m_best.shape == m_second.shape and n_best.shape == n_second.shape):
        raise EvalError("open-set search results have mismatched shapes")
    targets = [_target("FPIR", t) for t in fpirs]
    if not (math.isfinite(margin) and margin >= 0.0):
        raise EvalError(f"margin must be a finite number >= 0, got {margin}")
    m_returned = np.where(m_best - m_second >= margin, m_best, -np.inf)
    n_returned = np.where(n_best - n_second >= margin, n_best, -np.inf)
    distinct = n_best.size if distinct_nonmated is None else distinct_nonmated
    points: list[FnirAtFpir] = []
    for target in targets:
        if distinct < events * _min_events(target) or \
                n_best.size < _min_events(target):
            points.append(FnirAtFpir(fpir=target, threshold=None, fnir=None, resolvable=False))
            continue
        threshold = _strict_threshold(n_returned, target)
        hits = correct & np.isfinite(m_returned) & (m_returned >= threshold)
        points.append(FnirAtFpir(fpir=target, threshold=threshold,
                                 fnir=float(1.0 - np.mean(hits)), resolvable=True))
    return OpenSetResult(gallery_size=gallery_size, mated=int(correct.size),
                         nonmated=int(n_best.size), rank1=float(np.mean(correct)),
                         margin=float(margin), points=tuple(points),
                         distinct_nonmated=int(distinct))


def openset(gallery: npt.ArrayLike, gallery_ids: npt.ArrayLike, mated_probes: npt.ArrayLike,
            mated_ids: npt.ArrayLike, nonmated_probes: npt.ArrayLike, *,
            fpirs: Sequence[float], margin: float = 0.0,
            events: int = MIN_DISTINCT_EVENTS) -> OpenSetResult:
    """Open-set identification on one gallery: rank-1 rate and FNIR at each FPIR target.

    See :func:`search` and :func:`openset_points`.
    """
    g = _embeddings("gallery", gallery)
    g_ids = _ids("gallery_ids", gallery_ids, g.shape[0])
    mated = _embeddings("mated_probes", mated_probes, g.shape[1])
    m_ids = _ids("mated_ids", mated_ids, mated.shape[0])
    nonmated = _embeddings("nonmated_probes", nonmated_probes, g.shape[1])
    identities = np.unique(g_ids)
    if not np.all(np.isin(m_ids, identities)):
        raise EvalError("some mated probes have ids that are not in the gallery")
    m_id, m_best, m_second = search(g, g_ids, mated)
    _, n_best, n_second = search(g, g_ids, nonmated)
    return openset_points(m_id == m_ids, m_best, m_second, n_best, n_second, fpirs=fpirs,
                          margin=margin, gallery_size=int(identities.size), events=events)
