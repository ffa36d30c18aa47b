"""The 1:N gallery: protected templates in one contiguous float32 matrix.

Each attendee has 1-3 rows; a search scores every row against the probe with one
matrix-vector product and returns the best attendee and the best *other* attendee.
Upserts fill free rows and revocations free them (zeroed at once), so the matrix is
updated in place, never rebuilt per decision.

Above ``coarse_min`` templates a float32 search is bound by memory bandwidth (100k
templates are 77 MB read per probe). There a coarse pass over an int8 copy of the
matrix (a quarter of the bytes, run by the TFLite runtime) picks candidates that are then
scored exactly in float32. Each coarse score is within a bound ``B`` of the exact one
(row rounding plus the runtime's on-the-fly quantization of the probe), so every row left
out scores at most ``c_K + B``, where ``c_K`` is the lowest coarse score taken. From that
the search either proves that the threshold/margin decision equals an exhaustive float32
search's, or falls back to the exhaustive search. Accuracy is therefore unchanged;
``tests/gate/match/test_gallery.py`` checks it against brute force.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from gate.errors import TemplateError
from gate.inference import Model
from gate.inference.fc_model import build_int8_fc
from gate.match.decision import Candidates
from gate.types import Array
from sync.templates import MAX_TEMPLATES

#: Rows taken from the coarse pass for exact scoring.
COARSE_K = 32
#: Rows quantized at a time when building the coarse index.
_BLOCK = 8192
#: Safety added to the coarse error bound for float rounding in the runtime.
_BOUND_SLACK = 1e-4


class _Coarse:
    """An int8 copy of the first ``n`` rows, searched by a one-layer TFLite model."""

    def __init__(self, rows: Array, threads: int) -> None:
        self.n = rows.shape[0]
        q = np.empty(rows.shape, np.int8)
        scales = np.empty(self.n, np.float32)
        self.row_error = 0.0
        # In blocks, so quantizing 100k rows never needs full-size float temporaries.
        for start in range(0, self.n, _BLOCK):
            block = rows[start:start + _BLOCK]
            s = np.maximum(np.abs(block).max(axis=1), 1e-12) / 127.0
            qb = np.clip(np.rint(block / s[:, None]), -127, 127)
            residual = block - qb * s[:, None]
            self.row_error = max(self.row_error,
                                 float(np.sqrt((residual * residual).sum(axis=1)).max()))
            q[start:start + _BLOCK] = qb
            scales[start:start + _BLOCK] = s
            qb.fill(0)
            residual.fill(0)
        self.model = Model(build_int8_fc(q, scales), name="gallery index", threads=threads)
        q.fill(0)

    def scores(self, probe: Array) -> tuple[Array, float]:
        """Coarse scores of every row, and the bound on their error for this probe."""
        out = self.model.run(probe.reshape(1, -1))["scores"][0]
        # The runtime quantizes the probe to 8 bits with a scale of at most max|p|/127:
        # each element moves by at most half a step.
        probe_error = math.sqrt(probe.size) * float(np.abs(probe).max()) / 254.0
        bound = self.row_error + (1.0 + self.row_error) * probe_error + _BOUND_SLACK
        return out, bound

    def wipe(self) -> None:
        """Zero the index's input and output tensors before it is dropped.

        Its int8 rows live in the runtime's (packed) weight buffers, which it offers no
        way to overwrite: they are freed with the interpreter, not zeroed. They are
        protected templates, useless without the event key.
        """
        self.model.wipe()


class Gallery:
    """Rows of protected templates with their owners; exact 1:N search."""

    def __init__(self, *, dim: int, coarse_min: int = 20_000,
                 threads: int = 1) -> None:
        self.dim = dim
        self.coarse_min = coarse_min
        self.threads = threads
        self._rows = np.zeros((64, dim), np.float32)
        self._owner = np.full(64, -1, np.int64)
        self._top = 0  # rows in use are below this index
        self._free: list[int] = []
        self._ids: list[str | None] = []
        self._number: dict[str, int] = {}
        self._spare_numbers: list[int] = []
        self._slots: dict[int, list[int]] = {}
        self._scores = np.zeros(64, np.float32)
        self._coarse: _Coarse | None = None
        self._dirty: set[int] = set()
        self._erase_pending = False
        self._ordered = False  # rows are exactly the attendees in order (after replace_all)
        #: Searches the coarse bound could not settle (exhaustive rescans); for the bench.
        self.fallbacks = 0

    def __len__(self) -> int:
        return len(self._number)

    def __contains__(self, attendee: object) -> bool:
        return attendee in self._number

    @property
    def templates(self) -> int:
        """Rows in use."""
        return self._top - len(self._free)

    @property
    def indexed(self) -> bool:
        """True when searches use the int8 coarse pass."""
        return self._coarse is not None

    def put(self, attendee: str, vectors: Array) -> None:
        """Set an attendee's templates (replacing any it had). Rows must be unit vectors."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not \
                1 <= vectors.shape[0] <= MAX_TEMPLATES:
            raise TemplateError(f"templates must be 1-{MAX_TEMPLATES} rows of {self.dim} "
                                f"values, got shape {vectors.shape}")
        self.remove(attendee)
        self._ordered = False
        number = self._spare_numbers.pop() if self._spare_numbers else len(self._ids)
        if number == len(self._ids):
            self._ids.append(attendee)
        else:
            self._ids[number] = attendee
        self._number[attendee] = number
        slots = [self._alloc() for _ in range(vectors.shape[0])]
        self._rows[slots] = vectors
        self._owner[slots] = number
        self._slots[number] = slots
        self._dirty.update(slots)

    def remove(self, attendee: str, *, erase: bool = False) -> bool:
        """Drop an attendee's rows (zeroed at once). False if it was not enrolled.

        With ``erase`` (revocation, expiry) the coarse index, which holds an int8 copy of
        the rows, is rebuilt at the next :meth:`reindex` instead of lingering until it
        goes stale.
        """
        number = self._number.pop(attendee, None)
        if number is None:
            return False
        slots = self._slots.pop(number)
        self._ordered = False
        if erase and self._coarse is not None and min(slots) < self._coarse.n:
            self._erase_pending = True
        self._rows[slots] = 0.0
        self._owner[slots] = -1
        self._free.extend(slots)
        self._dirty.update(slots)
        self._ids[number] = None
        self._spare_numbers.append(number)
        return True

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        if self._top == len(self._rows):
            grow = max(64, len(self._rows) // 4)
            self._rows = np.concatenate([self._rows, np.zeros((grow, self.dim), np.float32)])
            self._owner = np.concatenate([self._owner, np.full(grow, -1, np.int64)])
            self._scores = np.zeros(len(self._rows), np.float32)
        self._top += 1
        return self._top - 1

    def reindex(self) -> bool:
        """Build or refresh the coarse index when large and stale. True if rebuilt.

        Called after a batch of changes, not per decision. Below ``coarse_min`` the
        index is dropped: the exact search is fast enough there.
        """
        if self.templates < self.coarse_min:
            if self._coarse is not None:
                self._coarse.wipe()
            self._coarse = None
            return False
        if self._coarse is not None and not self._erase_pending and \
                len(self._dirty) <= max(512, self.templates // 50):
            return False
        try:
            coarse = _Coarse(self._rows[:self._top], self.threads)
        except ImportError:  # no schema to build the index with: stay exact
            return False
        if self._coarse is not None:
            self._coarse.wipe()
        self._coarse = coarse
        self._dirty.clear()
        self._erase_pending = False
        return True

    def search(self, probe: Array, *, threshold: float, margin: float) -> Candidates:
        """Best attendee and best other attendee for a unit-length protected probe.

        The decision that :func:`gate.match.decision.decide` takes on the result is the
        one an exhaustive float32 search would give for this threshold and margin.
        """
        if probe.shape != (self.dim,):
            raise TemplateError(f"probe must have {self.dim} values, got shape {probe.shape}")
        if self.templates == 0:
            return Candidates(None, -math.inf, -math.inf)
        if self._coarse is not None:
            found = self._search_coarse(probe, threshold=threshold, margin=margin)
            if found is not None:
                return found
            self.fallbacks += 1
        return self._search_exact(probe)

    def _search_exact(self, probe: Array) -> Candidates:
        scores = self._scores[:self._top]
        np.matmul(self._rows[:self._top], probe, out=scores)
        if self._free:
            scores[self._free] = -np.inf
        k = min(MAX_TEMPLATES + 1, self._top)
        top = np.argpartition(scores, -k)[-k:] if self._top > k else np.arange(self._top)
        return self._best_two(top, scores[top], exact=True)

    def _best_two(self, slots: Array, scores: Array, *, exact: bool) -> Candidates:
        order = np.argsort(-scores, kind="stable")
        best_slot = int(slots[order[0]])
        owner = int(self._owner[best_slot])
        if owner < 0:
            return Candidates(None, -math.inf, -math.inf, exact)
        best = float(scores[order[0]])
        second = -math.inf
        for k in order[1:]:
            other = int(self._owner[int(slots[k])])
            if other >= 0 and other != owner:
                second = float(scores[k])
                break
        return Candidates(self._ids[owner], best, second, exact)

    def _search_coarse(self, probe: Array, *, threshold: float,
                       margin: float) -> Candidates | None:
        coarse = self._coarse
        assert coarse is not None
        coarse_scores, bound = coarse.scores(probe)
        dirty = np.fromiter(self._dirty, np.int64, len(self._dirty))
        stale = dirty[dirty < coarse.n]
        coarse_scores[stale] = -np.inf  # changed since the index was built: scored below
        k = min(COARSE_K, coarse.n)
        taken = np.argpartition(coarse_scores, -k)[-k:]
        cutoff = float(coarse_scores[taken].min())
        slots = np.union1d(taken, dirty)
        slots = slots[self._owner[slots] >= 0]
        if slots.size == 0:
            return None
        exact = self._rows[slots] @ probe
        found = self._best_two(slots, exact, exact=True)
        coarse_scores.fill(0)
        # Every row not scored exactly scores at most this.
        unscored = cutoff + bound if math.isfinite(cutoff) else -math.inf
        if found.attendee is None:
            return None
        if found.best >= unscored:
            if found.second >= unscored:
                return found  # both exact: nothing unscored can reach either
            if found.best < threshold or found.best - found.second < margin:
                return found  # refused whatever the unscored rows score
            if found.best - unscored >= margin:
                # Accepted whatever the unscored rows score; report the safe upper bound.
                return Candidates(found.attendee, found.best, unscored, exact=False)
            return None
        if unscored < threshold:
            # Nobody reaches the threshold: refused, as the exhaustive search would.
            return Candidates(found.attendee, found.best, found.second, exact=False)
        return None

    @contextmanager
    def exhaustive(self) -> Iterator[None]:
        """Search without the coarse index for a while (benchmarks compare the two)."""
        saved, self._coarse = self._coarse, None
        try:
            yield
        finally:
            self._coarse = saved

    def wipe(self) -> None:
        """Zero every row and forget every attendee (crypto-erase of the RAM copy)."""
        self._rows.fill(0)
        self._scores.fill(0)
        self._owner.fill(-1)
        if self._coarse is not None:
            self._coarse.wipe()
        self._coarse = None
        self._top = 0
        self._free.clear()
        self._ids.clear()
        self._number.clear()
        self._spare_numbers.clear()
        self._slots.clear()
        self._dirty.clear()
        self._erase_pending = False
        self._ordered = False

    def attendees(self) -> list[str]:
        """Enrolled attendee ids (pseudonyms)."""
        return list(self._number)

    def counts(self, attendees: list[str]) -> Array:
        """How many rows each of ``attendees`` has."""
        return np.array([len(self._slots[self._number[a]]) for a in attendees], np.int64)

    def export(self, attendees: list[str]) -> tuple[Array, bool]:
        """The rows of ``attendees``, concatenated in that order, and whether that is a
        copy (wipe it after use). Right after :meth:`replace_all`, when the matrix already
        holds exactly those rows in that order, it is a read-only view instead."""
        if self._ordered and attendees == self._ids:
            view = self._rows[:self._top]
            view.flags.writeable = False
            return view, False
        slots = [slot for a in attendees for slot in self._slots[self._number[a]]]
        return self._rows[np.asarray(slots, np.int64)], True

    def replace_all(self, attendees: list[str], counts: Array, vectors: Array, *,
                    adopt: bool = False) -> None:
        """Load a whole gallery at once (a cache or snapshot): much faster than ``put``.

        ``vectors`` holds ``counts[i]`` rows for ``attendees[i]``, in order. With ``adopt``
        a C-contiguous float32 ``vectors`` becomes the matrix itself (no copy of 77 MB at
        100k templates); the caller must not use it afterwards.
        """
        counts = np.asarray(counts, np.int64)
        total = int(counts.sum()) if counts.size else 0
        if vectors.shape != (total, self.dim) or len(attendees) != counts.size \
                or (counts.size and (counts.min() < 1 or counts.max() > MAX_TEMPLATES)):
            raise TemplateError("gallery: counts, ids and rows do not agree")
        if len(set(attendees)) != len(attendees):
            raise TemplateError("gallery: duplicate attendee ids")
        self.wipe()
        if adopt and vectors.dtype == np.float32 and vectors.flags.c_contiguous and total:
            self._rows, capacity = vectors, total  # upserts regrow it (see _alloc)
        else:
            capacity = max(64, total + total // 8)  # room for upserts without regrowing
            self._rows = np.zeros((capacity, self.dim), np.float32)
            self._rows[:total] = vectors
        self._owner = np.full(capacity, -1, np.int64)
        self._owner[:total] = np.repeat(np.arange(len(attendees)), counts)
        self._scores = np.zeros(capacity, np.float32)
        self._top = total
        self._ids = list(attendees)
        self._number = {a: i for i, a in enumerate(attendees)}
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts.size else counts
        self._slots = {i: list(range(int(st), int(st + c)))
                       for i, (st, c) in enumerate(zip(starts, counts, strict=True))}
        self._dirty = set(range(total))
        self._ordered = True
