"""Doctor checks of the machine: clock, swap and memory locking, GPIO chip, camera.

Probes that touch the system (``timedatectl``, ``adjtimex``, ``/proc/swaps``, device
nodes, the camera) are small functions passed in or given paths, so the checks can be
tested with real files and fakes; nothing here prints.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gate.camera import open_camera
from gate.config import CameraConfig
from gate.doctor.result import Result, fail, ok, skip
from gate.safefile import read_regular
from gate.service.harden import MIN_LOCKABLE

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]

#: A clock before this is certainly wrong (a Pi without a battery clock that booted
#: without network starts from its last saved time, or from 1970).
CLOCK_FLOOR = dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
_TIME_ERROR = 5  # adjtimex(2): clock not synchronised
_STA_UNSYNC = 0x0040


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)


# --- clock -------------------------------------------------------------------------------

class _Timex(ctypes.Structure):
    # The leading fields of struct timex (linux/timex.h); the tail is room for the rest.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("_rest", ctypes.c_byte * 256)]


def kernel_synchronized() -> bool | None:
    """The kernel's own view (adjtimex with no modes: read only); None if unavailable."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


def clock_synchronized(run: Runner = _run) -> tuple[bool | None, str]:
    """(synchronised?, how we know): timedatectl, else the kernel, else unknown."""
    try:
        done = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        answer = done.stdout.strip() if done.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        answer = ""
    if answer in ("yes", "no"):
        return answer == "yes", "timedatectl"
    kernel = kernel_synchronized()
    return kernel, "the kernel's adjtimex" if kernel is not None else "nothing to ask"


def check_clock(synced: bool | None, source: str, *, now: float | None = None) -> list[Result]:
    """The clock is synchronised: templates expire by it and entry events carry it."""
    now = time.time() if now is None else now
    shown = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fix = ("sudo timedatectl set-ntp true and let the gate reach an NTP server (a Pi has no "
           "battery clock: after a power cut it is wrong until it syncs)")
    if now < CLOCK_FLOOR:
        return [fail("clock", f"clock says {shown}: templates would not expire and events "
                              "would carry a wrong time", fix)]
    if synced is None:
        return [skip("clock", f"synchronisation unknown ({source}); clock says {shown}")]
    if not synced:
        return [fail("clock", f"not synchronised ({source}); template expiry and event "
                              f"times depend on it; clock says {shown}", fix)]
    return [ok("clock", f"synchronised ({source}), {shown}")]


# --- swap and memory locking -------------------------------------------------------------

def active_swaps(path: Path = Path("/proc/swaps")) -> list[str] | None:
    """Swap devices and files in use; None if the kernel's list cannot be read (read as
    a regular file of at most 1 MiB, like every file the gate reads)."""
    try:
        data = read_regular(path, limit=1024 * 1024, what="swap list", fail=OSError)
    except OSError:
        return None
    lines = data.decode("utf-8", "replace").splitlines()
    return [line.split()[0] for line in lines[1:] if line.strip()]


