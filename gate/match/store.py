"""The gate's template store: who may enter, kept encrypted, expiring and revocable.

State: enrolled attendees (opaque pseudonyms chosen by central, each with a per-attendee
sequence number, a ``valid_until`` and 1-3 protected templates) and tombstones of revoked
attendees. Every change is validated as a whole first, applied in memory, then written
to the encrypted cache (``cachefile``) before the call returns; a change that fails
validation changes nothing.

* **Fails closed.** A cache that does not open (tampered, truncated, another key or
  gate) leaves the store *invalid*: :meth:`identify` refuses everyone with
  ``cache_invalid`` and the file is left as it was until a verified snapshot replaces it.
* **Revocation wins.** ``revoke(id, seq)`` removes the attendee from RAM (before the
  next decision) and from disk before it returns, and keeps a tombstone until the
  attendee's ``valid_until`` so an older upsert arriving late cannot bring them back.
* **Nothing outlives the event.** Expired templates and tombstones are dropped at load
  and by :meth:`purge_expired`, which needs only the clock (works offline); purges are
  logged as counts.
* **Crypto-erase.** :meth:`wipe` destroys the wrapped data key and the cache file and
  zeroes the RAM copy.

Logs carry counts and versions, never attendee ids above DEBUG, keys or templates.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from gate.config import Config
from gate.errors import CacheError, TemplateError
from gate.match import cachefile, changes
from gate.match.atomic import destroy, remove_stale_temps
from gate.match.decision import Decision, Outcome, decide
from gate.match.gallery import DIM, MAX_TEMPLATES, Gallery
from gate.match.journal import Journal
from gate.match.keys import DataKey, Key
from gate.match.protect import Protector
from gate.match.threshold import ThresholdPolicy
from gate.types import Array

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run a store method under the store's lock."""
    @functools.wraps(method)
    def wrapper(self: TemplateStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return cast(_F, wrapper)

#: Opaque pseudonyms: printable, log-safe, at most 64 bytes.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MAX_SEQ = 2**63 - 1
CACHE_FILE = "templates.cache"
JOURNAL_FILE = "templates.journal"
KEY_FILE = "templates.dek"
#: A journal smaller than this is appended to; beyond it (or a quarter of the snapshot)
#: the next change writes a fresh snapshot.
JOURNAL_MIN = 4 << 20


@dataclass(frozen=True)
class Enrolment:
    """One attendee's protected templates as central sends them."""

    attendee: str
    seq: int
    valid_until: int
    templates: Array


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
    """Health of the store, safe to show a technician (no ids)."""

    state: str  # "ok", "empty" or "invalid"
    reason: str
    version: int
    attendees: int
    templates: int
    tombstones: int
    valid_until: int | None
    threshold: float

    @property
    def needs_resync(self) -> bool:
        """True when only a full snapshot from central can make the gate match again."""
        return self.state == "invalid"

    def __str__(self) -> str:
        if self.state == "invalid":
            return f"cache: invalid ({self.reason})"
        return (f"cache: {self.state}, version {self.version}, {self.attendees} attendees, "
                f"{self.templates} templates, threshold {self.threshold:.3f}")


class TemplateStore:
    """Protected templates of one venue, event and gate; see the module docstring."""

    def __init__(self, directory: Path, *, kek: Key, protector: Protector,
                 binding: cachefile.Binding, policy: ThresholdPolicy, margin: float,
                 clock: Callable[[], float] = time.time, max_valid_days: int = 400,
                 coarse_min: int = 20_000, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.binding = binding
        self.protector = protector
        self.policy = policy
        self.threshold = policy.for_size(1)
        self.margin = margin
        self.clock = clock
        self.max_valid_s = max_valid_days * 86400
        self._datakey = DataKey(self.directory / KEY_FILE, kek, binding.encode())
        self._dek: bytes | None = None
        self._journal: Journal | None = None
        self._snapshot_size = 0
        self._gallery = Gallery(coarse_min=coarse_min, threads=threads)
        self._meta: dict[str, tuple[int, int]] = {}  # id -> (seq, valid_until)
        self._tombs: dict[str, tuple[int, int]] = {}
        self._version = 0
        self._invalid: str | None = None
        self._probe = np.zeros(DIM, np.float32)
        # The sync client applies changes from its network thread while the gate loop
        # matches: a revocation holds this until it is applied, so no decision after it
        # can see the revoked attendee.
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, cfg: Config, *, clock: Callable[[], float] = time.time,
                    model: str | None = None) -> TemplateStore:
        """The store for this gate: keys from credentials or key files, calibrated policy."""
        from gate.match.keys import load_key
        from gate.match.threshold import CALIBRATIONS

        c = cfg.cache
        kek = load_key("cache-key", key_file=Path(c.key_file) if c.key_file else None,
                       allow_ephemeral=c.allow_ephemeral_keys)
        tkey = load_key("template-key",
                        key_file=Path(c.template_key_file) if c.template_key_file else None,
                        allow_ephemeral=c.allow_ephemeral_keys)
        policy = ThresholdPolicy(cfg.match.target_fpir,
                                 CALIBRATIONS[model or cfg.models.embedder], cfg.match.threshold)
        return cls(Path(c.dir), kek=kek, protector=Protector(tkey.material),
                   binding=cachefile.Binding(cfg.gate.venue, cfg.gate.event, cfg.gate.id),
                   policy=policy, margin=cfg.match.margin, clock=clock,
                   max_valid_days=c.max_valid_days, coarse_min=cfg.match.coarse_min,
                   threads=cfg.match.threads)

    # --- state -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Cache version: bumped by every change."""
        return self._version

    @property
    def valid(self) -> bool:
        """False when the cache failed verification (everyone goes to the staffed lane)."""
        return self._invalid is None

    @_locked
    def status(self) -> Status:
        """Counts and health, for ``gatectl`` and the status topic."""
        ends = [v for _, v in self._meta.values()]
        state = "invalid" if self._invalid else ("ok" if self._meta else "empty")
        return Status(state, self._invalid or "", self._version, len(self._meta),
                      self._gallery.templates, len(self._tombs), max(ends) if ends else None,
                      self.threshold)

    def __contains__(self, attendee: object) -> bool:
        return attendee in self._meta

    # --- loading and saving ------------------------------------------------------------

    @_locked
    def load(self) -> Status:
        """Open the cache (snapshot, then journal). A bad cache makes the store invalid."""
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
        self.threshold = self.policy.for_size(self._gallery.templates)
        purged = self.purge_expired()
        log.info("cache: loaded version %d (%d journal entries), %d attendees, %d purged "
                 "as expired", self._version, replayed, len(self._meta), purged)
        return self.status()

    def _replay(self, journal: Journal) -> int:
        entries = journal.read()
        try:
            for entry in entries:
                change = changes.decode(entry, DIM)
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
        change = changes.Change(kind, self._version, first,
                                vectors if vectors is not None else
                                np.zeros((0, DIM), np.float32),
                                extra if extra is not None else np.zeros(0, changes.ID))
        self._apply(change)
        self._gallery.reindex()
        self.threshold = self.policy.for_size(self._gallery.templates)
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
        records = np.zeros(len(ids), cachefile.RECORD)
        if ids:
            records["id"] = [i.encode() for i in ids]
            records["seq"] = [self._meta[i][0] for i in ids]
            records["valid_until"] = [self._meta[i][1] for i in ids]
            records["count"] = self._gallery.counts(ids)
        vectors, copied = self._gallery.export(ids) if ids else \
            (np.zeros((0, DIM), np.float32), True)
        try:
            snap = cachefile.seal(self.directory / CACHE_FILE, self._dek, self.binding,
                                  version=self._version, records=records, vectors=vectors,
                                  tombstones=_tomb_array(self._tombs), dim=DIM)
        finally:
            if copied:
                vectors.fill(0)
        self._snapshot_size = vectors.nbytes + records.nbytes
        self._journal = Journal(self.directory / JOURNAL_FILE, self._dek, snap)
        self._journal.reset()

    # --- validation --------------------------------------------------------------------

    def _check_id_seq(self, attendee: object, seq: object) -> None:
        if not isinstance(attendee, str) or not ID_PATTERN.fullmatch(attendee):
            raise TemplateError("attendee id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise TemplateError(f"seq must be an integer 0..{MAX_SEQ}")

    def _check(self, e: Enrolment, now: float) -> Array:
        self._check_id_seq(e.attendee, e.seq)
        _check_valid_until(e.valid_until, now, self.max_valid_s)
        vectors = np.asarray(e.templates)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != DIM or not \
                1 <= vectors.shape[0] <= MAX_TEMPLATES:
            raise TemplateError(f"templates must be 1-{MAX_TEMPLATES} vectors of {DIM} values, "
                                f"got shape {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating) or not np.all(np.isfinite(vectors)):
            raise TemplateError("templates must be finite numbers")
        norms = np.linalg.norm(vectors, axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise TemplateError("templates must be unit-length protected embeddings")
        return vectors.astype(np.float32)

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
            vectors = self._check(e, now)
            if e.attendee in seen:
                raise TemplateError("the same attendee appears twice in one batch")
            seen.add(e.attendee)
            checked.append((e, vectors))
        fresh = [(e, v) for e, v in checked if e.seq > self._newest(e.attendee)]
        if fresh:
            records = np.zeros(len(fresh), cachefile.RECORD)
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
    def revoke_many(self, items: Iterable[tuple[str, int, int | None]]) -> list[Revocation]:
        """Revoke attendees (id, seq, tombstone end or None for the record's own end).

        When this returns, none of them can match and the cache on disk no longer holds
        their templates. A revoke not newer than the attendee's current seq is stale:
        reported with ``applied=False`` and changes nothing.
        """
        now = self.clock()
        todo = []
        for attendee, seq, end in items:
            self._check_id_seq(attendee, seq)
            if end is not None:
                _check_valid_until(end, now, self.max_valid_s)
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

        This is also how an invalid store recovers: the broken file is replaced only
        here, after the new contents validated.
        """
        ids = [e.attendee for e in batch]
        if len(set(ids)) != len(ids):
            raise TemplateError("the same attendee appears twice in one snapshot")
        now = self.clock()
        checked = [self._check(e, now) for e in batch]
        records = np.zeros(len(batch), cachefile.RECORD)
        if batch:
            records["id"] = [e.attendee.encode() for e in batch]
            records["seq"] = [e.seq for e in batch]
            records["valid_until"] = [e.valid_until for e in batch]
            records["count"] = [v.shape[0] for v in checked]
        vectors = np.concatenate(checked) if checked else np.zeros((0, DIM), np.float32)
        tombs = np.zeros(len(tombstones), cachefile.TOMBSTONE)
        for k, (attendee, seq, end) in enumerate(tombstones):
            self._check_id_seq(attendee, seq)
            _check_valid_until(end, now, self.max_valid_s)
            tombs[k] = (attendee.encode(), seq, end)
        try:
            return self.replace_arrays(records, vectors, tombs)
        finally:
            vectors.fill(0)
            for v in checked:
                v.fill(0)

    def replace_arrays(self, records: Array, vectors: Array, tombstones: Array, *,
                       adopt: bool = False) -> Status:
        """:meth:`replace` for a snapshot already in the cache's array layout (fast path for
        100k templates: checks are vectorised). All or nothing. The caller wipes
        ``vectors`` afterwards, unless ``adopt``: then, once validated, it becomes the
        store's own matrix (no copy) and the caller must drop it.
        """
        now = self.clock()
        with self._lock:
            ids = [bytes(r).decode("ascii", "replace") for r in records["id"]]
            if len(set(ids)) != len(ids):
                raise TemplateError("the same attendee appears twice in one snapshot")
            for attendee in ids + [bytes(t).decode("ascii", "replace")
                                   for t in tombstones["id"]]:
                if not ID_PATTERN.fullmatch(attendee):
                    raise TemplateError("attendee id must be 1-64 characters of "
                                        "A-Z a-z 0-9 . _ : -")
            counts = records["count"].astype(np.int64)
            if counts.size and (counts.min() < 1 or counts.max() > MAX_TEMPLATES):
                raise TemplateError(f"each attendee needs 1-{MAX_TEMPLATES} templates")
            if vectors.shape != (int(counts.sum()), DIM) or not np.all(np.isfinite(vectors)):
                raise TemplateError("templates must be finite vectors of 192 values")
            if vectors.size and np.any(np.abs(np.linalg.norm(vectors, axis=1) - 1) > 1e-3):
                raise TemplateError("templates must be unit-length protected embeddings")
            for ends in (records["valid_until"], tombstones["valid_until"]):
                if ends.size and (ends.min() <= now or ends.max() > now + self.max_valid_s):
                    raise TemplateError("valid_until outside (now, now + max_valid_days]")
            if np.any(records["seq"] > MAX_SEQ) or np.any(tombstones["seq"] > MAX_SEQ):
                raise TemplateError(f"seq must be an integer 0..{MAX_SEQ}")
            self._install(records, vectors, tombstones, adopt=adopt)
            self._invalid = None
            if not (self.directory / CACHE_FILE).exists() or self._dek is None:
                self._dek = self._datakey.create()
            self._version += 1
            self._gallery.reindex()
            self.threshold = self.policy.for_size(self._gallery.templates)
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

    # --- matching ----------------------------------------------------------------------

    @_locked
    def identify(self, embedding: Array) -> Decision:
        """1:N decision for a raw probe embedding (protected here, then wiped)."""
        if self._invalid is not None:
            return Decision(Outcome.CACHE_INVALID, None, -math.inf, -math.inf)
        embedding = np.asarray(embedding)
        if embedding.shape != (DIM,) or not np.all(np.isfinite(embedding)):
            raise TemplateError(f"probe must be {DIM} finite values, got shape "
                                f"{embedding.shape}")
        probe = self.protector.protect(embedding, out=self._probe)
        try:
            found = self._gallery.search(probe, threshold=self.threshold, margin=self.margin)
            decision = decide(found, threshold=self.threshold, margin=self.margin)
        finally:
            self._probe.fill(0)
        return self._unless_expired(decision)

    def _unless_expired(self, decision: Decision) -> Decision:
        # Purges run at open, on central's command and on the service's timer; between
        # two of them an attendee can expire, and must not open the gate (promise P7).
        if decision.attendee is None or self._meta[decision.attendee][1] > self.clock():
            return decision
        self.purge_expired()
        return Decision(Outcome.EXPIRED, None, decision.best, decision.second)

    @_locked
    def verify(self, attendee: str, embedding: Array) -> Decision:
        """1:1: does the probe match ``attendee`` (named by their ticket)? The threshold
        is the one for a single comparison at the target rate (``policy.for_size(1)``)."""
        if self._invalid is not None:
            return Decision(Outcome.CACHE_INVALID, None, -math.inf, -math.inf)
        embedding = np.asarray(embedding)
        if embedding.shape != (DIM,) or not np.all(np.isfinite(embedding)):
            raise TemplateError(f"probe must be {DIM} finite values")
        if attendee not in self._meta:
            return Decision(Outcome.EMPTY, None, -math.inf, -math.inf)
        probe = self.protector.protect(embedding, out=self._probe)
        rows, copied = self._gallery.export([attendee])
        try:
            best = float((rows @ probe).max())
        finally:
            if copied:
                rows.fill(0)
            self._probe.fill(0)
        threshold = self.policy.for_size(1)
        outcome = Outcome.MATCH if best >= threshold else Outcome.BELOW_THRESHOLD
        return self._unless_expired(
            Decision(outcome, attendee if outcome is Outcome.MATCH else None, best,
                     -math.inf))

    @_locked
    def close(self) -> None:
        """Zero the RAM copy (templates, data key, probe) and keep the files: shutdown."""
        self._gallery.wipe()
        self._meta.clear()
        self._tombs.clear()
        self._probe.fill(0)
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


#: The files :func:`erase` destroys, in order: the wrapped data key first, so the cache and
#: journal decrypt with nothing on the device from that instant.
ERASE_ORDER = (KEY_FILE, CACHE_FILE, JOURNAL_FILE)


def erase(directory: Path) -> list[str]:
    """Crypto-erase the cache files in ``directory`` without a key; returns the names.

    Leftover temporaries of an interrupted write are destroyed too (they were written under
    the same data key).
    """
    directory = Path(directory)
    gone = []
    for name in ERASE_ORDER:
        if (directory / name).exists():
            destroy(directory / name)
            gone.append(name)
    for tmp in sorted(directory.glob(".templates.*.tmp")):
        destroy(tmp)
        gone.append(tmp.name)
    return gone


def _tomb_array(tombs: dict[str, tuple[int, int]]) -> Array:
    out = np.zeros(len(tombs), cachefile.TOMBSTONE)
    if tombs:
        out["id"] = [i.encode() for i in tombs]
        out["seq"] = [s for s, _ in tombs.values()]
        out["valid_until"] = [v for _, v in tombs.values()]
    return out


def _check_valid_until(value: object, now: float, max_ahead_s: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TemplateError("valid_until must be an integer (seconds since the epoch)")
    if value <= now:
        raise TemplateError("valid_until is in the past")
    if value > now + max_ahead_s:
        raise TemplateError(f"valid_until is more than {max_ahead_s // 86400} days ahead")
