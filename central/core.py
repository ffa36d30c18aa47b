"""Reference central: the gate protocol spoken from the other side.

Integrators build the real central system; this one is complete enough to run a venue
in tests and demos: enrol attendees (only the protected template is kept; photos are
embedded and dropped by :mod:`central.enrol`), revoke them, publish deltas and snapshots
sealed to each gate, rotate the signing key, and collect entry events (deduplicated by
id), deletion receipts (signature verified) and gate status. It works from a directory
made by ``facepass-central init-venue`` (see :mod:`central.pki`) and imports nothing of
the gate firmware: only the protocol (:mod:`sync`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
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

from sync import messages, payloads, schemas
from sync.errors import ProtocolError
from sync.protect import Protector, event_key
from sync.seal import seal
from sync.templates import MOBILEFACENET, Array, Enrolment, TemplateModel
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
    body TEXT NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (gate, seq));
CREATE TABLE IF NOT EXISTS status (gate TEXT PRIMARY KEY, body TEXT NOT NULL,
    received_ms INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class GateInfo:
    """A gate's public keys, from venue.json."""

    sign: Ed25519PublicKey
    seal: X25519PublicKey


class Central:
    """One venue's central, from an ``init-venue`` directory."""

    def __init__(self, venue_dir: Path, *, host: str | None = None, port: int | None = None,
                 kid: str | None = None, model: TemplateModel = MOBILEFACENET) -> None:
        self.dir = Path(venue_dir)
        self.model = model
        info = json.loads((self.dir / "venue.json").read_text())
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
        self.protector = Protector(event_key(secret, self.venue, self.event), dim=model.dim)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.dir / "central" / "central.db", check_same_thread=False,
                                  isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.duplicates = 0
        self.refused = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="central",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_context(self.dir / "ca" / "ca.crt",
                                                   self.dir / "central" / "client.crt",
                                                   self.dir / "central" / "client.key"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._connected = threading.Event()

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

    def _next_seq(self, stream: str) -> int:
        with self._lock:
            row = self.db.execute("SELECT seq FROM out_seq WHERE stream = ?",
                                  (stream,)).fetchone()
            seq = int(row[0]) + 1 if row else 0
            self.db.execute("INSERT INTO out_seq VALUES (?, ?) ON CONFLICT(stream) DO UPDATE "
                            "SET seq = excluded.seq", (stream, seq))
            return seq

    def publish(self, gate: str, kind: str, mtype: str, body: dict[str, Any], *,
                seq: int | None = None, wait: bool = True) -> int:
        """Sign and publish one message to one gate (QoS 1); returns its seq."""
        topic = messages.topic(self.venue, gate, kind)
        seq = self._next_seq(f"{gate}/{kind}") if seq is None else seq
        payload = messages.sign(topic, mtype=mtype, seq=seq, ts_ms=int(time.time() * 1000),
                                kid=self.kid, body=body, key=self._sign)
        info = self.client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(30)
        return seq

    def _sealed_body(self, gate: str, kind: str, plain: bytearray) -> tuple[int, dict[str, Any]]:
        seq = self._next_seq(f"{gate}/{kind}")
        topic = messages.topic(self.venue, gate, kind)
        return seq, seal(plain, self.gates[gate].seal, topic=topic, seq=seq, gate=gate)

    # --- enrolment ---------------------------------------------------------------------

    def enrol_embeddings(self, attendee: str, embeddings: Array, *, valid_until: int,
                         gates: Sequence[str] | None = None) -> int:
        """Protect raw embeddings (1-3 rows), keep only the protected templates, publish."""
        raw = np.array(embeddings, np.float32).reshape(-1, self.model.dim)  # our copy to wipe
        protected = self.protector.protect(raw)
        raw.fill(0)
        with self._lock:
            row = self.db.execute("SELECT seq FROM attendees WHERE id = ?",
                                  (attendee,)).fetchone()
            seq = int(row[0]) + 1 if row else 1
            self.db.execute("INSERT INTO attendees VALUES (?, ?, ?, ?, 0) ON CONFLICT(id) DO "
                            "UPDATE SET seq = excluded.seq, valid_until = excluded.valid_until,"
                            " templates = excluded.templates, revoked = 0",
                            (attendee, seq, valid_until, protected.tobytes()))
        enrolment = Enrolment(attendee, seq, valid_until, protected)
        for gate in gates or list(self.gates):
            plain = payloads.encode([enrolment], model=self.model)
            try:
                topic_seq, sealed = self._sealed_body(gate, "templates", plain)
            finally:
                np.frombuffer(plain, np.uint8).fill(0)
            self.publish(gate, "templates", "upsert", {"sealed": sealed}, seq=topic_seq)
        return seq

    def import_templates(self, enrolments: Sequence[Enrolment]) -> None:
        """Load already-protected templates in bulk (a migration, a benchmark); nothing is
        published until the next :meth:`snapshot`."""
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO attendees VALUES (?, ?, ?, ?, 0) ON CONFLICT(id) DO UPDATE SET "
                "seq = excluded.seq, valid_until = excluded.valid_until, "
                "templates = excluded.templates, revoked = 0",
                [(e.attendee, e.seq, e.valid_until,
                  np.asarray(e.templates, np.float32).tobytes()) for e in enrolments])
            self.db.execute("COMMIT")

    def revoke(self, attendees: Sequence[str], *, gates: Sequence[str] | None = None) -> dict[
            str, int]:
        """Revoke attendees everywhere; returns attendee → revocation seq."""
        items, seqs = [], {}
        with self._lock:
            for a in attendees:
                row = self.db.execute("SELECT seq FROM attendees WHERE id = ?", (a,)).fetchone()
                seq = int(row[0]) + 1 if row else 1
                self.db.execute("INSERT INTO attendees VALUES (?, ?, ?, NULL, 1) ON CONFLICT(id)"
                                " DO UPDATE SET seq = excluded.seq, templates = NULL, "
                                "revoked = 1", (a, seq, int(time.time()) + 86400))
                items.append({"attendee": a, "seq": seq})
                seqs[a] = seq
        for gate in gates or list(self.gates):
            self.publish(gate, "revocations", "revoke", {"items": items})
        return seqs

    def snapshot(self, gate: str, *, chunk_records: int = CHUNK_RECORDS) -> int:
        """Publish every live attendee to ``gate`` as a sealed, chunked snapshot."""
        now = int(time.time())
        with self._lock:
            rows = self.db.execute("SELECT id, seq, valid_until, templates, revoked FROM "
                                   "attendees ORDER BY id").fetchall()
        live = [Enrolment(i, s, v, np.frombuffer(t, np.float32).reshape(-1, self.model.dim))
                for i, s, v, t, r in rows if not r and v > now]
        tombs = [(i, s, v) for i, s, v, _, r in rows if r and v > now]
        parts = [live[k:k + chunk_records] for k in range(0, max(len(live), 1), chunk_records)]
        plains = [payloads.encode(p, tombs if k == len(parts) - 1 else (), model=self.model)
                  for k, p in enumerate(parts)]
        digest = hashlib.sha256()
        for p in plains:
            digest.update(p)
        sid = secrets.token_hex(8)
        self.publish(gate, "templates", "snapshot_begin", {
            "snapshot": sid, "chunks": len(plains), "records": len(live),
            "tombstones": len(tombs), "sha256": digest.hexdigest()})
        for index, plain in enumerate(plains):
            seq, sealed = self._sealed_body(gate, "templates", plain)
            np.frombuffer(plain, np.uint8).fill(0)
            self.publish(gate, "templates", "snapshot_chunk",
                         {"snapshot": sid, "index": index, "sealed": sealed}, seq=seq,
                         wait=index == len(plains) - 1)
        return len(live)

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
        try:
            _, gate, kind = messages.parse_topic(msg.topic)
            info = self.gates.get(gate)
            if info is None:
                raise ProtocolError("unknown gate")
            env = messages.open_envelope(msg.topic, bytes(msg.payload), {gate: info.sign})
            event = schemas.entry_event(env.body, gate) if kind == "events" else None
        except ProtocolError as exc:
            self.refused += 1
            log.warning("central: refused a message: %s", exc)
            return
        now = int(time.time() * 1000)
        with self._lock:
            if event is not None:
                cur = self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                                      (event.event_id, gate, event.attendee, event.at_ms, now))
                self.duplicates += cur.rowcount == 0
            elif kind == "receipts":
                self.db.execute("INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?)",
                                (gate, env.seq, json.dumps(env.body), now))
            else:
                self.db.execute("INSERT INTO status VALUES (?, ?, ?) ON CONFLICT(gate) DO "
                                "UPDATE SET body = excluded.body, received_ms = "
                                "excluded.received_ms", (gate, json.dumps(env.body), now))

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

