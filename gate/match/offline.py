"""The template cache on disk without loading it: read-only inspection.

``gatectl cache info`` uses this while the gate service is stopped.

:meth:`TemplateCache.load <gate.match.cache.TemplateCache.load>` repairs as it opens: it
removes stale temporaries, truncates a torn journal tail, starts a fresh journal and purges
expired attendees (a journal entry or a new snapshot). A diagnostic must change nothing, so
:func:`inspect` reads the same files with the same parsers (data key, snapshot, journal)
and replays the journal over counts only; nothing is written. Attendee ids are held only
long enough to count them and never leave this module.

``gatectl cache wipe`` uses :func:`gate.match.erase.erase`, the on-disk half of
:meth:`TemplateCache.wipe <gate.match.cache.TemplateCache.wipe>`: it needs no key (the
service's key usually lives in a systemd credential that gatectl cannot read), and
destroying the wrapped data key first makes the rest unreadable at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gate.credentials import Key
from gate.errors import CacheError
from gate.match import cachefile, changes
from gate.match.datakey import DataKey
from gate.match.erase import CACHE_FILE, ERASE_ORDER, JOURNAL_FILE, KEY_FILE
from gate.match.journal import Journal
from sync.templates import MOBILEFACENET, TemplateModel

#: The cache's files (in :func:`gate.match.erase.erase` order: data key first).
FILES = ERASE_ORDER


@dataclass(frozen=True)
class CacheInfo:
    """What the cache holds, as the gate would see it after loading (counts only, no ids).

    ``state`` is ``ok``, ``empty``, ``invalid`` (fails verification: the gate refuses
    everyone) or ``locked`` (no key to open it here; ``reason`` says why). Counts are None
    when the cache could not be read. ``expired`` attendees are still in the files and are
    purged when the gate next loads the cache; they are not in the other counts.
    """

    state: str
    reason: str = ""
    version: int | None = None
    attendees: int | None = None
    templates: int | None = None
    tombstones: int | None = None
    expired: int | None = None
    valid_until_min: int | None = None
    valid_until_max: int | None = None
    next_expiry: float | None = None
    key_source: str = ""
    files: dict[str, int] = field(default_factory=dict)


def disk_usage(directory: Path) -> dict[str, int]:
    """Bytes of each cache file present in ``directory``."""
    sizes = {}
    for name in FILES:
        try:
            sizes[name] = (Path(directory) / name).stat().st_size
        except FileNotFoundError:
            continue
    return sizes


def inspect(directory: Path, kek: Key | None, binding: cachefile.Binding, *, now: float,
            key_source: str = "", locked_reason: str = "",
            model: TemplateModel = MOBILEFACENET) -> CacheInfo:
    """Read the cache in ``directory`` without changing any file.

    ``kek`` is the cache key, or None when it is not available here (``locked_reason``
    says why); ``now`` decides what has expired; ``model`` gives the template dimension.
    """
    directory = Path(directory)
    files = disk_usage(directory)
    if not files:
        return CacheInfo("empty", "no cache yet", 0, 0, 0, 0, 0, key_source=key_source)
    if kek is None:
        return CacheInfo("locked", locked_reason, key_source=key_source, files=files)
    try:
        dek = DataKey(directory / KEY_FILE, kek, binding.encode()).load()
        if dek is None:
            if (directory / CACHE_FILE).exists():
                raise CacheError("cache file without its data key")
            return CacheInfo("empty", "no cache yet", 0, 0, 0, 0, 0, key_source=key_source,
                             files=files)
        meta, tombs, version = _replay(directory, dek, binding, model.dim)
    except CacheError as exc:
        return CacheInfo("invalid", str(exc), key_source=key_source, files=files)
    live = [(end, count) for _seq, end, count in meta.values() if end > now]
    live_tombs = [end for _seq, end in tombs.values() if end > now]
    ends = [end for end, _ in live]
    return CacheInfo(
        "ok" if live else "empty", "", version, len(live), sum(c for _, c in live),
        len(live_tombs), len(meta) - len(live), min(ends) if ends else None,
        max(ends) if ends else None,
        float(min(ends + live_tombs)) if ends or live_tombs else None, key_source, files)


# id -> (seq, valid_until, templates); tombstones: id -> (seq, valid_until)
_Meta = dict[bytes, tuple[int, int, int]]
_Tombs = dict[bytes, tuple[int, int]]


def _replay(directory: Path, dek: bytes, binding: cachefile.Binding, dim: int
            ) -> tuple[_Meta, _Tombs, int]:
    """Snapshot plus journal, as counts: the same steps as the cache's load, in RAM."""
    contents = cachefile.open_cache(directory / CACHE_FILE, dek, binding)
    try:
        r = contents.records
        meta: _Meta = {bytes(i): (int(s), int(v), int(c)) for i, s, v, c in
                       zip(r["id"], r["seq"], r["valid_until"], r["count"], strict=True)}
        t = contents.tombstones
        tombs: _Tombs = {bytes(i): (int(s), int(v)) for i, s, v in
                         zip(t["id"], t["seq"], t["valid_until"], strict=True)}
        version, snapshot = contents.version, contents.snapshot_id
    finally:
        contents.wipe()
    entries = _journal_entries(directory / JOURNAL_FILE, dek, snapshot)
    try:
        for entry in entries:
            change = changes.decode(entry, dim)
            change.vectors.fill(0)
            if change.version != version + 1:
                raise CacheError("journal: versions out of order")
            version = change.version
            _apply(change, meta, tombs)
    finally:
        for entry in entries:
            np.frombuffer(entry, np.uint8).fill(0)
    return meta, tombs, version


def _apply(change: changes.Change, meta: _Meta, tombs: _Tombs) -> None:
    """One journal change on the counts (mirrors the store's ``_apply``)."""
    if change.kind == changes.UPSERT:
        for rec in change.records:
            attendee = bytes(rec["id"])
            meta[attendee] = (int(rec["seq"]), int(rec["valid_until"]), int(rec["count"]))
            tombs.pop(attendee, None)
    elif change.kind == changes.REVOKE:
        for tomb in change.records:
            attendee = bytes(tomb["id"])
            meta.pop(attendee, None)
            tombs[attendee] = (int(tomb["seq"]), int(tomb["valid_until"]))
    else:
        for raw in change.records:
            meta.pop(bytes(raw), None)
        for raw in change.extra:
            tombs.pop(bytes(raw), None)


def _journal_entries(path: Path, dek: bytes, snapshot: bytes) -> list[bytearray]:
    """The journal's decrypted entries, read from a copy in RAM.

    :meth:`Journal.read` truncates a torn last entry in place (right for the gate, which
    appends next); reading a memfd copy keeps the parser and leaves the file as it is.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    fd = os.memfd_create("gate-journal", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
        return Journal(Path(f"/proc/self/fd/{fd}"), dek, snapshot).read()
    finally:
        os.close(fd)
