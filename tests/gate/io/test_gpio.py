"""GPIO with gpiozero's MockFactory, passed in (never the process-wide default)."""

from __future__ import annotations

import dataclasses
import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from gate.config import GpioConfig, from_dict
from gate.errors import ConfigError, GateError
from gate.io.devices import GateIO
from gate.policy import Indication

CFG = GpioConfig()


@pytest.fixture
def factory():
    f = MockFactory()
    f.pin(CFG.emergency_pin).drive_high()  # fire loop closed: no alarm
    yield f
    f.reset()


def test_the_default_pin_factory_is_never_set():
    GateIO(CFG, pin_factory=MockFactory()).open().close()
    assert Device.pin_factory is None or not isinstance(Device.pin_factory, MockFactory)


def test_pins_are_claimed_by_open_not_by_the_constructor(factory):
    io = GateIO(CFG, pin_factory=factory)
    assert not io.is_open
    with pytest.raises(GateError, match="open"):
        io.open_flapper()
    io.close()  # nothing claimed: nothing to release
    assert io.open() is io and io.is_open
    io.close()
    assert not io.is_open


def test_inputs_follow_their_pins_and_polarity(factory):
    with GateIO(CFG, pin_factory=factory) as io:
        assert not (io.presence or io.passage or io.emergency)
        factory.pin(CFG.presence_pin).drive_high()
        time.sleep(CFG.presence_debounce_s + 0.05)
        assert io.presence
        factory.pin(CFG.passage_pin).drive_high()
        assert io.passage
        factory.pin(CFG.emergency_pin).drive_low()  # the loop opens: alarm
        assert io.emergency


def test_active_low_relay_and_sensors(factory):
    cfg = dataclasses.replace(CFG, relay_active_high=False, presence_active_high=False)
    factory.pin(cfg.presence_pin).drive_high()  # idle level of an active-low sensor
    with GateIO(cfg, pin_factory=factory) as io:
        relay = factory.pin(cfg.relay_pin)
        assert relay.state is True and not io.flapper_open  # inactive = high
        io.open_flapper()
        assert relay.state is False and io.flapper_open
        factory.pin(cfg.presence_pin).drive_low()
        time.sleep(cfg.presence_debounce_s + 0.05)
        assert io.presence


def test_lights_for_each_indication(factory):
    with GateIO(CFG, pin_factory=factory) as io:
        g, r, a = (factory.pin(p) for p in (CFG.green_pin, CFG.red_pin, CFG.amber_pin))
        expected = {Indication.WELCOME: (1, 0, 0), Indication.STAFFED: (0, 1, 0),
                    Indication.ONE_AT_A_TIME: (0, 0, 1), Indication.GUIDANCE: (0, 0, 1),
                    Indication.EMERGENCY: (1, 1, 0), Indication.OFF: (0, 0, 0)}
        for indication, states in expected.items():
            io.show(indication)
            assert (g.state, r.state, a.state) == tuple(bool(s) for s in states)


def test_buzzer_beeps_once_on_a_refusal(factory):
    cfg = dataclasses.replace(CFG, buzzer_pin=24)
    with GateIO(cfg, pin_factory=factory) as io:
        buzzer = factory.pin(24)
        io.show(Indication.STAFFED)
        time.sleep(0.05)
        assert buzzer.state is True
        time.sleep(0.3)
        assert buzzer.state is False


@pytest.mark.parametrize(("safe_state", "relay_after"), [("closed", False), ("open", True)])
def test_relay_goes_to_its_safe_state_on_every_exit(factory, safe_state, relay_after):
    cfg = dataclasses.replace(CFG, safe_state=safe_state)
    relay = factory.pin(cfg.relay_pin)
    def crash() -> None:
        with GateIO(cfg, pin_factory=factory) as io:
            if safe_state == "closed":
                io.open_flapper()
            else:
                io.close_flapper()
            raise RuntimeError("the loop crashed")

    with pytest.raises(RuntimeError):
        crash()
    assert relay.state is relay_after


def test_pins_must_not_collide():
    with pytest.raises(ConfigError, match="share one pin"):
        from_dict({"gpio": {"relay_pin": 17}})
    with pytest.raises(ConfigError, match=r"gpio\.relay_pin"):
        from_dict({"gpio": {"relay_pin": 99}})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_presence_counts_only_once_the_line_has_been_steady(factory):
    """A flicker shorter than ``presence_debounce_s`` is ignored; a steady line counts
    after it, measured from the edge (not from the next poll)."""
    clock = FakeClock()
    cfg = dataclasses.replace(CFG, presence_debounce_s=0.2)
    pin = factory.pin(cfg.presence_pin)
    with GateIO(cfg, pin_factory=factory, clock=clock) as io:
        pin.drive_high()
        clock.now += 0.1
        pin.drive_low()  # a 100 ms flicker
        clock.now += 0.3
        assert not io.presence
        pin.drive_high()
        clock.now += 0.19
        assert not io.presence
        clock.now += 0.02
        assert io.presence  # 210 ms after the edge, though first polled at 190 ms
        pin.drive_low()
        clock.now += 0.05
        assert io.presence  # a short drop-out (someone turning) keeps the lane busy
        pin.drive_high()
        clock.now += 0.5
        assert io.presence
        pin.drive_low()
        clock.now += 0.25
        assert not io.presence


def test_zero_debounce_follows_the_pin_at_once(factory):
    cfg = dataclasses.replace(CFG, presence_debounce_s=0.0)
    with GateIO(cfg, pin_factory=factory, clock=FakeClock()) as io:
        factory.pin(cfg.presence_pin).drive_high()
        assert io.presence
        factory.pin(cfg.presence_pin).drive_low()
        assert not io.presence
