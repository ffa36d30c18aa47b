"""Checks of template changes before the cache applies them: all or nothing.

Pure functions of their arguments (and the clock value passed in). Every refusal is a
:class:`~gate.errors.TemplateError` with one line that never quotes an attendee id or a
template. The shapes come from :mod:`sync.templates`, which central follows too.
"""

from __future__ import annotations

import numpy as np

from gate.errors import TemplateError
from sync.templates import ID_PATTERN, MAX_SEQ, MAX_TEMPLATES, Array, Enrolment

_ID_RULE = "attendee id must be 1-64 characters of A-Z a-z 0-9 . _ : -"
#: How far a template may be from unit length (they are normalised before sending).
UNIT_TOLERANCE = 1e-3


def check_id_seq(attendee: object, seq: object) -> None:
    """An attendee pseudonym and a sequence number in range."""
    if not isinstance(attendee, str) or not ID_PATTERN.fullmatch(attendee):
        raise TemplateError(_ID_RULE)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise TemplateError(f"seq must be an integer 0..{MAX_SEQ}")


def check_valid_until(value: object, now: float, max_ahead_s: int) -> None:
    """An expiry in (now, now + max_ahead_s], in whole seconds since the epoch."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TemplateError("valid_until must be an integer (seconds since the epoch)")
    if value <= now:
        raise TemplateError("valid_until is in the past")
    if value > now + max_ahead_s:
        raise TemplateError(f"valid_until is more than {max_ahead_s // 86400} days ahead")


def check_enrolment(e: Enrolment, *, dim: int, now: float, max_ahead_s: int) -> Array:
    """One enrolment; returns its templates as a float32 copy (the caller wipes it)."""
    check_id_seq(e.attendee, e.seq)
    check_valid_until(e.valid_until, now, max_ahead_s)
    vectors = np.asarray(e.templates)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[1] != dim or not \
            1 <= vectors.shape[0] <= MAX_TEMPLATES:
        raise TemplateError(f"templates must be 1-{MAX_TEMPLATES} vectors of {dim} values, "
                            f"got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating) or not np.all(np.isfinite(vectors)):
        raise TemplateError("templates must be finite numbers")
    norms = np.linalg.norm(vectors, axis=1)
    if np.any(np.abs(norms - 1.0) > UNIT_TOLERANCE):
        raise TemplateError("templates must be unit-length protected embeddings")
    return vectors.astype(np.float32)


def check_snapshot(records: Array, vectors: Array, tombstones: Array, *, dim: int,
                   now: float, max_ahead_s: int) -> list[str]:
    """A whole snapshot in the record layouts (vectorised: 100k templates at once).

    Returns the attendee ids in record order.
    """
    ids = [bytes(r).decode("ascii", "replace") for r in records["id"]]
    if len(set(ids)) != len(ids):
        raise TemplateError("the same attendee appears twice in one snapshot")
    for attendee in ids + [bytes(t).decode("ascii", "replace") for t in tombstones["id"]]:
        if not ID_PATTERN.fullmatch(attendee):
            raise TemplateError(_ID_RULE)
    counts = records["count"].astype(np.int64)
    if counts.size and (counts.min() < 1 or counts.max() > MAX_TEMPLATES):
        raise TemplateError(f"each attendee needs 1-{MAX_TEMPLATES} templates")
    if vectors.shape != (int(counts.sum()), dim) or not np.all(np.isfinite(vectors)):
        raise TemplateError(f"templates must be finite vectors of {dim} values")
    if vectors.size and np.any(np.abs(np.linalg.norm(vectors, axis=1) - 1) > UNIT_TOLERANCE):
        raise TemplateError("templates must be unit-length protected embeddings")
    for ends in (records["valid_until"], tombstones["valid_until"]):
        if ends.size and (ends.min() <= now or ends.max() > now + max_ahead_s):
            raise TemplateError("valid_until outside (now, now + max_valid_days]")
    if np.any(records["seq"] > MAX_SEQ) or np.any(tombstones["seq"] > MAX_SEQ):
        raise TemplateError(f"seq must be an integer 0..{MAX_SEQ}")
    return ids
