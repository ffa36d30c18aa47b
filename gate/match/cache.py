"""The gate's template cache: who may enter, kept encrypted, expiring and revocable.

State: enrolled attendees (opaque pseudonyms chosen by central, each with a per-attendee
sequence number, a ``valid_until`` and 1-3 protected templates), tombstones of revoked
attendees, and the last central sequence number applied per stream (``templates``,
``revocations``). Every change is validated as a whole first (:mod:`gate.match.validate`),
made durable (a journal record, now and then a whole new snapshot: :mod:`gate.match.store`)
and only then applied in RAM. A change that fails validation changes nothing.

* **Fails closed.** Files that do not verify (tampered, truncated, records missing, a
  journal of another snapshot or gate, not a regular file, an older format) make the cache
  *invalid*: the matcher refuses everyone with ``cache_invalid`` and *nothing is written*
  (the files stay for inspection) until a verified snapshot from central replaces them
  (:meth:`TemplateCache.replace`), which sets them aside as ``NAME.invalid-TIME``.
* **Revocation wins.** ``revoke(id, seq)`` removes the attendee from RAM (before the next
  decision) and from disk, and keeps a tombstone until the attendee's ``valid_until`` so
  an older upsert arriving late cannot bring them back.
* **Disk full is not damage.** A change that cannot be written waits in RAM, in order
  (:mod:`gate.match.pending`); a waiting revocation is enforced at once, a waiting upsert
  is applied once written. Nothing half-written stays on disk.
* **Rollback is visible.** :meth:`TemplateCache.stream_seq` says how far central's streams
  got; the link compares it with central's signed head and :meth:`TemplateCache.hold`\\ s
  the cache (everyone to the staffed lane) while it is behind.
* **Nothing outlives the event.** Expired templates and tombstones are dropped at load
  and by :meth:`TemplateCache.purge_expired`, which needs only the clock (works offline).
* **Crypto-erase.** :meth:`TemplateCache.wipe` destroys the wrapped data key and the
  cache files (:func:`gate.match.erase.erase`) and zeroes the RAM copy.

The templates in RAM are a :class:`~gate.match.gallery.Gallery`; the
:class:`~gate.match.matcher.Matcher` searches it under this cache's lock
(:meth:`TemplateCache.searching`). Logs carry counts and versions, never attendee ids
above DEBUG, keys or templates.
"""

from __future__ import annotations

import dataclasses
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
from gate.errors import CacheError, StorageError, TemplateError
from gate.match import arrays, cachefile, changes, validate
from gate.match.atomic import remove_stale_temps
from gate.match.changes import DROP, REVOKE, SEQ, UPSERT, check_source, seq_pair, stream_index
from gate.match.commit import Committer
from gate.match.erase import erase
from gate.match.gallery import Gallery
from gate.match.pending import MAX_WAITING_BYTES, wipe_all
from gate.match.state import State
from gate.match.store import Store
from sync.templates import (
    RECORD,
    TOMBSTONE,
    Array,
    Enrolment,
    TemplateModel,
)

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

