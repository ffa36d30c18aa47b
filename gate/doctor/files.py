"""Doctor checks of what the gate keeps on disk: config, models, keys, cache, free space.

Each check is a function of plain inputs returning :class:`~gate.doctor.result.Result`
lines; nothing here prints. Nothing here writes to the gate's state either: the cache is
opened from a private copy, so a running service is never disturbed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gate import config as config_mod
from gate.config import Config
from gate.credentials import CREDSTORES, KEY_BYTES, Key, locate, parse_key
from gate.doctor.result import Result, fail, ok, skip
from gate.errors import GateError, ModelError
from gate.match.erase import ERASE_ORDER, erase
from gate.models import read_verified
from gate.pipeline import FacePipeline
from gate.safefile import read_regular
from gate.templates import TemplateKeys, open_templates

#: The user the service runs as (``User=gate`` in the unit).
SERVICE_USER = "gate"
#: Below this much free space in the state directory the check fails (see check_disk).
MIN_FREE_BYTES = 200 * 1024 * 1024

Decrypt = Callable[[Path], "bytearray | None"]


def service_uid() -> int:
    """The uid key files must belong to: the service's user when it exists, else ours."""
    try:
        return pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        return os.geteuid()


# --- config and models -----------------------------------------------------------------

def check_config(path: Path | None) -> list[Result]:
    """The config file exists and satisfies the service's rules."""
    if path is None:
        return [fail("config", "no config file: the service needs one",
                     "install -m 0644 config/gate.example.toml /etc/gate/gate.toml and set "
                     "[gate] id, venue, event")]
    errors = config_mod.check(path, service=True)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return [fail("config", f"{errors[0]}{more}",
                     f"gatectl config check --service {path}  (lists every error)")]
    return [ok("config", f"{path}: valid for the service")]


def check_models(cfg: Config) -> list[Result]:
    """Every model file the pipeline loads is on disk with its pinned sha256."""
    roles = FacePipeline.roles(cfg)
    for role in roles:
        try:
            read_verified(cfg.models_dir, role)
        except ModelError as exc:
            return [fail("models", str(exc),
                         f"run `make models` and install the files into {cfg.models_dir}")]
    return [ok("models", f"{len(roles)} files match the pinned sha256 in {cfg.models_dir} "
                         f"({cfg.models.embedder} embedder)")]


# --- keys --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeySpec:
    """One key the gate needs: its credential name, the config fallback and its form."""

    name: str
    key_file: str
    config_key: str
    pem: bool = False


def needed_keys(cfg: Config) -> list[KeySpec]:
    """Keys the configured gate loads (sync keys only when sync is enabled)."""
    c, s = cfg.cache, cfg.sync
    keys = [KeySpec("cache-key", c.key_file, "cache.key_file"),
            KeySpec("template-key", c.template_key_file, "cache.template_key_file")]
    if s.enabled:
        keys += [KeySpec("sign-key", s.sign_key_file, "sync.sign_key_file"),
                 KeySpec("seal-key", s.seal_key_file, "sync.seal_key_file"),
                 KeySpec("mqtt-key.pem", s.key_file, "sync.key_file", pem=True)]
    return keys


def _read_private(path: Path) -> bytearray:
    # Into a bytearray the caller zeroes: no immutable copy of the key is left behind.
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    return buf


def _content_problem(data: bytearray, spec: KeySpec, cert_file: str) -> str | None:
    """Why the key material is unusable (None: fine). Never quotes the material."""
    if spec.pem:
        try:
            key = serialization.load_pem_private_key(bytes(data), None)
        except (ValueError, TypeError):
            return "not an unencrypted PEM private key"
        if cert_file and Path(cert_file).is_file():
            try:
                cert = x509.load_pem_x509_certificate(read_regular(
                    cert_file, limit=1 << 20, what=cert_file, fail=ValueError))
            except ValueError:
                return None  # the broker check reports a bad certificate
            pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            if cert.public_key().public_bytes(*pub) != key.public_key().public_bytes(*pub):
                return f"does not belong to the certificate {cert_file}"
        return None
    # Same forms the service accepts: 32 raw bytes or 64 hex digits.
    if parse_key(data) is None:
        return f"not a key ({KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex digits expected)"
    return None


def _fix_missing(spec: KeySpec) -> str:
    if spec.name == "template-key":
        return ("get this gate's template-key from central (`facepass-central add-gate` "
                "writes it), then systemd-creds encrypt --name=template-key FILE "
                "/etc/credstore.encrypted/template-key")
    return (f"run `gatectl keys init`, then systemd-creds encrypt --name={spec.name} "
            f"DIR/{spec.name} /etc/credstore.encrypted/{spec.name} (or set {spec.config_key})")


def find_key(spec: KeySpec, *, credentials_dir: str | None,
             credstores: tuple[Path, ...] = CREDSTORES) -> tuple[str, Path] | None:
    """Where the service will take ``spec`` from (:func:`gate.credentials.locate`, with
    the encrypted credential stores too): ``(kind, path)`` or None."""
    found = locate(spec.name, key_file=spec.key_file, credentials_dir=credentials_dir,
                   credstores=credstores)
    return None if found is None else (found.kind, found.path)


