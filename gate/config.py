"""The gate's one configuration, validated up front.

A TOML file maps onto frozen dataclasses. Unknown keys are rejected, every value is
type- and range-checked, and cross-field rules are checked without I/O; the first
problem raises :class:`~gate.errors.ConfigError` naming the key path
(``quality.max_yaw_deg: must be ≤ 90, got 200``). An invalid config leaves the gate
closed. Secrets never live here: they come from systemd credentials.

Field bounds are declared next to each field with :func:`option`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from gate.detect.quality import QualityLimits
from gate.errors import ConfigError

#: Where ``make models`` puts the model files in a source checkout.
_CHECKOUT_MODELS = Path(__file__).resolve().parent.parent / "models"


def option(default: Any, *, lo: float | None = None, hi: float | None = None,
           choices: tuple[Any, ...] | None = None, pattern: str | None = None,
           doc: str = "") -> Any:
    """A config field with bounds (inclusive), allowed values or a full-match pattern."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices,
                                            "pattern": pattern, "doc": doc})


#: Names that end up in topics, file headers and logs: short and plain.
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
#: A pinned Ed25519 public key: ``kid=`` then base64 of its 32 bytes.
KEY_PIN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}=[A-Za-z0-9+/]{43}="


def _default_state_dir() -> str:
    # systemd's StateDirectory= sets $STATE_DIRECTORY; a checkout keeps state in build/.
    return os.environ.get("STATE_DIRECTORY",
                          str(_CHECKOUT_MODELS.parent / "build" / "state"))


@dataclass(frozen=True)
class GateConfig:
    """``[gate]``: which gate this is, at which venue and event."""

    id: str = option("gate-1", pattern=NAME)
    venue: str = option("demo-venue", pattern=NAME)
    event: str = option("demo-event", pattern=NAME)


@dataclass(frozen=True)
class CacheConfig:
    """``[cache]``: where the encrypted template cache lives and where its keys come from.

    Keys are read from systemd credentials (``cache-key``, ``template-key``) first; the
    key files named here are the fallback and must be mode 0600, owned by the gate.
    """

    dir: str = field(default_factory=_default_state_dir)
    key_file: str = ""
    template_key_file: str = ""
    allow_ephemeral_keys: bool = option(False, doc="demo/dev only: random keys in RAM")
    max_valid_days: int = option(400, lo=1, hi=3650)


