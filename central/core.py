"""Reference central: the gate protocol spoken from the other side.

Integrators build the real central system; this one is complete enough to run a venue
in tests and demos: enrol attendees (only the protected template is kept; photos are
embedded and dropped by :mod:`central.enrol`), revoke them, publish deltas and snapshots
sealed to each gate, rotate the signing key, and collect entry events (deduplicated by
id), deletion receipts (signature verified) and gate status. It works from a directory
made by ``facepass-central init-venue`` (see :mod:`central.pki`) and imports nothing of
the gate firmware: only the protocol (:mod:`sync`).

The templates it keeps are encrypted in central.db (:mod:`central.atrest`). After every
message on a gate's ``templates`` or ``revocations`` topic it publishes the gate's signed,
retained ``head`` (the last seq sent on each of the two streams), so a gate that lost
messages or its cache knows it is behind. Its listener runs in paho's network thread and
never dies there: whatever a message raises, the message is dropped and counted by kind
(:attr:`Central.refused`; signed-but-invalid ones also by signer), with one log line per
kind per :attr:`Central.refusal_log_interval`, never quoting the payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from central import atrest
from central.errors import EnrolmentError, StoreError, VenueNameError
from sync import messages, payloads, schemas
from sync.errors import ProtocolError, SignedInvalidError
from sync.protect import Protector, event_key
from sync.seal import seal
from sync.templates import (
    ID_PATTERN,
    MAX_TEMPLATES,
    Array,
    Enrolment,
    TemplateModel,
)
from sync.templates import model as template_model
from sync.tls import client_context, no_delay

log = logging.getLogger(__name__)

#: Enrolments per sealed snapshot chunk (~1.6 MB of templates).
CHUNK_RECORDS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attendees (id TEXT PRIMARY KEY, seq INTEGER NOT NULL,
    valid_until INTEGER NOT NULL, templates BLOB, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS out_seq (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, gate TEXT NOT NULL,
    attendee TEXT NOT NULL, at_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS receipts (gate TEXT NOT NULL, seq INTEGER NOT NULL,
    body TEXT NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (gate, seq, body));
CREATE TABLE IF NOT EXISTS status (gate TEXT PRIMARY KEY, body TEXT NOT NULL,
    received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
#: How often each kind of refused message is logged at most (seconds).
REFUSAL_LOG_INTERVAL = 60.0
#: Seconds to wait for the broker's PUBACK of a message published with ``wait``.
PUBACK_TIMEOUT = 30.0
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class GateInfo:
    """A gate's public keys, from venue.json."""

    sign: Ed25519PublicKey
    seal: X25519PublicKey


