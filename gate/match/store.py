"""The cache's files as one unit: wrapped data key, snapshot (with the journal head) and
journal; reading them as a whole and writing them in an order a power cut cannot break.

Reading (:meth:`Store.read`) changes nothing, so ``gatectl cache info``
(:mod:`gate.match.offline`) and the gate's own load share it. It accepts exactly the
states a crash can leave and raises :class:`~gate.errors.CacheError` for any other:

* no data key and nothing else: no cache yet; a data key alone: a crash during the very
  first write (nothing was ever committed), also empty;
* a snapshot whose head says nothing was appended (:func:`gate.match.head.fresh`) and
  either no journal (only for a first snapshot, ``prev_journal`` zero) or the journal
  this snapshot replaced (``prev_journal``): a crash between the snapshot and its
  journal; the journal is (re)created;
* a snapshot and its own journal agreeing with the head (:func:`gate.match.head.reconcile`).

Writing: a new snapshot is sealed beside the old one and renamed over it (commit), then
its empty journal replaces the old journal. An append writes the journal record, fsyncs,
then commits it in the head. Every failed write raises :class:`~gate.errors.StorageError`
with the files as they were before it (or in a state :meth:`read` accepts as the same).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from gate.credentials import Key
from gate.errors import CacheError, StorageError
from gate.match import cachefile, head, journal
from gate.match.atomic import fsync_dir
from gate.match.datakey import DataKey
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE
from gate.match.files import exists, storage_error
from gate.types import Array

log = logging.getLogger(__name__)

#: Suffix of files set aside when a verified snapshot replaces an invalid cache.
ASIDE = ".invalid-"


@dataclass
class Loaded:
    """What :meth:`Store.read` found (``contents`` None: no cache yet)."""

    dek: bytes | None
    contents: cachefile.Contents | None = None
    #: Committed journal entries, in order (wipe after replay).
    entries: list[bytearray] = field(default_factory=list)
    scan: journal.Scan | None = None
    verdict: head.Verdict | None = None
    #: The journal on disk is not this snapshot's: "create" (none) or "reset" (the one
    #: the snapshot replaced).
    journal_action: str = ""
    disk_journal: bytes = cachefile.NO_JOURNAL
    notes: tuple[str, ...] = ()

    def wipe(self) -> None:
        """Zero the decrypted contents and entries."""
        if self.contents is not None:
            self.contents.wipe()
        if self.scan is not None:
            self.scan.wipe()


class Store:
    """The files of one cache directory."""

    def __init__(self, directory: Path, kek: Key, binding: cachefile.Binding) -> None:
        self.directory = Path(directory)
        self.binding = binding
        self._datakey = DataKey(self.directory / KEY_FILE, kek, binding.encode())
        self.dek: bytes | None = None
        self._meta: cachefile.Meta | None = None
        self._head: head.Head | None = None
        self._journal: journal.Journal | None = None
        self._journal_ok = False  # the journal file on disk is the current snapshot's
        self._disk_journal = cachefile.NO_JOURNAL  # its id: the next snapshot's prev
        self.snapshot_bytes = 0
        #: A write that failed without losing anything (a head behind its journal, a
        #: journal not yet reset): retried before the next append; shown in status.
        self.warning: StorageError | None = None

    @property
    def cache_path(self) -> Path:
        """The snapshot."""
        return self.directory / CACHE_FILE

    @property
    def journal_path(self) -> Path:
        """The journal."""
        return self.directory / JOURNAL_FILE

    @property
    def ready(self) -> bool:
        """True once there is a snapshot to append to."""
        return self._meta is not None

    @property
    def journal_size(self) -> int:
        """Bytes in the journal (for compaction)."""
        return self._journal.size if self._journal is not None else 0

    # --- reading ---------------------------------------------------------------------

    def read(self) -> Loaded | None:
        """Read and verify everything, writing nothing (None: no cache and no key)."""
        dek = self._datakey.load()
        cache_there, journal_there = exists(self.cache_path), exists(self.journal_path)
        if dek is None:
            if cache_there or journal_there:
                raise CacheError("cache file without its data key")
            return None
        if not cache_there:
            if journal_there:
                raise CacheError(f"{JOURNAL_FILE} without its snapshot ({CACHE_FILE} is "
                                 "missing)")
            return Loaded(dek, notes=("data key without a snapshot (first write cut short)",))
        contents = cachefile.open_cache(self.cache_path, dek, self.binding)
        out = Loaded(dek, contents)
        try:
            self._read_journal(out, dek, contents.meta)
        except BaseException:
            out.wipe()
            raise
        return out

    def _read_journal(self, out: Loaded, dek: bytes, meta: cachefile.Meta) -> None:
        key = head.head_key(dek)
        scan = journal.scan(self.journal_path, dek)
        if scan is not None and scan.journal_id == meta.journal_id:
            out.scan = scan
            out.verdict = head.reconcile(key, meta.digest, meta.head_raw, tags=scan.tags,
                                         tail=scan.tail)
            out.entries = scan.entries[:out.verdict.count]
            out.disk_journal = meta.journal_id
            out.notes = out.verdict.notes
            return
        fresh = head.fresh(key, meta.digest, meta.head_raw)
        if scan is None:
            if not (fresh and meta.prev_journal == cachefile.NO_JOURNAL):
                raise CacheError(f"{JOURNAL_FILE}: missing (deleted?); its snapshot has "
                                 "one")
            out.journal_action = "create"
            out.notes = ("journal of a new snapshot created after a crash",)
            return
        scan.wipe()
        if not (fresh and scan.journal_id == meta.prev_journal):
            raise CacheError(f"{JOURNAL_FILE}: belongs to another snapshot or gate")
        out.journal_action = "reset"
        out.disk_journal = scan.journal_id
        out.notes = ("journal left over from a compaction replaced after a crash",)

    def adopt(self, loaded: Loaded) -> None:
        """Take over what :meth:`read` found, to append to it."""
        self.dek = loaded.dek
        self._meta = self._head = self._journal = None
        self._journal_ok = False
        self._disk_journal = loaded.disk_journal
        self.warning = None
        c = loaded.contents
        if c is None or self.dek is None:
            return
        self._meta = c.meta
        self.snapshot_bytes = c.records.nbytes + c.vectors.nbytes
        count, size, tag = 0, journal.HEADER.size, head.NO_TAG
        if loaded.scan is not None and loaded.verdict is not None:
            count = loaded.verdict.count
            size = loaded.scan.ends[count - 1] if count else journal.HEADER.size
            tag = loaded.scan.tags[count - 1] if count else head.NO_TAG
            self._journal_ok = True
        committed = count - 1 if loaded.verdict is not None and loaded.verdict.catch_up \
            else count
        self._head = head.Head(self.cache_path, head.head_key(self.dek), c.meta.digest,
                               offset=c.meta.head_offset, identity=c.meta.identity,
                               count=committed)
        self._journal = journal.Journal(self.journal_path, self.dek, c.meta.journal_id,
                                        count=count, good_size=size, last_tag=tag)

    def repair(self) -> None:
        """Finish what a crash interrupted (create the journal, commit the record in
        flight); StorageError if it cannot be written now (retried before an append)."""
        self._ensure_journal()
        self._sync_head()

    # --- writing ---------------------------------------------------------------------

    def _ensure_journal(self) -> None:
        if self._journal_ok or self._journal is None:
            return
        try:
            journal.create(self.journal_path, self._journal.journal_id)
        except OSError as exc:
            raise storage_error(JOURNAL_FILE, exc) from None
        self._journal_ok = True
        self._disk_journal = self._journal.journal_id

    def _sync_head(self) -> None:
        j, h = self._journal, self._head
        if j is None or h is None or h.count >= j.count:
            return
        try:
            h.write(j.count, j.last_tag)
        except OSError as exc:
            raise storage_error(f"{CACHE_FILE} (journal head)", exc) from None

    def append(self, entry: bytes | bytearray) -> None:
        """Make one entry durable; StorageError (nothing changed) if it cannot be.

        CacheError (not StorageError) if the files were swapped while in use.
        """
        if self._journal is None:
            raise StorageError("no snapshot to append to", "no snapshot")
        self._ensure_journal()
        self._sync_head()
        try:
            self._journal.append(entry)
        except OSError as exc:
            raise storage_error(JOURNAL_FILE, exc) from None
        self.warning = None
        try:
            self._sync_head()
        except StorageError as exc:
            # The record is on stable storage and a reload takes it (one record ahead
            # of the head is what a crash leaves): it counts as written; the head is
            # written again before the next append.
            log.warning("cache: %s; committed again before the next change", exc)
            self.warning = exc

    def save(self, *, version: int, records: Array, vectors: Array, tombstones: Array,
             dim: int, seqs: tuple[int, int]) -> None:
        """Write a new snapshot, then its empty journal. StorageError, with the old files
        as they were, when the snapshot cannot be written."""
        try:
            if self.dek is None:
                self.dek = self._datakey.create()
            jid = secrets.token_bytes(16)
            meta = cachefile.seal(self.cache_path, self.dek, self.binding, version=version,
                                  records=records, vectors=vectors, tombstones=tombstones,
                                  dim=dim, journal_id=jid, prev_journal=self._disk_journal,
                                  seqs=seqs)
        except OSError as exc:
            raise storage_error(CACHE_FILE, exc) from None
        self._meta = meta
        self.snapshot_bytes = records.nbytes + vectors.nbytes
        self._head = head.Head(self.cache_path, head.head_key(self.dek), meta.digest,
                               offset=meta.head_offset, identity=meta.identity, count=0)
        self._journal = journal.Journal(self.journal_path, self.dek, jid)
        self._journal_ok = False
        self.warning = None
        try:
            self._ensure_journal()
        except StorageError as exc:  # the snapshot holds everything; retried later
            log.warning("cache: %s; the new snapshot's journal is written before the next "
                        "change", exc)
            self.warning = exc

    def set_aside(self, stamp: int) -> list[str]:
        """Rename the files of an invalid cache to ``NAME.invalid-STAMP`` (kept for
        inspection, destroyed by crypto-erase); the data key too if it does not unwrap.
        Returns the new names. StorageError if a rename fails."""
        names = [CACHE_FILE, JOURNAL_FILE]
        try:
            self.dek = self._datakey.load()
        except CacheError:
            self.dek = None
            names.insert(0, KEY_FILE)
        moved = []
        try:
            for name in names:
                src = self.directory / name
                if not exists(src):
                    continue
                dst = self.directory / f"{name}{ASIDE}{stamp}"
                n = 0
                while exists(dst):
                    n += 1
                    dst = self.directory / f"{name}{ASIDE}{stamp}-{n}"
                os.rename(src, dst)
                moved.append(dst.name)
            with contextlib.suppress(OSError):
                fsync_dir(self.directory)
        except OSError as exc:
            raise storage_error("setting the invalid cache aside", exc) from None
        self._meta = self._head = self._journal = None
        self._journal_ok = False
        self._disk_journal = cachefile.NO_JOURNAL
        return moved

    def forget(self) -> None:
        """Drop the key and the file state from RAM (close, wipe)."""
        self.dek = None
        self._meta = self._head = self._journal = None
        self._journal_ok = False
        self._disk_journal = cachefile.NO_JOURNAL
        self.warning = None
