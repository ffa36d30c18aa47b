"""``gatectl doctor``: everything a gate needs, checked one by one, with a fix for each failure.

Checks are plain functions returning :class:`Result` lines (✓ passed, ✗ failed with a
one-line fix, – skipped or not applicable); :func:`run` runs them in order and never
stops at a failure, and never lets one crashing check hide the others. The CLI only
prints. Output carries paths, counts and versions: never an attendee id, an image, an
embedding or key material (P10).

When the gate service is running, the doctor asks it (control socket) rather than
touching what it owns: the camera is not opened a second time and the cache is not
decrypted a second time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.config import Config
from gate.credentials import CREDSTORES
from gate.doctor import broker, files, host
from gate.doctor.result import Result, Status, fail, skip
from gate.errors import ServiceError
from gate.service.control import probe

__all__ = ["CHECKS", "Context", "Result", "Status", "run", "service_status"]


# The default probes, looked up when called (so a test or a port can replace them).
def _clock() -> tuple[bool | None, str]:
    return host.clock_synchronized()


def _swaps() -> list[str] | None:
    return host.active_swaps()


def _unit_memlock() -> int | None:
    return host.service_memlock_limit()


def _decrypt(path: Path) -> bytearray | None:
    return files.systemd_decrypt(path)


@dataclass
class Context:
    """Everything the checks read; tests build one with fakes where hardware is needed."""

    cfg: Config
    config_file: Path | None
    #: The running service's status, or None.
    service: dict[str, Any] | None = None
    #: True when a service may be running but did not answer us (e.g. permission).
    service_unknown: bool = False
    owner_uid: int = field(default_factory=files.service_uid)
    credentials_dir: str | None = field(
        default_factory=lambda: os.environ.get("CREDENTIALS_DIRECTORY"))
    credstores: tuple[Path, ...] = CREDSTORES
    decrypt: files.Decrypt | None = _decrypt
    clock: Callable[[], tuple[bool | None, str]] = _clock
    swaps: Callable[[], list[str] | None] = _swaps
    unit_memlock: Callable[[], int | None] = _unit_memlock
    dev: Path = Path("/dev")
    camera_opener: Callable[..., Any] | None = None


def service_status(socket_path: str | Path) -> tuple[dict[str, Any] | None, bool]:
    """(the running service's status or None, True when it might run but did not answer)."""
    try:
        return probe(socket_path), False
    except ServiceError:
        return None, True


def _keys(ctx: Context) -> list[Result]:
    return files.check_keys(ctx.cfg, owner_uid=ctx.owner_uid,
                            credentials_dir=ctx.credentials_dir, credstores=ctx.credstores,
                            decrypt=ctx.decrypt)


def _broker(ctx: Context) -> list[Result]:
    if ctx.service is not None:  # the running service holds the gate's broker session
        return broker.check_broker(ctx.cfg, credentials_dir=ctx.credentials_dir,
                                   service=ctx.service)
    key_bytes = None
    if ctx.cfg.sync.enabled and broker.tls_key_path(ctx.cfg, ctx.credentials_dir) is None:
        # Installed gates keep the TLS key as an encrypted credential only.
        spec = files.KeySpec("mqtt-key.pem", "", "sync.key_file", pem=True)
        found = files.find_key(spec, credentials_dir=None, credstores=ctx.credstores)
        if found is not None and found[0] == "encrypted":
            key_bytes = files.read_key(found, ctx.decrypt)
            if key_bytes is None:
                return [skip("broker", f"the TLS key is an encrypted credential ({found[1]}) "
                                       "and only root can decrypt it: run gatectl doctor "
                                       "as root")]
    return broker.check_broker(ctx.cfg, credentials_dir=ctx.credentials_dir,
                               key_bytes=key_bytes, service=ctx.service)


def _memory(ctx: Context) -> list[Result]:
    return host.check_memory(ctx.swaps(), service=ctx.service,
                             lock_configured=ctx.cfg.service.lock_memory,
                             unit_limit=ctx.unit_memlock())


#: Check name → function, in the order they are shown.
CHECKS: dict[str, Callable[[Context], list[Result]]] = {
    "config": lambda c: files.check_config(c.config_file),
    "models": lambda c: files.check_models(c.cfg),
    "keys": _keys,
    "cache": lambda c: files.check_cache(c.cfg, c.service, credentials_dir=c.credentials_dir,
                                         credstores=c.credstores, decrypt=c.decrypt),
    "disk": lambda c: files.check_disk(Path(c.cfg.cache.dir)),
    "memory": _memory,
    "clock": lambda c: host.check_clock(*c.clock()),
    "gpio": lambda c: host.check_gpio(c.cfg.gpio.backend, dev=c.dev),
    "camera": lambda c: host.check_camera(c.cfg.camera, service=c.service,
                                          service_unknown=c.service_unknown,
                                          opener=c.camera_opener),
    "broker": _broker,
}


def run(ctx: Context, skip_checks: Collection[str] = ()) -> list[Result]:
    """Every check in order; a skipped one shows as –, a crashing one as ✗."""
    out: list[Result] = []
    for name, check in CHECKS.items():
        if name in skip_checks:
            out.append(skip(name, "skipped (--skip)"))
            continue
        try:
            out += check(ctx)
        except Exception as exc:  # one broken probe must not hide the other checks
            if os.environ.get("DEBUG") == "1":
                raise
            out.append(fail(name, f"the check itself failed: {files.describe_error(exc)}",
                            "run with DEBUG=1 and report it"))
    return out