def service_memlock_limit(run: Runner = _run) -> int | None:
    """The unit's LimitMEMLOCK= in bytes (-1 = infinity), or None when systemd can't say."""
    try:
        done = run(["systemctl", "show", "-p", "LimitMEMLOCK", "--value", "gate.service"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip() if done.returncode == 0 else ""
    if value == "infinity":
        return -1
    return int(value) if value.isdigit() else None


def check_memory(swaps: list[str] | None, *, service: dict[str, Any] | None,
                 lock_configured: bool, unit_limit: int | None) -> list[Result]:
    """Decrypted templates and keys must never reach swap: no swap on disk, or locked memory.

    zram swap is compressed RAM, not storage, so it does not count.
    """
    name = "memory"
    if swaps is None:
        return [skip(name, "cannot read /proc/swaps")]
    on_disk = [s for s in swaps if not s.startswith("/dev/zram")]
    if not on_disk:
        return [ok(name, "no swap on disk" + (" (zram only)" if swaps else ""))]
    fix = ("turn swap off (Raspberry Pi OS: sudo dphys-swapfile swapoff && sudo systemctl "
           "disable dphys-swapfile; else swapoff -a and remove it from /etc/fstab), or keep "
           "LimitMEMLOCK=infinity and [service] lock_memory = true")
    swap = ", ".join(on_disk)
    if service is not None:
        hard = service.get("hardening") or {}
        if hard.get("memory_locked"):
            return [ok(name, f"swap on ({swap}) but the service's memory is locked")]
        return [fail(name, f"swap on ({swap}) and the service's memory is not locked "
                           f"({hard.get('detail', 'no detail')})", fix)]
    if not lock_configured:
        return [fail(name, f"swap on ({swap}) and [service] lock_memory = false", fix)]
    limit = unit_limit
    source = "the unit's LimitMEMLOCK"
    if limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        limit = -1 if soft == resource.RLIM_INFINITY else soft
        source = "RLIMIT_MEMLOCK here"
    if limit != -1 and limit < MIN_LOCKABLE:
        return [fail(name, f"swap on ({swap}) and memory cannot be locked ({source} is "
                           f"{limit // (1024 * 1024)} MiB)", fix)]
    return [ok(name, f"swap on ({swap}) but the service can lock its memory ({source})")]


# --- GPIO ----------------------------------------------------------------------------------

def check_gpio(backend: str, *, dev: Path = Path("/dev")) -> list[Result]:
    """A GPIO character device is present and opens read-write (what lgpio needs)."""
    if backend == "mock":
        return [skip("gpio", 'gpio.backend = "mock" (simulation): no pins to reach')]
    chips = sorted(dev.glob("gpiochip*"))
    if not chips:
        return [fail("gpio", f"no {dev}/gpiochip*: this machine exposes no GPIO",
                     'on a Pi, use Raspberry Pi OS (kernel ≥ 5.10); in a simulation set '
                     'gpio.backend = "mock"')]
    opened, refused = [], []
    for chip in chips:
        try:
            fd = os.open(chip, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            refused.append(chip.name)
            continue
        except OSError as exc:
            return [fail("gpio", f"{chip}: {exc.strerror}", "check the kernel log (dmesg)")]
        os.close(fd)
        opened.append(chip.name)
    if not opened:
        return [fail("gpio", f"cannot open {', '.join(refused)} read-write (permission "
                             "denied)", "add the gate user to group gpio: sudo usermod -aG "
                                        "gpio gate")]
    return [ok("gpio", f"{', '.join(opened)} open read-write")]


# --- camera --------------------------------------------------------------------------------

_CAMERA_FIX = {
    "replay": "set [camera] source to a folder of images or a video file",
    "opencv": "check the USB cable and `ls /dev/video*`; is another program using the camera?",
    "picamera2": "check the ribbon cable and `rpicam-hello --list-cameras`; install "
                 "python3-picamera2",
}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_camera(cam_cfg: CameraConfig, *, service: dict[str, Any] | None,
                 service_unknown: bool = False, frames: int = 6,
                 opener: Callable[..., Any] | None = None) -> list[Result]:
    """The camera opens and delivers frames at a usable rate.

    While the service runs it owns the camera (and keeps it closed while the lane is
    empty, P3), so its report is shown instead of opening the camera a second time.
    Frames stay in the camera's one buffer, which ``close()`` zeroes (P1, P2).
    """
    name = "camera"
    if service is not None:
        cam = service.get("camera")
        if not isinstance(cam, dict):
            return [skip(name, "the service has not started its camera yet")]
        state = f"open, {cam.get('fps')} fps" if cam.get("open") else \
            "closed while the lane is empty"
        errors = int(cam.get("errors") or 0)
        if errors:
            return [fail(name, f"the service counted {errors} camera faults ({state})",
                         "journalctl -u gate for the fault; "
                         + _CAMERA_FIX.get(cam_cfg.backend, ""))]
        return [ok(name, f"in use by the service: {cam_cfg.backend}, {state}, no faults")]
    if service_unknown:
        return [skip(name, "the service may be running (its control socket refused us): not "
                           "opening the camera it may hold")]
    if opener is None:
        opener = open_camera
    fix = _CAMERA_FIX.get(cam_cfg.backend, "check the [camera] section")
    if cam_cfg.backend != "picamera2" and not cam_cfg.source:
        return [fail(name, f"camera.source is empty ({cam_cfg.backend} needs one)", fix)]
    try:
        camera = opener(cam_cfg.backend, cam_cfg.source, cam_cfg.mode)
    except Exception as exc:  # a check reports, it does not crash
        return [fail(name, f"{cam_cfg.backend}: {_one_line(exc)}", fix)]
    lit = False
    try:
        camera.open()
        start = 0.0
        for k in range(frames):
            frame = camera.read()
            if k == 0:  # timed from the first frame: opening may take a while
                start = time.monotonic()
            lit = lit or bool(frame.max() > 0)
        elapsed = time.monotonic() - start
    except Exception as exc:  # a driver's own error too: a check reports, it does not crash
        return [fail(name, _one_line(exc), fix)]
    finally:
        camera.close()  # zeroes the frame buffer
    fps = (frames - 1) / elapsed if elapsed > 0 else float("inf")
    size = f"{cam_cfg.width}×{cam_cfg.height}"
    if not lit:
        return [fail(name, f"{frames} frames {size} but all black",
                     "lens cap on, no light, or a dead sensor")]
    if fps < min(5.0, cam_cfg.fps / 2):
        return [fail(name, f"{frames} frames {size} at only {fps:.1f} fps (asked "
                           f"{cam_cfg.fps:g})", "lower [camera] width/height or fps; check "
                                                "the cable (USB 2 vs 3)")]
    return [ok(name, f"{cam_cfg.backend}: {frames} frames {size} at {fps:.1f} fps")]
