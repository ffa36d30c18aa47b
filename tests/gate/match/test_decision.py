"""The accept rule on plain numbers: threshold, margin, ties, near twins."""

from __future__ import annotations

import math

import pytest

from gate.match.decision import Candidates, Outcome, decide

T, M = 0.6, 0.05


@pytest.mark.parametrize(("best", "second", "outcome"), [
    (0.80, 0.30, Outcome.MATCH),
    (0.60, 0.30, Outcome.MATCH),          # exactly at the threshold: accepted
    (0.5999, 0.30, Outcome.BELOW_THRESHOLD),
    (0.80, 0.75, Outcome.MATCH),          # margin exactly 0.05: accepted
    (0.80, 0.7501, Outcome.AMBIGUOUS),    # a near twin: refused
    (0.80, 0.80, Outcome.AMBIGUOUS),      # a tie between two attendees
    (0.80, -math.inf, Outcome.MATCH),     # only one attendee enrolled
    (0.30, 0.29, Outcome.BELOW_THRESHOLD),
])
def test_rule(best, second, outcome):
    d = decide(Candidates("a1", best, second), threshold=T, margin=M)
    assert d.outcome is outcome
    assert d.accepted == (outcome is Outcome.MATCH)
    assert (d.attendee == "a1") == d.accepted


def test_empty_gallery_and_nan_are_refused():
    assert decide(Candidates(None, -math.inf, -math.inf), threshold=T, margin=M).outcome \
        is Outcome.EMPTY
    assert not decide(Candidates("a", math.nan, 0.0), threshold=T, margin=M).accepted
    assert not decide(Candidates("a", 0.9, math.nan), threshold=T, margin=M).accepted
