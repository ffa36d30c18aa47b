"""A real Mosquitto for tests: mutual TLS and per-client ACLs from a venue of ``central.pki``.

Not a test module: fixtures build on it. ``Broker`` runs ``mosquitto -c`` on a free
loopback port and can stop, crash (SIGKILL) and restart it on the same port; ``connect``
opens a paho-mqtt 2 (MQTT v5) client as ``central``, ``admin`` or a gate, with that
identity's certificate; ``subscribe`` and ``publish`` wait for the broker's answer and
return its reason codes, so a test can tell "denied" from "not yet delivered".
"""

from __future__ import annotations

import queue
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from central.broker import START_TIMEOUT, Broker, free_port, listener, mosquitto_binary
from central.errors import BrokerError

__all__ = ["START_TIMEOUT", "Broker", "BrokerError", "close", "connect", "disconnections",
           "free_port", "identity_files", "inbox", "listener", "mosquitto_binary",
           "open_client", "publish", "subscribe"]


class _Acks:
    """SUBACK and PUBACK reason codes by message id, filled by paho's network thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.suback: dict[int, list[ReasonCode]] = {}
        self.puback: dict[int, ReasonCode] = {}
        self.unrouted: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        #: Every disconnection after the CONNACK (reason codes, as text), in order.
        self.disconnects: list[str] = []

    def on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: list[ReasonCode],
                     _p: Properties) -> None:
        with self.cond:
            self.suback[mid] = codes
            self.cond.notify_all()

    def on_publish(self, _c: mqtt.Client, _u: Any, mid: int, code: ReasonCode,
                   _p: Properties) -> None:
        with self.cond:
            self.puback[mid] = code
            self.cond.notify_all()


def identity_files(venue_dir: Path, who: str) -> tuple[Path, Path]:
    """``(client.crt, client.key)`` of ``central``, ``admin`` or a gate id."""
    venue_dir = Path(venue_dir)
    d = venue_dir / who if who in ("central", "admin") else venue_dir / "gates" / who
    if not (d / "client.crt").is_file():
        raise BrokerError(f"{who!r} has no client certificate in {venue_dir}")
    return d / "client.crt", d / "client.key"


def open_client(host: str, port: int, *, client_id: str, ca_certs: Path | None,
                certfile: Path | None = None, keyfile: Path | None = None,
                clean_start: bool = True, session_expiry: int | None = None,
                timeout: float = 10.0) -> mqtt.Client:
    """A connected, looping MQTT v5 client; ``ca_certs=None`` means plain TCP.

    Raises BrokerError when the TLS handshake fails, the broker refuses the CONNECT or
    closes the connection, or no CONNACK arrives within ``timeout``. ``session_expiry``
    defaults to 0 with ``clean_start`` and to an hour without: in MQTT v5 a session with
    expiry 0 ends at disconnect, whatever clean_start said.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5)
    if ca_certs is not None:
        client.tls_set(ca_certs=str(ca_certs), certfile=str(certfile) if certfile else None,
                       keyfile=str(keyfile) if keyfile else None,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    acks = _Acks()
    client.user_data_set(acks)
    client.on_subscribe = acks.on_subscribe
    client.on_publish = acks.on_publish
    client.on_message = lambda _c, _u, msg: acks.unrouted.put(msg)
    done = threading.Event()
    outcome: list[object] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        outcome.append(code)
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        if done.is_set():  # after the CONNACK: the broker (or we) ended the connection
            acks.disconnects.append(str(code))
        else:
            outcome.append(f"disconnected: {code}")
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = (session_expiry if session_expiry is not None
                                   else 0 if clean_start else 3600)
    try:
        client.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
    except OSError as exc:  # ssl.SSLError included: a TLS 1.2 handshake fails right here
        raise BrokerError(f"{client_id}: cannot connect to {host}:{port}: {exc}") from exc
    client.loop_start()
    done.wait(timeout)
    first = outcome[0] if outcome else "no CONNACK"
    if not (isinstance(first, ReasonCode) and not first.is_failure):
        # Stop paho's automatic reconnects before reporting.
        client.loop_stop()
        client.disconnect()
        # With TLS 1.3 the server checks the client certificate after the client's side
        # of the handshake is done: a rejected certificate is only a disconnect here.
        raise BrokerError(f"{client_id}: broker refused the connection: {first} "
                          "(the broker's log says why)")
    return client


def connect(venue_dir: Path, who: str, *, client_id: str, clean_start: bool = True,
            port: int | None = None, session_expiry: int | None = None,
            timeout: float = 10.0) -> mqtt.Client:
    """A client connected as ``who`` (``central``, ``admin`` or a gate id) with its cert.

    Host and port come from the venue's mosquitto.conf (``Broker`` rewrites it).
    """
    venue_dir = Path(venue_dir)
    host, conf_port = listener(venue_dir / "broker" / "mosquitto.conf")
    cert, key = identity_files(venue_dir, who)
    return open_client(host, port or conf_port, client_id=client_id,
                       ca_certs=venue_dir / "ca" / "ca.crt", certfile=cert, keyfile=key,
                       clean_start=clean_start, session_expiry=session_expiry,
                       timeout=timeout)


def inbox(client: mqtt.Client) -> queue.Queue[mqtt.MQTTMessage]:
    """Messages no ``subscribe`` queue matched, e.g. a persistent session's backlog.

    The broker sends that backlog right after CONNACK, before any ``subscribe`` call of
    the new connection could route it.
    """
    acks: _Acks = client.user_data_get()
    return acks.unrouted


def disconnections(client: mqtt.Client) -> list[str]:
    """Why the connection ended each time since the CONNACK (a session taken over by
    another client with the same id shows up here); empty while it never dropped.

    paho reconnects by itself after a drop; this list keeps the drops.
    """
    acks: _Acks = client.user_data_get()
    return acks.disconnects


def close(client: mqtt.Client) -> None:
    """Disconnect cleanly and stop the network thread."""
    client.disconnect()
    client.loop_stop()


def subscribe(client: mqtt.Client, topic: str, *, qos: int = 1,
              timeout: float = 5.0) -> tuple[queue.Queue[mqtt.MQTTMessage], ReasonCode]:
    """Subscribe and wait for the SUBACK; returns a queue of matching messages and its code.

    The code is not checked: Mosquitto grants subscriptions the ACL will never serve.
    """
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client.message_callback_add(topic, lambda _c, _u, msg: inbox.put(msg))
    acks: _Acks = client.user_data_get()
    rc, mid = client.subscribe(topic, qos)
    if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
        raise BrokerError(f"subscribe {topic}: {mqtt.error_string(rc)}")
    with acks.cond:
        if not acks.cond.wait_for(lambda: mid in acks.suback, timeout):
            raise BrokerError(f"subscribe {topic}: no SUBACK within {timeout} s")
        return inbox, acks.suback[mid][0]


def publish(client: mqtt.Client, topic: str, payload: bytes, *, qos: int = 1,
            retain: bool = False, timeout: float = 5.0) -> ReasonCode:
    """Publish and wait for the PUBACK (QoS 1/2); returns the broker's reason code."""
    acks: _Acks = client.user_data_get()
    info = client.publish(topic, payload, qos=qos, retain=retain)
    with acks.cond:
        if not acks.cond.wait_for(lambda: info.mid in acks.puback, timeout):
            raise BrokerError(f"publish {topic}: no PUBACK within {timeout} s")
        return acks.puback[info.mid]
