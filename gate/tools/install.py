"""Install the gate as a systemd service, or remove it (``make install``, ``gatectl install``).

Standard library only: it runs from a source checkout with the system ``python3`` before
any dependency is installed (``python3 -m gate.tools.install install``). What ``install`` puts
where (ROOT is ``/`` unless ``--root``, PREFIX is ``/opt/gate`` unless ``--prefix``):

* user and group ``gate`` (also in groups ``gpio`` and ``video``) from
  ``ROOT/usr/lib/sysusers.d/gate.conf``, created by ``systemd-sysusers --root=ROOT``;
* ``PREFIX/venv``: a venv with this checkout installed (not editable); on a Raspberry Pi
  with ``--system-site-packages`` and the ``pi`` extra, so Raspberry Pi OS's apt
  picamera2/libcamera/lgpio are used; ``ROOT/usr/local/bin/gatectl`` links to it;
* ``PREFIX/models``: the model files from the checkout's ``models/``, each checked
  against ``gate/model_manifest.json`` (a mismatch is refused);
* ``ROOT/etc/gate/gate.toml`` from ``config/gate.example.toml``, only when absent
  (mode 0640, root:gate); ``ROOT/etc/credstore.encrypted`` (0700);
* ``ROOT/etc/systemd/system/gate.service``; with ROOT ``/``, ``systemctl daemon-reload``
  (the service is neither enabled nor started).

``uninstall`` stops and disables the service, crypto-erases the state directory (the
wrapped data key first, see :func:`gate.match.erase.erase_state`), removes PREFIX, the
unit, the sysusers file and the ``gatectl`` link; ``/etc/gate`` and the credentials stay
unless ``--purge``. Both are idempotent. A venv is not relocatable, so a tree built with
``--root`` runs from that directory (tests, inspection); to prepare an SD-card image run
the installer inside the image (chroot or systemd-nspawn) with the default root.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gate.errors import GateError
from gate.exitcodes import EXIT_CANCELLED
from gate.match.atomic import destroy
from gate.match.erase import erase_state
from gate.tools.ask import confirm

PROG = "gate install"
DEFAULT_PREFIX = Path("/opt/gate")
#: The runtime paths the unit file names; --prefix rewrites the first one.
UNIT_PREFIX = "/opt/gate"
UNIT = "gate.service"
#: The credentials the unit loads (gate/credentials.py names them).
CREDENTIALS = ("cache-key", "template-key", "sign-key", "seal-key", "mqtt-key.pem")
#: Written into PREFIX by install; uninstall deletes PREFIX only when it is there.
MARKER = ".gate-install.json"
#: Where a prefix must not go: the unit hides or protects these from the service, or
#: deleting the prefix on uninstall would take system files with it.
_FORBIDDEN = ("/home", "/root", "/run", "/tmp", "/var/tmp", "/proc", "/sys", "/dev", "/etc",
              "/boot", "/var/lib/gate")


class InstallError(GateError, RuntimeError):
    """The installer cannot go on; the message says why and what to do, in one line."""


class NotConfirmedError(InstallError):
    """The technician declined the confirmation prompt."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes: ``root`` is the target tree, ``prefix`` the runtime path."""

    root: Path
    prefix: Path

    @property
    def is_system(self) -> bool:
        """True when installing into the running system (ROOT is ``/``)."""
        return self.root == Path("/")

    def at(self, runtime_path: str | Path) -> Path:
        """``runtime_path`` (absolute, as the running gate sees it) inside ROOT."""
        return self.root / Path(runtime_path).relative_to("/")

    @property
    def home(self) -> Path:
        """PREFIX inside ROOT."""
        return self.at(self.prefix)

    @property
    def venv(self) -> Path:
        """The gate's venv inside ROOT."""
        return self.home / "venv"

    @property
    def models(self) -> Path:
        """The verified model files inside ROOT."""
        return self.home / "models"


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    layout: Layout
    source: Path
    assume_yes: bool = False
    models: bool = True
    pip_args: tuple[str, ...] = ()
    purge: bool = False


