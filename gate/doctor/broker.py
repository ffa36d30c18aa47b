"""Doctor check of the link to central: TLS handshake, CONNACK, and the broker's ACL.

The broker gives every connection its certificate's name as client id
(``use_username_as_clientid``): a connection with this gate's certificate *is* this
gate's session. So while the service runs, the doctor does not connect (it would take the
service's place); it reports the service's own view of the link. With the service
stopped, it resumes the gate's session (clean start off, the gate's session expiry),
acknowledges nothing (messages queued for the gate stay queued for it) and removes the
subscriptions it added before leaving. It then checks, from the gate's side, what the
venue ACL (``central.pki`` writes one) must enforce:

* a subscription to the gate's own ``templates`` topic is granted;
* another gate's topics are closed: a SUBACK refusal counts, but Mosquitto 2.0 grants
  every subscription and filters on delivery instead, so the doctor also publishes a
  probe under another gate's prefix (must be refused: PUBACK "Not authorized") and
  subscribes to every gate's retained ``status`` (a gate may read none, not even its
  own: anything arriving means the ACL lets it read other gates' topics).

The probe goes to ``gate/v1/{venue}/{other}/doctor``, a topic no gate or central reads,
so a broken ACL is detected without delivering anything to anyone.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gate.config import Config
from gate.credentials import locate
from gate.doctor.result import Result, fail, ok, skip
from sync.tls import client_context

NOT_AUTHORIZED = 0x87


@dataclass
class _Seen:
    """What paho's network thread reported, for the check's thread to wait on."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    connack: Any = None
    disconnected: Any = None
    subacks: dict[int, list[Any]] = field(default_factory=dict)
    pubacks: dict[int, Any] = field(default_factory=dict)
    unsubacks: set[int] = field(default_factory=set)
    foreign: list[str] = field(default_factory=list)

    def wait(self, what: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: what() or self.disconnected is not None,
                                      timeout) and what()


