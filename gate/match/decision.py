"""The 1:N decision rule, pure: scores in, accept or refuse out.

Accept only when the best attendee scores at least ``threshold`` *and* beats the best
*other* attendee by at least ``margin``. The margin refuses near-ties (look-alikes, twins,
a probe halfway between two people) that a threshold alone would let through; those
people go to the staffed lane rather than in under someone else's name.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Outcome(enum.Enum):
    """Why a search ended the way it did. Values are stable codes for logs and status."""

    MATCH = "match"
    BELOW_THRESHOLD = "below_threshold"
    AMBIGUOUS = "ambiguous"
    EMPTY = "empty"
    CACHE_INVALID = "cache_invalid"
    EXPIRED = "expired"  # the best match's templates ran out (purged on the spot)


@dataclass(frozen=True)
class Candidates:
    """The best attendee and the best score of any *other* attendee.

    ``second`` is -inf when nobody else is enrolled. ``exact`` is False when the coarse
    index proved the decision without computing every score exactly (the decision is still
    the one an exhaustive float32 search would make).
    """

    attendee: str | None
    best: float
    second: float
    exact: bool = True


@dataclass(frozen=True)
class Decision:
    """Outcome of one 1:N search. ``attendee`` is set only on a match."""

    outcome: Outcome
    attendee: str | None
    best: float
    second: float

    @property
    def accepted(self) -> bool:
        """True only for a confident match."""
        return self.outcome is Outcome.MATCH


def decide(c: Candidates, *, threshold: float, margin: float) -> Decision:
    """Apply the threshold and margin rule to search candidates."""
    if c.attendee is None or not math.isfinite(c.best):
        return Decision(Outcome.EMPTY, None, c.best, c.second)
    if not c.best >= threshold:
        return Decision(Outcome.BELOW_THRESHOLD, None, c.best, c.second)
    if not c.best - c.second >= margin:
        return Decision(Outcome.AMBIGUOUS, None, c.best, c.second)
    return Decision(Outcome.MATCH, c.attendee, c.best, c.second)
