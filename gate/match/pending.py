"""Changes waiting to be written: the cache's answer to a full disk or an I/O error.

A change is made durable before it is applied. When it cannot be (disk full, I/O error),
it waits here, in order, and is written by :meth:`TemplateCache.flush_pending
<gate.match.cache.TemplateCache.flush_pending>` (on the service's timer, and before each
new change) once space returns. Meanwhile the gate serves from RAM, and safety comes
first: a waiting revocation or purge is already enforced in RAM (the attendee cannot
match), a waiting upsert or snapshot is not applied until it is written, so nothing can
match at this gate that a restart would not also know about.

Deciding whether a new change is fresh (its seq newer than the attendee's) must see the
waiting changes too, or a revocation could be judged against a state without the upsert
queued before it and the journal, replayed, would disagree with RAM: :meth:`Pending.newest`
gives the newest waiting seq per attendee.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from gate.match.changes import UPSERT, Change
from gate.types import Array

#: Upserts waiting beyond this many bytes are refused (StorageError) until written.
MAX_WAITING_BYTES = 64 << 20


@dataclass
class SnapshotWait:
    """A verified full snapshot from central that could not be written yet."""

    version: int
    records: Array
    vectors: Array  # owned by the cache (copied or adopted)
    tombstones: Array
    seqs: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """RAM it holds."""
        return int(self.records.nbytes + self.vectors.nbytes + self.tombstones.nbytes)

    def wipe(self) -> None:
        """Zero its templates (not once the gallery adopted them)."""
        self.vectors.fill(0)


Item = Change | SnapshotWait


class Pending:
    """The queue of items waiting to be written, oldest first."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._newest: dict[str, tuple[int, int]] = {}
        #: Why they wait ("disk full", "I/O error"), for the status line.
        self.problem = ""

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    @property
    def nbytes(self) -> int:
        """RAM held by waiting upserts."""
        return sum(i.nbytes for i in self._items if isinstance(i, Change) and i.kind == UPSERT)

    def newest(self, attendee: str) -> tuple[int, int] | None:
        """(seq, valid_until) of the newest waiting record of ``attendee``, if any."""
        return self._newest.get(attendee)

    def push(self, item: Item) -> None:
        """Queue ``item`` after the others."""
        self._items.append(item)
        self._note(item)

    def first(self) -> Item:
        """The oldest waiting item."""
        return self._items[0]

    def pop(self) -> Item:
        """Remove the oldest (it was written)."""
        item = self._items.popleft()
        self._newest.clear()
        for other in self._items:
            self._note(other)
        if not self._items:
            self.problem = ""
        return item

    def take_all(self) -> list[Item]:
        """Empty the queue, returning what was in it (the caller wipes it)."""
        items = list(self._items)
        self._items.clear()
        self._newest.clear()
        self.problem = ""
        return items

    def _note(self, item: Item) -> None:
        if isinstance(item, SnapshotWait):
            rows: Array | None = item.records
        elif item.kind == UPSERT:
            rows = item.records
        else:
            rows = None
        if rows is None or not rows.size:
            return
        for raw, seq, end in zip(rows["id"], rows["seq"], rows["valid_until"], strict=True):
            attendee = bytes(raw).decode()
            if int(seq) > self._newest.get(attendee, (-1, 0))[0]:
                self._newest[attendee] = (int(seq), int(end))


def wipe_all(items: list[Item]) -> None:
    """Zero the templates of items dropped from the queue."""
    for item in items:
        item.wipe()