def _client(client_id: str, ctx: ssl.SSLContext, seen: _Seen, status_filter: str
            ) -> mqtt.Client:
    # manual_ack: what the broker queued for the gate is read here but never acknowledged,
    # so the broker delivers it again to the gate itself.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=True)
    client.tls_set_context(ctx)

    def note(update: Callable[[], None]) -> None:
        with seen.cond:
            update()
            seen.cond.notify_all()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        note(lambda: setattr(seen, "connack", reason))

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        note(lambda: setattr(seen, "disconnected", reason))

    def on_subscribe(_c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        note(lambda: seen.subacks.__setitem__(mid, codes))

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        note(lambda: seen.pubacks.__setitem__(mid, reason))

    def on_unsubscribe(_c: Any, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        note(lambda: seen.unsubacks.add(mid))

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Only the status probe counts; the gate's own templates may legitimately arrive.
        if mqtt.topic_matches_sub(status_filter, msg.topic):
            note(lambda: seen.foreign.append(msg.topic))

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    client.on_subscribe, client.on_publish = on_subscribe, on_publish
    client.on_message = on_message
    client.on_unsubscribe = on_unsubscribe
    return client


def tls_key_path(cfg: Config, credentials_dir: str | None) -> Path | None:
    """The TLS key the service would use: the credential first, else ``[sync] key_file``."""
    found = locate("mqtt-key.pem", key_file=cfg.sync.key_file,
                   credentials_dir=credentials_dir)
    return None if found is None else found.path


def _context(cfg: Config, key: Path) -> ssl.SSLContext:
    return client_context(cfg.sync.ca_file, cfg.sync.cert_file, key)


def other_gate(cfg: Config) -> str:
    """A gate id that is not ours, to probe the ACL with (a peer's, if any is pinned)."""
    for pin in cfg.sync.peer_keys:
        gate = pin.split("=", 1)[0]
        if gate != cfg.gate.id:
            return gate
    return "doctor-other" if cfg.gate.id != "doctor-other" else "doctor-other-2"


def from_service(service: dict[str, Any]) -> list[Result]:
    """The running service's own view of its link (the doctor does not connect then)."""
    b = service.get("broker")
    if not isinstance(b, dict) or not b.get("enabled"):
        return [skip("broker", "the service runs without a broker link")]
    acl = skip("acl", "not probed while the service holds the gate's session (stop it to "
                      "probe the ACL)")
    if b.get("connected"):
        return [ok("broker", "connected, as the running service reports"), acl]
    return [fail("broker", "the running service is not connected to the broker",
                 "journalctl -u gate for the reason; check [sync] host/port, the firewall "
                 "and the broker (systemctl status mosquitto on its host)"), acl]


def check_broker(cfg: Config, *, credentials_dir: str | None, timeout: float = 5.0,
                 key_bytes: bytearray | None = None,
                 service: dict[str, Any] | None = None) -> list[Result]:
    """Handshake, CONNACK and ACL, as described in the module docstring.

    ``key_bytes``: the TLS key when it is only available decrypted in memory (an encrypted
    credential); it is handed to OpenSSL through a memory file and zeroed. ``service``:
    the running service's status, when it runs (then nothing connects).
    """
    s = cfg.sync
    if not s.enabled:
        return [skip("broker", "sync disabled ([sync] enabled = false): no broker to reach")]
    if service is not None:
        if key_bytes is not None:
            key_bytes[:] = bytes(len(key_bytes))
        return from_service(service)
    where = f"{s.host}:{s.port}"
    key = tls_key_path(cfg, credentials_dir)
    try:
        if key_bytes is not None:
            ctx = _context_from_memory(cfg, key_bytes)
        elif key is None:
            return [fail("broker", "no TLS key (credential mqtt-key.pem or sync.key_file)",
                         "run `gatectl keys init` and enrol the gate at central")]
        else:
            ctx = _context(cfg, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return [fail("broker", f"TLS files unusable: {_one_line(exc)}",
                     "sync.ca_file / sync.cert_file must be the venue CA and this gate's "
                     "certificate from central, matching the gate's mqtt-key.pem")]
    seen = _Seen()
    status_filter = f"gate/v1/{cfg.gate.venue}/+/status"
    # The broker names the session after the certificate whatever id is asked for.
    client = _client(cfg.gate.id, ctx, seen, status_filter)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = s.session_expiry_s  # the gate's session lives on
    try:
        client.connect(s.host, s.port, keepalive=max(5, int(timeout * 2)), clean_start=False,
                       properties=props)
    except ssl.SSLCertVerificationError as exc:
        return [fail("broker", f"TLS handshake with {where} failed: {exc.verify_message} "
                               "(the broker's certificate is not from sync.ca_file's CA)",
                     "sync.ca_file must be the venue CA (ca.crt from central), and sync.host "
                     "a name on the broker's certificate")]
    except ssl.SSLError as exc:
        return [fail("broker", f"TLS handshake with {where} failed: {_one_line(exc)}",
                     "check the gate's certificate and key (central: add-gate) and the "
                     "broker's TLS listener")]
    except OSError as exc:
        return [fail("broker", f"cannot reach {where}: {exc.strerror or _one_line(exc)}",
                     "is the broker running (systemctl status mosquitto on the broker host)? "
                     "check [sync] host/port and the firewall")]
    client.loop_start()
    try:
        return _after_connect(client, seen, cfg, where=where, timeout=timeout,
                              status_filter=status_filter)
    finally:
        # Leave the gate's session as it was: only the gate's own subscriptions remain.
        added = [f"gate/v1/{cfg.gate.venue}/{other_gate(cfg)}/templates", status_filter]
        rc, mid = client.unsubscribe(added)
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            seen.wait(lambda: mid in seen.unsubacks, timeout)
        client.disconnect()
        client.loop_stop()


def _after_connect(client: mqtt.Client, seen: _Seen, cfg: Config, *, where: str,
                   timeout: float, status_filter: str) -> list[Result]:
    if not seen.wait(lambda: seen.connack is not None, timeout):
        why = f"closed the connection ({seen.disconnected})" if seen.disconnected \
            else f"sent no CONNACK within {timeout:g} s"
        return [fail("broker", f"{where} {why}: it refused this gate's certificate (another "
                               "CA, or expired)",
                     "install the certificate central issued for this gate (add-gate) and "
                     "the venue's ca.crt")]
    if seen.connack.is_failure:
        return [fail("broker", f"{where} refused the connection: {seen.connack}",
                     "the broker must accept certificate identities "
                     "(use_identity_as_username true) for this venue")]
    version = _tls_version(client)
    link = ok("broker", f"TLS handshake ({version}) and CONNACK from {where}")
    venue, gate, other = cfg.gate.venue, cfg.gate.id, other_gate(cfg)
    own = _subscribe(client, seen, f"gate/v1/{venue}/{gate}/templates", timeout)
    if own is None or own.is_failure:
        return [link, fail("acl", f"subscription to its own templates topic: {own or 'no '}"
                                  "SUBACK", "add this gate to the broker ACL (central: "
                                            "add-gate), then reload the broker")]
    theirs = _subscribe(client, seen, f"gate/v1/{venue}/{other}/templates", timeout)
    sub_refused = theirs is not None and theirs.is_failure
    _subscribe(client, seen, status_filter, timeout)
    info = client.publish(f"gate/v1/{venue}/{other}/doctor", b"doctor probe", qos=1)
    seen.wait(lambda: info.mid in seen.pubacks, timeout)
    # Retained messages follow their SUBACK and come before this PUBACK on the one
    # connection, so anything the ACL lets through has arrived by now.
    puback = seen.pubacks.get(info.mid)
    fix = ("regenerate the broker ACL from central (central.pki writes one block per gate: "
           "its own topics and +/events only), then reload the broker")
    if puback is None:
        return [link, fail("acl", "no PUBACK for the probe message", fix)]
    if puback.value != NOT_AUTHORIZED:
        return [link, fail("acl", f"this gate may publish under another gate's topics "
                                  f"(gate/v1/{venue}/{other}/…: {puback})", fix)]
    if seen.foreign:
        gates = sorted({t.split("/")[3] for t in seen.foreign})
        return [link, fail("acl", f"this gate can read gate status it must not see "
                                  f"({', '.join(gates)})", fix)]
    how = "SUBACK refused" if sub_refused else "publish refused, nothing foreign readable"
    return [link, ok("acl", f"own topic granted; another gate's topics closed ({how})")]


def _subscribe(client: mqtt.Client, seen: _Seen, topic: str, timeout: float) -> Any:
    _, mid = client.subscribe(topic, qos=1)
    if mid is None or not seen.wait(lambda: mid in seen.subacks, timeout):
        return None
    return seen.subacks[mid][0]


def _tls_version(client: mqtt.Client) -> str:
    sock = client.socket()
    return str(sock.version()) if isinstance(sock, ssl.SSLSocket) else "TLS"


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _context_from_memory(cfg: Config, key_bytes: bytearray) -> ssl.SSLContext:
    # OpenSSL loads keys from paths only: a memfd gives it one that never touches storage.
    fd = os.memfd_create("mqtt-key", os.MFD_CLOEXEC)
    try:
        os.write(fd, key_bytes)
        return _context(cfg, Path(f"/proc/self/fd/{fd}"))
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)
        key_bytes[:] = bytes(len(key_bytes))
