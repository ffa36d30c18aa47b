"""The gate's template cache: who may enter, kept encrypted, expiring and revocable.

State: enrolled attendees (opaque pseudonyms chosen by central, each with a per-attendee
sequence number, a ``valid_until`` and 1-3 protected templates) and tombstones of revoked
attendees. Every change is validated as a whole first (:mod:`gate.match.validate`),
applied in memory, then written to the encrypted cache before the call returns: a small
change as one journal entry (:mod:`gate.match.journal`), now and then a whole new snapshot
(:mod:`gate.match.cachefile`). A change that fails validation changes nothing.

* **Fails closed.** A cache that does not open (tampered, truncated, another key or
  gate) leaves the cache *invalid*: the matcher refuses everyone with ``cache_invalid``
  and the file is left as it was until a verified snapshot replaces it.
* **Revocation wins.** ``revoke(id, seq)`` removes the attendee from RAM (before the
  next decision) and from disk before it returns, and keeps a tombstone until the
  attendee's ``valid_until`` so an older upsert arriving late cannot bring them back.
* **Nothing outlives the event.** Expired templates and tombstones are dropped at load
  and by :meth:`TemplateCache.purge_expired`, which needs only the clock (works offline);
  purges are logged as counts.
* **Crypto-erase.** :meth:`TemplateCache.wipe` destroys the wrapped data key and the
  cache file (:func:`gate.match.erase.erase`) and zeroes the RAM copy.

The templates in RAM are a :class:`~gate.match.gallery.Gallery`; the
:class:`~gate.match.matcher.Matcher` searches it under this cache's lock
(:meth:`TemplateCache.searching`). Logs carry counts and versions, never attendee ids
above DEBUG, keys or templates.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from gate.credentials import Key
from gate.errors import CacheError, TemplateError
from gate.match import cachefile, changes, validate
from gate.match.atomic import remove_stale_temps
from gate.match.datakey import DataKey
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE, erase
from gate.match.gallery import Gallery
from gate.match.journal import Journal
from sync.templates import MOBILEFACENET, RECORD, TOMBSTONE, Array, Enrolment, TemplateModel

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

#: A journal smaller than this is appended to; beyond it (or a quarter of the snapshot)
#: the next change writes a fresh snapshot.
JOURNAL_MIN = 4 << 20


def _locked(method: _F) -> _F:
    """Run a cache method under the cache's lock."""
    @functools.wraps(method)
    def wrapper(self: TemplateCache, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return cast(_F, wrapper)


@dataclass(frozen=True)
class Revocation:
    """What the signed deletion receipt needs. ``applied`` is False for a stale revoke."""

    attendee: str
    seq: int
    applied_at: float
    cache_version: int
    applied: bool


@dataclass(frozen=True)
class Status:
    """Health of the cache, safe to show a technician (no ids)."""

    state: str  # "ok", "empty" or "invalid"
    reason: str
    version: int
    attendees: int
    templates: int
    tombstones: int
    valid_until: int | None

    @property
    def needs_resync(self) -> bool:
        """True when only a full snapshot from central can make the gate match again."""
        return self.state == "invalid"

    def __str__(self) -> str:
        if self.state == "invalid":
            return f"cache: invalid ({self.reason})"
        return (f"cache: {self.state}, version {self.version}, {self.attendees} attendees, "
                f"{self.templates} templates")


class TemplateCache:
    """Protected templates of one venue, event and gate; see the module docstring.

    Built by :func:`gate.templates.open_templates`, which finds the keys.
    """

    def __init__(self, directory: Path, *, kek: Key, binding: cachefile.Binding,
                 model: TemplateModel = MOBILEFACENET,
                 clock: Callable[[], float] = time.time, max_valid_days: int = 400,
                 coarse_min: int = 20_000, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.binding = binding
        self.model = model
        self.clock = clock
        self.max_valid_s = max_valid_days * 86400
        self._datakey = DataKey(self.directory / KEY_FILE, kek, binding.encode())
        self._dek: bytes | None = None
        self._journal: Journal | None = None
        self._snapshot_size = 0
        self._gallery = Gallery(dim=model.dim, coarse_min=coarse_min, threads=threads)
        self._meta: dict[str, tuple[int, int]] = {}  # id -> (seq, valid_until)
        self._tombs: dict[str, tuple[int, int]] = {}
        self._version = 0
        self._invalid: str | None = None
        # The link applies changes from its network thread while the gate loop matches:
        # a revocation holds this until it is applied, so no decision after it can see
        # the revoked attendee.
        self._lock = threading.RLock()

    # --- state -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Cache version: bumped by every change."""
        return self._version

    @property
    def valid(self) -> bool:
        """False when the cache failed verification (everyone goes to the staffed lane)."""
        return self._invalid is None

    @property
    def templates(self) -> int:
        """Templates held (rows of the gallery)."""
        return self._gallery.templates

    @_locked
    def status(self) -> Status:
        """Counts and health, for ``gatectl`` and the status topic."""
        ends = [v for _, v in self._meta.values()]
        state = "invalid" if self._invalid else ("ok" if self._meta else "empty")
        return Status(state, self._invalid or "", self._version, len(self._meta),
                      self._gallery.templates, len(self._tombs), max(ends) if ends else None)

    def __contains__(self, attendee: object) -> bool:
        return attendee in self._meta

    def expires_at(self, attendee: str) -> int | None:
        """When ``attendee``'s templates expire (None: not enrolled)."""
        meta = self._meta.get(attendee)
        return None if meta is None else meta[1]

    @contextmanager
    def searching(self) -> Iterator[Gallery | None]:
        """Hold the cache still for one search: the gallery, or None while invalid."""
        with self._lock:
            yield self._gallery if self._invalid is None else None

    # --- loading and saving ------------------------------------------------------------

    @_locked
    def load(self) -> Status:
        """Open the cache (snapshot, then journal). A bad cache makes it invalid."""
        remove_stale_temps(self.directory)
        path = self.directory / CACHE_FILE
        try:
            dek = self._datakey.load()
            if dek is None:
                if path.exists():
                    raise CacheError("cache file without its data key")
                log.info("cache: none yet")
                return self.status()
            contents = cachefile.open_cache(path, dek, self.binding)
            try:
                self._install(contents.records, contents.vectors, contents.tombstones)
            finally:
                contents.wipe()
            journal = Journal(self.directory / JOURNAL_FILE, dek, contents.snapshot_id)
            self._version = contents.version
            replayed = self._replay(journal)
        except CacheError as exc:
            self._gallery.wipe()
            self._meta.clear()
            self._tombs.clear()
            self._invalid = str(exc)
            log.error("cache: invalid (%s); refusing all matches until a resync", exc)
            return self.status()
        self._dek, self._journal = dek, journal
        if journal.needs_reset:
            journal.reset()
        self._invalid = None
        self._gallery.reindex()
        purged = self.purge_expired()
        log.info("cache: loaded version %d (%d journal entries), %d attendees, %d purged "
                 "as expired", self._version, replayed, len(self._meta), purged)
        return self.status()

    def _replay(self, journal: Journal) -> int:
        entries = journal.read()
        try:
            for entry in entries:
                change = changes.decode(entry, self.model.dim)
                if change.version != self._version + 1:
                    raise CacheError("journal: versions out of order")
                self._apply(change)
                self._version = change.version
                change.vectors.fill(0)
        finally:
            for entry in entries:
                np.frombuffer(entry, np.uint8).fill(0)
        return len(entries)

    def _install(self, records: Array, vectors: Array, tombstones: Array, *,
                 adopt: bool = False) -> None:
        ids = [bytes(r).decode() for r in records["id"]]
        self._gallery.replace_all(ids, records["count"].astype(np.int64), vectors, adopt=adopt)
        self._meta = {i: (int(s), int(v)) for i, s, v in
                      zip(ids, records["seq"], records["valid_until"], strict=True)}
        self._tombs = {bytes(t["id"]).decode(): (int(t["seq"]), int(t["valid_until"]))
                       for t in tombstones}

    def _apply(self, change: changes.Change) -> None:
        """Make one change in memory (from a call, or replayed from the journal)."""
        if change.kind == changes.UPSERT:
            at = 0
            for r in change.records:
                attendee, k = bytes(r["id"]).decode(), int(r["count"])
                self._gallery.put(attendee, change.vectors[at:at + k])
                at += k
                self._meta[attendee] = (int(r["seq"]), int(r["valid_until"]))
                self._tombs.pop(attendee, None)
        elif change.kind == changes.REVOKE:
            for t in change.records:
                attendee = bytes(t["id"]).decode()
                self._meta.pop(attendee, None)
                self._gallery.remove(attendee, erase=True)
                self._tombs[attendee] = (int(t["seq"]), int(t["valid_until"]))
        else:
            for raw in change.records:
                attendee = bytes(raw).decode()
                self._meta.pop(attendee, None)
                self._gallery.remove(attendee, erase=True)
            for raw in change.extra:
                self._tombs.pop(bytes(raw).decode(), None)

    def _commit(self, kind: bytes, first: Array, vectors: Array | None = None,
                extra: Array | None = None) -> None:
        """Apply a change, then make it durable: a journal entry, or a new snapshot."""
        self._version += 1
        dim = self.model.dim
        change = changes.Change(kind, self._version, first,
                                vectors if vectors is not None else
                                np.zeros((0, dim), np.float32),
                                extra if extra is not None else np.zeros(0, changes.ID))
        self._apply(change)
        self._gallery.reindex()
        if self._invalid is not None:
            # Never overwrite a cache that failed verification with a partial state: it
            # stays for inspection until a verified snapshot replaces it (``replace``).
            return
        journal = self._journal
        if journal is None or journal.size > max(JOURNAL_MIN, self._snapshot_size // 4):
            self._save()
            return
        entry = changes.encode(kind, self._version, first, vectors, extra)
        try:
            journal.append(entry)
        finally:
            np.frombuffer(entry, np.uint8).fill(0)

    def _save(self) -> None:
        """Write the whole state as a new snapshot (atomic) and start a new journal."""
        if self._dek is None:
            self._dek = self._datakey.create()
        ids = list(self._meta)
        records = np.zeros(len(ids), RECORD)
        if ids:
            records["id"] = [i.encode() for i in ids]
            records["seq"] = [self._meta[i][0] for i in ids]
            records["valid_until"] = [self._meta[i][1] for i in ids]
            records["count"] = self._gallery.counts(ids)
        vectors, copied = self._gallery.export(ids) if ids else \
            (np.zeros((0, self.model.dim), np.float32), True)
        try:
            snap = cachefile.seal(self.directory / CACHE_FILE, self._dek, self.binding,
                                  version=self._version, records=records, vectors=vectors,
                                  tombstones=_tomb_array(self._tombs), dim=self.model.dim)
        finally:
            if copied:
                vectors.fill(0)
        self._snapshot_size = vectors.nbytes + records.nbytes
        self._journal = Journal(self.directory / JOURNAL_FILE, self._dek, snap)
        self._journal.reset()

    def _newest(self, attendee: str) -> int:
        return max(self._meta.get(attendee, (-1, 0))[0], self._tombs.get(attendee, (-1, 0))[0])

    # --- changes -----------------------------------------------------------------------

    @_locked
    def upsert(self, batch: Sequence[Enrolment]) -> tuple[int, int]:
        """Add or replace attendees; returns (applied, stale). All or nothing on error.

        An upsert whose seq is not newer than the attendee's current record or tombstone
        is stale and skipped: a late message cannot undo a revocation.
        """
        if self._invalid is not None:
            raise CacheError(f"cache invalid ({self._invalid}); a full snapshot is needed")
        now = self.clock()
        seen: set[str] = set()
        checked = []
        for e in batch:
            vectors = validate.check_enrolment(e, dim=self.model.dim, now=now,
                                               max_ahead_s=self.max_valid_s)
            if e.attendee in seen:
                raise TemplateError("the same attendee appears twice in one batch")
            seen.add(e.attendee)
            checked.append((e, vectors))
        fresh = [(e, v) for e, v in checked if e.seq > self._newest(e.attendee)]
        if fresh:
            records = np.zeros(len(fresh), RECORD)
            records["id"] = [e.attendee.encode() for e, _ in fresh]
            records["seq"] = [e.seq for e, _ in fresh]
            records["valid_until"] = [e.valid_until for e, _ in fresh]
            records["count"] = [v.shape[0] for _, v in fresh]
            vectors = np.concatenate([v for _, v in fresh])
            try:
                self._commit(changes.UPSERT, records, vectors)
            finally:
                vectors.fill(0)
        for _, v in checked:
            v.fill(0)
        stale = len(checked) - len(fresh)
        log.info("cache: upsert applied=%d stale=%d version=%d", len(fresh), stale,
                 self._version)
        return len(fresh), stale

    def revoke(self, attendee: str, seq: int, *, valid_until: int | None = None) -> Revocation:
        """Revoke one attendee; see :meth:`revoke_many`."""
        return self.revoke_many([(attendee, seq, valid_until)])[0]

    @_locked
    def revoke_many(self, items: Iterable[tuple[Any, Any, Any]]) -> list[Revocation]:
        """Revoke attendees (id, seq, tombstone end or None for the record's own end).

        When this returns, none of them can match and the cache on disk no longer holds
        their templates. A revoke not newer than the attendee's current seq is stale:
        reported with ``applied=False`` and changes nothing. Values are checked here, so
        items may come straight from a message.
        """
        now = self.clock()
        todo = []
        for attendee, seq, end in items:
            validate.check_id_seq(attendee, seq)
            if end is not None:
                validate.check_valid_until(end, now, self.max_valid_s)
            todo.append((attendee, seq, end))
        applied: dict[str, tuple[int, int]] = {}
        for attendee, seq, end in todo:
            if seq > max(self._newest(attendee), applied.get(attendee, (-1, 0))[0]):
                own_end = self._meta.get(attendee, (0, 0))[1]
                applied[attendee] = (seq, end if end is not None else
                                     max(own_end, int(now) + 86400))
        if applied:
            self._commit(changes.REVOKE, _tomb_array(applied))
        at = self.clock()
        log.info("cache: revoked=%d stale=%d version=%d", len(applied),
                 len(todo) - len(applied), self._version)
        return [Revocation(a, s, at, self._version, applied.get(a, (-1, 0))[0] == s)
                for a, s, _ in todo]

    @_locked
    def replace(self, batch: Sequence[Enrolment],
                tombstones: Sequence[tuple[str, int, int]] = ()) -> Status:
        """Install a verified full snapshot: everything else is dropped. All or nothing.

        This is also how an invalid cache recovers: the broken file is replaced only
        here, after the new contents validated.
        """
        ids = [e.attendee for e in batch]
        if len(set(ids)) != len(ids):
            raise TemplateError("the same attendee appears twice in one snapshot")
        now = self.clock()
        dim = self.model.dim
        checked = [validate.check_enrolment(e, dim=dim, now=now, max_ahead_s=self.max_valid_s)
                   for e in batch]
        records = np.zeros(len(batch), RECORD)
        if batch:
            records["id"] = [e.attendee.encode() for e in batch]
            records["seq"] = [e.seq for e in batch]
            records["valid_until"] = [e.valid_until for e in batch]
            records["count"] = [v.shape[0] for v in checked]
        vectors = np.concatenate(checked) if checked else np.zeros((0, dim), np.float32)
        tombs = np.zeros(len(tombstones), TOMBSTONE)
        for k, (attendee, seq, end) in enumerate(tombstones):
            validate.check_id_seq(attendee, seq)
            validate.check_valid_until(end, now, self.max_valid_s)
            tombs[k] = (attendee.encode(), seq, end)
        try:
            return self.replace_arrays(records, vectors, tombs)
        finally:
            vectors.fill(0)
            for v in checked:
                v.fill(0)

    def replace_arrays(self, records: Array, vectors: Array, tombstones: Array, *,
                       adopt: bool = False) -> Status:
        """:meth:`replace` for a snapshot already in the record layouts of
        :mod:`sync.templates` (fast path for 100k templates: checks are vectorised). All
        or nothing. The caller wipes ``vectors`` afterwards, unless ``adopt``: then, once
        validated, it becomes the cache's own matrix (no copy) and the caller must drop it.
        """
        now = self.clock()
        with self._lock:
            validate.check_snapshot(records, vectors, tombstones, dim=self.model.dim, now=now,
                                    max_ahead_s=self.max_valid_s)
            self._install(records, vectors, tombstones, adopt=adopt)
            self._invalid = None
            if not (self.directory / CACHE_FILE).exists() or self._dek is None:
                self._dek = self._datakey.create()
            self._version += 1
            self._gallery.reindex()
            self._save()
        log.info("cache: snapshot installed, version %d, %d attendees", self._version,
                 len(self._meta))
        return self.status()

    @_locked
    def purge_expired(self) -> int:
        """Drop templates and tombstones past ``valid_until``; returns how many attendees."""
        now = self.clock()
        expired = [a for a, (_, end) in self._meta.items() if end <= now]
        old_tombs = [a for a, (_, end) in self._tombs.items() if end <= now]
        if expired or old_tombs:
            self._commit(changes.DROP, np.array([a.encode() for a in expired], changes.ID),
                         extra=np.array([a.encode() for a in old_tombs], changes.ID))
            log.info("cache: purged %d expired attendees, %d tombstones", len(expired),
                     len(old_tombs))
        return len(expired)

    def next_expiry(self) -> float | None:
        """When the next template or tombstone expires (for the purge timer)."""
        ends = [end for _, end in self._meta.values()] + \
            [end for _, end in self._tombs.values()]
        return float(min(ends)) if ends else None

    # --- the end -----------------------------------------------------------------------

    @_locked
    def close(self) -> None:
        """Zero the RAM copy (templates, data key) and keep the files: shutdown."""
        self._gallery.wipe()
        self._meta.clear()
        self._tombs.clear()
        self._dek, self._journal = None, None
        self._version = 0

    @_locked
    def wipe(self) -> None:
        """Crypto-erase: destroy the data key and the cache, zero the RAM copy."""
        erase(self.directory)
        self._dek, self._journal = None, None
        self._gallery.wipe()
        self._meta.clear()
        self._tombs.clear()
        self._invalid = None
        self._version = 0
        log.warning("cache: wiped (crypto-erase)")


def _tomb_array(tombs: dict[str, tuple[int, int]]) -> Array:
    out = np.zeros(len(tombs), TOMBSTONE)
    if tombs:
        out["id"] = [i.encode() for i in tombs]
        out["seq"] = [s for s, _ in tombs.values()]
        out["valid_until"] = [v for _, v in tombs.values()]
    return out
