"""``gatectl gpio test`` on gpiozero's MockFactory, passed in (never the process-wide
default): relay pulse timing and safe state on every exit, each light, input changes,
the confirmation, refusal while the service runs."""

from __future__ import annotations

import dataclasses
import json
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from gate.cli import gpio as gpio_cli
from gate.cli.main import build_parser, main
from gate.config import Config, GpioConfig
from gate.errors import GateError, ServiceError
from gate.exitcodes import EXIT_CANCELLED, EXIT_OK, EXIT_SERVICE
from gate.service.control import ControlServer

G = GpioConfig()
LIGHTS = {"green": G.green_pin, "red": G.red_pin, "amber": G.amber_pin}


@pytest.fixture
def factory():
    f = MockFactory()
    f.pin(G.emergency_pin).drive_high()  # fire loop closed: no alarm
    yield f
    f.reset()


@pytest.fixture
def cfg(tmp_path) -> Config:
    """Default pins; the control socket points where no service runs."""
    c = Config()
    return dataclasses.replace(c, service=dataclasses.replace(
        c.service, control_socket=str(tmp_path / "none.sock")))


def _args(*argv: str):
    return build_parser().parse_args(["gpio", "test", *argv])


def _on_time(pin, value: bool) -> list[float]:
    """How long each stretch of ``value`` lasted, from the mock pin's state history (the
    pin's level before the device took it over does not count)."""
    s = pin.states
    return [s[k + 1].timestamp for k in range(1, len(s) - 1)
            if s[k].state is value and s[k + 1].state is not value]


@pytest.mark.parametrize(("safe_state", "rest"), [("closed", False), ("open", True)])
def test_the_relay_leaves_its_safe_state_for_the_pulse_only(factory, cfg, safe_state, rest,
                                                            capsys):
    cfg = dataclasses.replace(cfg, gpio=dataclasses.replace(G, safe_state=safe_state))
    relay = factory.pin(G.relay_pin)
    start = time.monotonic()
    assert gpio_cli.run(_args("--relay", "-y", "--pulse", "0.3"), cfg,
                        pin_factory=factory) == EXIT_OK
    assert time.monotonic() - start >= 0.3
    assert relay.state is rest
    away = _on_time(relay, not rest)
    # sleep() never returns early; a busy machine may add a little, never take away.
    assert len(away) == 1 and 0.3 <= away[0] < 0.3 + 0.25
    out = capsys.readouterr().out
    action = "open" if safe_state == "closed" else "close"
    assert f"relay (pin {G.relay_pin}): flapper {action} for 0.3 s" in out
    assert f"back to {safe_state} (safe state)" in out
    for pin in LIGHTS.values():  # --relay alone lights nothing
        assert factory.pin(pin).state is False and len(factory.pin(pin).states) <= 1


def test_each_light_comes_on_alone_and_goes_off(factory, cfg, capsys):
    assert gpio_cli.run(_args("--lights", "--pulse", "0.1"), cfg,
                        pin_factory=factory) == EXIT_OK
    out = capsys.readouterr().out
    for name, pin in LIGHTS.items():
        mock = factory.pin(pin)
        assert [s.state for s in mock.states[-2:]] == [True, False], name
        assert 0.1 <= _on_time(mock, True)[0] < 0.1 + 0.25
        assert f"{name} light (pin {pin}" in out
    # One at a time: the on-stretches follow each other in the order announced.
    assert out.index("green light") < out.index("red light") < out.index("amber light")
    assert "buzzer: not fitted" in out
    assert factory.pin(G.relay_pin).states[-1].state is False  # relay never moved
    assert len(_on_time(factory.pin(G.relay_pin), True)) == 0


def test_the_buzzer_beeps_with_the_staffed_lane_sign(factory, cfg, capsys):
    cfg = dataclasses.replace(cfg, gpio=dataclasses.replace(G, buzzer_pin=24))
    assert gpio_cli.run(_args("--lights", "--pulse", "0.2"), cfg,
                        pin_factory=factory) == EXIT_OK
    assert _on_time(factory.pin(24), True)  # it went on and off again
    assert factory.pin(24).state is False
    assert "buzzer (pin 24) beeps once" in capsys.readouterr().out


