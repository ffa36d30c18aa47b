"""The gate's side of the sync protocol: templates and revocations in, events out.

paho-mqtt 2 (VERSION2 callbacks), MQTT 5 with mutual TLS, clean start off and a session
expiry, so QoS 1 messages the broker queued while the gate was off arrive after a
restart. Central's messages are verified (Ed25519, pinned keys) and checked against the
last sequence number of their stream before anything is applied; template payloads are
opened with the gate's X25519 key. Every refusal is one log line (never the payload) and
a counter in the retained status message.

What leaves the gate (P4): signed entry events and receipts, through the durable outbox
(:mod:`sync.db`), and a retained status with counts only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gate.config import Config
from gate.errors import CacheError, ProtocolError, TemplateError
from gate.match.cachefile import RECORD, TOMBSTONE
from gate.match.store import TemplateStore
from sync import messages, payloads
from sync.db import SyncDB, uuid7
from sync.seal import open_sealed

log = logging.getLogger(__name__)

MAX_SNAPSHOT_CHUNKS = 10_000
#: Outbox messages handed to paho per flush (it keeps them in RAM until acknowledged).
FLUSH_BATCH = 200


@dataclass(frozen=True)
class Link:
    """Where and how to reach the broker."""

    host: str
    port: int
    ca_file: str
    cert_file: str
    key_file: str
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400


@dataclass
class _Snapshot:
    sid: str
    chunks: int
    records: int
    tombstones: int
    sha256: str
    parts: dict[int, bytearray] = field(default_factory=dict)

    def wipe(self) -> None:
        for part in self.parts.values():
            np.frombuffer(part, np.uint8).fill(0)
        self.parts.clear()


class GateSync:
    """Runs the gate's MQTT session in paho's network thread."""

    def __init__(self, *, venue: str, gate: str, link: Link, store: TemplateStore,
                 db: SyncDB, sign_key: Ed25519PrivateKey, seal_key: X25519PrivateKey,
                 central_keys: dict[str, str], peer_keys: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.venue, self.gate, self.link = venue, gate, link
        self.store, self.db = store, db
        self._sign, self._seal, self.clock = sign_key, seal_key, clock
        if not db.central_keys():
            db.replace_central_keys(central_keys)
        self._peers = {g: messages.public_key(k) for g, k in (peer_keys or {}).items()}
        self.rejected: Counter[str] = Counter()
        self.duplicates = 0
        self.resync_needed = not store.valid
        self._snapshot: _Snapshot | None = None
        self._inflight: list[tuple[mqtt.MQTTMessageInfo, str]] = []
        self._lock = threading.RLock()
        self._mids_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gate,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set_context(tls_context(link))
        self.client.will_set(self._topic("status"), self._status_payload("offline"), qos=1,
                             retain=True)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    @classmethod
    def from_config(cls, cfg: Config, *, store: TemplateStore,
                    clock: Callable[[], float] = time.time) -> GateSync:
        """The sync client for this gate: keys from credentials (or key files)."""
        import os
        from pathlib import Path

        from gate.match.keys import load_key

        s = cfg.sync
        creds = os.environ.get("CREDENTIALS_DIRECTORY", "")
        tls_key = Path(creds) / "mqtt-key.pem" if creds and \
            (Path(creds) / "mqtt-key.pem").is_file() else Path(s.key_file)
        sign = load_key("sign-key", key_file=Path(s.sign_key_file) if s.sign_key_file else None)
        seal = load_key("seal-key", key_file=Path(s.seal_key_file) if s.seal_key_file else None)
        link = Link(s.host, s.port, s.ca_file, s.cert_file, str(tls_key), s.keepalive_s,
                    s.session_expiry_s)
        return cls(venue=cfg.gate.venue, gate=cfg.gate.id, link=link, store=store,
                   db=SyncDB(Path(cfg.cache.dir) / "sync.db"),
                   sign_key=Ed25519PrivateKey.from_private_bytes(sign.material),
                   seal_key=X25519PrivateKey.from_private_bytes(seal.material),
                   central_keys=dict(p.split("=", 1) for p in s.central_keys),
                   peer_keys=dict(p.split("=", 1) for p in s.peer_keys), clock=clock)

    # --- lifecycle ---------------------------------------------------------------------

    def _topic(self, kind: str, gate: str | None = None) -> str:
        return messages.topic(self.venue, gate or self.gate, kind)

    def start(self) -> None:
        """Connect in the background; reconnects by itself."""
        self._stopping = False
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.link.session_expiry_s
        self.client.connect_async(self.link.host, self.link.port, self.link.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """True once connected (for start-up and tests)."""
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Publish 'offline', disconnect and stop the network thread."""
        if self._connected.is_set():
            info = self.client.publish(self._topic("status"), self._status_payload("offline"),
                                       qos=1, retain=True)
            info.wait_for_publish(2.0)
        self._stopping = True  # our own disconnect: not worth a warning
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            if self._snapshot:
                self._snapshot.wipe()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                    _properties: Any) -> None:
        if reason.is_failure:
            log.error("sync: broker refused the connection (%s)", reason)
            return
        subs = [(self._topic(k), SubscribeOptions(qos=1)) for k in
                messages.CENTRAL_KINDS]
        # noLocal: the broker does not echo this gate's own events back to it.
        subs.append((f"gate/v1/{self.venue}/+/events", SubscribeOptions(qos=1, noLocal=True)))
        client.subscribe(subs)
        _no_delay(client)
        if self._snapshot is not None:
            # The link dropped mid-snapshot: the rest may never come. Ask for it again;
            # if it does complete meanwhile, installing it clears the request.
            self.resync_needed = True
        self._connected.set()
        log.info("sync: connected to %s:%d", self.link.host, self.link.port)
        self.publish_status()
        self.flush()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _properties: Any) -> None:
        self._connected.clear()
        with self._mids_lock:
            self._inflight.clear()  # unacknowledged messages stay in the outbox
        if self._stopping:
            log.info("sync: disconnected (stopping)")
        else:
            log.warning("sync: disconnected (%s); events queue in the outbox", reason)

    # --- outgoing ----------------------------------------------------------------------

    def _signed(self, kind: str, mtype: str, body: dict[str, Any], seq: int) -> bytes:
        return messages.sign(self._topic(kind), mtype=mtype, seq=seq,
                             ts_ms=int(self.clock() * 1000), kid=self.gate, body=body,
                             key=self._sign)

    def _status_payload(self, state: str) -> bytes:
        st = self.store.status()
        body = {"state": state, "cache": {"state": st.state, "version": st.version,
                                          "attendees": st.attendees, "templates": st.templates,
                                          "valid_until": st.valid_until},
                "outbox": self.db.depth(), "resync_needed": self.resync_needed,
                "rejected": dict(self.rejected), "duplicates": self.duplicates}
        return self._signed("status", "status", body, int(self.clock() * 1000))

    def publish_status(self) -> None:
        """Retained status (counts only, no personal data)."""
        if self._connected.is_set():
            self.client.publish(self._topic("status"), self._status_payload("online"), qos=1,
                                retain=True)

    def _queue(self, kind: str, mtype: str, body: dict[str, Any],
               entry: tuple[str, str, int] | None = None) -> str:
        message_id = str(body.get("event_id") or uuid7())
        self.db.enqueue_next(f"out:{kind}", message_id, self._topic(kind),
                             lambda seq: self._signed(kind, mtype, body, seq), entry)
        self.flush()
        return message_id

    def publish_event(self, attendee: str, at: float | None = None) -> str:
        """Record an entry (durably, one transaction) and publish it; returns the event id."""
        at_ms = int((self.clock() if at is None else at) * 1000)
        event_id = uuid7(at_ms)
        return self._queue("events", "event", {"event_id": event_id, "attendee": attendee,
                                               "gate": self.gate, "at": at_ms},
                           entry=(attendee, self.gate, at_ms))

    def flush(self, *, wait: bool = True) -> None:
        """Hand paho the next outbox messages not yet in flight (when connected).

        paho calls ``on_publish`` with its outgoing-message lock held, so ``on_publish``
        only flushes with ``wait=False``: it must never wait for a thread that may be
        waiting for that lock in ``publish``.
        """
        if not self._connected.is_set() or not self._flush_lock.acquire(blocking=wait):
            return
        try:
            with self._mids_lock:
                busy = {message_id for _, message_id in self._inflight}
            for message_id, topic_name, payload in self.db.pending(FLUSH_BATCH + len(busy)):
                if message_id in busy:
                    continue
                info = self.client.publish(topic_name, payload, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    with self._mids_lock:
                        self._inflight.append((info, message_id))
        finally:
            self._flush_lock.release()
        self._reap()

    def _reap(self, acked_mid: int | None = None) -> None:
        """Delete from the outbox what the broker has acknowledged.

        paho marks a message published only after ``on_publish`` returns, so the message
        being acknowledged right now is recognised by its mid (unique among those in
        flight), and one acknowledged before it was registered by ``is_published``.
        """
        with self._mids_lock:
            done = [m for i, m in self._inflight if i.mid == acked_mid or i.is_published()]
            self._inflight = [(i, m) for i, m in self._inflight
                              if not (i.mid == acked_mid or i.is_published())]
        if done:
            self.db.ack(*done)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any,
                    _properties: Any) -> None:
        if not reason.is_failure:
            self._reap(mid)
        with self._mids_lock:
            low = len(self._inflight) < FLUSH_BATCH // 4
        if low:  # top up a draining backlog
            self.flush(wait=False)

    # --- incoming ----------------------------------------------------------------------

    def _keys(self) -> dict[str, Ed25519PublicKey]:
        return {k: messages.public_key(v) for k, v in self.db.central_keys().items()}

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            venue, gate, kind = messages.parse_topic(msg.topic)
            if kind == "events":
                if gate != self.gate:
                    self._peer_event(msg.topic, bytes(msg.payload))
                return
            if venue != self.venue or gate != self.gate or kind not in messages.CENTRAL_KINDS:
                raise ProtocolError("not a topic for this gate")
            env = messages.open_envelope(msg.topic, bytes(msg.payload), self._keys())
            self.handle(env)
        except ProtocolError as exc:
            self._reject(str(exc))
        except (TemplateError, CacheError) as exc:
            self._reject(f"refused by the template store: {exc}")

    def _reject(self, reason: str) -> None:
        key = reason.split(":", maxsplit=1)[0][:60]
        self.rejected[key] += 1
        log.warning("sync: message refused: %s", reason)
        self.publish_status()  # central sees the count without waiting for the next change

    def handle(self, env: messages.Envelope) -> None:
        """Apply one verified central message (seq checked here, per stream)."""
        stream = f"in:{env.kind}"
        last = self.db.last_seq(stream)
        if env.seq <= last:
            self.duplicates += 1
            log.info("sync: stale or repeated %s seq %d (last %d) ignored", env.kind,
                     env.seq, last)
            return
        if env.seq > last + 1 and last >= 0 and env.kind != "commands":
            self.resync_needed = True  # something was missed: central must send a snapshot
        if env.kind == "revocations":
            self._revocations(env)
        elif env.kind == "templates":
            self._templates(env)
        else:
            self._command(env)
        self.db.set_seq(stream, env.seq)
        self.publish_status()

    def _revocations(self, env: messages.Envelope) -> None:
        items = env.body.get("items")
        if set(env.body) != {"items"} or not isinstance(items, list) or not 0 < len(items) \
                <= 100_000:
            raise ProtocolError("revoke: body must be {items: [...]}")
        parsed = []
        for it in items:
            if not isinstance(it, dict) or not {"attendee", "seq"} <= set(it) <= \
                    {"attendee", "seq", "valid_until"}:
                raise ProtocolError("revoke: malformed item")
            parsed.append((it["attendee"], it["seq"], it.get("valid_until")))
        for r in self.store.revoke_many(parsed):
            self._queue("receipts", "receipt", {
                "kind": "deleted" if r.applied else "stale", "attendee": r.attendee,
                "seq": r.seq, "applied_at": int(r.applied_at * 1000),
                "cache_version": r.cache_version})

    def _templates(self, env: messages.Envelope) -> None:
        body = env.body
        if env.type == "upsert":
            if set(body) != {"sealed"}:
                raise ProtocolError("upsert: body must be {sealed}")
            plain = open_sealed(body["sealed"], self._seal, topic=env.topic, seq=env.seq,
                                gate=self.gate)
            try:
                enrolments, tombs = payloads.decode(plain)
                if tombs:
                    raise ProtocolError("upsert: tombstones belong in revocations")
                applied, stale = self.store.upsert(enrolments)
            finally:
                np.frombuffer(plain, np.uint8).fill(0)
            self._applied(env, applied, stale)
        elif env.type == "snapshot_begin":
            self._snapshot_begin(env)
        else:
            self._snapshot_chunk(env)

    def _applied(self, env: messages.Envelope, applied: int, stale: int) -> None:
        self._queue("receipts", "receipt", {
            "kind": "applied", "stream": env.kind, "seq": env.seq, "applied": applied,
            "stale": stale, "cache_version": self.store.version})

    def _snapshot_begin(self, env: messages.Envelope) -> None:
        b = env.body
        if set(b) != {"snapshot", "chunks", "records", "tombstones", "sha256"}:
            raise ProtocolError("snapshot_begin: wrong fields")
        for name in ("chunks", "records", "tombstones"):
            if not isinstance(b[name], int) or isinstance(b[name], bool) or b[name] < 0:
                raise ProtocolError(f"snapshot_begin: bad {name}")
        if not 0 < b["chunks"] <= MAX_SNAPSHOT_CHUNKS or not isinstance(b["snapshot"], str) \
                or not isinstance(b["sha256"], str) or len(b["sha256"]) != 64:
            raise ProtocolError("snapshot_begin: bad manifest")
        with self._lock:
            if self._snapshot:
                self._snapshot.wipe()
            self._snapshot = _Snapshot(b["snapshot"], b["chunks"], b["records"],
                                       b["tombstones"], b["sha256"])

    def _snapshot_chunk(self, env: messages.Envelope) -> None:
        b = env.body
        if set(b) != {"snapshot", "index", "sealed"}:
            raise ProtocolError("snapshot_chunk: wrong fields")
        snap = self._snapshot
        if snap is None or b["snapshot"] != snap.sid:
            self.resync_needed = True
            raise ProtocolError("snapshot_chunk: no matching snapshot in progress")
        index = b["index"]
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < snap.chunks:
            raise ProtocolError("snapshot_chunk: bad index")
        snap.parts[index] = open_sealed(b["sealed"], self._seal, topic=env.topic, seq=env.seq,
                                        gate=self.gate)
        if len(snap.parts) == snap.chunks:
            self._snapshot = None
            try:
                self._install(snap)
            finally:
                snap.wipe()
            self._applied(env, snap.records, 0)

    def _install(self, snap: _Snapshot) -> None:
        """Verify the whole snapshot against its signed manifest, then swap it in."""
        digest = hashlib.sha256()
        for i in range(snap.chunks):
            digest.update(snap.parts[i])
        if digest.hexdigest() != snap.sha256:
            self.resync_needed = True
            raise ProtocolError("snapshot: contents do not match the signed manifest")
        # Views of the decrypted chunks, copied once into the arrays the store takes;
        # each chunk is wiped and released as soon as it has been copied.
        views = [payloads.decode_arrays(snap.parts[i]) for i in range(snap.chunks)]
        rec = np.concatenate([r for r, _, _ in views]) if views else np.zeros(0, RECORD)
        tmb = np.concatenate([t for _, _, t in views]) if views else np.zeros(0, TOMBSTONE)
        if rec.size != snap.records or tmb.size != snap.tombstones:
            self.resync_needed = True
            raise ProtocolError("snapshot: counts do not match the manifest")
        rows = [v for _, v, _ in views]
        del views
        vec = np.empty((sum(v.shape[0] for v in rows), payloads.DIM), np.float32)
        at = 0
        for i in range(len(rows)):
            vec[at:at + rows[i].shape[0]] = rows[i]
            at += rows[i].shape[0]
            rows[i] = vec[:0]  # drop the view so the chunk's memory can go
            np.frombuffer(snap.parts.pop(i), np.uint8).fill(0)
        try:
            self.store.replace_arrays(rec, vec, tmb, adopt=True)  # vec becomes the matrix
        except BaseException:
            vec.fill(0)
            raise
        self.resync_needed = False
        log.info("sync: snapshot applied, %d attendees", rec.size)

    def _command(self, env: messages.Envelope) -> None:
        name, args = env.body.get("name"), env.body.get("args", {})
        if set(env.body) - {"name", "args"} or not isinstance(args, dict):
            raise ProtocolError("command: wrong fields")
        if name == "resync":
            self.resync_needed = True
        elif name == "purge":
            self.store.purge_expired()
        elif name == "rotate_signing_key":
            kid, pub = args.get("kid"), args.get("public_key")
            if not isinstance(kid, str) or not messages.KID.fullmatch(kid):
                raise ProtocolError("rotate_signing_key: bad kid")
            messages.public_key(str(pub))  # validates the key
            self.db.replace_central_keys({kid: str(pub)})
            log.warning("sync: central signing key rotated (now %s)", kid)
        else:
            raise ProtocolError("command: unknown name")

    def _peer_event(self, topic_name: str, payload: bytes) -> None:
        """Another gate's entry at this venue, for anti-passback (verified with its key)."""
        _, gate, _ = messages.parse_topic(topic_name)
        key = self._peers.get(gate)
        env = messages.open_envelope(topic_name, payload, {gate: key} if key else {})
        b = env.body
        if set(b) != {"event_id", "attendee", "gate", "at"} or b["gate"] != gate or \
                not isinstance(b["at"], int) or not isinstance(b["attendee"], str):
            raise ProtocolError("peer event: wrong fields")
        self.db.record_entry(str(b["event_id"]), b["attendee"], gate, b["at"])

    def entered_since(self, attendee: str, since: float) -> list[tuple[str, int]]:
        """Entries of an attendee at any gate of the venue since ``since`` (anti-passback)."""
        return self.db.entries_since(attendee, int(since * 1000))


def _no_delay(client: mqtt.Client) -> None:
    """Send small messages at once (no Nagle): a revocation should not wait 40 ms."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_context(link: Link) -> ssl.SSLContext:
    """Mutual TLS, 1.2 or newer, server verified against the venue CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=link.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(link.cert_file, link.key_file)
    return ctx
