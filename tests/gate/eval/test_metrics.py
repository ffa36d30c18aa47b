"""Metrics checked against hand-computed answers, brute force and invariants."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from gate.errors import EvalError
from gate.eval import degrade
from gate.eval.metrics import (
    balanced_accuracy,
    best_threshold_accuracy,
    kfold_accuracy,
    openset,
    openset_points,
    roc_auc,
    subject_folds,
    tar_at_far,
)

# ---------------------------------------------------------------- roc_auc


def test_auc_hand_computed_with_tie() -> None:
    # Pairs (g > i): (.9,.5)=1 (.9,.1)=1 (.5,.5)=½ (.5,.1)=1 → 3.5 / 4.
    assert roc_auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)


def test_auc_perfect_reversed_and_identical() -> None:
    assert roc_auc([0.8, 0.9, 1.0], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1, 0.2], [0.8, 0.9, 1.0]) == 0.0
    assert roc_auc([0.3, 0.3, 0.7], [0.3, 0.3, 0.7]) == pytest.approx(0.5)


def test_auc_same_distribution_is_near_half() -> None:
    rng = np.random.default_rng(0)
    assert roc_auc(rng.normal(size=20_000), rng.normal(size=20_000)) == pytest.approx(
        0.5, abs=0.01)


def test_auc_matches_brute_force_with_many_ties() -> None:
    rng = np.random.default_rng(1)
    g = rng.integers(0, 6, size=57).astype(float)
    i = rng.integers(0, 5, size=43).astype(float)
    diff = g[:, None] - i[None, :]
    brute = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert roc_auc(g, i) == pytest.approx(brute)


@pytest.mark.parametrize(("genuine", "impostor"), [
    ([], [0.1]),
    ([0.1], []),
    ([[0.1, 0.2]], [0.1]),
    ([0.1, math.nan], [0.1]),
    ([0.1], [math.inf]),
    (["a"], [0.1]),
])
def test_auc_bad_input(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> None:
    with pytest.raises(EvalError):
        roc_auc(genuine, impostor)


# ---------------------------------------------------------------- tar_at_far

IMPOSTOR_TENTHS = [0.1 * k for k in range(1, 11)]  # 0.1 … 1.0


def test_tar_at_far_hand_computed() -> None:
    # One false accept of ten is allowed: only the 1.0 impostor may pass, so the
    # threshold sits just above 0.9 and the 0.9 genuine score is rejected.
    result = tar_at_far([1.0, 0.95, 0.9, 0.5], IMPOSTOR_TENTHS, 0.1)
    assert result.resolvable
    assert result.impostors == 10
    assert result.threshold is not None
    assert 0.9 < result.threshold < 0.9 + 1e-12
    assert result.tar == pytest.approx(0.5)


def test_tar_at_far_ties_at_the_cut_are_all_rejected() -> None:
    result = tar_at_far([0.5, 0.6], [0.5] * 10, 0.1)
    assert result.threshold is not None
    assert result.threshold > 0.5
    assert result.tar == pytest.approx(0.5)


def test_tar_at_far_allowed_count_survives_float_rounding() -> None:
    # 0.29 * 100 == 28.999999999999996; the target still allows 29 false accepts.
    impostor = np.arange(100, dtype=float)
    result = tar_at_far([70.0, 70.5], impostor, 0.29)
    assert result.threshold is not None
    assert np.sum(impostor >= result.threshold) == 29
    assert result.tar == pytest.approx(0.5)


def test_tar_at_far_is_strict_and_minimal() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(10, 300))
        impostor = np.round(rng.normal(size=n), 2)  # rounding makes ties likely
        far = float(rng.choice([0.1, 0.05, 0.01, 0.3, 0.25]))
        result = tar_at_far(rng.normal(1.0, size=20), impostor, far)
        if n < math.ceil(1 / far - 1e-9):
            assert not result.resolvable
            continue
        assert result.threshold is not None
        assert np.mean(impostor >= result.threshold) <= far
        # The next float down must already break the target: the threshold is the smallest.
        below = np.nextafter(result.threshold, -np.inf)
        assert np.mean(impostor >= below) > far


def test_tar_at_far_unresolvable() -> None:
    result = tar_at_far([0.9], [0.1] * 9, 0.1)
    assert (result.resolvable, result.tar, result.threshold, result.impostors) == (
        False, None, None, 9)
    assert not tar_at_far([0.9], np.zeros(999), 0.001).resolvable
    assert tar_at_far([0.9], np.zeros(1000), 0.001).resolvable


@pytest.mark.parametrize("far", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_tar_at_far_bad_target(far: float) -> None:
    with pytest.raises(EvalError):
        tar_at_far([0.9], IMPOSTOR_TENTHS, far)


# ------------------------------------------------- threshold accuracy metrics

# Genuine 0.9 0.8 0.3, impostor 0.7 0.2. Accuracy per threshold:
# 0.2→3/5  0.3→4/5  0.7→3/5  0.8→4/5  0.9→3/5  above→2/5.
SCORES = [0.9, 0.8, 0.3, 0.7, 0.2]
SAME = [True, True, True, False, False]


def test_best_threshold_accuracy_hand_computed() -> None:
    accuracy, threshold = best_threshold_accuracy(SCORES, SAME)
    assert accuracy == pytest.approx(0.8)
    assert threshold == 0.3  # the lower of the two equally good thresholds


def test_best_threshold_accuracy_accepts_int_labels() -> None:
    assert best_threshold_accuracy(SCORES, [1, 1, 1, 0, 0]) == best_threshold_accuracy(
        SCORES, SAME)


def test_balanced_accuracy_hand_computed() -> None:
    assert balanced_accuracy(SCORES, SAME, 0.3) == pytest.approx((1.0 + 0.5) / 2)
    assert balanced_accuracy(SCORES, SAME, 0.8) == pytest.approx((2 / 3 + 1.0) / 2)


@pytest.mark.parametrize(("scores", "same"), [
    ([0.1, 0.2], [True]),
    ([0.1, 0.2], [True, True]),
    ([], []),
    ([0.1, 0.2], [2, 0]),
    ([0.1, 0.2], ["yes", "no"]),
])
def test_accuracy_bad_input(scores: list[float], same: npt.ArrayLike) -> None:
    with pytest.raises(EvalError):
        best_threshold_accuracy(scores, same)
    with pytest.raises(EvalError):
        balanced_accuracy(scores, same, 0.5)


def test_kfold_threshold_never_sees_the_held_out_fold() -> None:
    # Each fold alone is perfectly separable, but at a threshold the other fold cannot
    # share: fold 0 needs T in (0.6, 0.8], fold 1 needs T in (0.3, 0.5]. A leaky
    # threshold would score 1.0; honest cross-validation gets 1/2 on both folds.
    scores = [0.8, 0.6, 0.5, 0.3]
    same = [True, False, True, False]
    folds = [0, 0, 1, 1]
    assert kfold_accuracy(scores, same, folds, balanced=False) == pytest.approx((0.5, 0.0))
    assert kfold_accuracy(scores, same, folds, balanced=True) == pytest.approx((0.5, 0.0))


def test_kfold_hand_computed_uneven_folds() -> None:
    # Fold 0: g .9, i .1 · fold 1: g .8, i .85, g .2 · fold 2: g .7, i .3.
    # Train {1,2} → T=.7 (acc 4/5) → fold 0: 2/2.
    # Train {0,2} → T=.7 (acc 4/4) → fold 1: .8 ok, .85 accepted, .2 rejected → 1/3.
    # Train {0,1} → T=.8 (acc 4/5; .2 first gives 3/5) → fold 2: .7 rejected, .3 ok → 1/2.
    scores = [0.9, 0.1, 0.8, 0.85, 0.2, 0.7, 0.3]
    same = [True, False, True, False, True, True, False]
    folds = [0, 0, 1, 1, 1, 2, 2]
    per_fold = [1.0, 1 / 3, 0.5]
    mean, std = kfold_accuracy(scores, same, folds, balanced=False)
    assert mean == pytest.approx(np.mean(per_fold))
    assert std == pytest.approx(np.std(per_fold))


def test_kfold_equals_optimistic_accuracy_when_folds_are_copies() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=40), 1)
    same = rng.random(40) < 0.5
    same[:2] = [True, False]
    tiled_scores = np.tile(scores, 3)
    tiled_same = np.tile(same, 3)
    folds = np.repeat([0, 1, 2], 40)
    best, _ = best_threshold_accuracy(scores, same)
    mean, std = kfold_accuracy(tiled_scores, tiled_same, folds, balanced=False)
    assert (mean, std) == pytest.approx((best, 0.0))


def test_kfold_bad_input() -> None:
    with pytest.raises(EvalError, match="at least 2 folds"):
        kfold_accuracy(SCORES, SAME, [0] * 5, balanced=False)
    with pytest.raises(EvalError, match="shape"):
        kfold_accuracy(SCORES, SAME, [0, 1], balanced=False)
    with pytest.raises(EvalError, match="integer"):
        kfold_accuracy(SCORES, SAME, [0.0, 1.0, 0.0, 1.0, 0.0], balanced=False)
    # Folds 1 and 2 hold no impostors, so training without fold 0 cannot pick a threshold.
    with pytest.raises(EvalError, match="genuine and impostor"):
        kfold_accuracy([0.9, 0.1, 0.8, 0.7], [True, False, True, True], [0, 0, 1, 2],
                       balanced=False)
    # Every training set has both classes, but held-out fold 1 has no impostors, so its
    # balanced accuracy is undefined (plain accuracy is still fine).
    scores, same, folds = [0.9, 0.1, 0.8, 0.2], [True, False, True, False], [0, 0, 1, 2]
    kfold_accuracy(scores, same, folds, balanced=False)  # does not raise
    with pytest.raises(EvalError, match="fold 1"):
        kfold_accuracy(scores, same, folds, balanced=True)


# ---------------------------------------------------------------- subject_folds


def test_subject_folds_group_by_first_person() -> None:
    rng = np.random.default_rng(4)
    people = np.array([f"p{k:02d}" for k in range(10)])
    first = people[rng.integers(0, 10, size=200)]
    first[:10] = people  # every person appears as a first image
    second = people[rng.integers(0, 10, size=200)]
    folds = subject_folds(first, second, 3, seed=7)
    assert folds.shape == (200,)
    assert set(folds.tolist()) == {0, 1, 2}
    fold_of_person: dict[str, int] = {}
    for person, fold in zip(first.tolist(), folds.tolist(), strict=True):
        assert fold_of_person.setdefault(person, fold) == fold
    sizes = np.bincount(list(fold_of_person.values()))
    assert sorted(sizes.tolist()) == [3, 3, 4]
    np.testing.assert_array_equal(folds, subject_folds(first, second, 3, seed=7))
    # Genuine pairs never share a person across folds.
    genuine = first == second
    for person in set(first[genuine].tolist()):
        assert len(set(folds[genuine & (first == person)].tolist())) == 1


def test_subject_folds_seed_changes_assignment() -> None:
    people = [f"p{k:02d}" for k in range(20)]
    runs = {tuple(subject_folds(people, people, 2, seed=s).tolist()) for s in range(5)}
    assert len(runs) > 1


def test_subject_folds_bad_input() -> None:
    with pytest.raises(EvalError, match="cannot split"):
        subject_folds(["a", "b", "a"], ["b", "a", "a"], 3, seed=0)
    with pytest.raises(EvalError, match="at least 2"):
        subject_folds(["a", "b"], ["b", "a"], 1, seed=0)
    with pytest.raises(EvalError, match="labels_j"):
        subject_folds(["a", "b"], ["b"], 2, seed=0)
    with pytest.raises(EvalError, match="non-empty"):
        subject_folds([], [], 2, seed=0)


# ---------------------------------------------------------------- openset


def _unit(*values: float) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    return [float(x) for x in v / np.linalg.norm(v)]


E1, E2, E3 = _unit(1, 0, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 1, 0)
# Ten non-mated probes whose best identity is "a" at 0.05 … 0.50; e4 is nobody.
NONMATED = np.array([[s, 0, 0, math.sqrt(1 - s * s)] for s in np.arange(1, 11) * 0.05],
                    dtype=np.float32)


def test_openset_hand_computed() -> None:
    gallery = np.array([E1, E2, E3, _unit(0, 0.6, 0.8, 0)], dtype=np.float32)
    gallery_ids = np.array(["a", "b", "c", "b"])
    mated = np.array([
        [0.8, 0.6, 0, 0],                   # a at .8: correct
        [0.6, 0.8, 0, 0],                   # b at .8: correct
        [0, 0, 0.4, math.sqrt(1 - 0.16)],   # c at .4: correct but weak
        [0.8, 0, 0.6, 0],                   # is c, but a wins at .8: wrong
    ], dtype=np.float32)
    # events=1: the arithmetic of the threshold, not the sample size rule (tested below).
    result = openset(gallery, gallery_ids, mated, ["a", "b", "c", "c"], NONMATED,
                     fpirs=[0.1, 0.3, 0.01], events=1)
    assert (result.gallery_size, result.mated, result.nonmated) == (3, 4, 10)
    assert result.rank1 == pytest.approx(0.75)
    assert result.margin == 0.0
    at_10, at_30, at_1 = result.points
    # FPIR 0.1 allows one of ten: T just above 0.45 → the 0.4 hit is lost too.
    # (Bounds are loose because the probes are float32.)
    assert at_10.resolvable
    assert at_10.threshold is not None
    assert 0.4499 < at_10.threshold < 0.4501
    assert at_10.fnir == pytest.approx(0.5)
    # FPIR 0.3 allows three: T just above 0.35 → only the wrong identity is missed.
    assert at_30.threshold is not None
    assert 0.3499 < at_30.threshold < 0.3501
    assert at_30.fnir == pytest.approx(0.25)
    assert (at_1.fpir, at_1.resolvable, at_1.threshold, at_1.fnir) == (0.01, False, None, None)


def test_an_fpir_needs_ten_distinct_strangers_per_false_positive_it_allows() -> None:
    gallery = np.array([E1, E2], dtype=np.float32)
    strangers = np.tile(np.array(_unit(1, 1, 0, 1), dtype=np.float32), (100, 1))
    r = openset(gallery, [1, 2], np.array([E1]), [1], strangers, fpirs=[0.1, 0.2])
    assert [p.resolvable for p in r.points] == [True, True]
    r = openset(gallery, [1, 2], np.array([E1]), [1], strangers[:99], fpirs=[0.1, 0.2])
    assert [p.resolvable for p in r.points] == [False, True]
    # Pooled galleries: the same 100 images searched ten times are still 100 strangers.
    pooled = openset_points([True], [0.9], [0.1], np.zeros(1000), np.zeros(1000),
                            fpirs=[0.01, 0.1], gallery_size=2, distinct_nonmated=100)
    assert [p.resolvable for p in pooled.points] == [False, True]
    assert pooled.distinct_nonmated == 100 and pooled.nonmated == 1000


def test_openset_margin_uses_second_distinct_identity() -> None:
    # Two rows of "a" both score high; the runner-up *identity* is b, far below, so a
    # margin of 0.2 keeps the candidate. Counting a's second row would drop it.
    gallery = np.array([E1, _unit(0.8, 0.6, 0, 0), E2], dtype=np.float32)
    probe = np.array([_unit(0.9, math.sqrt(1 - 0.81), 0, 0)], dtype=np.float32)
    result = openset(gallery, ["a", "a", "b"], probe, ["a"], NONMATED,
                     fpirs=[0.1], margin=0.2, events=1)
    assert result.rank1 == 1.0
    assert result.points[0].fnir == 0.0


def test_openset_margin_suppresses_ambiguous_probes() -> None:
    gallery = np.array([E1, E2], dtype=np.float32)
    # 0.72 vs 0.69: right identity first, but inside the margin → no candidate.
    ambiguous = np.array([_unit(0.72, 0.69, 0, 0)], dtype=np.float32)
    # Non-mated probes equidistant from a and b never return a candidate either.
    nonmated = np.tile(np.array(_unit(1, 1, 0, 1), dtype=np.float32), (10, 1))
    result = openset(gallery, [1, 2], ambiguous, [1], nonmated, fpirs=[0.1], margin=0.1,
                     events=1)
    assert result.rank1 == 1.0  # rank-1 ignores the margin
    point = result.points[0]
    assert point.threshold == -math.inf  # the margin alone keeps FPIR at 0
    assert point.fnir == 1.0
    plain = openset(gallery, [1, 2], ambiguous, [1], nonmated, fpirs=[0.1], events=1)
    assert plain.points[0].fnir == 0.0


def test_openset_single_identity_gallery() -> None:
    result = openset(np.array([E1]), ["a"], np.array([E1]), ["a"], NONMATED,
                     fpirs=[0.1], margin=0.5, events=1)
    assert result.rank1 == 1.0
    assert result.points[0].fnir == 0.0


def test_openset_fpir_is_strict() -> None:
    rng = np.random.default_rng(5)

    def rows(n: int) -> npt.NDArray[np.float32]:
        x = rng.normal(size=(n, 8))
        unit: npt.NDArray[np.float32] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(
            np.float32)
        return unit

    gallery = rows(12)
    ids = np.arange(12) % 6
    nonmated = rows(300)
    result = openset(gallery, ids, gallery[:6], ids[:6], nonmated, fpirs=[0.01, 0.1, 0.5],
                     events=1)
    best = np.max(nonmated.astype(np.float64) @ gallery.astype(np.float64).T, axis=1)
    for point in result.points:
        assert point.threshold is not None
        assert np.mean(best >= point.threshold) <= point.fpir
        assert np.mean(best >= np.nextafter(point.threshold, -np.inf)) > point.fpir


def _openset_args() -> dict[str, object]:
    return {"gallery": np.array([E1, E2]), "gallery_ids": ["a", "b"],
            "mated_probes": np.array([E1]), "mated_ids": ["a"],
            "nonmated_probes": NONMATED, "fpirs": [0.1]}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("gallery", np.zeros((0, 4)), "gallery"),
    ("gallery", np.array([[1.0, 1.0, 0, 0]]), "normalised"),
    ("gallery_ids", ["a"], "gallery_ids"),
    ("mated_probes", np.array([[1.0, 0, 0]]), "dimension"),
    ("mated_ids", ["z"], "not in the gallery"),
    ("mated_ids", ["a", "b"], "mated_ids"),
    ("nonmated_probes", np.zeros((0, 4)), "nonmated_probes"),
    ("nonmated_probes", np.array([[math.nan, 0, 0, 0]]), "NaN"),
    ("fpirs", [0.0], "FPIR"),
    ("margin", -0.1, "margin"),
    ("margin", math.nan, "margin"),
])
def test_openset_bad_input(key: str, value: object, message: str) -> None:
    args = _openset_args()
    args[key] = value
    with pytest.raises(EvalError, match=message):
        openset(**args)  # type: ignore[arg-type]


def test_the_mask_covers_nose_to_chin_and_leaves_the_eyes() -> None:
    image = np.full((200, 200, 3), 90, np.uint8)
    # right eye, left eye, nose tip, mouth, right ear, left ear (BlazeFace order)
    kp = np.array([[80, 80], [120, 80], [100, 105], [100, 125], [60, 90], [140, 90]], float)
    masked = degrade.occlude_lower_face(image, kp)
    assert (image == 90).all()  # the input is left alone
    assert (masked[120, 100] != 90).all() and (masked[140, 100] != 90).all()
    assert (masked[80, 80] == 90).all() and (masked[80, 120] == 90).all()
    with pytest.raises(ValueError, match="unknown occluder"):
        degrade.occlude_lower_face(image, kp, "scarf")
