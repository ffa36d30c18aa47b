"""The link's transport contract: how the gate reaches the broker.

The gate's link (:class:`gate.link.link.GateLink`) decides what to send and what received
messages mean; a :class:`Transport` only moves bytes. :class:`gate.link.mqtt.MqttTransport`
(paho-mqtt, MQTT 5, mutual TLS) is the one the gate runs; a transport is swapped, not
special-cased. A transport:

* **must** call the :class:`Listener` back from its own thread: ``connected`` after every
  (re)connection once its subscriptions are in place, ``disconnected`` when the link
  drops (``expected`` when :meth:`Transport.stop` asked for it), ``message`` for every
  message received and ``acknowledged`` when the broker has a published message;
* **must** reconnect by itself until stopped, keeping the session (QoS 1 messages the
  broker queued while the gate was away arrive afterwards);
* **must** publish the ``will`` given to :meth:`Transport.start` if the gate vanishes,
  and the ``farewell`` given to :meth:`Transport.stop` on the way out;
* **may** refuse a publish while disconnected (return a delivery whose ``rc`` is not 0):
  nothing is lost, because everything that matters waits in the durable outbox;
* **must** say whether its network thread runs (:meth:`Transport.alive`), so that a
  supervisor can restart a dead one rather than report "connected" forever; and must not
  let an exception from the listener end that thread.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Subscription:
    """A topic filter; ``no_local``: the broker does not echo our own messages back."""

    topic: str
    no_local: bool = False


@dataclass(frozen=True)
class Message:
    """A message to publish (QoS 1)."""

    topic: str
    payload: bytes
    retain: bool = False


class Delivery(Protocol):
    """A publish handed to the transport: ``rc`` 0 when accepted, ``mid`` its id."""

    @property
    def mid(self) -> int:
        """The message id."""

    @property
    def rc(self) -> int:
        """0 when the transport accepted the message."""

    def is_published(self) -> bool:
        """The broker acknowledged it."""


class Listener(Protocol):
    """What a transport reports to the link."""

    def connected(self) -> None:
        """(Re)connected and subscribed."""

    def disconnected(self, reason: str, *, expected: bool) -> None:
        """The connection dropped (or was closed by :meth:`Transport.stop`)."""

    def message(self, topic: str, payload: bytes) -> None:
        """A message arrived."""

    def acknowledged(self, mid: int, *, ok: bool) -> None:
        """The broker answered the publish ``mid`` (``ok``: it has it)."""


class Transport(abc.ABC):
    """A connection to the broker; see the module docstring for the contract."""

    def __init__(self) -> None:
        #: Exceptions a listener callback let out (contained by the transport), by kind.
        self.errors: dict[str, int] = {}

    @abc.abstractmethod
    def start(self, listener: Listener, subscriptions: Sequence[Subscription],
              will: Message) -> None:
        """Connect in the background and keep reconnecting."""

    @abc.abstractmethod
    def publish(self, message: Message) -> Delivery:
        """Hand one QoS 1 message over; returns at once."""

    @abc.abstractmethod
    def wait_connected(self, timeout: float) -> bool:
        """True once connected (waits up to ``timeout`` seconds)."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """True while started and its network thread runs (False before start)."""

    @abc.abstractmethod
    def stop(self, farewell: Message | None = None) -> None:
        """Publish ``farewell`` if connected, disconnect, stop reconnecting."""
