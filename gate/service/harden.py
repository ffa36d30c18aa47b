"""Process hardening the unit cannot do alone: no core dumps, memory never swapped.

The unit already sets ``LimitCORE=0``; the process repeats it (RLIMIT_CORE 0) and marks
itself not dumpable (``prctl(PR_SET_DUMPABLE, 0)``), which also keeps other processes of
the same user from ptrace-reading its memory. ``mlockall`` keeps decrypted templates, keys
and frames out of swap; it needs ``LimitMEMLOCK=`` (the unit sets it) and is skipped,
with a warning, where the limit is too small: such a gate must run without swap
(``gatectl doctor`` checks). Linux only; elsewhere each step reports itself unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
CAP_IPC_LOCK = 14
#: Locking is attempted only when this much may be locked. The limit applies to locked
#: address space (not RSS), and with MCL_FUTURE every later mapping counts: a gate at
#: 100k templates peaked at 978 MB of address space (the unit allows 2 GiB).
MIN_LOCKABLE = 1536 * 1024 * 1024


@dataclass(frozen=True)
class Hardening:
    """What :func:`harden` achieved, for the log and ``gatectl status``."""

    core_dumps: bool  # True = still possible (bad)
    memory_locked: bool
    detail: str


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


def disable_core_dumps() -> bool:
    """RLIMIT_CORE 0 and not dumpable; True when both took effect."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = _libc()
    if libc is None:
        return False
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)


def has_ipc_lock() -> bool:
    """True when CAP_IPC_LOCK is effective: then RLIMIT_MEMLOCK does not apply."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except (OSError, ValueError):
        pass
    return False


def may_lock() -> bool:
    """Whether :func:`lock_memory` will try: the limit is large enough, or no limit applies."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return soft == resource.RLIM_INFINITY or soft >= MIN_LOCKABLE or has_ipc_lock()


def lock_memory() -> tuple[bool, str]:
    """mlockall current and future pages (as they are touched); (locked, why)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if not may_lock():
        return False, (f"RLIMIT_MEMLOCK is {soft // 1024} KiB (the unit's LimitMEMLOCK= "
                       f"sets it); run this gate without swap")
    libc = _libc()
    if libc is None:
        return False, "no C library to call mlockall"
    # MCL_ONFAULT: lock pages when first touched, so thread stacks and arenas are not
    # committed up front.
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        return False, f"mlockall failed ({os.strerror(err)}); run this gate without swap"
    return True, "memory locked (mlockall)"


def harden(*, lock: bool) -> Hardening:
    """Apply both; log what could not be done."""
    dumps_off = disable_core_dumps()
    if not dumps_off:
        log.warning("harden: could not mark the process non-dumpable")
    locked, why = lock_memory() if lock else (False, "memory locking off in config")
    if not locked:
        log.warning("harden: memory not locked: %s", why)
    return Hardening(core_dumps=not dumps_off, memory_locked=locked, detail=why)
