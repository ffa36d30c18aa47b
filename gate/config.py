"""The gate's one configuration, validated up front.

A TOML file maps onto frozen dataclasses. Unknown keys are rejected, every value is
type- and range-checked, and cross-field rules are checked without I/O; the first
problem raises :class:`~gate.errors.ConfigError` naming the key path
(``quality.max_yaw_deg: must be ≤ 90, got 200``); :func:`check` lists every problem of
a file instead, and :func:`load_for_service` adds what a real lane requires (with one
``os.stat`` of each path the service creates). An invalid config leaves the gate closed.
Secrets never live here: they come from systemd credentials.

Field bounds are declared next to each field with :func:`option`; reading the file (a
regular file of at most 1 MiB, opened once) and checking values is
:mod:`gate.configcheck`'s machinery.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.camera import CAMERAS, Mode
from gate.configcheck import (
    MAX_CONFIG_BYTES,
    build,
    existing_problem,
    in_system_tree,
    involves_bad,
    map_fields,
    option,
    read_toml,
    resolve,
    socket_path_problem,
)
from gate.detect.detectors import DETECTORS
from gate.detect.quality import QualityLimits
from gate.errors import ConfigError
from gate.inference import BACKENDS
from gate.match.embedders import NAMES as EMBEDDER_NAMES
from gate.match.embedders import embedder_spec
from gate.match.threshold import CALIBRATIONS

__all__ = ["KEY_PIN", "MAX_CONFIG_BYTES", "NAME", "CacheConfig", "CameraConfig", "Config",
           "DetectConfig", "EmbedConfig", "GateConfig", "GpioConfig", "LaneConfig",
           "MatchConfig", "ModelsConfig", "QualityConfig", "ServiceConfig", "SyncConfig",
           "calibrated_range", "check", "from_dict", "load", "load_for_service", "option",
           "read_file", "validate"]

#: Where ``make models`` puts the model files in a source checkout.
_CHECKOUT = Path(__file__).resolve().parent.parent
#: A source checkout keeps models and state beside the code; an installed gate (a venv
#: under /opt/gate, see gate/tools/install.py) uses the system's places.
_IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file()
_CHECKOUT_MODELS = _CHECKOUT / "models" if _IN_CHECKOUT else \
    Path(sys.prefix).parent / "models"


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
    overlap: bool = option(False, doc="embed a face on a second thread while the next "
                                      "frame is analysed: more frames a second where the "
                                      "models, not the camera, set the pace (a Pi)")
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
    embedder: str = option("sface-int8", choices=EMBEDDER_NAMES,
                           doc="model and variant (gate/match/embedders.py): sface-int8 "
                               "(default, measured best on lfw-dev), sface-float, "
                               "mobilefacenet-int8, mobilefacenet-float; int8 and float "
                               "are MobileFaceNet's, as earlier configs named them")
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


_PINS = ("presence_pin", "passage_pin", "relay_pin", "emergency_pin", "green_pin", "red_pin",
         "amber_pin", "buzzer_pin")


def _cross_checks(cfg: Config, bad: Collection[str] = ()) -> list[ConfigError]:
    """Rules between fields (no I/O); keys that already failed are left out."""
    out: list[ConfigError] = []
    q = cfg.quality
    if not involves_bad(("quality.min_brightness", "quality.max_brightness"), bad) and \
            q.min_brightness >= q.max_brightness:
        out.append(ConfigError("quality.min_brightness", "must be below quality.max_brightness"))
    if not involves_bad(("lane.k", "lane.n"), bad) and cfg.lane.k > cfg.lane.n:
        out.append(ConfigError("lane.k", f"must not exceed lane.n ({cfg.lane.n})"))
    used: dict[int, str] = {}
    for name in _PINS:
        key = f"gpio.{name}"
        pin = getattr(cfg.gpio, name)
        if not pin or involves_bad((key,), bad):
            continue
        if pin in used:
            out.append(ConfigError(key, f"pin {pin} is already used by {used[pin]} (two "
                                        "devices cannot share one pin)"))
        else:
            used[pin] = key
    if cfg.sync.enabled and not involves_bad(("sync.enabled",), bad):
        if not cfg.sync.central_keys and not involves_bad(("sync.central_keys",), bad):
            out.append(ConfigError("sync.central_keys", "at least one central key must be "
                                                        "pinned"))
        if (not cfg.sync.ca_file or not cfg.sync.cert_file) and \
                not involves_bad(("sync.ca_file", "sync.cert_file"), bad):
            out.append(ConfigError("sync.ca_file", "TLS needs ca_file and cert_file"))
    return out


def calibrated_range(embedder: str) -> tuple[float, float]:
    """The lowest and highest cosine threshold measured by the calibration of the
    ``[models] embedder`` named (:data:`gate.match.threshold.CALIBRATIONS`): at the lowest,
    about 10 % of impostor pairs of the calibration set already match."""
    scores = [score for score, _ in CALIBRATIONS[embedder_spec(embedder).calibration].points]
    return min(scores), max(scores)


def _match_rules(cfg: Config, bad: Collection[str]) -> list[ConfigError]:
    """A fixed threshold inside the calibrated range and below 1; a margin that a match
    can still clear."""
    out: list[ConfigError] = []
    m = cfg.match
    if m.threshold and not involves_bad(("match.threshold", "models.embedder"), bad):
        lo, hi = calibrated_range(cfg.models.embedder)
        if m.threshold < lo:
            out.append(ConfigError("match.threshold", (
                f"{m.threshold:g} is below the calibrated range {lo:g}–{hi:g} of the "
                f"{cfg.models.embedder!r} embedder (at {lo:g} about 10 % of strangers "
                f"already match): set at least {lo:g}, or 0 to use the calibration table")))
        elif m.threshold >= 1:
            out.append(ConfigError("match.threshold", (
                f"must be below 1, got {m.threshold:g}: only identical embeddings score 1, "
                f"so nobody would be accepted (calibrated range {lo:g}–{hi:g})")))
    if m.margin >= 1 and not involves_bad(("match.margin",), bad):
        out.append(ConfigError("match.margin", (
            f"must be below 1, got {m.margin:g}: the runner-up of any real gallery scores "
            "0 or more and no score exceeds 1, so nobody would be accepted")))
    return out


def _path_rules(cfg: Config, bad: Collection[str]) -> list[ConfigError]:
    """What the gate creates must be creatable, judged from the spelling alone."""
    out: list[ConfigError] = []
    for key, value, what in (("cache.dir", cfg.cache.dir, "the template cache"),
                             ("service.control_socket", cfg.service.control_socket,
                              "the control socket")):
        if involves_bad((key,), bad):
            continue
        if not value:
            out.append(ConfigError(key, "must not be empty"))
            continue
        tree = in_system_tree(value)
        if tree is not None:
            out.append(ConfigError(key, f"{value!r} is under {tree}, a kernel file system: "
                                        f"{what} needs real storage (e.g. /var/lib/gate or "
                                        "/run/gate)"))
            continue
        if key == "service.control_socket":
            problem = socket_path_problem(value)
            if problem is not None:
                out.append(ConfigError(key, problem))
    return out


#: Keys that name files or folders: relative ones resolve against the config's folder.
_PATHS = ("models.dir", "service.control_socket", "cache.dir", "cache.key_file",
          "cache.template_key_file", "sync.ca_file", "sync.cert_file", "sync.key_file",
          "sync.sign_key_file", "sync.seal_key_file")


def validate(data: dict[str, Any], *, base_dir: Path | None = None
             ) -> tuple[Config, list[ConfigError]]:
    """Validate a parsed TOML document and collect *every* problem, table by table.

    Returns the config (keys that failed keep their defaults, so it is only usable when
    the list is empty) and the errors. Relative paths resolve against ``base_dir``.
    """
    errors: list[ConfigError] = []
    cfg: Config = build(Config, data, "", errors, {QualityConfig: _QUALITY_BOUNDS})
    if base_dir is not None:
        cfg = map_fields(cfg, _PATHS, lambda p: resolve(p, base_dir))
    bad = {e.path for e in errors}
    errors += _cross_checks(cfg, bad) + _match_rules(cfg, bad) + _path_rules(cfg, bad)
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
    """The parsed TOML document of a config file; one-line ConfigError if it is not a
    regular file (links are followed, and what they point to is checked), is over
    :data:`~gate.configcheck.MAX_CONFIG_BYTES`, unreadable, not UTF-8 or not TOML."""
    return read_toml(Path(path))


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
            not involves_bad(("cache.allow_ephemeral_keys", "gpio.backend"), bad):
        out.append(ConfigError("cache.allow_ephemeral_keys", (
            f'true with gpio.backend = "{cfg.gpio.backend}": a real lane must not run on '
            "throw-away keys; remove it and provide the cache-key and template-key "
            "credentials")))
    # The service creates these two: what is already there must be what it creates.
    for problem in (
            None if involves_bad(("cache.dir",), bad) else
            existing_problem("cache.dir", cfg.cache.dir, "a directory", stat.S_ISDIR),
            None if involves_bad(("service.control_socket",), bad) else
            existing_problem("service.control_socket", cfg.service.control_socket,
                      "a socket (the service replaces only a stale socket)", stat.S_ISSOCK)):
        if problem is not None:
            out.append(problem)
    return out


def _read_and_check(path: Path, *, service: bool) -> tuple[Config | None, list[ConfigError]]:
    """The file read once, and every problem of it (the config is None if unreadable)."""
    try:
        data = read_file(path)
    except ConfigError as exc:
        return None, [exc]
    cfg, errors = validate(data, base_dir=Path(path).parent)
    if service:
        errors += _service_rules(data, cfg, {e.path for e in errors})
    return cfg, errors


def check(path: Path, *, service: bool = False) -> list[ConfigError]:
    """Every problem of the config file at ``path`` (an empty list: valid).

    ``service`` adds what the gate service requires of a real lane (see
    :func:`load_for_service`). A file that cannot be read or parsed is one error.
    """
    return _read_and_check(path, service=service)[1]


def load_for_service(path: Path) -> Config:
    """Load the config of a real lane: the file must exist, set ``[gate] id``, ``venue``
    and ``event`` itself, not use throw-away keys on real pins, and not name an existing
    file where the service creates its cache directory or control socket.

    Raises the first problem as a one-line :class:`ConfigError` that also says how many
    more there are (``gatectl config check --service FILE`` lists them).
    """
    cfg, errors = _read_and_check(path, service=True)
    if errors:
        first = errors[0]
        more = f" (+{len(errors) - 1} more: gatectl config check --service {path})" \
            if len(errors) > 1 else ""
        raise ConfigError(first.path, first.reason + more)
    assert cfg is not None
    return cfg


def load(path: Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return from_dict({})
    return from_dict(read_file(path), base_dir=Path(path).parent)