def say(message: str) -> None:
    """One progress line on stdout."""
    print(f"{PROG}: {message}", flush=True)


# --- checks -------------------------------------------------------------------------------

def check_prefix(prefix: Path) -> Path:
    """``prefix`` if it is a safe absolute install location; InstallError otherwise."""
    text = str(prefix)
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+){2,}", text) or any(
            part in (".", "..") for part in prefix.parts):
        raise InstallError(f"--prefix {text!r}: must be an absolute path of at least two "
                           "levels made of letters, digits, '.', '_', '-' (e.g. /opt/gate)")
    for bad in _FORBIDDEN:
        if text == bad or text.startswith(bad + "/"):
            raise InstallError(f"--prefix {text}: not under {bad} (hidden from or protected "
                               "against the service, or shared with the system)")
    return prefix


def check_source(source: Path) -> Path:
    """``source`` if it is a source checkout of this firmware."""
    needed = ("pyproject.toml", "gate/model_manifest.json", "systemd/gate.service",
              "systemd/gate.sysusers", "config/gate.example.toml")
    missing = [n for n in needed if not (source / n).is_file()]
    if missing:
        raise InstallError(f"{source} is not a source checkout (no {missing[0]}); run from "
                           "the checkout (make install) or pass --source DIR")
    return source


def _require_privileges(layout: Layout) -> None:
    if layout.is_system and os.geteuid() != 0:
        raise InstallError("changing this system needs root: run it with sudo (or use "
                           "--root DIR to build a tree elsewhere)")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InstallError(f"{name} not found: install it (apt install {package})")
    return path


def is_raspberry_pi(model_file: Path = Path("/proc/device-tree/model")) -> bool:
    """True on a Raspberry Pi (the device tree's model names it)."""
    try:
        return "Raspberry Pi" in model_file.read_bytes().decode("ascii", "replace")
    except OSError:
        return False


def venv_plan(*, pi: bool) -> tuple[list[str], str]:
    """Extra ``python -m venv`` arguments and the pip extras suffix for this machine.

    On a Pi the venv sees the system site-packages, because picamera2 and libcamera
    come from Raspberry Pi OS's apt (they cannot be built from PyPI there); elsewhere
    the venv is sealed off from the system's packages.
    """
    return (["--system-site-packages"], "[pi]") if pi else ([], "")


