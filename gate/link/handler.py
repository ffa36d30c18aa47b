"""What central's messages mean to the gate: verified, then applied to the template cache.

The transport hands over raw topics and payloads; this handler parses the topic, opens
the envelope (Ed25519 against central's pinned keys, kept in :mod:`gate.link.state`),
refuses anything not newer than the last sequence number of its stream, and applies it:
upserts and snapshot chunks (opened with the gate's X25519 key) to the cache,
revocations to the cache with a signed deletion receipt each, commands. Other gates'
entry events (verified with their pinned keys) go to the entry log for anti-passback.
Every refusal is counted by kind in the retained status (a signed message whose contents
are invalid is also counted against its signer: it is evidence) and logged at most once
per kind per minute, never with its payload.

Nothing a message holds can stop the handler: :meth:`MessageHandler.message` contains
every exception (counted in :attr:`MessageHandler.errors` by kind), so the transport's
thread never dies in it and later revocations are still applied. Central's signed, retained
``head`` says how far each stream has gone; when the cache has applied less (lost messages,
or a cache rolled back, truncated or deleted on disk), the cache is held (everyone to the
staffed lane) and a resync requested until it has caught up.

No transport is imported here: the same handler serves whatever carries the messages.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.errors import CacheError, StateError, StorageError, TemplateError
from gate.link.state import SyncState
from gate.logs import Throttle
from gate.match.cache import TemplateCache
from sync import messages, payloads, schemas
from sync.errors import ModelMismatchError, ProtocolError, SignedInvalidError
from sync.seal import open_sealed
from sync.templates import RECORD, TOMBSTONE

log = logging.getLogger("gate.link")

#: ``queue(kind, message type, body)``: sign and queue a message in the outbox.
Queue = Callable[[str, str, dict[str, Any]], str]


@dataclass
class _Snapshot:
    manifest: schemas.SnapshotManifest
    parts: dict[int, bytearray] = field(default_factory=dict)

    def wipe(self) -> None:
        for part in self.parts.values():
            np.frombuffer(part, np.uint8).fill(0)
        self.parts.clear()


class MessageHandler:
    """Applies central's messages to one gate's cache; see the module docstring.

    ``queue`` signs and queues the receipts; ``changed`` is called after every message
    handled or refused (the link republishes its status then).
    """

    def __init__(self, *, venue: str, gate: str, cache: TemplateCache, state: SyncState,
                 seal_key: X25519PrivateKey, peer_keys: dict[str, str], queue: Queue,
                 changed: Callable[[], None]) -> None:
        self.venue, self.gate = venue, gate
        self.cache, self.state = cache, state
        self._seal = seal_key
        self._peers = {g: messages.public_key(k) for g, k in peer_keys.items()}
        self._queue = queue
        self._changed = changed
        self.rejected: Counter[str] = Counter()
        #: Signed messages refused for their contents, by the key that signed them.
        self.by_signer: Counter[str] = Counter()
        #: Exceptions contained while handling a message, by kind (class name).
        self.errors: Counter[str] = Counter()
        self.duplicates = 0
        self.resync_needed = not cache.valid
        #: Central's last signed head, and why the cache is held behind it ("" if not).
        self.head: schemas.Head | None = None
        self.behind = ""
        #: Why central's templates are refused for the model they are for ("" when not).
        self.model_mismatch = ""
        self._snapshot: _Snapshot | None = None
        self._lock = threading.RLock()
        self._throttle = Throttle(log)
        # Kept in RAM too: a state file that fails (disk full) must not reopen replays.
        self._seqs: dict[str, int] = {}
        self._central = dict(state.central_keys())
        # Deletion receipts of revocations enforced in RAM but not yet on disk (disk
        # full): a receipt is proof of deletion, so it goes out once the change is durable.
        self._unproven: list[tuple[int, dict[str, Any]]] = []

    def _keys(self) -> dict[str, Ed25519PublicKey]:
        return {k: messages.public_key(v) for k, v in self._central.items()}

    def message(self, topic: str, payload: bytes) -> None:
        """One message as received: central's are applied, peers' events recorded.

        Never raises: whatever goes wrong is counted, logged (throttled) and the message
        dropped, so the transport's thread lives on.
        """
        try:
            venue, gate, kind = messages.parse_topic(topic)
            if kind == "events":
                if gate != self.gate:
                    self._peer_event(topic, payload)
                return
            if venue != self.venue or gate != self.gate or kind not in messages.CENTRAL_KINDS:
                raise ProtocolError("not a topic for this gate")
            env = messages.open_envelope(topic, payload, self._keys())
            try:
                self.handle(env)
            except ModelMismatchError:
                raise
            except (ProtocolError, TemplateError):
                self.by_signer[env.kid] += 1  # signed, and invalid: evidence against it
                raise
        except ModelMismatchError as exc:
            # Central's configuration, not an attack: the gate can take no templates
            # until one end changes, so status says so until a good payload arrives.
            self.model_mismatch = str(exc)
            self.reject(str(exc))
        except SignedInvalidError as exc:
            self.by_signer[exc.signer[:64]] += 1
            self.reject(str(exc))
        except ProtocolError as exc:
            self.reject(str(exc))
        except StorageError as exc:
            self.fault("storage", exc)
        except (TemplateError, CacheError) as exc:
            self.reject(f"refused by the template store: {exc}")
        except StateError as exc:
            self.fault("state", exc)
        except Exception as exc:  # anything else: contained, never the transport's death
            self.fault(type(exc).__name__, exc)

    def reject(self, reason: str) -> None:
        """Count and log a refused message (central sees the count in the status)."""
        key = reason.split(":", maxsplit=1)[0][:60]
        self.rejected[key] += 1
        self._throttle.log(logging.WARNING, f"rejected:{key}", "sync: message refused: %s",
                           reason)
        self._changed()

    def fault(self, kind: str, exc: BaseException) -> None:
        """Count and log an error met while handling a message (no payload, no ids)."""
        self.errors[kind[:60]] += 1
        self._throttle.log(logging.ERROR, f"fault:{kind}", "sync: handling a message failed "
                           "(%s: %s); message dropped, link going on", kind,
                           str(exc).splitlines()[0][:200] if str(exc) else "")
        self._changed()

    def last_seq(self, stream: str) -> int:
        """Last accepted seq of ``stream`` (RAM first: the file may have failed to keep it).

        For the cache's two streams the cache itself is the authority (its records are
        authenticated and a rollback shows): a number in ``sync.db`` pushed forward by
        damage or by hand must not make central's next revocations look like replays.
        """
        kind = stream.removeprefix("in:")
        if kind in schemas.STREAMS:  # and what this process accepted, while writes wait
            return max(self.cache.stream_seq(kind), self._seqs.get(stream, -1))
        if stream not in self._seqs:
            self._seqs[stream] = self.state.last_seq(stream)
        return self._seqs[stream]

    def _accepted(self, stream: str, seq: int) -> None:
        self._seqs[stream] = seq
        try:
            self.state.set_seq(stream, seq)
        except StateError as exc:
            # The RAM copy keeps refusing replays; the file catches up at the next write.
            self.fault("state", exc)

    def handle(self, env: messages.Envelope) -> None:
        """Apply one verified central message (seq checked here, per stream)."""
        if self._unproven:
            self.prove()
        stream = f"in:{env.kind}"
        last = self.last_seq(stream)
        if env.kind == "head":
            # Retained: the same head comes again on every connect, and is compared again
            # (the cache may have been rolled back meanwhile); only an older one is stale.
            if env.seq < last:
                self.duplicates += 1
                return
            self.head = schemas.head(env.body)
            self._accepted(stream, env.seq)
            self.compare()
            self._changed()
            return
        if env.seq <= last:
            self.duplicates += 1
            log.info("sync: stale or repeated %s seq %d (last %d) ignored", env.kind,
                     env.seq, last)
            return
        if env.seq > last + 1 and last >= 0 and env.kind != "commands":
            self.resync_needed = True  # something was missed: central must send a snapshot
        try:
            if env.kind == "revocations":
                self._revocations(env)
            elif env.kind == "templates":
                self._templates(env)
            else:
                self._command(env)
        except (TemplateError, ProtocolError):
            if env.kind == "templates":
                # Refused by the store: nobody new can enter, nobody revoked comes back;
                # the stream moves on rather than holding the whole gate behind it.
                self.cache.note_seq("templates", env.seq)
            raise
        finally:
            self.compare()
        if env.kind == "templates":
            self.model_mismatch = ""
        self._accepted(stream, env.seq)
        self._changed()

    def compare(self) -> None:
        """Hold the cache while it has applied less than central's head says it sent."""
        h = self.head
        if h is None:
            return
        gaps = [f"{s} {self.cache.stream_seq(s)} < {h.seq(s)}" for s in schemas.STREAMS
                if self.cache.stream_seq(s) < h.seq(s)]
        behind = "behind central: " + ", ".join(gaps) if gaps else ""
        if behind == self.behind:
            return
        self.behind = behind
        self.cache.hold(behind or None)
        if behind:
            self.resync_needed = True
            log.warning("sync: cache %s; everyone to the staffed lane until it catches up",
                        behind)
        else:
            log.info("sync: cache caught up with central's head")

    def connection_restored(self) -> None:
        """The link came back: a snapshot cut off mid-way may never be completed."""
        if self._snapshot is not None:
            # Ask for it again; if it does complete meanwhile, installing it clears this.
            self.resync_needed = True

    def wipe(self) -> None:
        """Zero a snapshot still being received."""
        with self._lock:
            if self._snapshot:
                self._snapshot.wipe()

    # --- central's message types ----------------------------------------------------------

    def _revocations(self, env: messages.Envelope) -> None:
        items = schemas.revoke_items(env.body)
        done = self.cache.revoke_many([(i.attendee, i.seq, i.valid_until) for i in items],
                                      source=("revocations", env.seq))
        if not any(r.applied for r in done):
            self.cache.note_seq("revocations", env.seq)
        for r in done:
            body = schemas.deletion_receipt(
                attendee=r.attendee, seq=r.seq, deleted=r.applied,
                applied_at_ms=int(r.applied_at * 1000), cache_version=r.cache_version)
            if r.durable:
                self._queue("receipts", "receipt", body)
            else:
                self._unproven.append((r.cache_version, body))

    @property
    def unproven(self) -> int:
        """Deletion receipts waiting for their revocations to reach the disk."""
        return len(self._unproven)

    def prove(self) -> int:
        """Send the deletion receipts whose revocations have reached the disk since;
        returns how many still wait (the link calls this after writing what waited)."""
        durable = self.cache.durable_version
        ready = [b for v, b in self._unproven if v <= durable]
        self._unproven = [(v, b) for v, b in self._unproven if v > durable]
        for body in ready:
            self._queue("receipts", "receipt", body)
        return len(self._unproven)

    def _templates(self, env: messages.Envelope) -> None:
        if env.type == "upsert":
            plain = open_sealed(schemas.upsert_sealed(env.body), self._seal, topic=env.topic,
                                seq=env.seq, gate=self.gate)
            try:
                enrolments, tombs = payloads.decode(plain, model=self.cache.model)
                if tombs:
                    raise ProtocolError("upsert: tombstones belong in revocations")
                applied, stale = self.cache.upsert(enrolments, source=("templates", env.seq))
                if not applied:
                    self.cache.note_seq("templates", env.seq)
            finally:
                np.frombuffer(plain, np.uint8).fill(0)
            self._applied(env, applied, stale)
        elif env.type == "snapshot_begin":
            self.cache.note_seq("templates", env.seq)
            manifest = schemas.snapshot_begin(env.body)
            if manifest.model != self.cache.model.id:
                raise ModelMismatchError(manifest.model, self.cache.model.id)
            with self._lock:
                if self._snapshot:
                    self._snapshot.wipe()
                self._snapshot = _Snapshot(manifest)
        else:
            self._snapshot_chunk(env)

    def _applied(self, env: messages.Envelope, applied: int, stale: int) -> None:
        self._queue("receipts", "receipt", schemas.applied_receipt(
            stream=env.kind, seq=env.seq, applied=applied, stale=stale,
            cache_version=self.cache.version))

    def _snapshot_chunk(self, env: messages.Envelope) -> None:
        chunk = schemas.snapshot_chunk(env.body)
        snap = self._snapshot
        if snap is None or chunk.snapshot != snap.manifest.snapshot:
            self.resync_needed = True
            raise ProtocolError("snapshot_chunk: no matching snapshot in progress")
        index = chunk.index
        if not isinstance(index, int) or isinstance(index, bool) or \
                not 0 <= index < snap.manifest.chunks:
            raise ProtocolError("snapshot_chunk: bad index")
        snap.parts[index] = open_sealed(chunk.sealed, self._seal, topic=env.topic,
                                        seq=env.seq, gate=self.gate)
        if len(snap.parts) == snap.manifest.chunks:
            self._snapshot = None
            try:
                self._install(snap, env.seq)
            finally:
                snap.wipe()
            self._applied(env, snap.manifest.records, 0)
        else:
            self.cache.note_seq("templates", env.seq)

    def _install(self, snap: _Snapshot, seq: int) -> None:
        """Verify the whole snapshot against its signed manifest, then swap it in."""
        m = snap.manifest
        digest = hashlib.sha256()
        for i in range(m.chunks):
            digest.update(snap.parts[i])
        if digest.hexdigest() != m.sha256:
            self.resync_needed = True
            raise ProtocolError("snapshot: contents do not match the signed manifest")
        # Views of the decrypted chunks, copied once into the arrays the cache takes;
        # each chunk is wiped and released as soon as it has been copied.
        model = self.cache.model
        views = [payloads.decode_arrays(snap.parts[i], model=model) for i in range(m.chunks)]
        rec = np.concatenate([r for r, _, _ in views]) if views else np.zeros(0, RECORD)
        tmb = np.concatenate([t for _, _, t in views]) if views else np.zeros(0, TOMBSTONE)
        if rec.size != m.records or tmb.size != m.tombstones:
            self.resync_needed = True
            raise ProtocolError("snapshot: counts do not match the manifest")
        rows = [v for _, v, _ in views]
        del views
        vec = np.empty((sum(v.shape[0] for v in rows), model.dim), np.float32)
        at = 0
        for i in range(len(rows)):
            vec[at:at + rows[i].shape[0]] = rows[i]
            at += rows[i].shape[0]
            rows[i] = vec[:0]  # drop the view so the chunk's memory can go
            np.frombuffer(snap.parts.pop(i), np.uint8).fill(0)
        try:
            # vec becomes the matrix; the cache records how far the snapshot goes.
            self.cache.replace_arrays(rec, vec, tmb, adopt=True, seqs={
                "templates": seq, "revocations": m.revocations})
        except BaseException:
            vec.fill(0)
            raise
        self.resync_needed = False
        log.info("sync: snapshot applied, %d attendees", rec.size)

    def _command(self, env: messages.Envelope) -> None:
        cmd = schemas.command(env.body)
        if cmd.name == "resync":
            self.resync_needed = True
        elif cmd.name == "purge":
            self.cache.purge_expired()
        else:  # rotate_signing_key (checked by the schema)
            kid, pub = str(cmd.args["kid"]), str(cmd.args["public_key"])
            self.state.replace_central_keys({kid: pub})
            self._central = {kid: pub}
            log.warning("sync: central signing key rotated (now %s)", kid)

    def _peer_event(self, topic: str, payload: bytes) -> None:
        """Another gate's entry at this venue, for anti-passback (verified with its key)."""
        _, gate, _ = messages.parse_topic(topic)
        key = self._peers.get(gate)
        env = messages.open_envelope(topic, payload, {gate: key} if key else {})
        try:
            e = schemas.entry_event(env.body, gate, what="peer event")
        except ProtocolError:
            self.by_signer[gate] += 1  # signed by that gate, and invalid
            raise
        self.state.record_entry(e.event_id, e.attendee, gate, e.at_ms)