def read_key(found: tuple[str, Path], decrypt: Decrypt | None) -> bytearray | None:
    """The key material at ``found`` (zero it after use); None when it is encrypted and
    cannot be decrypted here. Raises OSError when the file cannot be read."""
    kind, path = found
    if kind == "encrypted":
        return decrypt(path) if decrypt is not None else None
    return _read_private(path)


def check_key(spec: KeySpec, *, owner_uid: int, credentials_dir: str | None,
              credstores: tuple[Path, ...] = CREDSTORES, cert_file: str = "",
              decrypt: Decrypt | None = None) -> Result:
    """Where the service will find ``spec`` and whether it is safe and well-formed.

    A key file must be a regular file (not a link), mode 0600/0400, owned by the
    service's user (``owner_uid``): the rules of :mod:`gate.credentials`, checked against
    the service's user rather than whoever runs the doctor.
    """
    name = spec.name
    found = find_key(spec, credentials_dir=credentials_dir, credstores=credstores)
    if found is None:
        return fail("keys", f"{name}: missing (no credential and no {spec.config_key})",
                    _fix_missing(spec))
    kind, path = found
    if kind == "file":
        try:
            st = path.lstat()
        except FileNotFoundError:
            return fail("keys", f"{name}: {path} not found ({spec.config_key})",
                        _fix_missing(spec))
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            return fail("keys", f"{name}: {path} is a link or device, not a regular file",
                        f"put the key file itself at {path} (install -m 0600 -o "
                        f"{SERVICE_USER} SOURCE {path})")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            return fail("keys", f"{name}: {path} mode {mode:04o} is open to others",
                        f"chmod 0600 {path}")
        if st.st_uid != owner_uid:
            return fail("keys", f"{name}: {path} owned by uid {st.st_uid}, not the service's "
                                f"uid {owner_uid}", f"chown {SERVICE_USER} {path}")
    try:
        data = read_key(found, decrypt)
    except PermissionError:
        return fail("keys", f"{name}: cannot read {path} (permission denied)",
                    "run gatectl doctor as root or as the gate user")
    where = {"credential": f"credential {path}", "encrypted": f"encrypted credential {path}",
             "file": f"file {path}"}[kind]
    if data is None:
        return ok("keys", f"{name}: {where} (systemd decrypts it at start)")
    try:
        problem = _content_problem(data, spec, cert_file)
    finally:
        data[:] = bytes(len(data))
    if kind == "encrypted":
        where += " decrypts here" if problem is None else " decrypts, but"
    if problem:
        return fail("keys", f"{name}: {where} is {problem}", _fix_missing(spec))
    return ok("keys", f"{name}: {where}")


def check_keys(cfg: Config, *, owner_uid: int, credentials_dir: str | None,
               credstores: tuple[Path, ...] = CREDSTORES,
               decrypt: Decrypt | None = None) -> list[Result]:
    """One line per key the configured gate needs."""
    out = []
    for spec in needed_keys(cfg):
        if cfg.cache.allow_ephemeral_keys and spec.name in ("cache-key", "template-key") and \
                find_key(spec, credentials_dir=credentials_dir, credstores=credstores) is None:
            out.append(skip("keys", f"{spec.name}: none, ephemeral in RAM "
                                    "(cache.allow_ephemeral_keys: simulation only; the cache "
                                    "is lost at every restart)"))
            continue
        out.append(check_key(spec, owner_uid=owner_uid, credentials_dir=credentials_dir,
                             credstores=credstores, cert_file=cfg.sync.cert_file,
                             decrypt=decrypt))
    return out