@dataclass(frozen=True)
class SyncConfig:
    """``[sync]``: the MQTT link to central (mutual TLS).

    The TLS client key, the gate's signing key and its sealing key come from systemd
    credentials (``mqtt-key.pem``, ``sign-key``, ``seal-key``); the ``*_file`` keys are the
    fallback. ``central_keys`` pins central's Ed25519 signing keys as ``"kid=base64"``.
    """

    enabled: bool = False
    host: str = option("localhost", pattern=r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
    port: int = option(8883, lo=1, hi=65535)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    sign_key_file: str = ""
    seal_key_file: str = ""
    central_keys: tuple[str, ...] = option((), pattern=KEY_PIN)
    #: Other gates of the venue (``"gate-id=base64"``): their entry events are verified
    #: with these keys for anti-passback; events of unlisted gates are refused.
    peer_keys: tuple[str, ...] = option((), pattern=KEY_PIN)
    keepalive_s: int = option(30, lo=5, hi=3600)
    session_expiry_s: int = option(7 * 86400, lo=60, hi=30 * 86400)


@dataclass(frozen=True)
class CameraConfig:
    """``[camera]``: the frame source."""

    backend: str = option("replay", choices=("replay", "opencv", "picamera2"))
    source: str = option("", doc="replay: folder or video; opencv: device, index or pipeline")
    # A lane camera framed on the person in front of the flapper: 640×480 keeps the face
    # large in BlazeFace's 128-px view (short range) and the frames cheap.
    width: int = option(640, lo=64, hi=4096)
    height: int = option(480, lo=64, hi=4096)
    fps: float = option(30.0, lo=1.0, hi=120.0)
    retry_max_s: float = option(30.0, lo=1.0, hi=600.0, doc="longest wait between retries")


@dataclass(frozen=True)
class GpioConfig:
    """``[gpio]``: BCM pin numbers and polarities (``0`` = not fitted)."""

    backend: str = option("auto", choices=("auto", "mock"),
                          doc="auto: gpiozero picks lgpio/RPi.GPIO; mock: simulation")
    presence_pin: int = option(17, lo=1, hi=63)
    presence_active_high: bool = True
    presence_debounce_s: float = option(0.05, lo=0.0, hi=2.0)
    passage_pin: int = option(27, lo=1, hi=63)
    passage_active_high: bool = True
    relay_pin: int = option(22, lo=1, hi=63)
    relay_active_high: bool = True
    emergency_pin: int = option(23, lo=0, hi=63)
    emergency_active_high: bool = False  # a closed fire loop holds the line high
    green_pin: int = option(5, lo=0, hi=63)
    red_pin: int = option(6, lo=0, hi=63)
    amber_pin: int = option(13, lo=0, hi=63)
    buzzer_pin: int = option(0, lo=0, hi=63)
    safe_state: str = option("closed", choices=("closed", "open"),
                             doc="flapper on stop/crash: closed, or open where fire code "
                                 "requires a fail-open lane")


@dataclass(frozen=True)
class LaneConfig:
    """``[lane]``: the decision policy."""

    mode: str = option("identify", choices=("identify", "verify"))
    k: int = option(2, lo=1, hi=10, doc="frames that must agree on the same attendee...")
    n: int = option(3, lo=1, hi=20, doc="...among this many decided frames")
    max_attempts: int = option(3, lo=1, hi=20, doc="k-of-n rounds before the staffed lane")
    fusion: bool = option(False, doc="average the k best frames' embeddings, decide once")
    open_timeout_s: float = option(6.0, lo=1.0, hi=60.0)
    decide_timeout_s: float = option(8.0, lo=1.0, hi=120.0,
                                     doc="no decision this long after arrival: staffed lane")
    reentry: bool = False
    entry_window_h: float = option(24.0, lo=0.1, hi=24 * 30,
                                   doc="anti-passback looks back this far")
    pad: str = option("off", choices=("off",),
                      doc="presentation-attack detection: none validated yet")


@dataclass(frozen=True)
class MatchConfig:
    """``[match]``: the 1:N decision."""

    target_fpir: float = option(0.001, lo=1e-6, hi=0.5,
                                doc="false-positive identification rate aimed at")
    threshold: float = option(0.0, lo=0.0, hi=1.0,
                              doc="fixed cosine threshold; 0 = from the calibration table")
    margin: float = option(0.05, lo=0.0, hi=1.0)
    coarse_min: int = option(20_000, lo=1_000, hi=10_000_000)
    threads: int = option(1, lo=1, hi=16)


def _default_control_socket() -> str:
    # systemd's RuntimeDirectory= sets $RUNTIME_DIRECTORY; a checkout uses build/run.
    run = os.environ.get("RUNTIME_DIRECTORY", str(_CHECKOUT_MODELS.parent / "build" / "run"))
    return str(Path(run) / "control.sock")


@dataclass(frozen=True)
class ServiceConfig:
    """``[service]``: the running gate service (``gatectl run`` under systemd)."""

    control_socket: str = field(default_factory=_default_control_socket)
    status_interval_s: float = option(5.0, lo=0.5, hi=300.0,
                                      doc="how often STATUS= and the retained status refresh")
    stall_s: float = option(10.0, lo=1.0, hi=600.0,
                            doc="loop without progress this long: stop the watchdog pings")
    lock_memory: bool = option(True, doc="mlock the process so templates/keys never swap")
    log_level: str = option("info", choices=("debug", "info", "warning", "error"))


def _default_models_dir() -> str:
    return os.environ.get("GATE_MODELS_DIR", str(_CHECKOUT_MODELS))


@dataclass(frozen=True)
class ModelsConfig:
    """``[models]``: which files, which runtime, how many threads."""

    dir: str = field(default_factory=_default_models_dir)
    embedder: str = option("int8", choices=("int8", "float"),
                           doc="int8 (dynamic-range quantized, default) or float")
    runtime: str = option("auto", choices=("auto", "ai_edge_litert", "tflite_runtime"))
    threads: int = option(2, lo=1, hi=16)


@dataclass(frozen=True)
class DetectConfig:
    """``[detect]``: face detection and alignment."""

    min_score: float = option(0.5, lo=0.05, hi=0.99)
    nms_iou: float = option(0.3, lo=0.05, hi=0.95)
    antialias: bool = True
    landmarks: bool = option(True, doc="refine alignment points with the face-mesh model")


@dataclass(frozen=True)
class EmbedConfig:
    """``[embed]``: embedding options."""

    # Off by default: it doubles the embedding time, and the gate already fuses frames.
    flip_average: bool = option(False, doc="embed the face and its mirror image, average")


@dataclass(frozen=True)
class QualityConfig(QualityLimits):
    """``[quality]``: thresholds of the quality checks (see :class:`QualityLimits`)."""


_QUALITY_BOUNDS: dict[str, tuple[float, float]] = {
    "min_interocular_px": (4, 1000), "max_yaw_deg": (0, 90), "max_pitch_deg": (0, 90),
    "max_roll_deg": (0, 180), "min_sharpness": (0, 100), "min_brightness": (0, 255),
    "max_brightness": (0, 255), "max_clipped_fraction": (0, 1), "max_outside_fraction": (0, 1),
    "min_eye_visibility": (0, 1), "min_presence": (0, 1), "sizeable_face_ratio": (0.05, 1),
}


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    gate: GateConfig = field(default_factory=GateConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    lane: LaneConfig = field(default_factory=LaneConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    @property
    def models_dir(self) -> Path:
        """The models directory as a path."""
        return Path(self.models.dir)


def _type_name(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _check_value(path: str, value: Any, tp: Any, meta: Any) -> Any:
    origin = get_origin(tp)
    if origin is tuple:  # tuple[str, ...]: a TOML array of strings
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list of strings, got {value!r}")
        item_meta = {"pattern": meta.get("pattern")}
        return tuple(_check_value(f"{path}[{k}]", v, str, item_meta)
                     for k, v in enumerate(value))
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        tp = options[0]
    # bool is an int in Python; a config that says `threads = true` is a mistake.
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, int | float) and not isinstance(value, bool) if tp is float else
          isinstance(value, str) if tp is str else False)
    if not ok:
        raise ConfigError(path, f"must be {_type_name(tp)}, got {value!r}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(path, f"must be a finite number, got {value!r}")
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ConfigError(path, f"must match {pattern}, got {value!r}")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(path, f"must be one of {allowed}, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(path, f"must be ≥ {lo:g}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(path, f"must be ≤ {hi:g}, got {value!r}")
    return value


def _build(cls: type[Any], table: Any, path: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(path, f"must be a table, got {table!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name, value in table.items():
        key = f"{path}.{name}" if path else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, key)
        else:
            meta = dict(fields[name].metadata)
            if cls is QualityConfig and name in _QUALITY_BOUNDS:
                meta["lo"], meta["hi"] = _QUALITY_BOUNDS[name]
            values[name] = _check_value(key, value, tp, meta)
    return cls(**values)


def _cross_checks(cfg: Config) -> None:
    q = cfg.quality
    if q.min_brightness >= q.max_brightness:
        raise ConfigError("quality.min_brightness", "must be below quality.max_brightness")
    if cfg.lane.k > cfg.lane.n:
        raise ConfigError("lane.k", f"must not exceed lane.n ({cfg.lane.n})")
    g = cfg.gpio
    used = [p for p in (g.presence_pin, g.passage_pin, g.relay_pin, g.emergency_pin,
                        g.green_pin, g.red_pin, g.amber_pin, g.buzzer_pin) if p]
    if len(used) != len(set(used)):
        raise ConfigError("gpio", "two devices share one pin")
    if cfg.sync.enabled:
        if not cfg.sync.central_keys:
            raise ConfigError("sync.central_keys", "at least one central key must be pinned")
        if not cfg.sync.ca_file or not cfg.sync.cert_file:
            raise ConfigError("sync.ca_file", "TLS needs ca_file and cert_file")


def from_dict(data: dict[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against ``base_dir``."""
    cfg: Config = _build(Config, data, "")
    if base_dir is not None:
        def resolve(p: str) -> str:
            return p if not p or Path(p).is_absolute() else str((base_dir / p).resolve())
        cfg = dataclasses.replace(
            cfg, models=dataclasses.replace(cfg.models, dir=resolve(cfg.models.dir)),
            service=dataclasses.replace(cfg.service,
                                        control_socket=resolve(cfg.service.control_socket)),
            cache=dataclasses.replace(cfg.cache, dir=resolve(cfg.cache.dir),
                                      key_file=resolve(cfg.cache.key_file),
                                      template_key_file=resolve(cfg.cache.template_key_file)),
            sync=dataclasses.replace(cfg.sync, ca_file=resolve(cfg.sync.ca_file),
                                     cert_file=resolve(cfg.sync.cert_file),
                                     key_file=resolve(cfg.sync.key_file),
                                     sign_key_file=resolve(cfg.sync.sign_key_file),
                                     seal_key_file=resolve(cfg.sync.seal_key_file)))
    _cross_checks(cfg)
    return cfg


def load(path: Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return from_dict({})
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML ({exc})") from None
    return from_dict(data, base_dir=path.parent)
