"""``gatectl gpio test``: check the lane's wiring: relay, lights, buzzer and inputs.

Each step names the device and its pin so a technician can follow the wiring. The relay
pulse moves the flapper, so it asks first (``-y`` skips the question). Whatever happens,
Ctrl-C or a fault included, the relay ends in its configured safe state and every light
is off: :class:`~gate.io.devices.GateIO` is used as a context manager and its ``close``
does exactly that. The running service holds the pins, so this refuses while it runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

from gate.cli.guard import ensure_stopped
from gate.config import Config, GpioConfig
from gate.exitcodes import EXIT_CANCELLED
from gate.io.devices import GateIO, idle_mock_factory
from gate.policy import Indication
from gate.tools.ask import confirm

#: Input polling period: fast enough to see a hand waved through a beam.
POLL_S = 0.01
DEFAULT_INPUT_S = 10.0

#: What each light means on the lane, in the order they are tried.
_LIGHTS = (("green", "green_pin", Indication.WELCOME, "welcome: the flapper is open"),
           ("red", "red_pin", Indication.STAFFED, "please use the staffed lane"),
           ("amber", "amber_pin", Indication.ONE_AT_A_TIME, "one at a time / follow the "
                                                            "prompt"))


def add_parser(sub: Any) -> None:
    """Register ``gpio test``."""
    p = sub.add_parser("gpio", help="the lane's GPIO: relay, lights, inputs",
                       description="Diagnostics for the lane's GPIO wiring.")
    gs = p.add_subparsers(dest="gpio_command", metavar="ACTION")
    gs.required = True
    t = gs.add_parser("test", help="pulse the relay, light each indicator, watch the inputs",
                      description="Pulse the flapper relay, light each indicator (and the "
                                  "buzzer, if fitted) naming its pin, and show the inputs "
                                  "live. With no option, does all three. The relay pulse "
                                  "asks first unless -y. Refuses while the gate service "
                                  "runs; leaves the relay in its safe state and the lights "
                                  "off on every exit.")
    t.add_argument("--relay", action="store_true", help="pulse the flapper relay")
    t.add_argument("--lights", action="store_true", help="light each indicator in turn")
    t.add_argument("--inputs", type=_seconds, default=None, metavar="SECONDS",
                   help="show presence, passage and emergency inputs for SECONDS "
                        f"(default {DEFAULT_INPUT_S:g} when running every step)")
    t.add_argument("--pulse", type=_seconds, default=1.0, metavar="SECONDS",
                   help="how long the relay and each light stay on (default 1)")
    t.add_argument("-y", "--yes", action="store_true", help="do not ask before the pulse")
    t.add_argument("--json", action="store_true", help="one JSON object per step or change")
    t.set_defaults(run=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 3600.0:
        raise argparse.ArgumentTypeError(f"must be seconds above 0 and up to 3600, got {text!r}")
    return value


def run(args: argparse.Namespace, cfg: Config, *, pin_factory: Any = None) -> int:
    """Run the selected steps. ``pin_factory`` is gpiozero's factory to use (tests pass a
    ``MockFactory``); by default the configured backend's."""
    everything = not (args.relay or args.lights or args.inputs is not None)
    relay, lights = args.relay or everything, args.lights or everything
    inputs_s = args.inputs if args.inputs is not None else \
        (DEFAULT_INPUT_S if everything else None)
    g = cfg.gpio
    ensure_stopped(cfg, "the GPIO pins")
    if relay and not confirm(f"{_pulse_action(g).capitalize()} the flapper for "
                             f"{args.pulse:g} s (relay pin {g.relay_pin})?",
                             assume_yes=args.yes):
        print("cancelled: nothing was moved")
        return EXIT_CANCELLED
    out = _Out(json_lines=args.json)
    factory, owned = pin_factory, False
    if factory is None and g.backend == "mock":
        factory, owned = idle_mock_factory(g), True
    try:
        with _open_io(g, factory) as io:
            if relay:
                pulse_relay(io, g, args.pulse, out)
            if lights:
                light_each(io, g, args.pulse, out)
            if inputs_s is not None:
                watch_inputs(io, g, inputs_s, out)
    finally:
        if owned:
            factory.close()
    return 0


def _open_io(g: GpioConfig, factory: Any) -> GateIO:
    """The lane's devices (gpiozero's own errors come as one-line GateErrors)."""
    return GateIO(g, pin_factory=factory).open()


def _pulse_action(g: GpioConfig) -> str:
    """What a pulse does to the flapper: the opposite of its safe state."""
    return "open" if g.safe_state == "closed" else "close"


