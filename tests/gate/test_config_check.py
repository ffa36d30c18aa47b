"""`gatectl config check` and the service's config rules: every error listed, with its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate import config as config_mod
from gate.cli.main import main
from gate.errors import ConfigError
from gate.exitcodes import EXIT_CONFIG, EXIT_OK, EXIT_USAGE

LANE = '[gate]\nid = "lane-1"\nvenue = "arena"\nevent = "final"\n'


def write(tmp_path: Path, text: str | bytes, name: str = "gate.toml") -> Path:
    f = tmp_path / name
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text)
    return f


def check_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["config", "check", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_valid_file(tmp_path, capsys):
    f = write(tmp_path, LANE + "[gpio]\nrelay_pin = 26\n")
    assert main(["config", "check", str(f)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"✓ {f}: valid"
    assert main(["config", "check", "--service", str(f)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"✓ {f}: valid (service rules)"


def test_every_error_is_listed_with_its_key(tmp_path, capsys):
    f = write(tmp_path, "\n".join([
        "[gpio]", "relay_pin = 99", "green_pin = 6", "colour = 'red'",  # range, dup, unknown
        "[models]", "threads = 'two'",                                    # wrong type
        "[lane]", "k = 5", "n = 3",                                       # cross-field
        "[camera]", "fps = 'fast'", "[modles]", ""]))                     # type, unknown table
    assert main(["config", "check", str(f)]) == EXIT_CONFIG
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"{f}: 7 errors"
    assert set(lines[:-1]) == {
        "✗ modles: unknown key (known: cache, camera, detect, embed, gate, gpio, lane, match, "
        "models, quality, service, sync)",
        "✗ gpio.relay_pin: must be ≤ 63, got 99",
        "✗ models.threads: must be an integer, got 'two'",
        "✗ lane.k: must not exceed lane.n (3)",
        "✗ camera.fps: must be a number, got 'fast'",
        "✗ gpio.red_pin: pin 6 is already used by gpio.green_pin (two devices cannot share "
        "one pin)",
    } | {next(x for x in lines if x.startswith("✗ gpio.colour: unknown key (known: "))}


def test_json_shape(tmp_path, capsys):
    f = write(tmp_path, "[gpio]\nrelay_pin = 99\nbuzzer_pin = 17\n")
    code, out = check_json(capsys, str(f))
    assert code == EXIT_CONFIG
    assert out == {"file": str(f), "service": False, "valid": False, "errors": [
        {"path": "gpio.relay_pin", "reason": "must be ≤ 63, got 99"},
        {"path": "gpio.buzzer_pin",
         "reason": "pin 17 is already used by gpio.presence_pin (two devices cannot share "
                   "one pin)"}]}
    code, out = check_json(capsys, str(write(tmp_path, LANE, "ok.toml")), "--service")
    assert (code, out["valid"], out["errors"], out["service"]) == (EXIT_OK, True, [], True)


def test_a_bad_value_does_not_cause_a_second_made_up_error(tmp_path, capsys):
    # relay_pin 99 is refused; its default (22) must not then "collide" with green_pin 22,
    # nor lane.k be compared with a default lane.n standing in for a broken one.
    f = write(tmp_path, "[gpio]\nrelay_pin = 99\ngreen_pin = 22\n[lane]\nk = 5\nn = 'x'\n")
    code, out = check_json(capsys, str(f))
    assert code == EXIT_CONFIG
    assert [e["path"] for e in out["errors"]] == ["gpio.relay_pin", "lane.n"]


@pytest.mark.parametrize(("content", "reason"), [
    (b"[gpio\nrelay_pin = 2\n", "not valid TOML"),
    (b"\xff\xfe\x00[gate]", "not UTF-8 text"),
])
def test_files_that_are_not_toml(tmp_path, capsys, content, reason):
    f = write(tmp_path, content)
    code, out = check_json(capsys, str(f))
    assert code == EXIT_CONFIG and len(out["errors"]) == 1
    assert out["errors"][0]["path"] == "" and reason in out["errors"][0]["reason"]
    assert main(["config", "check", str(f)]) == EXIT_CONFIG
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"✗ {f}: {reason}")


def test_a_missing_file(tmp_path, capsys):
    code, out = check_json(capsys, str(tmp_path / "nope.toml"))
    assert code == EXIT_CONFIG
    assert "cannot read config" in out["errors"][0]["reason"]


def test_checks_its_file_even_when_the_global_config_is_fine(tmp_path, capsys):
    good = write(tmp_path, LANE, "good.toml")
    bad = write(tmp_path, "[gpio]\nrelay_pin = 99\n", "bad.toml")
    assert main(["--config", str(good), "config", "check", str(bad)]) == EXIT_CONFIG
    assert "gpio.relay_pin" in capsys.readouterr().out
    # Without FILE it checks the file gatectl itself reads.
    assert main(["--config", str(good), "config", "check"]) == EXIT_OK
    assert str(good) in capsys.readouterr().out


def test_without_any_file_it_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("GATE_CONFIG", raising=False)
    monkeypatch.setattr("gate.cli.configfile.DEFAULT_CONFIG", Path("/nonexistent/gate.toml"))
    assert main(["config", "check"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("gatectl: config check: no config file") and err.count("\n") == 1


def test_service_rules_want_an_explicit_identity(tmp_path, capsys):
    f = write(tmp_path, '[gate]\nid = "lane-1"\n')
    assert main(["config", "check", str(f)]) == EXIT_OK  # fine for a bench or a demo
    capsys.readouterr()
    code, out = check_json(capsys, str(f), "--service")
    assert code == EXIT_CONFIG
    assert [(e["path"], e["reason"].split(" (")[0]) for e in out["errors"]] == [
        ("gate.venue", "missing"), ("gate.event", "missing")]
    code, out = check_json(capsys, str(write(tmp_path, "", "empty.toml")), "--service")
    assert out["errors"][0] == {"path": "gate.id",
                                "reason": "missing (each lane needs its own id); set it in "
                                          "[gate]"}


def test_service_rules_refuse_throwaway_keys_on_real_pins(tmp_path, capsys):
    real = write(tmp_path, LANE + "[cache]\nallow_ephemeral_keys = true\n", "real.toml")
    code, out = check_json(capsys, str(real), "--service")
    assert code == EXIT_CONFIG and [e["path"] for e in out["errors"]] == [
        "cache.allow_ephemeral_keys"]
    assert "throw-away keys" in out["errors"][0]["reason"]
    sim = write(tmp_path, LANE + '[cache]\nallow_ephemeral_keys = true\n[gpio]\nbackend = '
                                 '"mock"\n', "sim.toml")
    assert check_json(capsys, str(sim), "--service")[0] == EXIT_OK


def test_load_for_service(tmp_path):
    cfg = config_mod.load_for_service(write(tmp_path, LANE + "[gpio]\nrelay_pin = 26\n"))
    assert (cfg.gate.id, cfg.gate.venue, cfg.gpio.relay_pin) == ("lane-1", "arena", 26)
    with pytest.raises(ConfigError) as err:
        config_mod.load_for_service(write(tmp_path, "[gpio]\nrelay_pin = 99\n", "b.toml"))
    # The first problem, and how many more there are, in one line.
    assert err.value.path == "gpio.relay_pin"
    assert str(err.value).endswith(f"(+3 more: gatectl config check --service "
                                   f"{tmp_path / 'b.toml'})")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="cannot read config"):
        config_mod.load_for_service(tmp_path / "missing.toml")


def test_from_dict_still_raises_the_first_error():
    with pytest.raises(ConfigError) as err:
        config_mod.from_dict({"gpio": {"relay_pin": 99, "green_pin": 6}})
    assert err.value.path == "gpio.relay_pin"
    cfg, errors = config_mod.validate({"gpio": {"relay_pin": 99, "green_pin": 6}})
    assert [e.path for e in errors] == ["gpio.relay_pin", "gpio.red_pin"]
    assert cfg.gpio.green_pin == 6  # the good keys are kept