class Central:
    """One venue's central, from an ``init-venue`` directory."""

    def __init__(self, venue_dir: Path, *, host: str | None = None, port: int | None = None,
                 kid: str | None = None, model: TemplateModel | None = None) -> None:
        self.dir = Path(venue_dir)
        info = json.loads((self.dir / "venue.json").read_text())
        # Venues made before the model was recorded used MobileFaceNet.
        chosen = info.get("embedder") or {"name": "mobilefacenet-int8", "model": "mobilefacenet"}
        #: The gates' ``[models] embedder``; enrolment computes embeddings with it.
        self.embedder = str(chosen["name"])
        self.model = model or template_model(str(chosen["model"]))
        self.venue, self.event = info["venue"], info["event"]
        self.host = host or info["broker"]["host"]
        self.port = port or int(info["broker"]["port"])
        self.gates = {g: GateInfo(messages.public_key(k["sign_pub"]),
                                  X25519PublicKey.from_public_bytes(
                                      messages.unb64(k["seal_pub"], "seal_pub", size=32)))
                      for g, k in info["gates"].items()}
        self.kid = kid or info["central"]["kid"]
        self._sign = Ed25519PrivateKey.from_private_bytes(
            (self.dir / "central" / "sign.key").read_bytes())
        secret = (self.dir / "central" / "protection.secret").read_bytes()
        self.protector = Protector(event_key(secret, self.venue, self.event),
                                   dim=self.model.dim)
        # Before central.db is opened (or created): no key, no database.
        key, self.key_source = atrest.load_key(self.dir)
        self._box = atrest.TemplateBox(key, venue=self.venue, event=self.event)
        del key
        self._lock = threading.RLock()
        db_path = self.dir / "central" / "central.db"
        with contextlib.suppress(FileExistsError):  # private from its first byte
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600))
        self.db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            self._check_data_key()
        except BaseException:
            self.db.close()
            raise
        self.duplicates = 0
        #: Messages dropped by the listener, by kind of reason (never their content).
        #: Replaced, not updated in place, on each refusal: safe to read from any thread.
        self.refused: Counter[str] = Counter()
        #: Messages with a valid signature but unusable contents, by signer (gate).
        self.refused_by_signer: Counter[str] = Counter()
        #: Each kind of refusal is logged at most once per this many seconds.
        self.refusal_log_interval = REFUSAL_LOG_INTERVAL
        self._refusal_lock = threading.Lock()
        self._refusal_logged: dict[str, float] = {}
        self._refusal_quiet: Counter[str] = Counter()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_context(self.dir / "ca" / "ca.crt",
                                                   self.dir / "central" / "client.crt",
                                                   self.dir / "central" / "client.key"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._connected = threading.Event()

    def _check_data_key(self) -> None:
        """The data key is the one central.db was written under (a new database records
        a check value for it)."""
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE name = 'data_key_check'"
                                  ).fetchone()
            if row is not None:
                self._box.verify(row[0])
                return
            if self.db.execute("SELECT 1 FROM attendees WHERE templates IS NOT NULL LIMIT 1"
                               ).fetchone():
                raise StoreError("central.db holds templates stored before encryption at "
                                 "rest; there is no migration: start a new central.db and "
                                 "enrol or import the attendees again")
            self.db.execute("INSERT INTO meta VALUES ('data_key_check', ?)",
                            (self._box.check_value(),))

    # --- connection --------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect (persistent session: events published while central is away queue)."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 7 * 86400
        self.client.connect(self.host, self.port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise ConnectionError(f"central: no connection to {self.host}:{self.port}")

    def close(self) -> None:
        """Disconnect and close the database."""
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            self.db.close()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                    _properties: Any) -> None:
        if reason.is_failure:
            log.error("central: connection refused (%s)", reason)
            return
        client.subscribe([(f"gate/v1/{self.venue}/+/{kind}", SubscribeOptions(qos=1))
                          for kind in messages.GATE_KINDS])
        no_delay(client.socket())
        self._connected.set()

    # --- publishing --------------------------------------------------------------------
    #
    # A message's seq is allocated (and persisted) and the message handed to paho under
    # one lock, so messages leave in seq order and a snapshot or a revocation is never
    # interleaved with another message to the same gate. Waiting for PUBACKs happens
    # outside the lock: paho's network thread, which takes it to store what arrives, must
    # keep running meanwhile.

    def _next_seq(self, stream: str) -> int:
        with self._lock:
            row = self.db.execute("SELECT seq FROM out_seq WHERE stream = ?",
                                  (stream,)).fetchone()
            seq = int(row[0]) + 1 if row else 0
            self.db.execute("INSERT INTO out_seq VALUES (?, ?) ON CONFLICT(stream) DO UPDATE "
                            "SET seq = excluded.seq", (stream, seq))
            return seq

    def _last_seq(self, stream: str) -> int:
        with self._lock:
            row = self.db.execute("SELECT seq FROM out_seq WHERE stream = ?",
                                  (stream,)).fetchone()
            return int(row[0]) if row else -1

    def _note_seq(self, stream: str, seq: int) -> None:
        """A message sent with a seq of its own: the stream's counter never goes back."""
        with self._lock:
            self.db.execute("INSERT INTO out_seq VALUES (?, ?) ON CONFLICT(stream) DO UPDATE "
                            "SET seq = MAX(seq, excluded.seq)", (stream, seq))

    def _targets(self, gates: Sequence[str] | None) -> list[str]:
        targets = list(self.gates) if gates is None else list(gates)
        unknown = [g for g in targets if g not in self.gates]
        if unknown:
            raise VenueNameError(f"unknown gate {unknown[0]!r}: not in venue.json")
        return targets

    def _signed(self, topic: str, mtype: str, seq: int, body: dict[str, Any], *,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        payload = messages.sign(topic, mtype=mtype, seq=seq, ts_ms=int(time.time() * 1000),
                                kid=self.kid, body=body, key=self._sign)
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def _send(self, gate: str, kind: str, mtype: str, body: Callable[[int], dict[str, Any]],
              seq: int | None = None) -> tuple[int, list[mqtt.MQTTMessageInfo]]:
        """Sign and queue one message (its body made for its seq), then the gate's head if
        the message is on a cache stream, under the (re-entrant) lock; callers that keep
        several messages together hold it around them, and wait for the PUBACKs after."""
        topic = messages.topic(self.venue, gate, kind)
        stream = f"{gate}/{kind}"
        with self._lock:
            if seq is None:
                seq = self._next_seq(stream)
            else:
                self._note_seq(stream, seq)
            infos = [self._signed(topic, mtype, seq, body(seq))]
            if kind in schemas.STREAMS:
                infos.append(self._signed(messages.topic(self.venue, gate, "head"), "head",
                                          self._next_seq(f"{gate}/head"),
                                          schemas.head_body(self.head(gate)), retain=True))
        return seq, infos

    @staticmethod
    def _wait(infos: Sequence[mqtt.MQTTMessageInfo]) -> None:
        for info in infos:
            info.wait_for_publish(PUBACK_TIMEOUT)

    def head(self, gate: str) -> schemas.Head:
        """The last seq sent to ``gate`` on each cache stream (what its ``head`` says)."""
        with self._lock:
            return schemas.Head(templates=self._last_seq(f"{gate}/templates"),
                                revocations=self._last_seq(f"{gate}/revocations"))

    def publish(self, gate: str, kind: str, mtype: str, body: dict[str, Any], *,
                seq: int | None = None, wait: bool = True) -> int:
        """Sign and publish one message to one gate (QoS 1), followed by the gate's head
        when ``kind`` is ``templates`` or ``revocations``; returns its seq."""
        seq, infos = self._send(gate, kind, mtype, lambda _seq: body, seq)
        if wait:
            self._wait(infos)
        return seq

    def _sealed_body(self, gate: str, kind: str, plain: bytearray) -> tuple[int, dict[str, Any]]:
        seq = self._next_seq(f"{gate}/{kind}")
        return seq, self._seal_to(gate, kind, plain, seq)

    def _seal_to(self, gate: str, kind: str, plain: bytearray, seq: int) -> dict[str, Any]:
        topic = messages.topic(self.venue, gate, kind)
        return seal(plain, self.gates[gate].seal, topic=topic, seq=seq, gate=gate)

    def _sealed(self, gate: str, plain: bytearray, **fields: Any
                ) -> Callable[[int], dict[str, Any]]:
        """A templates body for a given seq: ``fields`` and ``plain`` sealed to ``gate``
        for that seq (the associated data binds it)."""
        def body(seq: int) -> dict[str, Any]:
            return {**fields, "sealed": self._seal_to(gate, "templates", plain, seq)}
        return body

    # --- enrolment ---------------------------------------------------------------------

    def enrol_embeddings(self, attendee: str, embeddings: Array, *, valid_until: int,
                         gates: Sequence[str] | None = None) -> int:
        """Protect raw embeddings (1-3 rows), keep only the protected templates (encrypted
        at rest), publish them sealed to each gate."""
        _check_attendee(attendee)
        targets = self._targets(gates)
        raw = np.array(embeddings, np.float32).reshape(-1, self.model.dim)  # our copy to wipe
        if not 1 <= raw.shape[0] <= MAX_TEMPLATES:
            raw.fill(0)
            raise EnrolmentError(f"an attendee has 1 to {MAX_TEMPLATES} templates")
        protected = self.protector.protect(raw)
        raw.fill(0)
        infos: list[mqtt.MQTTMessageInfo] = []
        try:
            blob = self._box.seal(attendee, _byte_view(protected))
            with self._lock:
                row = self.db.execute("SELECT seq FROM attendees WHERE id = ?",
                                      (attendee,)).fetchone()
                seq = int(row[0]) + 1 if row else 1
                self.db.execute("INSERT INTO attendees VALUES (?, ?, ?, ?, 0) ON CONFLICT(id) "
                                "DO UPDATE SET seq = excluded.seq, valid_until = "
                                "excluded.valid_until, templates = excluded.templates, "
                                "revoked = 0", (attendee, seq, valid_until, blob))
                enrolment = Enrolment(attendee, seq, valid_until, protected)
                for gate in targets:
                    plain = payloads.encode([enrolment], model=self.model)
                    try:
                        infos += self._send(gate, "templates", "upsert",
                                            self._sealed(gate, plain))[1]
                    finally:
                        np.frombuffer(plain, np.uint8).fill(0)
        finally:
            protected.fill(0)
        self._wait(infos)
        return seq

    def import_templates(self, enrolments: Sequence[Enrolment]) -> None:
        """Load already-protected templates in bulk (a migration, a benchmark), encrypted
        at rest; nothing is published until the next :meth:`snapshot`."""
        rows = []
        for e in enrolments:
            _check_attendee(e.attendee)
            t = np.ascontiguousarray(e.templates, np.float32).reshape(-1, self.model.dim)
            if not 1 <= t.shape[0] <= MAX_TEMPLATES:
                raise EnrolmentError(f"an attendee has 1 to {MAX_TEMPLATES} templates")
            blob = self._box.seal(e.attendee, _byte_view(t))
            rows.append((e.attendee, e.seq, e.valid_until, blob))
        with self._lock:
            self.db.execute("BEGIN")
            try:
                self.db.executemany(
                    "INSERT INTO attendees VALUES (?, ?, ?, ?, 0) ON CONFLICT(id) DO UPDATE "
                    "SET seq = excluded.seq, valid_until = excluded.valid_until, "
                    "templates = excluded.templates, revoked = 0", rows)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def revoke(self, attendees: Sequence[str], *, gates: Sequence[str] | None = None) -> dict[
            str, int]:
        """Revoke attendees everywhere; returns attendee → revocation seq."""
        if not attendees:
            return {}
        for a in attendees:
            _check_attendee(a)
        targets = self._targets(gates)
        items, seqs = [], {}
        infos: list[mqtt.MQTTMessageInfo] = []
        with self._lock:
            self.db.execute("BEGIN")
            try:
                for a in attendees:
                    row = self.db.execute("SELECT seq FROM attendees WHERE id = ?",
                                          (a,)).fetchone()
                    seq = int(row[0]) + 1 if row else 1
                    self.db.execute("INSERT INTO attendees VALUES (?, ?, ?, NULL, 1) ON "
                                    "CONFLICT(id) DO UPDATE SET seq = excluded.seq, "
                                    "templates = NULL, revoked = 1",
                                    (a, seq, int(time.time()) + 86400))
                    items.append({"attendee": a, "seq": seq})
                    seqs[a] = seq
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            for gate in targets:
                infos += self._send(gate, "revocations", "revoke", lambda _s: {"items": items})[1]
        self._wait(infos)
        return seqs

    def snapshot(self, gate: str, *, chunk_records: int = CHUNK_RECORDS) -> int:
        """Publish every live attendee to ``gate`` as a sealed, chunked snapshot.

        Its manifest names the last revocation already sent to the gate: every revocation
        up to it is in the snapshot's tombstones, and none can slip in between (the whole
        snapshot is queued under the lock that revocations take)."""
        self._targets([gate])
        now = int(time.time())
        infos: list[mqtt.MQTTMessageInfo] = []
        with self._lock:
            rows = self.db.execute("SELECT id, seq, valid_until, templates, revoked FROM "
                                   "attendees ORDER BY id").fetchall()
            live_rows = [(i, s, v, t) for i, s, v, t, r in rows if not r and v > now]
            tombs = [(i, s, v) for i, s, v, _, r in rows if r and v > now]
            # Every template is decrypted before anything is sent: a blob that does not
            # open stops the snapshot, it is never skipped.
            matrix, counts = self._open_templates(live_rows)
            try:
                live, at = [], 0
                for (i, s, v, _), k in zip(live_rows, counts, strict=True):
                    live.append(Enrolment(i, s, v, matrix[at:at + k]))
                    at += k
                parts = [live[k:k + chunk_records]
                         for k in range(0, max(len(live), 1), chunk_records)]
                plains = [payloads.encode(p, tombs if k == len(parts) - 1 else (),
                                          model=self.model) for k, p in enumerate(parts)]
            finally:
                matrix.fill(0)
            try:
                digest = hashlib.sha256()
                for p in plains:
                    digest.update(p)
                sid = secrets.token_hex(8)
                manifest = {"snapshot": sid, "chunks": len(plains), "records": len(live),
                            "tombstones": len(tombs), "sha256": digest.hexdigest(),
                            "revocations": self._last_seq(f"{gate}/revocations"),
                            "model": self.model.id}
                infos = self._send(gate, "templates", "snapshot_begin", lambda _s: manifest)[1]
                for index, plain in enumerate(plains):
                    infos = self._send(gate, "templates", "snapshot_chunk",
                                       self._sealed(gate, plain, snapshot=sid, index=index))[1]
            finally:
                for p in plains:
                    np.frombuffer(p, np.uint8).fill(0)
        self._wait(infos)  # the last chunk and its head (earlier ones went before them)
        return len(live)

    def _open_templates(self, live_rows: Sequence[tuple[str, int, int, Any]]
                        ) -> tuple[Array, list[int]]:
        """Decrypt the live attendees' templates into one matrix (zero it after use)."""
        row_bytes = self.model.dim * 4
        counts = []
        for _, _, _, blob in live_rows:
            size = len(blob) - self._box.sealed_size(0) if isinstance(blob, bytes) else -1
            if size <= 0 or size % row_bytes or not 1 <= size // row_bytes <= MAX_TEMPLATES:
                raise StoreError("central.db: a live attendee's stored templates are missing "
                                 "or of the wrong size (tampered with?)")
            counts.append(size // row_bytes)
        matrix = np.zeros((sum(counts), self.model.dim), np.float32)
        flat = _byte_view(matrix)
        at = 0
        try:
            for (attendee, _, _, blob), k in zip(live_rows, counts, strict=True):
                self._box.open_into(attendee, blob, flat[at:at + k * row_bytes])
                at += k * row_bytes
        except BaseException:
            matrix.fill(0)
            raise
        return matrix, counts

    def command(self, gate: str, name: str, args: dict[str, Any] | None = None) -> int:
        """A signed command (``resync``, ``purge``, ``rotate_signing_key``)."""
        body: dict[str, Any] = {"name": name} if args is None else {"name": name, "args": args}
        return self.publish(gate, "commands", "command", body)

    def rotate_signing_key(self, new_kid: str) -> Ed25519PrivateKey:
        """Announce a new signing key to every gate (signed by the current one), then use
        it. The new private key is written to central/sign.key (old one kept as .old)."""
        new = Ed25519PrivateKey.generate()
        pub = new.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        for gate in self.gates:
            self.command(gate, "rotate_signing_key",
                         {"kid": new_kid, "public_key": messages.b64(pub)})
        key_file = self.dir / "central" / "sign.key"
        key_file.rename(key_file.with_suffix(".old"))
        raw = new.private_bytes_raw()
        key_file.write_bytes(raw)
        key_file.chmod(0o600)
        self._sign, self.kid = new, new_kid
        return new

    # --- receiving ---------------------------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # paho's network thread: an exception escaping here would end it, and with it
        # every later event, receipt and status. Nothing escapes.
        with contextlib.suppress(Exception):
            try:
                self._receive(msg.topic, bytes(msg.payload))
            except SignedInvalidError as exc:
                self._refuse(f"signed but invalid: {_reason(exc)}", signer=exc.signer)
            except ProtocolError as exc:
                self._refuse(_reason(exc))
            except Exception as exc:
                # A fault of ours (sqlite, disk full, a bug): the type only, as its text
                # may quote what was being stored.
                self._refuse(f"not stored: {type(exc).__name__}")

    def _receive(self, topic: str, payload: bytes) -> None:
        _, gate, kind = messages.parse_topic(topic)
        info = self.gates.get(gate)
        if info is None:
            raise ProtocolError("unknown gate")
        if kind not in messages.GATE_KINDS:
            raise ProtocolError("not a gate's topic")
        env = messages.open_envelope(topic, payload, {gate: info.sign})
        event = None
        try:
            if kind == "events":
                event = schemas.entry_event(env.body, gate)
            elif kind == "receipts":
                check_receipt(env.body)
            body = json.dumps(env.body, ensure_ascii=True, allow_nan=False)
        except (ProtocolError, ValueError) as exc:
            raise SignedInvalidError(env.kid, str(exc)) from None
        now = int(time.time() * 1000)
        with self._lock:
            if event is not None:
                cur = self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                                      (event.event_id, gate, event.attendee, event.at_ms, now))
                self.duplicates += cur.rowcount == 0
            elif kind == "receipts":
                # Keyed by its contents too: the same receipt sent twice is kept once, but
                # a gate whose outbox was reset and numbers a different receipt with a seq
                # it used before must not have that proof of deletion dropped.
                reused = self.db.execute("SELECT 1 FROM receipts WHERE gate = ? AND seq = ? "
                                         "AND body != ?", (gate, env.seq, body)).fetchone()
                cur = self.db.execute("INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?)",
                                      (gate, env.seq, body, now))
                if reused and cur.rowcount:
                    log.warning("central: gate %s numbered a different receipt with seq %d "
                                "again (its outbox was reset?): both kept", gate, env.seq)
            else:
                self.db.execute("INSERT INTO status VALUES (?, ?, ?) ON CONFLICT(gate) DO "
                                "UPDATE SET body = excluded.body, received_ms = "
                                "excluded.received_ms", (gate, body, now))

    def _refuse(self, kind: str, *, signer: str | None = None) -> None:
        """Count a dropped message; log its kind at most once per interval."""
        now = time.monotonic()
        with self._refusal_lock:
            # Copied, never changed in place: any thread may read the counters meanwhile.
            self.refused = self.refused + Counter({kind: 1})
            if signer is not None:
                self.refused_by_signer = self.refused_by_signer + Counter({signer: 1})
            last = self._refusal_logged.get(kind)
            if last is not None and now - last < self.refusal_log_interval:
                self._refusal_quiet[kind] += 1
                return
            self._refusal_logged[kind] = now
            quiet = self._refusal_quiet.pop(kind, 0)
        by = f" from {signer}" if signer is not None else ""
        more = f" (and {quiet} more since the last report)" if quiet else ""
        log.warning("central: refused a message%s: %s%s", by, kind, more)

    def events(self) -> list[tuple[str, str, str, int]]:
        """Entry events received (event id, gate, attendee, at_ms), each once."""
        with self._lock:
            rows = self.db.execute("SELECT event_id, gate, attendee, at_ms FROM events "
                                   "ORDER BY at_ms").fetchall()
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]

    def event_count(self) -> int:
        """How many distinct entry events have arrived."""
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def receipts(self, gate: str | None = None) -> list[dict[str, Any]]:
        """Verified receipts (signature checked on arrival), oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT gate, body FROM receipts ORDER BY received_ms, seq"
                                   ).fetchall()
        return [{"gate": g, **json.loads(b)} for g, b in rows if gate is None or g == gate]

    def deletion_receipt(self, gate: str, attendee: str, seq: int) -> dict[str, Any] | None:
        """The gate's signed proof that it deleted ``attendee`` at revocation ``seq``."""
        for r in self.receipts(gate):
            if r.get("kind") == "deleted" and r.get("attendee") == attendee and \
                    r.get("seq") == seq:
                return r
        return None

    def status(self, gate: str) -> dict[str, Any] | None:
        """Last status a gate published."""
        with self._lock:
            row = self.db.execute("SELECT body FROM status WHERE gate = ?", (gate,)).fetchone()
        return json.loads(row[0]) if row else None



