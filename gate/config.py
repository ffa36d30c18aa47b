"""The gate's one configuration, validated up front.

A TOML file maps onto frozen dataclasses. Unknown keys are rejected, every value is
type- and range-checked, and cross-field rules are checked without I/O; the first
problem raises :class:`~gate.errors.ConfigError` naming the key path
(``quality.max_yaw_deg: must be ≤ 90, got 200``); :func:`check` lists every problem of
a file instead, and :func:`load_for_service` adds what a real lane requires. An invalid
config leaves the gate closed. Secrets never live here: they come from systemd credentials.

Field bounds are declared next to each field with :func:`option`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import tomllib
import types
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from gate.camera import CAMERAS, Mode
from gate.detect.detectors import DETECTORS
from gate.detect.quality import QualityLimits
from gate.errors import ConfigError
from gate.inference import BACKENDS
from gate.match.embedders import EMBEDDERS

#: Where ``make models`` puts the model files in a source checkout.
_CHECKOUT = Path(__file__).resolve().parent.parent
#: A source checkout keeps models and state beside the code; an installed gate (a venv
#: under /opt/gate, see gate/tools/install.py) uses the system's places.
_IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file()
_CHECKOUT_MODELS = _CHECKOUT / "models" if _IN_CHECKOUT else \
    Path(sys.prefix).parent / "models"


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
                          str(_CHECKOUT / "build" / "state") if _IN_CHECKOUT else
                          "/var/lib/gate")


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

    backend: str = option("replay", choices=tuple(CAMERAS))
    source: str = option("", doc="replay: folder or video; opencv: device, index or pipeline")
    # A lane camera framed on the person in front of the flapper: 640×480 keeps the face
    # large in BlazeFace's 128-px view (short range) and the frames cheap.
    width: int = option(640, lo=64, hi=4096)
    height: int = option(480, lo=64, hi=4096)
    fps: float = option(30.0, lo=1.0, hi=120.0)
    retry_max_s: float = option(30.0, lo=1.0, hi=600.0, doc="longest wait between retries")

    @property
    def mode(self) -> Mode:
        """Size and rate as the camera backends take them."""
        return Mode(self.width, self.height, self.fps)


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
    run = os.environ.get("RUNTIME_DIRECTORY", str(_CHECKOUT / "build" / "run")
                         if _IN_CHECKOUT else "/run/gate")
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
    detector: str = option("blazeface", choices=tuple(DETECTORS))
    embedder: str = option("int8", choices=tuple(EMBEDDERS),
                           doc="int8 (dynamic-range quantized, default) or float")
    runtime: str = option("auto", choices=("auto", *BACKENDS))
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


def _build(cls: type[Any], table: Any, path: str, errors: list[ConfigError]) -> Any:
    """The dataclass ``cls`` from ``table``; every problem is appended to ``errors`` and
    the offending key keeps its default, so one pass finds them all."""
    if not isinstance(table, dict):
        errors.append(ConfigError(path, f"must be a table, got {table!r}"))
        return cls()
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(table) - set(fields)):
        where = f"{path}.{name}" if path else name
        errors.append(ConfigError(where, f"unknown key (known: {', '.join(sorted(fields))})"))
    values = {}
    for name, value in table.items():
        if name not in fields:
            continue
        key = f"{path}.{name}" if path else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, key, errors)
            continue
        meta = dict(fields[name].metadata)
        if cls is QualityConfig and name in _QUALITY_BOUNDS:
            meta["lo"], meta["hi"] = _QUALITY_BOUNDS[name]
        try:
            values[name] = _check_value(key, value, tp, meta)
        except ConfigError as exc:
            errors.append(exc)
    return cls(**values)


def _involves_bad(keys: tuple[str, ...], bad: Collection[str]) -> bool:
    """True when a key (or a table holding it) already failed: a cross-field rule would
    compare against a stand-in default and report nonsense."""
    for key in keys:
        parts = key.split(".")
        if any(".".join(parts[:n]) in bad for n in range(1, len(parts) + 1)):
            return True
    return False


_PINS = ("presence_pin", "passage_pin", "relay_pin", "emergency_pin", "green_pin", "red_pin",
         "amber_pin", "buzzer_pin")


def _cross_checks(cfg: Config, bad: Collection[str] = ()) -> list[ConfigError]:
    """Rules between fields (no I/O); keys that already failed are left out."""
    out: list[ConfigError] = []
    q = cfg.quality
    if not _involves_bad(("quality.min_brightness", "quality.max_brightness"), bad) and \
            q.min_brightness >= q.max_brightness:
        out.append(ConfigError("quality.min_brightness", "must be below quality.max_brightness"))
    if not _involves_bad(("lane.k", "lane.n"), bad) and cfg.lane.k > cfg.lane.n:
        out.append(ConfigError("lane.k", f"must not exceed lane.n ({cfg.lane.n})"))
    used: dict[int, str] = {}
    for name in _PINS:
        key = f"gpio.{name}"
        pin = getattr(cfg.gpio, name)
        if not pin or _involves_bad((key,), bad):
            continue
        if pin in used:
            out.append(ConfigError(key, f"pin {pin} is already used by {used[pin]} (two "
                                        "devices cannot share one pin)"))
        else:
            used[pin] = key
    if cfg.sync.enabled and not _involves_bad(("sync.enabled",), bad):
        if not cfg.sync.central_keys and not _involves_bad(("sync.central_keys",), bad):
            out.append(ConfigError("sync.central_keys", "at least one central key must be "
                                                        "pinned"))
        if (not cfg.sync.ca_file or not cfg.sync.cert_file) and \
                not _involves_bad(("sync.ca_file", "sync.cert_file"), bad):
            out.append(ConfigError("sync.ca_file", "TLS needs ca_file and cert_file"))
    return out


def validate(data: dict[str, Any], *, base_dir: Path | None = None
             ) -> tuple[Config, list[ConfigError]]:
    """Validate a parsed TOML document and collect *every* problem, table by table.

    Returns the config (keys that failed keep their defaults, so it is only usable when
    the list is empty) and the errors. Relative paths resolve against ``base_dir``.
    """
    errors: list[ConfigError] = []
    cfg: Config = _build(Config, data, "", errors)
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
    errors += _cross_checks(cfg, {e.path for e in errors})
    return cfg, errors


def from_dict(data: dict[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against ``base_dir``.

    Raises the first problem as :class:`ConfigError`; :func:`validate` lists them all.
    """
    cfg, errors = validate(data, base_dir=base_dir)
    if errors:
        raise errors[0]
    return cfg


