"""The gate's link to central: templates and revocations in, events and receipts out.

:class:`GateLink` joins three parts: a :class:`~gate.link.base.Transport` that moves
bytes (MQTT by default), the :class:`~gate.link.handler.MessageHandler` that applies what
central sends, and the durable :class:`~gate.link.state.SyncState`. It is also the lane's
entry log (:class:`gate.runtime.EntryLog`).

What leaves the gate (P4): signed entry events and receipts, through the durable outbox
(written before publishing, deleted only when the broker acknowledges), and a retained
status with counts only. Without a transport (``transport=None``: a gate without a
broker, a benchmark) everything still goes to the outbox and waits there.

Faults never lose an entry event or a receipt silently: what the outbox cannot take (disk
full, a damaged file) waits in RAM, in order, is written as soon as it can be, and the
status says how much waits (:meth:`GateLink.health`). Status publishes are limited to one
per :data:`STATUS_MIN_S`, so a flood of bad messages cannot become a flood of signatures;
the counters carry the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.config import Config
from gate.credentials import credentials_directory, load_key, locate
from gate.errors import StateError
from gate.link.base import Delivery, Message, Subscription, Transport
from gate.link.handler import MessageHandler
from gate.link.mqtt import Endpoint, MqttTransport
from gate.link.state import STATE_FILE, SyncState
from gate.match.cache import TemplateCache
from sync import messages, schemas
from sync.errors import ProtocolError

log = logging.getLogger("gate.link")

#: Outbox messages handed to the transport per flush (paho keeps them in RAM until
#: acknowledged).
FLUSH_BATCH = 200
#: At most one status publish per this many seconds (a burst coalesces into the next).
STATUS_MIN_S = 1.0
#: Most messages kept in RAM while the outbox cannot take them.
MAX_BACKLOG = 100_000


@dataclass(frozen=True)
class _Waiting:
    """An outgoing message the outbox could not take yet."""

    kind: str
    mtype: str
    body: dict[str, Any]
    message_id: str
    entry: tuple[str, str, int] | None


def _intact(topic_name: str, payload: bytes, own: dict[str, Any]) -> bool:
    try:
        messages.open_envelope(topic_name, payload, own)
    except ProtocolError:
        return False
    return True


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
        # What the outbox hands back is checked against this gate's own signature before
        # it is sent: a row damaged on disk is set aside and said, not sent to be refused.
        own = {gate: sign_key.public_key()}
        state.check = lambda name, payload: _intact(name, payload, own)
        self.handler = MessageHandler(venue=venue, gate=gate, cache=cache, state=state,
                                      seal_key=seal_key, peer_keys=peer_keys or {},
                                      queue=self._queue, changed=self.publish_status)
        self._inflight: list[tuple[Delivery, str]] = []
        self._mids_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        #: What the retained status reports as health: the link's own lines unless the
        #: service gives the whole gate's (its cache, its lane, its restarts).
        self.status_health: Callable[[], list[str]] = self.health
        self._backlog: list[_Waiting] = []
        self._backlog_lock = threading.RLock()
        self._status_at = -STATUS_MIN_S
        self._status_timer: threading.Timer | None = None
        self._status_lock = threading.Lock()
        # Heartbeat: when the transport last called back, and when we last probed it.
        self._heard = time.monotonic()
        self._probed: float | None = None

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

    def recheck(self) -> None:
        """Compare the cache with central's last head again (after a local wipe): a cache
        behind it is held until it has caught up."""
        self.handler.compare()
        self.publish_status()

    def health(self) -> list[str]:
        """One line per thing that is not as it should be (empty: all well). No ids."""
        out = []
        if self.state.notice:
            out.append(self.state.notice)
        if self.handler.behind:
            out.append(f"cache {self.handler.behind}")
        if self.handler.model_mismatch:
            out.append(self.handler.model_mismatch)
        with self._backlog_lock:
            waiting = len(self._backlog)
        if waiting:
            out.append(f"outbox unwritable: {waiting} messages waiting in RAM")
        if self.handler.unproven:
            out.append(f"{self.handler.unproven} deletion receipts wait for the disk "
                       "(revocations enforced in RAM)")
        faults = Counter(self.handler.errors)
        if self.transport is not None:
            faults.update(self.transport.errors)
        if faults:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(faults.items()))
            out.append(f"{sum(faults.values())} messages could not be handled ({kinds})")
        if self.transport is not None and not self.transport.alive():
            out.append("MQTT network thread not running")
        return out

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
        with self._status_lock:
            if self._status_timer is not None:
                self._status_timer.cancel()
                self._status_timer = None
        if self.transport is not None:
            self.transport.stop(self._status_message("offline"))
        self.handler.wipe()

    def restart(self) -> None:
        """Stop and start the transport again (its thread died or stalled)."""
        if self.transport is None:
            return
        log.warning("sync: restarting the MQTT link")
        self.transport.stop(None)
        self.start()

    def close(self) -> None:
        """Close the durable state (after :meth:`stop`)."""
        self.state.close()

    # --- the transport's callbacks -------------------------------------------------------

    def heartbeat(self) -> None:
        """Probe the link (the supervisor calls this now and then): a status publish that
        the broker must acknowledge. :meth:`stalled` tells whether anything came back."""
        if self.transport is not None and self.transport.wait_connected(0):
            if self._probed is None or self._probed < self._heard:
                self._probed = time.monotonic()
            self.publish_status()

    def stalled(self, after_s: float) -> bool:
        """True when the transport's thread is dead, or a probe went out more than
        ``after_s`` ago and the transport has not called back since."""
        if self.transport is None:
            return False
        if not self.transport.alive():
            return True
        probed = self._probed
        return probed is not None and self._heard < probed and \
            time.monotonic() - probed > after_s

    def connected(self) -> None:
        """(Re)connected: the status goes out, then whatever waits in the outbox."""
        self._heard = time.monotonic()
        self.handler.connection_restored()
        self.publish_status()
        self.flush()

    def disconnected(self, reason: str, *, expected: bool) -> None:
        """Unacknowledged messages stay in the outbox and go out again later."""
        self._heard = time.monotonic()
        self._probed = None
        with self._mids_lock:
            self._inflight.clear()
        if expected:
            log.info("sync: disconnected (stopping)")
        else:
            log.warning("sync: disconnected (%s); events queue in the outbox", reason)

    def message(self, topic: str, payload: bytes) -> None:
        """A message from the broker: the handler's."""
        self._heard = time.monotonic()
        self.handler.message(topic, payload)

    def acknowledged(self, mid: int, *, ok: bool) -> None:
        """The broker has ``mid``: forget it from the outbox and top up the stream.

        paho calls this with its outgoing-message lock held, so it only flushes without
        waiting: it must never wait for a thread that may be waiting for that lock.
        """
        self._heard = time.monotonic()
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
        try:
            depth = self.state.depth()
        except StateError:
            depth = 0  # the health line says why
        body = {"state": state, "cache": {"state": st.state, "version": st.version,
                                          "attendees": st.attendees, "templates": st.templates,
                                          "valid_until": st.valid_until},
                "outbox": depth + len(self._backlog), "resync_needed": self.resync_needed,
                "rejected": dict(self.rejected), "duplicates": self.duplicates,
                "health": [h[:400] for h in self.status_health()[:8]],
                "by_signer": dict(self.handler.by_signer.most_common(8))}
        return Message(self.topic("status"),
                       self._signed("status", "status", body, int(self.clock() * 1000)),
                       retain=True)

    def publish_status(self) -> None:
        """Retained status (counts only, no personal data), at most one per
        :data:`STATUS_MIN_S`: a later call in that window schedules one publish at its end."""
        if self.transport is None or not self.transport.wait_connected(0):
            return
        with self._status_lock:
            wait = self._status_at + STATUS_MIN_S - time.monotonic()
            if wait > 0:
                if self._status_timer is None:
                    self._status_timer = threading.Timer(wait, self._status_due)
                    self._status_timer.daemon = True
                    self._status_timer.start()
                return
            self._status_at = time.monotonic()
        self.transport.publish(self._status_message("online"))

    def _status_due(self) -> None:
        with self._status_lock:
            self._status_timer = None
        try:
            self.publish_status()
        except Exception as exc:  # a timer thread: log, never raise into nowhere
            log.error("sync: status publish failed (%s)", type(exc).__name__)

    def _queue(self, kind: str, mtype: str, body: dict[str, Any],
               entry: tuple[str, str, int] | None = None) -> str:
        message_id = str(body.get("event_id") or messages.uuid7())
        with self._backlog_lock:
            waiting = _Waiting(kind, mtype, body, message_id, entry)
            if self._backlog:
                self._hold(waiting)  # keep the order: after what already waits
            else:
                try:
                    self._write(waiting)
                except StateError as exc:
                    self.handler.fault("outbox", exc)
                    self._hold(waiting)
        self.flush()
        return message_id

    def _write(self, w: _Waiting) -> None:
        self.state.enqueue_next(f"out:{w.kind}", w.message_id, self.topic(w.kind),
                                lambda seq: self._signed(w.kind, w.mtype, w.body, seq),
                                w.entry)

    def _hold(self, w: _Waiting) -> None:
        if len(self._backlog) >= MAX_BACKLOG:
            # RAM is finite too: the oldest waiting message is given up, and counted.
            self._backlog.pop(0)
            self.handler.errors["outbox overflow"] += 1
        self._backlog.append(w)

    def retry_backlog(self) -> int:
        """Write what waits in RAM into the outbox, in order, after the deletion receipts
        whose revocations reached the disk meanwhile; returns how many still wait."""
        self.handler.prove()
        with self._backlog_lock:
            checkpointed = False
            while self._backlog:
                try:
                    self._write(self._backlog[0])
                except StateError:
                    if checkpointed:
                        break
                    # Space may have come back but be held by the write-ahead log.
                    checkpointed = True
                    try:
                        self.state.checkpoint()
                    except StateError:
                        break
                    continue
                self._backlog.pop(0)
            return len(self._backlog)

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
        if self._backlog and wait:
            self.retry_backlog()
        if self.transport is None or not self.transport.wait_connected(0) or \
                not self._flush_lock.acquire(blocking=wait):
            return
        try:
            with self._mids_lock:
                busy = {message_id for _, message_id in self._inflight}
            try:
                pending = self.state.pending(FLUSH_BATCH + len(busy))
            except StateError as exc:
                self.handler.fault("outbox", exc)
                pending = []
            for message_id, topic_name, payload in pending:
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
            try:
                self.state.ack(*done)
            except StateError as exc:
                # Not forgotten: sent again later, and central drops the duplicate by id.
                self.handler.fault("outbox", exc)

    # --- the entry log (anti-passback) ---------------------------------------------------

    def entered_since(self, attendee: str, since: float) -> list[tuple[str, int]]:
        """Entries of an attendee at any gate of the venue since ``since`` (anti-passback),
        including entries still waiting in RAM for the outbox."""
        with self._backlog_lock:
            waiting = [(w.entry[1], w.entry[2]) for w in self._backlog
                       if w.entry is not None and w.entry[0] == attendee and
                       w.entry[2] >= int(since * 1000)]
        return self.state.entries_since(attendee, int(since * 1000)) + waiting

    def forget_before(self, before: float) -> int:
        """Drop entry records older than ``before`` (they outlive no event)."""
        return self.state.forget_entries_before(int(before * 1000))

    def outbox_depth(self) -> int:
        """Messages waiting for the broker (in the outbox, and in RAM if it is unwritable)."""
        with self._backlog_lock:
            waiting = len(self._backlog)
        try:
            return self.state.depth() + waiting
        except StateError:
            return waiting
