"""The cache's RAM copy: gallery, per-attendee metadata, tombstones, stream seqs, version.

Only :mod:`gate.match.commit` changes it, and only with changes that are on stable
storage, or that remove (revocations, purges, what a waiting snapshot drops): see there.
:meth:`State.apply` is the one place a change takes effect, whether it comes from a call
or from replaying the journal, so RAM and a reload cannot disagree.
"""

from __future__ import annotations

import numpy as np

from gate.errors import CacheError, TemplateError
from gate.match import changes
from gate.match.changes import DROP, REVOKE, UPSERT, Change
from gate.match.gallery import Gallery
from gate.match.pending import Pending, SnapshotWait
from gate.match.store import Loaded
from gate.types import Array
from sync.templates import RECORD


class State:
    """What the gate matches against, and what it knows about each attendee."""

    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery
        self.meta: dict[str, tuple[int, int]] = {}  # id -> (seq, valid_until)
        self.tombs: dict[str, tuple[int, int]] = {}
        self.seqs = [-1, -1]  # per stream, in changes.STREAMS order
        self.version = 0
        self.durable_version = 0

    def clear(self, *, keep_tombstones: bool = False) -> None:
        """Zero the templates and forget everything (tombstones too, unless kept: they
        are what a later snapshot must not undo)."""
        self.gallery.wipe()
        self.meta.clear()
        if not keep_tombstones:
            self.tombs.clear()
        self.seqs = [-1, -1]
        self.version = self.durable_version = 0

    def newest(self, attendee: str, pending: Pending) -> int:
        """The attendee's newest seq: record, tombstone, or a change still waiting."""
        waiting = pending.newest(attendee)
        return max(self.meta.get(attendee, (-1, 0))[0], self.tombs.get(attendee, (-1, 0))[0],
                   waiting[0] if waiting else -1)

    def install(self, records: Array, vectors: Array, tombstones: Array, *,
                adopt: bool = False) -> None:
        """Replace everything with a snapshot's contents."""
        ids = [bytes(r).decode() for r in records["id"]]
        self.gallery.replace_all(ids, records["count"].astype(np.int64), vectors, adopt=adopt)
        self.meta = {i: (int(s), int(v)) for i, s, v in
                     zip(ids, records["seq"], records["valid_until"], strict=True)}
        self.tombs = {bytes(t["id"]).decode(): (int(t["seq"]), int(t["valid_until"]))
                      for t in tombstones}

    def replay(self, loaded: Loaded, dim: int) -> int:
        """Install a verified snapshot and replay its journal; returns the entries.

        Anything inconsistent (it verified, so only a bug or a forged key could cause it)
        raises CacheError, like damage.
        """
        c = loaded.contents
        if c is None:
            return 0
        try:
            self.install(c.records, c.vectors, c.tombstones)
            self.version, self.seqs = c.version, list(c.meta.seqs)
            for entry in loaded.entries:
                change = changes.decode(entry, dim)
                try:
                    if change.version != changes.next_version(change.kind, self.version):
                        raise CacheError("journal: versions out of order")
                    self.apply(change)
                finally:
                    change.wipe()
        except (TemplateError, ValueError) as exc:
            raise CacheError(f"cache contents inconsistent ({exc})") from None
        self.durable_version = self.version
        return len(loaded.entries)

    def apply(self, change: Change) -> None:
        """Make one change in memory (from a call, or replayed from the journal)."""
        if change.kind == UPSERT:
            at = 0
            for r in change.records:
                attendee, k = bytes(r["id"]).decode(), int(r["count"])
                self.gallery.put(attendee, change.vectors[at:at + k])
                at += k
                self.meta[attendee] = (int(r["seq"]), int(r["valid_until"]))
                self.tombs.pop(attendee, None)
        elif change.kind == REVOKE:
            for t in change.records:
                attendee = bytes(t["id"]).decode()
                self.meta.pop(attendee, None)
                self.gallery.remove(attendee, erase=True)
                self.tombs[attendee] = (int(t["seq"]), int(t["valid_until"]))
        elif change.kind == DROP:
            for raw in change.records:
                attendee = bytes(raw).decode()
                self.meta.pop(attendee, None)
                self.gallery.remove(attendee, erase=True)
            for raw in change.extra:
                self.tombs.pop(bytes(raw).decode(), None)
        self.seqs = [max(a, b) for a, b in zip(self.seqs, change.seqs, strict=True)]
        self.version = max(self.version, change.version)

    def enforce(self, snap: SnapshotWait) -> None:
        """What a waiting snapshot removes, applied now: every attendee it does not hold
        at the same seq leaves the gallery; its tombstones are taken."""
        keep = {bytes(i).decode(): int(s) for i, s in
                zip(snap.records["id"], snap.records["seq"], strict=True)}
        for attendee in [a for a, (s, _) in self.meta.items() if keep.get(a) != s]:
            del self.meta[attendee]
            self.gallery.remove(attendee, erase=True)
        for t in snap.tombstones:
            attendee = bytes(t["id"]).decode()
            if int(t["seq"]) > self.tombs.get(attendee, (-1, 0))[0]:
                self.tombs[attendee] = (int(t["seq"]), int(t["valid_until"]))

    def export(self, dim: int) -> tuple[Array, Array, bool]:
        """(records, vectors, whether vectors is a copy to wipe) of the whole gallery."""
        ids = list(self.meta)
        records = np.zeros(len(ids), RECORD)
        if not ids:
            return records, np.zeros((0, dim), np.float32), True
        records["id"] = [i.encode() for i in ids]
        records["seq"] = [self.meta[i][0] for i in ids]
        records["valid_until"] = [self.meta[i][1] for i in ids]
        records["count"] = self.gallery.counts(ids)
        vectors, copied = self.gallery.export(ids)
        return records, vectors, copied