def test_a_light_that_is_not_fitted_is_skipped(factory, cfg, capsys):
    cfg = dataclasses.replace(cfg, gpio=dataclasses.replace(G, amber_pin=0))
    assert gpio_cli.run(_args("--lights", "--pulse", "0.05", "--json"), cfg,
                        pin_factory=factory) == EXIT_OK
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"step": "light", "light": "amber", "fitted": False} in records
    assert sum(1 for r in records if r.get("on") is True) == 2


def test_input_changes_are_printed_with_timestamps(factory, cfg, capsys):
    def wave() -> None:
        time.sleep(0.15)
        factory.pin(G.presence_pin).drive_high()
        time.sleep(0.15)
        factory.pin(G.passage_pin).drive_high()
        time.sleep(0.1)
        factory.pin(G.passage_pin).drive_low()
        factory.pin(G.emergency_pin).drive_low()  # the fire loop opens: alarm

    t = threading.Thread(target=wave)
    t.start()
    assert gpio_cli.run(_args("--inputs", "0.6", "--json"), cfg,
                        pin_factory=factory) == EXIT_OK
    t.join()
    seen = [(r["input"], r["active"], r["t"]) for r in
            map(json.loads, capsys.readouterr().out.splitlines()) if r["step"] == "input"]
    changes = [(name, active) for name, active, _ in seen]
    assert changes[:3] == [("presence", False), ("passage", False), ("emergency", False)]
    assert changes[3:] == [("presence", True), ("passage", True), ("passage", False),
                           ("emergency", True)]
    times = {(n, a): t for n, a, t in seen}
    # Presence is debounced by 50 ms; the rest show at the next 10 ms poll.
    # (the driving thread starts a moment before the command's clock does).
    assert 0.15 + G.presence_debounce_s - 0.05 <= times["presence", True] < 0.5
    assert 0.25 <= times["passage", True] < 0.55 and times["passage", False] >= 0.35
    assert factory.pin(G.relay_pin).state is False


def test_human_input_lines_name_pin_and_meaning(factory, cfg, capsys):
    assert gpio_cli.run(_args("--inputs", "0.05"), cfg, pin_factory=factory) == EXIT_OK
    out = capsys.readouterr().out
    assert f"emergency  off (pin {G.emergency_pin}: fire loop healthy)" in out
    assert f"presence   off (pin {G.presence_pin}: lane empty)" in out


def test_declining_moves_nothing_and_exits_7(factory, cfg, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _q: "n")
    assert gpio_cli.run(_args("--pulse", "0.1"), cfg, pin_factory=factory) == EXIT_CANCELLED
    assert "nothing was moved" in capsys.readouterr().out
    for pin in (G.relay_pin, *LIGHTS.values()):
        assert len(factory.pin(pin).states) == 1  # never even made an output


def test_without_a_terminal_the_relay_needs_yes(factory, cfg, capsys):
    # pytest's stdin is not a terminal: confirm() answers no by itself.
    assert gpio_cli.run(_args("--relay"), cfg, pin_factory=factory) == EXIT_CANCELLED
    assert "pass -y" in capsys.readouterr().err
    assert len(factory.pin(G.relay_pin).states) == 1


def test_no_option_does_all_three_after_one_question(factory, cfg, monkeypatch, capsys):
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    def answer(question: str) -> str:
        asked.append(question)
        return "y"
    monkeypatch.setattr("builtins.input", answer)
    monkeypatch.setattr(gpio_cli, "DEFAULT_INPUT_S", 0.1)
    assert gpio_cli.run(_args("--pulse", "0.05"), cfg, pin_factory=factory) == EXIT_OK
    assert len(asked) == 1 and "Open the flapper for 0.05 s" in asked[0]
    out = capsys.readouterr().out
    assert "relay (pin" in out and "amber light" in out and "inputs for 0.1 s" in out


