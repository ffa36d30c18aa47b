"""Write first, then apply: how a change reaches the disk and the RAM copy, in that order.

A change is made durable (:class:`~gate.match.store.Store`) before it is applied
(:class:`~gate.match.state.State`), so nothing matches at this gate that a restart would
not also know about. When the write fails (disk full, I/O error) nothing half-written
stays, and the change waits in :class:`~gate.match.pending.Pending`, in order, retried
before every new change and by :meth:`Committer.flush`. Safety first while it waits: a
revocation or a purge is enforced in RAM at once (nobody revoked can match, even if the
record is not yet on disk); an upsert, or a snapshot's additions, wait until written.

Files that turn out to be swapped or broken while in use make the cache invalid, like a
failed load: everyone is refused, nothing more is written, tombstones are kept so that
the snapshot that ends it cannot undo a revocation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from gate.errors import CacheError, StorageError
from gate.match import arrays, changes
from gate.match.changes import DROP, REVOKE, STREAMS, UPSERT, Change
from gate.match.pending import Pending, SnapshotWait, wipe_all
from gate.match.state import State
from gate.match.store import Store
from gate.types import Array

log = logging.getLogger(__name__)

#: A journal smaller than this is appended to; beyond it (or a quarter of the snapshot)
#: a change is followed by a fresh snapshot (compaction).
JOURNAL_MIN = 4 << 20


class Committer:
    """Writes changes for one cache, and applies them once written."""

    def __init__(self, state: State, store: Store, *, dim: int,
                 clock: Callable[[], float]) -> None:
        self.state = state
        self.store = store
        self.pending = Pending()
        self.dim = dim
        self.clock = clock
        #: Why the files are invalid (None: they verified).
        self.invalid: str | None = None
        #: A write that failed while nothing waits (a postponed compaction).
        self.note = ""

    def fail(self, exc: CacheError, *, keep_tombstones: bool = False) -> None:
        """Invalid: refuse everyone, write nothing until a verified snapshot."""
        self.state.clear(keep_tombstones=keep_tombstones)
        self.store.forget()
        self.invalid = str(exc)
        self.note = ""
        log.error("cache: invalid (%s); refusing all matches until a resync", exc)

    def change(self, kind: bytes, records: Array, vectors: Array | None = None,
               extra: Array | None = None, source: tuple[str, int] | None = None) -> Change:
        """A new change, numbered after every other (written or waiting)."""
        s = self.state
        s.version = changes.next_version(kind, s.version)
        if source is not None:
            i = STREAMS.index(source[0])
            s.seqs[i] = max(s.seqs[i], source[1])
        return Change(kind, s.version, records,
                      vectors if vectors is not None else np.zeros((0, self.dim), np.float32),
                      extra if extra is not None else np.zeros(0, changes.ID),
                      (s.seqs[0], s.seqs[1]), source)

    def submit(self, change: Change) -> bool:
        """Write ``change`` then apply it, or queue it; True when it is on stable storage.

        Raises CacheError for an upsert on an invalid cache (nothing to add it to).
        """
        if self.pending:
            self.flush()
        if self.invalid is None and not self.pending:
            try:
                self._write(change)
            except StorageError as exc:
                self.pending.problem = exc.problem
                log.warning("cache: %s; change kept in RAM until it can be written", exc)
            except CacheError as exc:
                self.fail(exc, keep_tombstones=True)
            else:
                self.state.apply(change)
                change.wipe()
                self.state.durable_version = change.version
                self._compact_if_due()
                return True
        if change.kind == UPSERT and self.invalid is not None:
            change.wipe()
            raise CacheError(f"cache invalid ({self.invalid}); a full snapshot is needed")
        if self.invalid is None:
            self.pending.push(change)
        if change.kind in (REVOKE, DROP):
            self.state.apply(change)  # safety first: enforced before it is written
        return False

    def _write(self, change: Change) -> None:
        if not self.store.ready:
            # No snapshot yet: the state on disk is empty, and this change applied to it
            # is the first snapshot.
            records, vectors, tombs = arrays.first_state(change, self.dim)
            self.store.save(version=change.version, records=records, vectors=vectors,
                            tombstones=tombs, dim=self.dim, seqs=change.seqs)
            return
        entry = changes.encode(change)
        try:
            self.store.append(entry)
        finally:
            entry[:] = bytes(len(entry))

    def flush(self) -> None:
        """Write what waits, oldest first, until done or a write fails again."""
        while self.pending:
            item = self.pending.first()
            try:
                if isinstance(item, SnapshotWait):
                    self._write_snapshot(item)
                else:
                    self._write(item)
            except StorageError as exc:
                self.pending.problem = exc.problem
                break
            except CacheError as exc:
                wipe_all(self.pending.take_all())
                self.fail(exc, keep_tombstones=True)
                break
            self.pending.pop()
            self._written(item)
        self.state.gallery.reindex()

    def _written(self, item: Change | SnapshotWait) -> None:
        """``item`` reached stable storage: apply what waited for that."""
        if isinstance(item, SnapshotWait):
            self.state.install(item.records, item.vectors, item.tombstones, adopt=True)
            self.invalid = None
        elif item.kind == UPSERT:
            self.state.apply(item)
            item.wipe()
        self.state.durable_version = item.version
        # What waits behind it and was enforced already stays enforced.
        for later in self.pending:
            if isinstance(later, SnapshotWait):
                self.state.enforce(later)
            elif later.kind in (REVOKE, DROP):
                self.state.apply(later)

    def _compact_if_due(self) -> None:
        if self.pending or self.store.journal_size <= max(JOURNAL_MIN,
                                                          self.store.snapshot_bytes // 4):
            return
        s = self.state
        records, vectors, copied = s.export(self.dim)
        try:  # RAM is exactly what is on disk here (nothing waits)
            self.store.save(version=s.version, records=records, vectors=vectors,
                            tombstones=arrays.tomb_array(s.tombs), dim=self.dim,
                            seqs=(s.seqs[0], s.seqs[1]))
        except StorageError as exc:
            self.note = f"{exc.problem}: snapshot rewrite postponed"
            log.warning("cache: %s; the journal grows meanwhile", exc)
        else:
            self.note = ""
        finally:
            if copied:
                vectors.fill(0)

    # --- full snapshots ------------------------------------------------------------------

    def replace(self, records: Array, vectors: Array, tombstones: Array,
                given: tuple[int, int]) -> None:
        """Install a verified snapshot (``vectors`` is ours): written, then applied; if it
        cannot be written, it waits and only what it removes is applied."""
        s = self.state
        new = given if self.invalid is not None else \
            (max(given[0], s.seqs[0]), max(given[1], s.seqs[1]))
        snap = SnapshotWait(s.version + 1, *arrays.without_revoked(
            records, vectors, tombstones, s.tombs), new)
        if snap.vectors is not vectors:
            vectors.fill(0)
        # Everything waiting is superseded, except upserts newer than the snapshot.
        later = [i for i in self.pending.take_all()
                 if isinstance(i, Change) and i.kind == UPSERT and i.source is not None
                 and i.source[0] == STREAMS[0] and i.source[1] > new[0]]
        s.version, s.seqs = snap.version, list(new)
        try:
            self._write_snapshot(snap)
        except StorageError as exc:
            self.pending.push(snap)
            self.pending.problem = exc.problem
            s.enforce(snap)
            log.warning("cache: %s; snapshot kept in RAM until it can be written", exc)
        except CacheError as exc:  # the files were swapped while writing
            snap.wipe()
            self.fail(exc, keep_tombstones=True)
        else:
            self._written(snap)
        for change in later:
            self._requeue(change)
        s.gallery.reindex()

    def _write_snapshot(self, snap: SnapshotWait) -> None:
        """Write a snapshot, first setting an invalid cache's files aside."""
        s = self.state
        if s.tombs:  # revocations that arrived meanwhile still win
            snap.records, vectors, snap.tombstones = arrays.without_revoked(
                snap.records, snap.vectors, snap.tombstones, s.tombs)
            if vectors is not snap.vectors:
                snap.vectors.fill(0)
                snap.vectors = vectors
        if self.invalid is not None:
            # Nothing else waits while invalid: seqs noted meanwhile are safe to keep.
            snap.seqs = (max(snap.seqs[0], s.seqs[0]), max(snap.seqs[1], s.seqs[1]))
            moved = self.store.set_aside(int(self.clock()))
            if moved:
                log.warning("cache: invalid files set aside as %s", ", ".join(moved))
        self.store.save(version=snap.version, records=snap.records, vectors=snap.vectors,
                        tombstones=snap.tombstones, dim=self.dim, seqs=snap.seqs)

    def _requeue(self, change: Change) -> None:
        """An upsert that waited, submitted again after a snapshot replaced the state."""
        fresh = np.array([int(s) > self.state.newest(bytes(i).decode(), self.pending)
                          for i, s in zip(change.records["id"], change.records["seq"],
                                          strict=True)], bool)
        if fresh.any():
            rows = np.repeat(fresh, change.records["count"].astype(np.int64))
            self.submit(self.change(UPSERT, change.records[fresh], change.vectors[rows],
                                    source=change.source))
        change.wipe()
