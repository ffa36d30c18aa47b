"""The template cache on disk without loading it: read-only inspection.

``gatectl cache info`` uses this while the gate service is stopped.

:meth:`TemplateCache.load <gate.match.cache.TemplateCache.load>` may write after it has
verified the files: it finishes what a crash interrupted (commits the journal record in
flight, recreates a journal), removes stale temporaries and purges expired attendees. A
diagnostic must change nothing, so :func:`inspect` uses only the read half,
:meth:`Store.read <gate.match.store.Store.read>`, which verifies exactly what the load
verifies (data key, snapshot, journal chain, journal head) and writes nothing, and replays
the journal over counts only. Attendee ids are held only long enough to count them and
never leave this module.

``gatectl cache wipe`` uses :func:`gate.match.erase.erase`, the on-disk half of
:meth:`TemplateCache.wipe <gate.match.cache.TemplateCache.wipe>`: it needs no key (the
service's key usually lives in a systemd credential that gatectl cannot read), and
destroying the wrapped data key first makes the rest unreadable at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gate.credentials import Key
from gate.errors import CacheError
from gate.match import cachefile, changes
from gate.match.erase import ERASE_ORDER, set_aside
from gate.match.store import Loaded, Store
from sync.templates import model as template_model

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
    #: Last central sequence number applied per stream (-1: none); empty when unread.
    stream_seqs: dict[str, int] = field(default_factory=dict)


def disk_usage(directory: Path) -> dict[str, int]:
    """Bytes of each cache file present in ``directory`` (links not followed), including
    the files of an invalid cache set aside when a snapshot replaced it."""
    sizes = {}
    keys, others = set_aside(directory)
    for name in (*FILES, *keys, *others):
        try:
            sizes[name] = (Path(directory) / name).lstat().st_size
        except FileNotFoundError:
            continue
    return sizes


def inspect(directory: Path, kek: Key | None, binding: cachefile.Binding, *, now: float,
            key_source: str = "", locked_reason: str = "") -> CacheInfo:
    """Read the cache in ``directory`` without changing any file.

    ``kek`` is the cache key, or None when it is not available here (``locked_reason``
    says why); ``now`` decides what has expired; the binding's template model gives the
    template dimension (a file of another model is refused by its header).
    """
    model = template_model(binding.model)
    directory = Path(directory)
    files = disk_usage(directory)
    if not files:
        return CacheInfo("empty", "no cache yet", 0, 0, 0, 0, 0, key_source=key_source)
    if kek is None:
        return CacheInfo("locked", locked_reason, key_source=key_source, files=files)
    loaded: Loaded | None = None
    try:
        loaded = Store(directory, kek, binding).read()
        if loaded is None or loaded.contents is None:
            return CacheInfo("empty", "no cache yet", 0, 0, 0, 0, 0, key_source=key_source,
                             files=files)
        meta, tombs, version, seqs = _replay(loaded, model.dim)
    except CacheError as exc:
        return CacheInfo("invalid", str(exc), key_source=key_source, files=files)
    finally:
        if loaded is not None:
            loaded.wipe()
    live = [(end, count) for _seq, end, count in meta.values() if end > now]
    live_tombs = [end for _seq, end in tombs.values() if end > now]
    ends = [end for end, _ in live]
    return CacheInfo(
        "ok" if live else "empty", "", version, len(live), sum(c for _, c in live),
        len(live_tombs), len(meta) - len(live), min(ends) if ends else None,
        max(ends) if ends else None,
        float(min(ends + live_tombs)) if ends or live_tombs else None, key_source, files,
        dict(zip(changes.STREAMS, seqs, strict=True)))


# id -> (seq, valid_until, templates); tombstones: id -> (seq, valid_until)
_Meta = dict[bytes, tuple[int, int, int]]
_Tombs = dict[bytes, tuple[int, int]]


def _replay(loaded: Loaded, dim: int) -> tuple[_Meta, _Tombs, int, tuple[int, int]]:
    """Snapshot plus journal, as counts: the same steps as the cache's load, in RAM."""
    contents = loaded.contents
    assert contents is not None
    r = contents.records
    meta: _Meta = {bytes(i): (int(s), int(v), int(c)) for i, s, v, c in
                   zip(r["id"], r["seq"], r["valid_until"], r["count"], strict=True)}
    t = contents.tombstones
    tombs: _Tombs = {bytes(i): (int(s), int(v)) for i, s, v in
                     zip(t["id"], t["seq"], t["valid_until"], strict=True)}
    version, seqs = contents.version, contents.meta.seqs
    for entry in loaded.entries:
        change = changes.decode(entry, dim)
        change.wipe()
        if change.version != changes.next_version(change.kind, version):
            raise CacheError("journal: versions out of order")
        version = change.version
        seqs = (max(seqs[0], change.seqs[0]), max(seqs[1], change.seqs[1]))
        _apply(change, meta, tombs)
    return meta, tombs, version, seqs


def _apply(change: changes.Change, meta: _Meta, tombs: _Tombs) -> None:
    """One journal change on the counts (mirrors :meth:`gate.match.state.State.apply`;
    a sequence note changes no count)."""
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
    elif change.kind == changes.DROP:
        for raw in change.records:
            meta.pop(bytes(raw), None)
        for raw in change.extra:
            tombs.pop(bytes(raw), None)