def _hold(seconds: float) -> None:
    """Keep an output on for a moment (a function, so a test can interrupt it)."""
    time.sleep(seconds)


def pulse_relay(io: GateIO, g: GpioConfig, seconds: float, out: _Out) -> None:
    """Move the flapper out of its safe state for ``seconds``, then back."""
    action = _pulse_action(g)
    out.emit({"step": "relay", "pin": g.relay_pin, "flapper": action},
             f"relay (pin {g.relay_pin}): flapper {action} for {seconds:g} s")
    try:
        if action == "open":
            io.open_flapper()
        else:
            io.close_flapper()
        _hold(seconds)
    finally:
        io.safe()
    out.emit({"step": "relay", "pin": g.relay_pin, "flapper": g.safe_state, "safe": True},
             f"relay (pin {g.relay_pin}): back to {g.safe_state} (safe state)")


def light_each(io: GateIO, g: GpioConfig, seconds: float, out: _Out) -> None:
    """Light green, red and amber in turn, each alone; the buzzer beeps with red."""
    for name, attr, indication, meaning in _LIGHTS:
        pin = getattr(g, attr)
        if not pin:
            out.emit({"step": "light", "light": name, "fitted": False},
                     f"{name} light: not fitted ({attr} = 0)")
            continue
        extra = f"; buzzer (pin {g.buzzer_pin}) beeps once" \
            if indication is Indication.STAFFED and g.buzzer_pin else ""
        out.emit({"step": "light", "light": name, "pin": pin, "on": True,
                  "buzzer": bool(extra)},
                 f"{name} light (pin {pin}, {meaning}) on{extra}")
        try:
            # GateIO shows indications, not single pins: each of these lights exactly one
            # lamp, and the staffed-lane sign also beeps, as it does for a refusal.
            io.show(indication)
            _hold(seconds)
        finally:
            io.show(Indication.OFF)
        out.emit({"step": "light", "light": name, "pin": pin, "on": False},
                 f"{name} light (pin {pin}) off")
    if not g.buzzer_pin:
        out.emit({"step": "buzzer", "fitted": False}, "buzzer: not fitted (buzzer_pin = 0)")


def _inputs(io: GateIO) -> dict[str, bool]:
    return {"presence": io.presence, "passage": io.passage, "emergency": io.emergency}


def _input_pins(g: GpioConfig) -> dict[str, int]:
    return {"presence": g.presence_pin, "passage": g.passage_pin,
            "emergency": g.emergency_pin}


_MEANING = {("presence", True): "someone in the lane", ("presence", False): "lane empty",
            ("passage", True): "beam broken", ("passage", False): "beam clear",
            ("emergency", True): "FIRE ALARM: lane forced open",
            ("emergency", False): "fire loop healthy"}


def watch_inputs(io: GateIO, g: GpioConfig, seconds: float, out: _Out) -> None:
    """Show the inputs for ``seconds``: their state now, then every change, timestamped.
    Ctrl-C ends the watch early (the announced way to stop, not an abort)."""
    out.emit({"step": "inputs", "seconds": seconds},
             f"inputs for {seconds:g} s (presence is debounced by "
             f"{g.presence_debounce_s:g} s; Ctrl-C to stop early):")
    try:
        _watch(io, _input_pins(g), seconds, out)
    except KeyboardInterrupt:
        out.emit({"step": "inputs", "stopped": True}, "  stopped")


def _watch(io: GateIO, pins: dict[str, int], seconds: float, out: _Out) -> None:
    start = time.monotonic()
    last: dict[str, bool] = {}
    while True:
        now = time.monotonic()
        for name, active in _inputs(io).items():
            if not pins[name]:
                if name not in last:
                    last[name] = False
                    out.emit({"step": "input", "input": name, "fitted": False},
                             f"  {name:<10} not fitted")
                continue
            if last.get(name) is not active:
                last[name] = active
                stamp = dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]
                out.emit({"step": "input", "input": name, "pin": pins[name],
                          "active": active, "t": round(now - start, 3)},
                         f"  {stamp} +{now - start:6.2f} s  {name:<10} "
                         f"{'ON ' if active else 'off'} (pin {pins[name]}: "
                         f"{_MEANING[name, active]})")
        if now - start >= seconds:
            break
        time.sleep(POLL_S)


class _Out:
    """Human lines, or one JSON object per line."""

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines

    def emit(self, record: dict[str, Any], line: str) -> None:
        print(json.dumps(record, sort_keys=True) if self.json_lines else line, flush=True)
