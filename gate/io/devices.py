"""The lane's hardware as gpiozero devices, with the pin factory passed in.

Inputs: presence (PIR, radar or light curtain; debounced), passage (beam break after the
flapper), emergency (fire panel: forces the flapper open and pauses capture). Outputs:
the flapper relay, indicator lights (green "welcome", red "use the staffed lane", amber
"one at a time / follow the prompt") and an optional buzzer. Pins and polarities come
from ``[gpio]``. Nothing here imports a GPIO library other than gpiozero, and gpiozero
picks its own backend (lgpio, RPi.GPIO…) unless a factory is given: tests and the
simulator pass ``MockFactory``.

Constructing a :class:`GateIO` touches no pin; :meth:`GateIO.open` claims them (the relay
starts in its safe state). The relay goes to its configured safe state on
:meth:`GateIO.safe`, on :meth:`GateIO.close` and when the object is used as a context
manager and the block exits by any path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gpiozero import LED, Buzzer, DigitalInputDevice, OutputDevice
from gpiozero.exc import GPIOZeroError
from gpiozero.pins.mock import MockFactory

from gate.config import GpioConfig
from gate.errors import GateError
from gate.policy import Indication

_LIGHTS = {
    Indication.OFF: (False, False, False),
    Indication.WELCOME: (True, False, False),
    Indication.STAFFED: (False, True, False),
    Indication.ONE_AT_A_TIME: (False, False, True),
    Indication.GUIDANCE: (False, False, True),
    Indication.EMERGENCY: (True, True, False),
}


class Debounced:
    """A polled input that changes only after the raw value has held for ``hold_s``.

    gpiozero's ``bounce_time`` suppresses edges after an edge, which would let a single
    spike through and then hide its falling edge; a presence sensor wants the opposite:
    a person counts once the line has been steady, and a flicker is ignored.
    """

    def __init__(self, hold_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s, self.clock = hold_s, clock
        self._stable = self._raw = False
        self._since = -float("inf")

    def edge(self, raw: bool) -> None:
        """The line changed (an edge callback): the hold starts now, not at the next poll."""
        if raw != self._raw:
            self._raw, self._since = raw, self.clock()

    def update(self, raw: bool) -> bool:
        """Feed the polled reading; returns the debounced value."""
        self.edge(raw)  # an edge the callbacks missed counts from now
        if self.clock() - self._since >= self.hold_s:
            self._stable = raw
        return self._stable


def idle_mock_factory(cfg: GpioConfig) -> Any:
    """gpiozero's ``MockFactory`` with the inputs at their idle levels: nobody present,
    beam unbroken, fire loop healthy. For simulation (``gpio.backend = "mock"``) and tests;
    a bare factory would read a low emergency line, which with the usual active-low fire
    loop means "alarm"."""
    factory = MockFactory()
    levels = [(cfg.presence_pin, not cfg.presence_active_high),
              (cfg.passage_pin, not cfg.passage_active_high)]
    if cfg.emergency_pin:
        levels.append((cfg.emergency_pin, not cfg.emergency_active_high))
    for pin, high in levels:
        if high:
            factory.pin(pin).drive_high()
        else:
            factory.pin(pin).drive_low()
    return factory


class GateIO:
    """The lane's inputs and outputs; :meth:`open` claims the pins."""

    def __init__(self, cfg: GpioConfig, *, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.indication = Indication.OFF
        self._factory = pin_factory
        self._clock = clock
        self._devices: list[Any] = []
        self._presence: Any = None
        self._presence_filter = Debounced(cfg.presence_debounce_s, clock)
        self._passage: Any = None
        self._emergency: Any = None
        self._relay: Any = None
        self._lights: list[Any] = []
        self._buzzer: Any = None

    @property
    def is_open(self) -> bool:
        """The pins are claimed."""
        return bool(self._devices)

    def open(self) -> GateIO:
        """Claim the pins: inputs, then the relay in its safe state, lights and buzzer.

        gpiozero's own errors (a pin in use, no pin library) become one-line GateErrors.
        """
        if self._devices:
            return self
        cfg, factory = self.cfg, self._factory

        def inp(pin: int, active_high: bool) -> Any:
            # pull_up=None + active_state: the sensor drives the line both ways.
            return DigitalInputDevice(pin, pull_up=None, active_state=active_high,
                                      pin_factory=factory)

        devices: list[Any] = []
        try:
            self._presence = inp(cfg.presence_pin, cfg.presence_active_high)
            devices.append(self._presence)
            self._presence.when_activated = lambda: self._presence_filter.edge(True)
            self._presence.when_deactivated = lambda: self._presence_filter.edge(False)
            self._passage = inp(cfg.passage_pin, cfg.passage_active_high)
            devices.append(self._passage)
            self._emergency = inp(cfg.emergency_pin, cfg.emergency_active_high) \
                if cfg.emergency_pin else None
            devices.append(self._emergency)
            self._relay = OutputDevice(cfg.relay_pin, active_high=cfg.relay_active_high,
                                       initial_value=self._safe_open, pin_factory=factory)
            devices.append(self._relay)
            self._lights = [LED(p, pin_factory=factory) if p else None
                            for p in (cfg.green_pin, cfg.red_pin, cfg.amber_pin)]
            devices += self._lights
            self._buzzer = Buzzer(cfg.buzzer_pin, pin_factory=factory) \
                if cfg.buzzer_pin else None
            devices.append(self._buzzer)
        except BaseException as exc:
            for d in devices:
                if d is not None:
                    d.close()
            if isinstance(exc, GPIOZeroError):  # pin busy, no pin library: one line
                raise GateError(f"GPIO: {exc} (check [gpio] pins and backend)") from None
            raise
        self._devices = [d for d in devices if d is not None]
        return self

    def _need(self) -> None:
        if not self._devices:
            raise GateError("gpio: pins not claimed (GateIO.open() first)")

    @property
    def _safe_open(self) -> bool:
        return self.cfg.safe_state == "open"

    @property
    def presence(self) -> bool:
        """Someone is standing in the lane (steady for ``presence_debounce_s``)."""
        self._need()
        return self._presence_filter.update(bool(self._presence.is_active))

    @property
    def passage(self) -> bool:
        """The beam after the flapper is broken (someone is walking through)."""
        self._need()
        return bool(self._passage.is_active)

    @property
    def emergency(self) -> bool:
        """The fire panel demands an open lane."""
        self._need()
        return bool(self._emergency is not None and self._emergency.is_active)

    @property
    def flapper_open(self) -> bool:
        """The relay holds the flapper open."""
        self._need()
        return bool(self._relay.is_active)

    def open_flapper(self) -> None:
        """Energise the relay: the flapper opens."""
        self._need()
        self._relay.on()

    def close_flapper(self) -> None:
        """Release the relay: the flapper closes."""
        self._need()
        self._relay.off()

    def safe(self) -> None:
        """Relay to the configured safe state (closed, or open where fire code wants)."""
        if self._relay is None:
            return  # nothing claimed: nothing to move
        if self._safe_open:
            self._relay.on()
        else:
            self._relay.off()

    def show(self, indication: Indication) -> None:
        """Set the lights (and beep once on a refusal, if there is a buzzer)."""
        self._need()
        for light, on in zip(self._lights, _LIGHTS[indication], strict=True):
            if light is not None:
                light.value = on
        if self._buzzer is not None and indication is Indication.STAFFED and \
                self.indication is not Indication.STAFFED:
            self._buzzer.beep(on_time=0.15, off_time=0.1, n=1)
        self.indication = indication

    def close(self) -> None:
        """Safe state, lights off, release the pins."""
        if not self._devices:
            return
        try:
            self.safe()
            self.show(Indication.OFF)
        finally:
            for device in self._devices:
                device.close()
            self._devices = []
            self._relay = None

    def __enter__(self) -> GateIO:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