def verified_models(source: Path) -> list[tuple[str, bytes]]:
    """Every model file in the manifest, read from ``source/models`` and checked.

    Each file is read once and its bytes hashed; those same bytes are what gets written,
    so nothing can change the file between the check and the copy.
    """
    manifest = json.loads((source / "gate" / "model_manifest.json").read_text("utf-8"))
    files = []
    for entry in manifest["files"]:
        path = source / "models" / entry["name"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InstallError(f"{path}: model file missing; run `make models` first (or "
                               "pass --no-models)") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise InstallError(f"{path}: sha256 {digest[:12]}… differs from the pinned "
                               f"{entry['sha256'][:12]}…; refusing it; run `make models`")
        files.append((entry["name"], data))
    return files


# --- small file helpers -------------------------------------------------------------------

def _run(cmd: Sequence[str], what: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise InstallError(f"{what} failed (exit {done.returncode}): {lines[-1]}")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically with ``data`` at ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def group_id(root: Path, name: str) -> int | None:
    """The gid of group ``name`` in ``root/etc/group`` (not the host's database)."""
    with contextlib.suppress(OSError):
        for line in (root / "etc" / "group").read_text("utf-8").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
    return None


def systemd_running() -> bool:
    """True when systemd is PID 1 here (sd_booted's test)."""
    return Path("/run/systemd/system").is_dir()


# --- install ------------------------------------------------------------------------------

def install(opts: Options) -> None:
    """Install (or upgrade) the gate into ``opts.layout``; see the module docstring."""
    lay = opts.layout
    source = check_source(opts.source)
    _require_privileges(lay)
    _check_prefix_owner(lay)
    sysusers = _tool("systemd-sysusers", "systemd")
    models = verified_models(source) if opts.models else []
    if lay.is_system and not confirm(
            f"Install the gate service on this machine ({lay.prefix}, /etc/gate, user gate)?",
            assume_yes=opts.assume_yes):
        raise NotConfirmedError("cancelled; nothing was changed")
    if not lay.is_system:
        say(f"building the tree in {lay.root}; its venv runs from there only (a venv is "
            "not relocatable)")
    old_umask = os.umask(0o022)  # the service user must read the venv and the models
    try:
        # The marker first: a run that fails half-way can be repeated or uninstalled.
        lay.home.mkdir(parents=True, exist_ok=True)
        (lay.home / MARKER).write_text(json.dumps(
            {"installed_at": int(time.time()), "source": str(source)}) + "\n")
        _install_user(lay, source, sysusers)
        _install_venv(lay, source, opts.pip_args)
        if models:
            _install_models(lay, models)
        else:
            say(f"models not copied (--no-models): put them into {lay.models}")
        _install_config(lay, source)
        _install_unit(lay, source)
        _daemon_reload(lay)
    finally:
        os.umask(old_umask)
    print(next_steps(lay))


def _check_prefix_owner(lay: Layout) -> None:
    home = lay.home
    if home.exists() and any(home.iterdir()) and not (home / MARKER).is_file():
        raise InstallError(f"{home} exists and was not made by this installer; choose "
                           "another --prefix or remove it")


def _install_user(lay: Layout, source: Path, sysusers: str) -> None:
    conf = lay.at("/usr/lib/sysusers.d/gate.conf")
    _write(conf, (source / "systemd" / "gate.sysusers").read_bytes(), 0o644)
    lay.at("/etc").mkdir(parents=True, exist_ok=True)  # sysusers needs ROOT/etc to exist
    # By name, not path: sysusers then also honours an override in /etc/sysusers.d.
    _run([sysusers, f"--root={lay.root}", "gate.conf"], "systemd-sysusers")
    say("user gate ready (groups gate, gpio, video)")


def _install_venv(lay: Layout, source: Path, pip_args: Sequence[str]) -> None:
    pi = is_raspberry_pi()
    venv_args, extras = venv_plan(pi=pi)
    if pi and importlib.util.find_spec("picamera2") is None:
        say("warning: picamera2 is not installed system-wide; `sudo apt install "
            "python3-picamera2 python3-lgpio` first (pip cannot build them on a Pi)")
    python = lay.venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", *venv_args, str(lay.venv)],
             "creating the venv (on Debian: apt install python3-venv)")
    say(f"installing the gate package into {lay.venv}"
        f"{' (Raspberry Pi: system site-packages, pi extra)' if pi else ''}")
    # Built from a copy: pip and setuptools write build/ and *.egg-info next to the
    # sources, and the checkout may belong to another user (sudo make install).
    with tempfile.TemporaryDirectory(prefix="gate-src-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(source / name, copy / name)
        for package in ("gate", "sync"):  # pyproject: packages.find include gate*, sync*
            shutil.copytree(source / package, copy / package, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info"))
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              *pip_args, f"{copy}{extras}"], "pip install")
    link = lay.at("/usr/local/bin/gatectl")
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(lay.prefix / "venv" / "bin" / "gatectl")


def _install_models(lay: Layout, models: list[tuple[str, bytes]]) -> None:
    lay.models.mkdir(parents=True, exist_ok=True)
    for name, data in models:
        _write(lay.models / name, data, 0o644)
    say(f"{len(models)} model files verified and copied to {lay.models}")


def _install_config(lay: Layout, source: Path) -> None:
    conf_dir = lay.at("/etc/gate")
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / "gate.toml"
    data = (source / "config" / "gate.example.toml").read_bytes()
    try:
        # O_EXCL: an operator's config (or anything else at that name) is never replaced.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    except FileExistsError:
        say(f"kept the existing {target}")
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        gid = group_id(lay.root, "gate")
        if os.geteuid() == 0 and gid is not None:
            os.chown(target, 0, gid)  # root writes it, the service (group gate) reads it
        os.chmod(target, 0o640)
        say(f"wrote {target} from config/gate.example.toml: edit it")
    store = lay.at("/etc/credstore.encrypted")
    store.mkdir(parents=True, exist_ok=True)
    os.chmod(store, 0o700)


def unit_text(source: Path, prefix: Path) -> str:
    """The unit file with its venv and models paths moved under ``prefix``."""
    text = (source / "systemd" / UNIT).read_text("utf-8")
    return text.replace(UNIT_PREFIX + "/", f"{prefix}/")


def _install_unit(lay: Layout, source: Path) -> None:
    target = lay.at(f"/etc/systemd/system/{UNIT}")
    _write(target, unit_text(source, lay.prefix).encode(), 0o644)
    say(f"unit installed: {target}")


def _daemon_reload(lay: Layout) -> None:
    if not lay.is_system:
        return
    if systemd_running():
        _run(["systemctl", "daemon-reload"], "systemctl daemon-reload")
    else:
        say("systemd is not running here: daemon-reload skipped")


def next_steps(lay: Layout) -> str:
    """What the technician does after ``install``."""
    return f"""
Next steps:
  1. Edit /etc/gate/gate.toml: [gate] id, venue and event first (the keys name them),
     then [camera], [gpio] and [sync].
  2. sudo gatectl keys init  (cache-key, sign-key, seal-key, mqtt-key.pem in /run/gate-keys,
     in RAM; central answers with ca.crt, this gate's certificate and the template-key)
  3. Encrypt each credential, then shred the plaintext:
       sudo systemd-creds encrypt --name=NAME /run/gate-keys/NAME /etc/credstore.encrypted/NAME
     NAME: {", ".join(CREDENTIALS)}
     (without sync only cache-key and template-key)
  4. sudo gatectl config check
  5. sudo gatectl doctor
  6. sudo systemctl enable --now gate   (after an upgrade: sudo systemctl restart gate)
Installed into {lay.root}: {lay.prefix}/venv, {lay.prefix}/models, /etc/gate,
/etc/systemd/system/{UNIT}, /usr/lib/sysusers.d/gate.conf, /usr/local/bin/gatectl."""


# --- uninstall ----------------------------------------------------------------------------

def uninstall(opts: Options) -> None:
    """Remove the gate from ``opts.layout``; see the module docstring."""
    lay = opts.layout
    _require_privileges(lay)
    what = "and /etc/gate with the credentials " if opts.purge else ""
    if not confirm(f"Remove the gate service, {lay.home} {what}and crypto-erase its "
                   "template cache?", assume_yes=opts.assume_yes):
        raise NotConfirmedError("cancelled; nothing was changed")
    _stop_service(lay)
    state = lay.at("/var/lib/gate")
    erased = erase_state(state)
    say(f"state {state}: " + (f"crypto-erased ({', '.join(erased)})" if erased else
                              "nothing to erase"))
    if (lay.home / MARKER).is_file():
        shutil.rmtree(lay.home)
        say(f"removed {lay.home}")
    elif lay.home.exists():
        say(f"kept {lay.home}: not made by this installer (no {MARKER})")
    link = lay.at("/usr/local/bin/gatectl")
    if link.is_symlink() and Path(os.readlink(link)) == lay.prefix / "venv/bin/gatectl":
        link.unlink()
    for path in (lay.at(f"/etc/systemd/system/{UNIT}"),
                 lay.at("/usr/lib/sysusers.d/gate.conf")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if opts.purge:
        _purge(lay)
    else:
        say("kept /etc/gate and /etc/credstore.encrypted (--purge removes them)")
    _daemon_reload(lay)
    # Never deleted: a system user's uid could be reused by another account that would
    # then own whatever the gate left behind (sysusers.d(5) leaves users in place too).
    say("kept user gate (remove with `userdel gate` if wanted)")


def _stop_service(lay: Layout) -> None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return
    if lay.is_system and systemd_running():
        cmd = [systemctl, "disable", "--now", UNIT]
    elif lay.at(f"/etc/systemd/system/{UNIT}").exists():
        cmd = [systemctl, f"--root={lay.root}", "disable", UNIT]  # works offline
    else:
        return
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        say("service stopped and disabled")


def _purge(lay: Layout) -> None:
    for name in CREDENTIALS:
        path = lay.at("/etc/credstore.encrypted") / name
        if path.is_file() and not path.is_symlink():
            destroy(path)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(lay.at("/etc/gate"))
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(lay.at(f"/etc/systemd/system/{UNIT}.d"))
    say("purged /etc/gate, the unit's drop-ins and the gate's credentials")


# --- command line -------------------------------------------------------------------------

def _checkout() -> Path:
    """The checkout this module runs from (meaningful with ``make install``)."""
    return Path(__file__).resolve().parent.parent.parent


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The options of ``install`` or ``uninstall`` (shared by gatectl and ``-m``)."""
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                        help="target tree (default /); another directory builds the "
                             "whole installation there, for tests and inspection")
    parser.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, metavar="DIR",
                        help=f"where the venv and models live (default {DEFAULT_PREFIX})")
    parser.add_argument("-y", "--yes", dest="assume_yes", action="store_true",
                        help="do not ask for confirmation")
    if command == "install":
        parser.add_argument("--source", type=Path, default=_checkout(), metavar="DIR",
                            help="source checkout to install (default: this one)")
        parser.add_argument("--no-models", dest="models", action="store_false",
                            help="do not copy the model files (they come another way)")
        parser.add_argument("--pip-args", default="", metavar="ARGS",
                            help="extra pip arguments as one string, written with '=', e.g. "
                                 "--pip-args='--no-index --find-links /media/usb/wheels'")
    else:
        parser.add_argument("--purge", action="store_true",
                            help="also remove /etc/gate, the unit's drop-ins and the "
                                 "gate's credentials in /etc/credstore.encrypted")


def options(args: argparse.Namespace) -> Options:
    """Validated :class:`Options` from parsed arguments."""
    try:
        pip_args = tuple(shlex.split(getattr(args, "pip_args", "")))
    except ValueError as exc:
        raise InstallError(f"--pip-args: {exc}") from None
    root = args.root.resolve()
    if not root.is_dir():
        raise InstallError(f"--root {args.root}: not a directory")
    return Options(layout=Layout(root, check_prefix(args.prefix)),
                   source=getattr(args, "source", _checkout()).resolve(),
                   assume_yes=args.assume_yes, models=getattr(args, "models", True),
                   pip_args=pip_args, purge=getattr(args, "purge", False))


def run(args: argparse.Namespace) -> None:
    """Carry out the parsed ``install`` / ``uninstall`` command."""
    opts = options(args)
    try:
        (install if args.command == "install" else uninstall)(opts)
    except OSError as exc:  # a file the installer cannot write or read: one line
        where = f"{exc.filename}: " if exc.filename else ""
        raise InstallError(f"{where}{exc.strerror or exc}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m gate.tools.install {install,uninstall} ...``; returns the exit code."""
    parser = _Parser(prog="python3 -m gate.tools.install", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command, text in (("install", "install or upgrade the gate service"),
                          ("uninstall", "remove it, crypto-erasing its cache")):
        add_arguments(sub.add_parser(command, help=text, description=text), command)
    args = parser.parse_args(argv)
    try:
        run(args)
    except NotConfirmedError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except InstallError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