def _locked(method: _F) -> _F:
    """Run a cache method under the cache's lock."""
    @functools.wraps(method)
    def wrapper(self: TemplateCache, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return cast(_F, wrapper)


@dataclass(frozen=True)
class Revocation:
    """What the signed deletion receipt needs. ``applied`` is False for a stale revoke;
    ``durable`` is False while the revocation is enforced in RAM but not yet written
    (disk full): a receipt should wait until ``cache.durable_version >= cache_version``."""

    attendee: str
    seq: int
    applied_at: float
    cache_version: int
    applied: bool
    durable: bool = True


@dataclass(frozen=True)
class Status:
    """Health of the cache, safe to show a technician (no ids)."""

    state: str  # "ok", "empty" or "invalid" (files failed verification, or held)
    reason: str
    version: int
    attendees: int
    templates: int
    tombstones: int
    valid_until: int | None
    pending: int = 0  # changes waiting to be written
    storage: str = ""  # "" when writes work, else one line ("disk full: 3 changes waiting")

    @property
    def needs_resync(self) -> bool:
        """True when only a full snapshot from central can make the gate match again."""
        return self.state == "invalid"

    def __str__(self) -> str:
        if self.state == "invalid":
            return f"cache: invalid ({self.reason})"
        text = (f"cache: {self.state}, version {self.version}, {self.attendees} attendees, "
                f"{self.templates} templates")
        return f"{text}; {self.storage}" if self.storage else text


class TemplateCache:
    """Protected templates of one venue, event and gate; see the module docstring.

    Built by :func:`gate.templates.open_templates`, which finds the keys.
    """

    def __init__(self, directory: Path, *, kek: Key, binding: cachefile.Binding,
                 model: TemplateModel,
                 clock: Callable[[], float] = time.time, max_valid_days: int = 400,
                 coarse_min: int = 20_000, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The file names the template model it holds: always the one this cache serves.
        self.binding = binding = dataclasses.replace(binding, model=model.id)
        self.model = model
        self.clock = clock
        self.max_valid_s = max_valid_days * 86400
        self._store = Store(self.directory, kek, binding)
        self._gallery = Gallery(dim=model.dim, coarse_min=coarse_min, threads=threads)
        self._state = State(self._gallery)
        self._commit = Committer(self._state, self._store, dim=model.dim, clock=clock)
        self._pending = self._commit.pending
        self._held: str | None = None
        # The link applies changes from its network thread while the gate loop matches:
        # a revocation holds this until it is applied, so no decision after it can see
        # the revoked attendee.
        self._lock = threading.RLock()

    # --- state -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Cache version: bumped by every change to who may enter (written or waiting;
        a sequence note keeps it)."""
        return self._state.version

    @property
    def durable_version(self) -> int:
        """The newest version on stable storage (behind :attr:`version` while changes
        wait for space, or while the cache is invalid)."""
        return self._state.durable_version

    @property
    def valid(self) -> bool:
        """False when the files failed verification (everyone goes to the staffed lane
        until a verified snapshot arrives). A :meth:`hold` does not change this."""
        return self._commit.invalid is None

    @property
    def _invalid(self) -> str | None:
        """Why the files failed verification (tests set it to fake a broken cache)."""
        return self._commit.invalid

    @_invalid.setter
    def _invalid(self, reason: str | None) -> None:
        self._commit.invalid = reason

    @property
    def held(self) -> str | None:
        """Why the cache is held (see :meth:`hold`), or None."""
        return self._held

    @property
    def templates(self) -> int:
        """Templates held (rows of the gallery)."""
        return self._gallery.templates

    def stream_seq(self, stream: str) -> int:
        """The last central sequence number of ``stream`` ("templates" or "revocations")
        this cache has applied, or holds waiting for space (a waiting revocation is
        already enforced; a waiting upsert is not applied yet); -1 if none."""
        return self._state.seqs[stream_index(stream)]

    @_locked
    def status(self) -> Status:
        """Counts and health, for ``gatectl`` and the status topic."""
        s = self._state
        ends = [v for _, v in s.meta.values()]
        reason = self._commit.invalid or self._held
        state = "invalid" if reason else ("ok" if s.meta else "empty")
        return Status(state, reason or "", s.version, len(s.meta), self._gallery.templates,
                      len(s.tombs), max(ends) if ends else None, len(self._pending),
                      self._storage_line())

    def _storage_line(self) -> str:
        n = len(self._pending)
        if n:
            return f"{self._pending.problem or 'not written'}: {n} change" \
                   f"{'' if n == 1 else 's'} waiting"
        if self._store.warning is not None:
            return f"{self._store.warning.problem}: retried before the next change"
        return self._commit.note

    def __contains__(self, attendee: object) -> bool:
        return attendee in self._state.meta

    def expires_at(self, attendee: str) -> int | None:
        """When ``attendee``'s templates expire (None: not enrolled)."""
        meta = self._state.meta.get(attendee)
        return None if meta is None else meta[1]

    @contextmanager
    def searching(self) -> Iterator[Gallery | None]:
        """Hold the cache still for one search: the gallery, or None while invalid or
        held (the matcher then refuses everyone)."""
        with self._lock:
            ok = self._commit.invalid is None and self._held is None
            yield self._gallery if ok else None

    @_locked
    def hold(self, reason: str | None) -> None:
        """Refuse every match while ``reason`` (e.g. "behind central: revocations 3 < 5");
        None releases. Writes nothing; changes still apply meanwhile."""
        if reason != self._held:
            if reason:
                log.error("cache: held (%s); refusing all matches", reason)
            else:
                log.warning("cache: hold released")
        self._held = reason or None

    # --- loading -----------------------------------------------------------------------

    @_locked
    def load(self) -> Status:
        """Open the cache (snapshot, then journal). Bad files make it invalid, untouched."""
        self._drop_pending("reload")
        self._state.clear()
        self._commit.invalid, self._commit.note = None, ""
        try:
            loaded = self._store.read()
        except CacheError as exc:
            self._commit.fail(exc)
            return self.status()
        if loaded is None:
            self._store.forget()
            log.info("cache: none yet")
            return self.status()
        try:
            replayed = self._state.replay(loaded, self.model.dim)
        except CacheError as exc:
            self._commit.fail(exc)
            return self.status()
        finally:
            loaded.wipe()
        self._store.adopt(loaded)
        for note in loaded.notes:
            log.warning("cache: crash recovery: %s", note)
        try:  # only now that everything verified may anything be written
            self._store.repair()
        except StorageError as exc:
            self._store.warning = exc
            log.warning("cache: %s; retried before the next change", exc)
        except CacheError as exc:
            self._commit.fail(exc)
            return self.status()
        remove_stale_temps(self.directory)
        self._gallery.reindex()
        purged = self.purge_expired()
        log.info("cache: loaded version %d (%d journal entries), %d attendees, %d purged "
                 "as expired", self.version, replayed, len(self._state.meta), purged)
        return self.status()

    # --- changes -----------------------------------------------------------------------

    def _newest(self, attendee: str) -> int:
        return self._state.newest(attendee, self._pending)

    @_locked
    def flush_pending(self) -> int:
        """Write the changes waiting for space (call on a timer); returns how many still
        wait. Every new change flushes them first, too."""
        if self._pending:
            self._commit.flush()
        return len(self._pending)

    @_locked
    def upsert(self, batch: Sequence[Enrolment], *,
               source: tuple[str, int] | None = None) -> tuple[int, int]:
        """Add or replace attendees; returns (applied, stale). All or nothing on error.

        An upsert whose seq is not newer than the attendee's current record or tombstone
        is stale and skipped: a late message cannot undo a revocation. ``source`` is the
        central message, (stream, seq), recorded even when everything was stale. If the
        disk is full the upsert waits and is applied once written; StorageError (nothing
        changed) when too much already waits.
        """
        if self._commit.invalid is not None:
            raise CacheError(f"cache invalid ({self._commit.invalid}); a full snapshot is "
                             "needed")
        check_source(source)
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
        try:
            if fresh:
                self._room_for(sum(v.nbytes for _, v in fresh))
                records = np.zeros(len(fresh), RECORD)
                records["id"] = [e.attendee.encode() for e, _ in fresh]
                records["seq"] = [e.seq for e, _ in fresh]
                records["valid_until"] = [e.valid_until for e, _ in fresh]
                records["count"] = [v.shape[0] for _, v in fresh]
                vectors = np.concatenate([v for _, v in fresh])
                self._commit.submit(self._commit.change(UPSERT, records, vectors,
                                                        source=source))
            elif source is not None:
                self._note(source)
        finally:
            for _, v in checked:
                v.fill(0)
        self._gallery.reindex()
        stale = len(checked) - len(fresh)
        log.info("cache: upsert applied=%d stale=%d version=%d%s", len(fresh), stale,
                 self.version, " (waiting)" if self._pending else "")
        return len(fresh), stale

    def _room_for(self, size: int) -> None:
        if self._pending and self._pending.nbytes + size > MAX_WAITING_BYTES:
            self._commit.flush()
            if self._pending and self._pending.nbytes + size > MAX_WAITING_BYTES:
                raise StorageError(f"{self._storage_line()}; upsert refused until they are "
                                   "written", self._pending.problem)

    def revoke(self, attendee: str, seq: int, *, valid_until: int | None = None,
               source: tuple[str, int] | None = None) -> Revocation:
        """Revoke one attendee; see :meth:`revoke_many`."""
        return self.revoke_many([(attendee, seq, valid_until)], source=source)[0]

    @_locked
    def revoke_many(self, items: Iterable[tuple[Any, Any, Any]], *,
                    source: tuple[str, int] | None = None) -> list[Revocation]:
        """Revoke attendees (id, seq, tombstone end or None for the record's own end).

        When this returns, none of them can match; the cache on disk no longer holds
        their templates unless ``durable`` is False (disk full: the journal record waits,
        the revocation is enforced in RAM). A revoke not newer than the attendee's current
        seq is stale: reported with ``applied=False`` and changes nothing. Values are
        checked here, so items may come straight from a message.
        """
        check_source(source)
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
                waiting = self._pending.newest(attendee)
                own_end = max(self._state.meta.get(attendee, (0, 0))[1],
                              waiting[1] if waiting else 0)
                applied[attendee] = (seq, end if end is not None else
                                     max(own_end, int(now) + 86400))
        durable = True
        if applied:
            durable = self._commit.submit(self._commit.change(
                REVOKE, arrays.tomb_array(applied), source=source))
        elif source is not None:
            self._note(source)
        self._gallery.reindex()
        at = self.clock()
        log.info("cache: revoked=%d stale=%d version=%d%s", len(applied),
                 len(todo) - len(applied), self.version, "" if durable else " (waiting)")
        return [Revocation(a, s, at, self.version, applied.get(a, (-1, 0))[0] == s, durable)
                for a, s, _ in todo]

    @_locked
    def note_seq(self, stream: str, seq: int) -> None:
        """Record that central message ``seq`` of ``stream`` was applied although it
        changed nothing (all stale): a small journal record. Seqs only move forward."""
        check_source((stream, seq))
        self._note((stream, seq))

    def _note(self, source: tuple[str, int]) -> None:
        if source[1] > self._state.seqs[stream_index(source[0])]:
            self._commit.submit(self._commit.change(SEQ, np.zeros(0, changes.ID),
                                                    source=source))

    @_locked
    def replace(self, batch: Sequence[Enrolment],
                tombstones: Sequence[tuple[str, int, int]] = (), *,
                seqs: dict[str, int] | None = None) -> Status:
        """Install a verified full snapshot: everything else is dropped. All or nothing.

        ``seqs`` ({"templates": s, "revocations": r}) are the stream seqs it reflects.
        This is also how an invalid cache recovers, and the only way: the broken files
        are set aside (``NAME.invalid-TIME``) only here, after the new contents validated.
        Revocations this gate holds that are newer than the snapshot's records still win.
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
        for v in checked:
            v.fill(0)
        tombs = np.zeros(len(tombstones), TOMBSTONE)
        for k, (attendee, seq, end) in enumerate(tombstones):
            validate.check_id_seq(attendee, seq)
            validate.check_valid_until(end, now, self.max_valid_s)
            tombs[k] = (attendee.encode(), seq, end)
        try:
            return self.replace_arrays(records, vectors, tombs, adopt=True, seqs=seqs)
        except BaseException:
            vectors.fill(0)
            raise

    def replace_arrays(self, records: Array, vectors: Array, tombstones: Array, *,
                       adopt: bool = False, seqs: dict[str, int] | None = None) -> Status:
        """:meth:`replace` for a snapshot already in the record layouts of
        :mod:`sync.templates` (fast path for 100k templates: checks are vectorised, outside
        the lock). All or nothing. The caller wipes ``vectors`` afterwards, unless
        ``adopt``: then, once validated, it belongs to the cache (it may become the matrix)
        and the caller must drop it. If the disk is full the snapshot waits, and until it
        is written only what it removes is applied (an invalid cache stays invalid).
        """
        validate.check_snapshot(records, vectors, tombstones, dim=self.model.dim,
                                now=self.clock(), max_ahead_s=self.max_valid_s)
        given = seq_pair(seqs)
        if not adopt:
            vectors = np.array(vectors, np.float32, order="C")
        with self._lock:
            self._commit.replace(records, vectors, tombstones, given)
            log.info("cache: snapshot installed, version %d, %d attendees%s", self.version,
                     len(self._state.meta), " (waiting)" if self._pending else "")
            return self.status()

    @_locked
    def purge_expired(self) -> int:
        """Drop templates and tombstones past ``valid_until``; returns how many attendees."""
        now = self.clock()
        expired = [a for a, (_, end) in self._state.meta.items() if end <= now]
        old_tombs = [a for a, (_, end) in self._state.tombs.items() if end <= now]
        if expired or old_tombs:
            self._commit.submit(self._commit.change(
                DROP, np.array([a.encode() for a in expired], changes.ID),
                extra=np.array([a.encode() for a in old_tombs], changes.ID)))
            self._gallery.reindex()
            log.info("cache: purged %d expired attendees, %d tombstones", len(expired),
                     len(old_tombs))
        return len(expired)

    def next_expiry(self) -> float | None:
        """When the next template or tombstone expires (for the purge timer)."""
        ends = [end for _, end in self._state.meta.values()] + \
            [end for _, end in self._state.tombs.values()]
        return float(min(ends)) if ends else None

    # --- the end -----------------------------------------------------------------------

    def _drop_pending(self, why: str) -> None:
        if self._pending:
            log.error("cache: %s with %d changes never written (central resends them: the "
                      "stream seqs on disk are behind)", why, len(self._pending))
            wipe_all(self._pending.take_all())

    @_locked
    def close(self) -> None:
        """Zero the RAM copy (templates, data key) and keep the files: shutdown."""
        self._drop_pending("closed")
        self._state.clear()
        self._store.forget()

    @_locked
    def wipe(self) -> None:
        """Crypto-erase: destroy the data key and the cache, zero the RAM copy."""
        wipe_all(self._pending.take_all())
        erase(self.directory)
        self._store.forget()
        self._state.clear()
        self._commit.invalid, self._commit.note = None, ""
        log.warning("cache: wiped (crypto-erase)")