def _byte_view(a: Array) -> memoryview:
    """The bytes of a C-contiguous array, without a copy (writable if ``a`` is)."""
    if not a.flags.c_contiguous:
        raise ValueError("templates must be a contiguous array")
    return a.reshape(-1).view(np.uint8).data


def _reason(exc: Exception) -> str:
    """A refusal's kind: its one-line reason with numbers folded, so kinds stay few."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _DIGITS.sub("N", text)[:80]


def _check_attendee(attendee: object) -> None:
    if not isinstance(attendee, str) or not ID_PATTERN.fullmatch(attendee):
        raise EnrolmentError(f"an attendee id must match {ID_PATTERN.pattern}")


def _count(body: dict[str, Any], name: str) -> bool:
    v = body.get(name)
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= messages.MAX_INT


_RECEIPT_FIELDS = {
    "deleted": {"kind", "attendee", "seq", "applied_at", "cache_version"},
    "stale": {"kind", "attendee", "seq", "applied_at", "cache_version"},
    "applied": {"kind", "stream", "seq", "applied", "stale", "cache_version"},
}


def check_receipt(body: dict[str, Any]) -> None:
    """A ``receipt`` body as ``sync/asyncapi.yaml`` describes it (ProtocolError if not):
    a deletion receipt ``{kind: deleted|stale, attendee, seq, applied_at, cache_version}``
    or ``{kind: applied, stream: templates, seq, applied, stale, cache_version}``."""
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in _RECEIPT_FIELDS or \
            set(body) != _RECEIPT_FIELDS[kind]:
        raise ProtocolError("receipt: wrong fields")
    if kind == "applied":
        ok = body["stream"] == "templates" and all(
            _count(body, n) for n in ("seq", "applied", "stale", "cache_version"))
    else:
        attendee, at = body["attendee"], body["applied_at"]
        ok = isinstance(attendee, str) and ID_PATTERN.fullmatch(attendee) is not None and \
            isinstance(at, int) and not isinstance(at, bool) and \
            all(_count(body, n) for n in ("seq", "cache_version"))
    if not ok:
        raise ProtocolError("receipt: bad values")
