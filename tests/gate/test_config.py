"""One validated config: every bad key or value gives its key path and a reason."""

from __future__ import annotations

import pytest

from gate.config import Config, from_dict, load
from gate.errors import ConfigError
from tests.support import ROOT


def test_defaults_are_valid():
    cfg = from_dict({})
    assert isinstance(cfg, Config)
    assert cfg.models.embedder == "sface-int8" and cfg.models.threads == 2
    assert cfg.models.detector == "blazeface"
    assert cfg.detect.landmarks and cfg.quality.min_interocular_px == 28.0


def test_example_config_is_valid():
    example = ROOT / "config" / "gate.example.toml"
    cfg = load(example)
    assert cfg.models.embedder == from_dict({}).models.embedder
    # It shows the defaults: the detector it names is the default one.
    assert cfg.models.detector == from_dict({}).models.detector


@pytest.mark.parametrize(("data", "path", "reason"), [
    ({"modles": {}}, "modles", "unknown key"),
    ({"models": {"thread": 2}}, "models.thread", "unknown key"),
    ({"models": {"threads": "two"}}, "models.threads", "must be an integer"),
    ({"models": {"threads": True}}, "models.threads", "must be an integer"),
    ({"models": {"threads": 2.5}}, "models.threads", "must be an integer"),
    ({"models": {"threads": 0}}, "models.threads", "must be ≥ 1"),
    ({"models": {"threads": 1000}}, "models.threads", "must be ≤ 16"),
    ({"models": {"embedder": "int4"}}, "models.embedder", "must be one of"),
    ({"models": {"detector": "yolo"}}, "models.detector", "must be one of"),
    ({"models": {"runtime": "onnx"}}, "models.runtime", "must be one of"),
    ({"models": {"dir": 7}}, "models.dir", "must be a string"),
    ({"models": "fast"}, "models", "must be a table"),
    ({"detect": {"min_score": 2}}, "detect.min_score", "must be ≤ 0.99"),
    ({"detect": {"landmarks": "yes"}}, "detect.landmarks", "must be true or false"),
    ({"quality": {"max_yaw_deg": 200}}, "quality.max_yaw_deg", "must be ≤ 90"),
    ({"quality": {"min_sharpness": float("nan")}}, "quality.min_sharpness", "finite"),
    ({"quality": {"max_brightness": float("inf")}}, "quality.max_brightness", "finite"),
    ({"quality": {"min_brightness": 200, "max_brightness": 100}}, "quality.min_brightness",
     "below"),
    ({"embed": {"flip_average": 1}}, "embed.flip_average", "must be true or false"),
    ({"gate": {"id": "lane 3!"}}, "gate.id", "must match"),
    ({"gate": {"venue": ""}}, "gate.venue", "must match"),
    ({"gate": {"event": "x" * 65}}, "gate.event", "must match"),
    ({"match": {"target_fpir": 0}}, "match.target_fpir", "must be ≥"),
    ({"match": {"margin": -0.1}}, "match.margin", "must be ≥ 0"),
    ({"match": {"threshold": 1.5}}, "match.threshold", "must be ≤ 1"),
    ({"cache": {"max_valid_days": 0}}, "cache.max_valid_days", "must be ≥ 1"),
    ({"cache": {"allow_ephemeral_keys": "yes"}}, "cache.allow_ephemeral_keys", "true or false"),
    ({"cache": {"key": "abc"}}, "cache.key", "unknown key"),
    ({"camera": {"backend": "webcam"}}, "camera.backend", "must be one of"),
    ({"camera": {"width": 32}}, "camera.width", "must be ≥ 64"),
    ({"camera": {"fps": float("nan")}}, "camera.fps", "finite"),
    ({"camera": {"source": ["/dev/video0"]}}, "camera.source", "must be a string"),
    ({"gpio": {"relay_pin": 99}}, "gpio.relay_pin", "must be ≤ 63"),
    ({"gpio": {"relay_pin": "GPIO22"}}, "gpio.relay_pin", "must be an integer"),
    ({"gpio": {"safe_state": "ajar"}}, "gpio.safe_state", "must be one of"),
    ({"gpio": {"presence_debounce_s": -1}}, "gpio.presence_debounce_s", "must be ≥ 0"),
    ({"gpio": {"relay_active_high": "low"}}, "gpio.relay_active_high", "true or false"),
    ({"lane": {"mode": "guess"}}, "lane.mode", "must be one of"),
    ({"lane": {"k": 0}}, "lane.k", "must be ≥ 1"),
    ({"lane": {"pad": "on"}}, "lane.pad", "must be one of"),
    ({"lane": {"open_timeout_s": 0.1}}, "lane.open_timeout_s", "must be ≥ 1"),
    ({"lane": {"doors": 2}}, "lane.doors", "unknown key"),
    ({"lane": {"k": 3, "n": 2}}, "lane.k", "must not exceed lane.n"),
    ({"service": {"status_interval_s": 0}}, "service.status_interval_s", "must be ≥ 0.5"),
    ({"service": {"stall_s": 1e9}}, "service.stall_s", "must be ≤ 600"),
    ({"service": {"log_level": "loud"}}, "service.log_level", "must be one of"),
    ({"service": {"lock_memory": "maybe"}}, "service.lock_memory", "true or false"),
    ({"service": {"control_socket": 5}}, "service.control_socket", "must be a string"),
    ({"service": {"watchdog_s": 5}}, "service.watchdog_s", "unknown key"),
])
def test_bad_values_name_their_key(data, path, reason):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert err.value.path == path and reason in err.value.reason
    assert "\n" not in str(err.value) and str(err.value).startswith(path)


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[models\nthreads = 2\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(binary)


def test_relative_models_dir_resolves_against_the_config_file(tmp_path):
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "gate.toml"
    f.write_text('[models]\ndir = "../models"\nembedder = "float"\n'
                 '[cache]\ndir = "state"\nkey_file = "keys/cache.key"\n')
    cfg = load(f)
    assert cfg.models_dir == (tmp_path / "models").resolve()
    assert cfg.models.embedder == "float"
    assert cfg.cache.dir == str((tmp_path / "etc" / "state").resolve())
    assert cfg.cache.key_file == str((tmp_path / "etc" / "keys" / "cache.key").resolve())
    assert cfg.cache.template_key_file == ""  # unset stays unset


def test_sync_section_needs_keys_and_tls_when_enabled():
    with pytest.raises(ConfigError) as err:
        from_dict({"sync": {"enabled": True}})
    assert err.value.path == "sync.central_keys"
    key = "central-1=" + "A" * 43 + "="
    with pytest.raises(ConfigError) as err:
        from_dict({"sync": {"enabled": True, "central_keys": [key]}})
    assert err.value.path == "sync.ca_file"
    with pytest.raises(ConfigError, match=r"sync\.central_keys\[0\]"):
        from_dict({"sync": {"central_keys": ["central-1=short"]}})
    with pytest.raises(ConfigError, match="list of strings"):
        from_dict({"sync": {"peer_keys": "lane-1=x"}})
    with pytest.raises(ConfigError, match="must be ≤ 65535"):
        from_dict({"sync": {"port": 70000}})