def read_file(path: Path) -> dict[str, Any]:
    """The parsed TOML document of a config file; one-line ConfigError if it is unreadable,
    not UTF-8 or not TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML ({exc})") from None


#: What a real lane must say about itself rather than inherit from the defaults.
_IDENTITY = {"id": "each lane needs its own id",
             "venue": "the venue this lane belongs to",
             "event": "the event whose templates this lane holds"}


def _service_rules(data: dict[str, Any], cfg: Config, bad: set[str]) -> list[ConfigError]:
    out = []
    gate = data.get("gate")
    for name, why in _IDENTITY.items():
        if not isinstance(gate, dict) or name not in gate:
            out.append(ConfigError(f"gate.{name}", f"missing ({why}); set it in [gate]"))
    if cfg.cache.allow_ephemeral_keys and cfg.gpio.backend != "mock" and \
            not _involves_bad(("cache.allow_ephemeral_keys", "gpio.backend"), bad):
        out.append(ConfigError("cache.allow_ephemeral_keys", (
            f'true with gpio.backend = "{cfg.gpio.backend}": a real lane must not run on '
            "throw-away keys; remove it and provide the cache-key and template-key "
            "credentials")))
    return out


def check(path: Path, *, service: bool = False) -> list[ConfigError]:
    """Every problem of the config file at ``path`` (an empty list: valid).

    ``service`` adds what the gate service requires of a real lane (see
    :func:`load_for_service`). A file that cannot be read or parsed is one error.
    """
    try:
        data = read_file(path)
    except ConfigError as exc:
        return [exc]
    cfg, errors = validate(data, base_dir=Path(path).parent)
    if service:
        errors += _service_rules(data, cfg, {e.path for e in errors})
    return errors


def load_for_service(path: Path) -> Config:
    """Load the config of a real lane: the file must exist, set ``[gate] id``, ``venue``
    and ``event`` itself, and not use throw-away keys on real pins.

    Raises the first problem as a one-line :class:`ConfigError` that also says how many
    more there are (``gatectl config check --service FILE`` lists them).
    """
    errors = check(path, service=True)
    if errors:
        first = errors[0]
        more = f" (+{len(errors) - 1} more: gatectl config check --service {path})" \
            if len(errors) > 1 else ""
        raise ConfigError(first.path, first.reason + more)
    return from_dict(read_file(path), base_dir=Path(path).parent)


def load(path: Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return from_dict({})
    return from_dict(read_file(path), base_dir=Path(path).parent)
