"""The 1:N gallery: exact search, in-place updates, and the int8 coarse pass proven
against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.errors import TemplateError
from gate.match.decision import decide
from gate.match.gallery import Gallery
from tests.support import DIM, unit

RNG = np.random.default_rng(7)


def near(v: np.ndarray, noise: float) -> np.ndarray:
    return unit(v + RNG.standard_normal(v.shape).astype(np.float32) * noise)


def test_best_and_second_are_distinct_attendees():
    g = Gallery(dim=DIM)
    base = unit(RNG.standard_normal((3, DIM)))
    g.put("alice", np.stack([near(base[0], 0.02), near(base[0], 0.02)]))  # two templates
    g.put("bob", base[1:2])
    g.put("carol", base[2:3])
    c = g.search(base[0], threshold=0.5, margin=0.05)
    assert c.attendee == "alice" and c.best > 0.9
    # Alice's second template is not "the second best attendee".
    assert c.second == pytest.approx(max(base[0] @ base[1], base[0] @ base[2]), abs=1e-5)
    assert len(g) == 3 and g.templates == 4


def test_a_near_twin_makes_the_decision_ambiguous():
    g = Gallery(dim=DIM)
    face = unit(RNG.standard_normal(DIM))
    g.put("twin-a", near(face, 0.02)[None])
    g.put("twin-b", near(face, 0.02)[None])
    d = decide(g.search(face, threshold=0.5, margin=0.05), threshold=0.5, margin=0.05)
    assert d.outcome.value == "ambiguous" and d.attendee is None


def test_empty_and_single_attendee():
    g = Gallery(dim=DIM)
    c = g.search(unit(RNG.standard_normal(DIM)), threshold=0.5, margin=0.05)
    assert c.attendee is None and c.best == -math.inf
    face = unit(RNG.standard_normal(DIM))
    g.put("solo", face[None])
    c = g.search(face, threshold=0.5, margin=0.05)
    assert c.attendee == "solo" and c.second == -math.inf


def test_put_replaces_and_remove_zeroes_rows_and_reuses_them():
    g = Gallery(dim=DIM)
    a, b = unit(RNG.standard_normal((2, DIM)))
    g.put("x", a[None])
    g.put("x", b[None])  # replaced, not added
    assert g.templates == 1
    assert g.search(b, threshold=0.5, margin=0.0).best == pytest.approx(1.0, abs=1e-5)
    rows_before = g._rows
    assert g.remove("x") and not g.remove("x")
    assert not g._rows[:g._top].any()  # the revoked template is gone from RAM at once
    g.put("y", a[None])
    assert g._top == 1 and g.templates == 1 and g._rows is rows_before  # slot reused


@pytest.mark.parametrize("bad", [np.zeros((1, 100)), np.zeros((4, DIM)), np.zeros((0, DIM)),
                                 np.zeros(DIM)])
def test_wrong_shapes_are_refused(bad):
    with pytest.raises(TemplateError):
        Gallery(dim=DIM).put("a", bad)
    with pytest.raises(TemplateError):
        Gallery(dim=DIM).search(np.zeros(100, np.float32), threshold=0.5, margin=0.0)


def _population(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    counts = RNG.integers(1, 4, n)
    return [f"p{i}" for i in range(n)], counts, unit(RNG.standard_normal((counts.sum(), DIM)))


@pytest.fixture(scope="module")
def twin_galleries():
    """The same 8,000 attendees, searched with the coarse index and without."""
    ids, counts, vectors = _population(8000)
    coarse = Gallery(dim=DIM, coarse_min=1000)
    coarse.replace_all(ids, counts, vectors)
    assert coarse.reindex() and coarse.indexed
    exact = Gallery(dim=DIM, coarse_min=10**9)
    exact.replace_all(ids, counts, vectors)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return coarse, exact, vectors, starts


def test_coarse_scores_stay_within_their_error_bound(twin_galleries):
    coarse, _, vectors, _ = twin_galleries
    assert coarse._coarse is not None
    for probe in unit(RNG.standard_normal((20, DIM))):
        approx, bound = coarse._coarse.scores(probe)
        true = vectors @ probe
        assert np.abs(approx[:len(true)] - true).max() <= bound


def test_coarse_decisions_equal_brute_force(twin_galleries):
    coarse, exact, vectors, starts = twin_galleries
    probes = [near(vectors[starts[i]], 0.05) for i in RNG.integers(0, len(starts), 150)]
    probes += list(unit(RNG.standard_normal((150, DIM))))  # strangers
    # Near the decision boundary: mixtures of two attendees.
    for i, j in RNG.integers(0, len(starts), (100, 2)):
        probes.append(unit(vectors[starts[i]] + RNG.uniform(0.5, 1.0) * vectors[starts[j]]))
    for threshold, margin in ((0.5, 0.05), (0.3, 0.0), (0.7, 0.1)):
        for p in probes:
            a = decide(coarse.search(p, threshold=threshold, margin=margin),
                       threshold=threshold, margin=margin)
            b = decide(exact.search(p, threshold=threshold, margin=margin),
                       threshold=threshold, margin=margin)
            assert (a.outcome, a.attendee) == (b.outcome, b.attendee)
            if a.accepted:
                assert a.best == pytest.approx(b.best, abs=1e-5)


def test_changes_after_indexing_are_searched_exactly(twin_galleries):
    coarse, exact, vectors, starts = twin_galleries
    newcomer = unit(RNG.standard_normal(DIM))
    for g in (coarse, exact):
        g.put("newcomer", newcomer[None])
        g.remove("p0")
    try:
        d = decide(coarse.search(newcomer, threshold=0.5, margin=0.05), threshold=0.5,
                   margin=0.05)
        assert d.attendee == "newcomer"
        gone = decide(coarse.search(vectors[starts[0]], threshold=0.5, margin=0.05),
                      threshold=0.5, margin=0.05)
        assert gone.attendee != "p0"  # revoked after indexing: never matched again
    finally:
        for g in (coarse, exact):
            g.remove("newcomer")


def test_small_gallery_drops_the_index():
    g = Gallery(dim=DIM, coarse_min=1000)
    ids, counts, vectors = _population(100)
    g.replace_all(ids, counts, vectors)
    assert not g.reindex() and not g.indexed


def test_replace_all_refuses_inconsistent_input():
    g = Gallery(dim=DIM)
    with pytest.raises(TemplateError, match="do not agree"):
        g.replace_all(["a", "b"], np.array([1, 1]), unit(RNG.standard_normal((3, DIM))))
    with pytest.raises(TemplateError, match="duplicate"):
        g.replace_all(["a", "a"], np.array([1, 1]), unit(RNG.standard_normal((2, DIM))))


def test_the_coarse_pass_settles_most_searches(twin_galleries):
    coarse, _, vectors, starts = twin_galleries
    before = coarse.fallbacks
    probes = [near(vectors[starts[i]], 0.03) for i in range(100)]
    probes += list(unit(RNG.standard_normal((100, DIM))))
    results = [coarse.search(p, threshold=0.5, margin=0.05) for p in probes]
    settled = sum(1 for r in results if r is not None) - (coarse.fallbacks - before)
    assert settled >= 190  # exhaustive rescans are the exception


def test_when_the_bound_cannot_settle_it_falls_back_to_brute_force(twin_galleries,
                                                                   monkeypatch):
    coarse, exact, vectors, starts = twin_galleries
    index = coarse._coarse
    assert index is not None
    real = index.scores
    monkeypatch.setattr(index, "scores", lambda p: (real(p)[0], 0.9))  # a useless bound
    before = coarse.fallbacks
    for i in range(20):
        p = near(vectors[starts[i]], 0.03)
        a = decide(coarse.search(p, threshold=0.5, margin=0.05), threshold=0.5, margin=0.05)
        b = decide(exact.search(p, threshold=0.5, margin=0.05), threshold=0.5, margin=0.05)
        assert (a.outcome, a.attendee, a.best) == (b.outcome, b.attendee, b.best)
    assert coarse.fallbacks - before == 20


def test_revocation_rebuilds_the_index_instead_of_leaving_an_int8_copy():
    ids, counts, vectors = _population(3000)
    g = Gallery(dim=DIM, coarse_min=1000)
    g.replace_all(ids, counts, vectors)
    g.reindex()
    first = g._coarse
    g.remove("p5")  # a replaced template may linger until the index goes stale...
    assert not g.reindex() and g._coarse is first
    g.remove("p6", erase=True)  # ...a revoked one may not
    assert g.reindex() and g._coarse is not first
    assert g._coarse is not None and g._coarse.n == g._top