def systemd_decrypt(path: Path) -> bytearray | None:
    """Decrypt an encrypted credential in memory with ``systemd-creds`` (root only);
    None when that is not possible here, so the caller cannot tell and says so."""
    tool = shutil.which("systemd-creds")
    if tool is None or os.geteuid() != 0:
        return None
    try:
        done = subprocess.run([tool, "decrypt", f"--name={path.name}", str(path), "-"],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bytearray(done.stdout) if done.returncode == 0 else None


# --- the template cache ------------------------------------------------------------------

def _snapshot_state(src: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for name in ERASE_ORDER:
        with contextlib.suppress(FileNotFoundError):
            st = (src / name).stat()
            out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _copy_cache(src: Path, dst: Path) -> bool:
    """Copy the cache's files as one consistent set; False if there is no cache."""
    for _ in range(5):
        before = _snapshot_state(src)
        if not before:
            return False
        for name, _, _ in before:
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(src / name, dst / name)
        if _snapshot_state(src) == before:  # nobody wrote meanwhile
            return True
        for name in ERASE_ORDER:
            with contextlib.suppress(FileNotFoundError):
                (dst / name).unlink()
    return True  # still changing: open what we have; a mix shows as invalid, rarely


def _cache_keys(cfg: Config, credentials_dir: str | None, credstores: tuple[Path, ...],
                decrypt: Decrypt | None) -> tuple[bytes, bytes] | Result:
    """(cache-key, template-key) as the service would load them, or why not."""
    out = []
    for spec in needed_keys(cfg)[:2]:
        found = find_key(spec, credentials_dir=credentials_dir, credstores=credstores)
        if found is None:
            return skip("cache", "no cache keys (see keys): nothing to test-decrypt")
        try:
            data = read_key(found, decrypt)
        except OSError:
            return skip("cache", f"{spec.name} unreadable here (see keys)")
        if data is None:
            return skip("cache", f"{spec.name} is an encrypted credential that only the "
                                 "service (or root with systemd-creds) can decrypt")
        try:
            key = parse_key(data)
        finally:
            data[:] = bytes(len(data))
        if key is None:
            return skip("cache", f"{spec.name} is malformed (see keys)")
        out.append(key)
    return out[0], out[1]


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(before)


def check_cache(cfg: Config, service: dict[str, Any] | None, *,
                credentials_dir: str | None = None,
                credstores: tuple[Path, ...] = CREDSTORES,
                decrypt: Decrypt | None = None) -> list[Result]:
    """The template cache decrypts with this gate's keys (counts only, never ids).

    With the service running, its own report is used: it already holds the cache open,
    and a second decryption would double the memory a large cache needs. Otherwise the
    cache files are copied to a private directory and opened there, because opening
    tidies up (stale temporaries, a torn journal tail, expired templates) and the
    doctor must never write to the gate's state.
    """
    if service is not None:
        c = service.get("cache")
        if not isinstance(c, dict):
            return [skip("cache", "the service has not opened the cache yet")]
        if not c.get("valid", False):
            return [fail("cache", f"the service reports the cache invalid ({c.get('reason')})",
                         "gatectl sync resync (central sends a verified snapshot)")]
        return [ok("cache", f"open in the service: version {c.get('version')}, "
                            f"{c.get('attendees')} attendees, {c.get('templates')} templates")]
    src = Path(cfg.cache.dir)
    material = _cache_keys(cfg, credentials_dir, credstores, decrypt)
    if isinstance(material, Result):
        return [material]
    # The copy holds the wrapped data key: keep it in RAM where there is a tmpfs, and
    # overwrite it afterwards (a plain unlink could leave it on flash past a later
    # crypto-erase of the real cache).
    ram = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="gate-doctor-", dir=ram) as tmp:
        try:
            if not _copy_cache(src, Path(tmp)):
                return [skip("cache", f"no cache in {src} yet (it fills with central's first "
                                      "snapshot)")]
        except PermissionError:
            return [fail("cache", f"cannot read the cache in {src} (permission denied)",
                         "run gatectl doctor as root or as the gate user")]
        # Keys already found: as root the doctor may read files the service's own loader
        # would refuse to (owned by the gate user).
        keys = TemplateKeys(Key(material[0], "doctor"), Key(material[1], "doctor"))
        templates = open_templates(cfg, keys=keys, directory=Path(tmp))
        try:
            with _quiet("gate.match.cache"):  # the result line says it; no second log line
                st = templates.cache.load()
        finally:
            templates.close()
            erase(Path(tmp))
    if st.state == "invalid":
        return [fail("cache", f"does not decrypt: {st.reason}",
                     "wrong cache-key/template-key for this cache, or tampered: gatectl sync "
                     "resync (central resends a verified snapshot)")]
    until = dt.datetime.fromtimestamp(st.valid_until, dt.UTC).strftime("%Y-%m-%d") \
        if st.valid_until else "—"
    return [ok("cache", f"decrypts: version {st.version}, {st.attendees} attendees, "
                        f"{st.templates} templates, valid until {until}")]


# --- free space --------------------------------------------------------------------------

def check_disk(state_dir: Path, *, minimum: int = MIN_FREE_BYTES) -> list[Result]:
    """Enough free space where the cache and the outbox live."""
    where = Path(state_dir)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return [fail("disk", f"cannot measure free space at {where} ({exc.strerror})",
                     f"create the state directory {state_dir} (owned by {SERVICE_USER})")]
    mb = free // (1024 * 1024)
    if free < minimum:
        return [fail("disk", f"only {mb} MB free for {state_dir} (need ≥ "
                             f"{minimum // (1024 * 1024)} MB): the cache is rewritten beside "
                             "its old copy and the event outbox grows while offline",
                     "free space on that filesystem (sudo journalctl --vacuum-size=50M; "
                     "sudo apt-get clean)")]
    return [ok("disk", f"{mb} MB free for {state_dir}")]


def describe_error(exc: BaseException) -> str:
    """One line for a check that crashed (no traceback, no payload)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    kind = "" if isinstance(exc, GateError) else f"{type(exc).__name__}: "
    return f"{kind}{text}"[:300]
