"""The link's MQTT transport: paho-mqtt 2 (VERSION2 callbacks), MQTT 5, mutual TLS.

Clean start off and a session expiry, so QoS 1 messages the broker queued while the gate
was off arrive after a restart; ``connect_async`` + ``loop_start`` reconnect by themselves
with back-off (1-30 s). The only module of the gate's link that imports paho; see
:mod:`gate.link.base` for the contract.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gate.link.base import Delivery, Listener, Message, Subscription, Transport
from gate.logs import Throttle
from sync.tls import client_context, no_delay

log = logging.getLogger("gate.link")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the broker."""

    host: str
    port: int
    ca_file: str
    cert_file: str
    key_file: str
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400


class MqttTransport(Transport):
    """One paho client for one gate (its client id is the gate id)."""

    def __init__(self, endpoint: Endpoint, *, client_id: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.client_id = client_id
        self.client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._stopping = False
        self._listener: Listener | None = None
        self._subscriptions: Sequence[Subscription] = ()
        self._throttle = Throttle(log)

    def start(self, listener: Listener, subscriptions: Sequence[Subscription],
              will: Message) -> None:
        """Connect in the background; reconnects by itself."""
        e = self.endpoint
        self._listener, self._subscriptions = listener, subscriptions
        self._stopping = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        client.tls_set_context(client_context(e.ca_file, e.cert_file, e.key_file))
        client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self.client = client
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = e.session_expiry_s
        client.connect_async(e.host, e.port, e.keepalive_s, clean_start=False,
                             properties=props)
        client.loop_start()

    def publish(self, message: Message) -> Delivery:
        """Hand one QoS 1 message to paho (it keeps it in RAM until acknowledged)."""
        assert self.client is not None, "publish before start"
        info: Delivery = self.client.publish(message.topic, message.payload, qos=1,
                                             retain=message.retain)
        return info

    def wait_connected(self, timeout: float) -> bool:
        """True once connected."""
        return self._connected.wait(timeout)

    def alive(self) -> bool:
        """True while paho's network thread runs (paho has no public way to ask)."""
        thread = getattr(self.client, "_thread", None) if self.client is not None else None
        return isinstance(thread, threading.Thread) and thread.is_alive()

    def _guard(self, what: str, call: Callable[[], None]) -> None:
        """Run a listener callback; whatever it raises stays here, so paho's thread lives."""
        try:
            call()
        except Exception as exc:
            kind = type(exc).__name__
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self._throttle.log(logging.ERROR, kind, "sync: %s callback failed (%s)", what,
                               kind)

    def stop(self, farewell: Message | None = None) -> None:
        """Publish ``farewell`` (when connected), disconnect, stop the network thread."""
        if self.client is None:
            return
        if farewell is not None and self._connected.is_set():
            info = self.client.publish(farewell.topic, farewell.payload, qos=1,
                                       retain=farewell.retain)
            info.wait_for_publish(2.0)
        self._stopping = True  # our own disconnect: not worth a warning
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho's callbacks (its network thread) -----------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                    _properties: Any) -> None:
        if reason.is_failure:
            log.error("sync: broker refused the connection (%s)", reason)
            return
        client.subscribe([(s.topic, SubscribeOptions(qos=1, noLocal=s.no_local))
                          for s in self._subscriptions])
        no_delay(client.socket())
        self._connected.set()
        log.info("sync: connected to %s:%d", self.endpoint.host, self.endpoint.port)
        if self._listener is not None:
            self._guard("connect", self._listener.connected)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _properties: Any) -> None:
        self._connected.clear()
        listener = self._listener
        if listener is not None:
            self._guard("disconnect",
                        lambda: listener.disconnected(str(reason), expected=self._stopping))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        listener = self._listener
        if listener is not None:
            self._guard("message", lambda: listener.message(msg.topic, bytes(msg.payload)))

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any,
                    _properties: Any) -> None:
        listener = self._listener
        if listener is not None:
            self._guard("publish", lambda: listener.acknowledged(mid, ok=not reason.is_failure))
