"""The gate's link to central: templates and revocations in, events and receipts out.

:class:`GateLink` joins three parts: a :class:`~gate.link.base.Transport` that moves
bytes (MQTT by default), the :class:`~gate.link.handler.MessageHandler` that applies what
central sends, and the durable :class:`~gate.link.state.SyncState`. It is also the lane's
entry log (:class:`gate.runtime.EntryLog`).

What leaves the gate (P4): signed entry events and receipts, through the durable outbox
(written before publishing, deleted only when the broker acknowledges), and a retained
status with counts only. Without a transport (``transport=None``: a gate without a
broker, a benchmark) everything still goes to the outbox and waits there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.config import Config
from gate.credentials import credentials_directory, load_key, locate
from gate.link.base import Delivery, Message, Subscription, Transport
from gate.link.handler import MessageHandler
from gate.link.mqtt import Endpoint, MqttTransport
from gate.link.state import STATE_FILE, SyncState
from gate.match.cache import TemplateCache
from sync import messages, schemas

log = logging.getLogger("gate.link")

#: Outbox messages handed to the transport per flush (paho keeps them in RAM until
#: acknowledged).
FLUSH_BATCH = 200


class GateLink:
    """One gate's end of the protocol; see the module docstring."""

    def __init__(self, *, venue: str, gate: str, cache: TemplateCache, state: SyncState,
                 sign_key: Ed25519PrivateKey, seal_key: X25519PrivateKey,
                 central_keys: dict[str, str], peer_keys: dict[str, str] | None = None,
                 transport: Transport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.venue, self.gate = venue, gate
        self.cache, self.state = cache, state
        self.transport = transport
        self._sign, self.clock = sign_key, clock
        if not state.central_keys():
            state.replace_central_keys(central_keys)
        self.handler = MessageHandler(venue=venue, gate=gate, cache=cache, state=state,
                                      seal_key=seal_key, peer_keys=peer_keys or {},
                                      queue=self._queue, changed=self.publish_status)
        self._inflight: list[tuple[Delivery, str]] = []
        self._mids_lock = threading.Lock()
        self._flush_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config, *, cache: TemplateCache,
                    clock: Callable[[], float] = time.time) -> GateLink:
        """The link of this gate: keys from credentials (or key files), MQTT transport."""
        s = cfg.sync
        found = locate("mqtt-key.pem", key_file=s.key_file,
                       credentials_dir=credentials_directory())
        tls_key = found.path if found is not None else Path(s.key_file)
        sign = load_key("sign-key", key_file=Path(s.sign_key_file) if s.sign_key_file else None)
        seal = load_key("seal-key", key_file=Path(s.seal_key_file) if s.seal_key_file else None)
        endpoint = Endpoint(s.host, s.port, s.ca_file, s.cert_file, str(tls_key),
                            s.keepalive_s, s.session_expiry_s)
        return cls(venue=cfg.gate.venue, gate=cfg.gate.id, cache=cache,
                   state=SyncState(Path(cfg.cache.dir) / STATE_FILE),
                   sign_key=Ed25519PrivateKey.from_private_bytes(sign.material),
                   seal_key=X25519PrivateKey.from_private_bytes(seal.material),
                   central_keys=dict(p.split("=", 1) for p in s.central_keys),
                   peer_keys=dict(p.split("=", 1) for p in s.peer_keys),
                   transport=MqttTransport(endpoint, client_id=cfg.gate.id), clock=clock)

    # --- what the handler knows ----------------------------------------------------------

    @property
    def rejected(self) -> Counter[str]:
        """Refused messages by reason."""
        return self.handler.rejected

    @property
    def duplicates(self) -> int:
        """Messages ignored as repeated or stale."""
        return self.handler.duplicates

    @property
    def resync_needed(self) -> bool:
        """Only a full snapshot from central can bring the cache in step again."""
        return self.handler.resync_needed

    @resync_needed.setter
    def resync_needed(self, value: bool) -> None:
        self.handler.resync_needed = value

    def handle(self, env: messages.Envelope) -> None:
        """Apply one verified central message (see :meth:`MessageHandler.handle`)."""
        self.handler.handle(env)

    # --- lifecycle -----------------------------------------------------------------------

    def topic(self, kind: str, gate: str | None = None) -> str:
        """This gate's (or ``gate``'s) topic of ``kind``."""
        return messages.topic(self.venue, gate or self.gate, kind)

    def start(self) -> None:
        """Connect in the background; reconnects by itself."""
        if self.transport is None:
            raise RuntimeError("this link has no transport: events wait in the outbox")
        subs = [Subscription(self.topic(k)) for k in messages.CENTRAL_KINDS]
        # no_local: the broker does not echo this gate's own events back to it.
        subs.append(Subscription(f"gate/v1/{self.venue}/+/events", no_local=True))
        self.transport.start(self, subs, self._status_message("offline"))

    def wait_connected(self, timeout: float) -> bool:
        """True once connected (for start-up and tests)."""
        return self.transport is not None and self.transport.wait_connected(timeout)

    def stop(self) -> None:
        """Publish 'offline', disconnect and stop the transport."""
        if self.transport is not None:
            self.transport.stop(self._status_message("offline"))
        self.handler.wipe()

    def close(self) -> None:
        """Close the durable state (after :meth:`stop`)."""
        self.state.close()

    # --- the transport's callbacks -------------------------------------------------------

    def connected(self) -> None:
        """(Re)connected: the status goes out, then whatever waits in the outbox."""
        self.handler.connection_restored()
        self.publish_status()
        self.flush()

    def disconnected(self, reason: str, *, expected: bool) -> None:
        """Unacknowledged messages stay in the outbox and go out again later."""
        with self._mids_lock:
            self._inflight.clear()
        if expected:
            log.info("sync: disconnected (stopping)")
        else:
            log.warning("sync: disconnected (%s); events queue in the outbox", reason)

    def message(self, topic: str, payload: bytes) -> None:
        """A message from the broker: the handler's."""
        self.handler.message(topic, payload)

    def acknowledged(self, mid: int, *, ok: bool) -> None:
        """The broker has ``mid``: forget it from the outbox and top up the stream.

        paho calls this with its outgoing-message lock held, so it only flushes without
        waiting: it must never wait for a thread that may be waiting for that lock.
        """
        if ok:
            self._reap(mid)
        with self._mids_lock:
            low = len(self._inflight) < FLUSH_BATCH // 4
        if low:  # top up a draining backlog
            self.flush(wait=False)

    # --- outgoing ------------------------------------------------------------------------

    def _signed(self, kind: str, mtype: str, body: dict[str, Any], seq: int) -> bytes:
        return messages.sign(self.topic(kind), mtype=mtype, seq=seq,
                             ts_ms=int(self.clock() * 1000), kid=self.gate, body=body,
                             key=self._sign)

    def _status_message(self, state: str) -> Message:
        st = self.cache.status()
        body = {"state": state, "cache": {"state": st.state, "version": st.version,
                                          "attendees": st.attendees, "templates": st.templates,
                                          "valid_until": st.valid_until},
                "outbox": self.state.depth(), "resync_needed": self.resync_needed,
                "rejected": dict(self.rejected), "duplicates": self.duplicates}
        return Message(self.topic("status"),
                       self._signed("status", "status", body, int(self.clock() * 1000)),
                       retain=True)

    def publish_status(self) -> None:
        """Retained status (counts only, no personal data)."""
        if self.transport is not None and self.transport.wait_connected(0):
            self.transport.publish(self._status_message("online"))

    def _queue(self, kind: str, mtype: str, body: dict[str, Any],
               entry: tuple[str, str, int] | None = None) -> str:
        message_id = str(body.get("event_id") or messages.uuid7())
        self.state.enqueue_next(f"out:{kind}", message_id, self.topic(kind),
                                lambda seq: self._signed(kind, mtype, body, seq), entry)
        self.flush()
        return message_id

    def publish_event(self, attendee: str, at: float | None = None) -> str:
        """Record an entry (durably, one transaction) and publish it; returns the event id."""
        at_ms = int((self.clock() if at is None else at) * 1000)
        event = schemas.EntryEvent(messages.uuid7(at_ms), attendee, self.gate, at_ms)
        return self._queue("events", "event", schemas.event_body(event),
                           entry=(attendee, self.gate, at_ms))

    def flush(self, *, wait: bool = True) -> None:
        """Hand the transport the next outbox messages not yet in flight (when connected).

        ``wait=False`` from the transport's callbacks: see :meth:`acknowledged`.
        """
        if self.transport is None or not self.transport.wait_connected(0) or \
                not self._flush_lock.acquire(blocking=wait):
            return
        try:
            with self._mids_lock:
                busy = {message_id for _, message_id in self._inflight}
            for message_id, topic_name, payload in self.state.pending(FLUSH_BATCH + len(busy)):
                if message_id in busy:
                    continue
                info = self.transport.publish(Message(topic_name, payload))
                if info.rc == 0:
                    with self._mids_lock:
                        self._inflight.append((info, message_id))
        finally:
            self._flush_lock.release()
        self._reap()

    def _reap(self, acked_mid: int | None = None) -> None:
        """Delete from the outbox what the broker has acknowledged.

        paho marks a message published only after its callback returns, so the message
        being acknowledged right now is recognised by its mid (unique among those in
        flight), and one acknowledged before it was registered by ``is_published``.
        """
        with self._mids_lock:
            done = [m for i, m in self._inflight if i.mid == acked_mid or i.is_published()]
            self._inflight = [(i, m) for i, m in self._inflight
                              if not (i.mid == acked_mid or i.is_published())]
        if done:
            self.state.ack(*done)

    # --- the entry log (anti-passback) ---------------------------------------------------

    def entered_since(self, attendee: str, since: float) -> list[tuple[str, int]]:
        """Entries of an attendee at any gate of the venue since ``since`` (anti-passback)."""
        return self.state.entries_since(attendee, int(since * 1000))

    def forget_before(self, before: float) -> int:
        """Drop entry records older than ``before`` (they outlive no event)."""
        return self.state.forget_entries_before(int(before * 1000))

    def outbox_depth(self) -> int:
        """Messages waiting for the broker."""
        return self.state.depth()