def test_ctrl_c_during_the_pulse_leaves_the_relay_safe_and_lights_off(factory, cfg):
    relay = factory.pin(G.relay_pin)
    # A real SIGINT to the main thread, as Ctrl-C sends: it cuts the sleep short.
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            gpio_cli.run(_args("-y", "--pulse", "5"), cfg, pin_factory=factory)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2
    assert relay.state is False and 0.15 <= _on_time(relay, True)[0] < 1.0
    assert all(factory.pin(p).state is False for p in LIGHTS.values())


def test_ctrl_c_while_watching_inputs_ends_the_watch_normally(factory, cfg, capsys):
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        assert gpio_cli.run(_args("--inputs", "30"), cfg, pin_factory=factory) == EXIT_OK
    finally:
        timer.cancel()
    assert time.monotonic() - start < 5
    assert capsys.readouterr().out.rstrip().endswith("stopped")


def test_a_fault_mid_test_still_leaves_everything_safe(factory, cfg, monkeypatch):
    relay = factory.pin(G.relay_pin)
    calls = []

    def broken(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:  # relay pulse done, green done, fails while red is lit
            assert factory.pin(G.red_pin).state is True
            raise GateError("something broke")

    monkeypatch.setattr(gpio_cli, "_hold", broken)
    with pytest.raises(GateError):
        gpio_cli.run(_args("-y", "--relay", "--lights"), cfg, pin_factory=factory)
    assert relay.state is False
    assert all(factory.pin(p).state is False for p in LIGHTS.values())

    def fails_open(seconds: float) -> None:
        assert relay.state is True
        raise GateError("something broke while open")

    monkeypatch.setattr(gpio_cli, "_hold", fails_open)
    with pytest.raises(GateError):
        gpio_cli.run(_args("-y", "--relay"), cfg, pin_factory=factory)
    assert relay.state is False


def test_refuses_while_the_service_runs(factory, cfg, tmp_path):
    sock = Path(tempfile.mkdtemp(prefix="g", dir="/tmp")) / "c.sock"
    server = ControlServer(sock, {"status": lambda _p: {"state": "idle"}})
    server.start()
    try:
        cfg = dataclasses.replace(cfg, service=dataclasses.replace(
            cfg.service, control_socket=str(sock)))
        with pytest.raises(ServiceError, match="stop it first"):
            gpio_cli.run(_args("-y"), cfg, pin_factory=factory)
    finally:
        server.stop()
        sock.parent.rmdir()
    assert len(factory.pin(G.relay_pin).states) == 1


def test_through_main_with_the_mock_backend(tmp_path, capsys):
    conf = tmp_path / "gate.toml"
    conf.write_text(f'[gpio]\nbackend = "mock"\n[service]\ncontrol_socket = '
                    f'"{tmp_path / "none.sock"}"\n')
    assert main(["--config", str(conf), "gpio", "test", "-y", "--relay", "--lights",
                 "--pulse", "0.02"]) == EXIT_OK
    assert "back to closed (safe state)" in capsys.readouterr().out
    assert Device.pin_factory is None or not isinstance(Device.pin_factory, MockFactory)
    assert main(["--config", str(conf), "gpio", "test", "--relay"]) == EXIT_CANCELLED


def test_main_refuses_while_the_service_runs(tmp_path, capsys):
    sock = Path(tempfile.mkdtemp(prefix="g", dir="/tmp")) / "c.sock"
    server = ControlServer(sock, {"status": lambda _p: {}})
    server.start()
    conf = tmp_path / "gate.toml"
    conf.write_text(f'[gpio]\nbackend = "mock"\n[service]\ncontrol_socket = "{sock}"\n')
    try:
        assert main(["--config", str(conf), "gpio", "test", "-y"]) == EXIT_SERVICE
    finally:
        server.stop()
        sock.parent.rmdir()
    err = capsys.readouterr().err.strip()
    assert "holds the GPIO pins" in err and "\n" not in err


@pytest.mark.parametrize("argv", [["--pulse", "0"], ["--inputs", "x"], ["--pulse", "-1"]])
def test_bad_durations_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exc:
        main(["gpio", "test", *argv])
    assert exc.value.code == 2
