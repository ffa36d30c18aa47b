"""``gatectl run``: the gate as a systemd service.

Start-up verifies everything before the lane may serve: config, model hashes, keys, the
cache (decrypted and verified, or found invalid: then everyone goes to the staffed lane
until central resyncs it) and the camera (opened once, no frame read). Only then READY=1.
A supervisor thread pings the watchdog while the decision loop makes progress: a loop
stuck in inference or in a camera call stops the pings, and systemd restarts the
service. SIGTERM sends STOPPING=1, ends the loop (relay to its safe state, camera closed,
buffers wiped), leaves queued entry events in the durable outbox, zeroes the templates
in RAM and exits 0.

Exit codes (the unit's ``RestartPreventExitStatus=`` uses them): 3 invalid config or a
missing/unsafe key, 4 model files missing or not the pinned ones (restarting cannot fix
these), 1 anything else that stops start-up (restarted by systemd).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from gate import config as config_mod
from gate.camera import Camera, CameraError, open_camera
from gate.config import Config
from gate.errors import ConfigError, GateError, KeyMaterialError, ModelError
from gate.exitcodes import EXIT_CONFIG, EXIT_FAIL, EXIT_MODELS, EXIT_OK
from gate.io.devices import GateIO, idle_mock_factory
from gate.link.link import GateLink
from gate.link.local import LocalEntries
from gate.logs import kv, setup
from gate.match.cache import TemplateCache
from gate.match.matcher import Matcher
from gate.models import manifest
from gate.pipeline import FacePipeline
from gate.runtime import EntryLog, GateRuntime, log_event
from gate.service import harden
from gate.service.control import ControlServer
from gate.service.notify import Notifier, watchdog_interval_s
from gate.templates import open_templates

log = logging.getLogger("gate.service")

#: Camera opening attempts at start-up before giving up (systemd then restarts us).
CAMERA_TRIES = 3


class GateService:
    """The assembled gate: built by :meth:`start`, run by :meth:`serve`, ended by :meth:`close`."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None,
                 pin_factory: Any = None, camera: Camera[Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.clock = clock
        self._pin_factory = pin_factory
        self._camera = camera
        self.started = clock()
        self.phase = "starting"
        self.hardening: harden.Hardening | None = None
        self.pipeline: FacePipeline | None = None
        self.cache: TemplateCache | None = None
        self.matcher: Matcher | None = None
        self.link: GateLink | None = None
        self.local: LocalEntries | None = None
        self.entries: EntryLog | None = None
        self.io: GateIO | None = None
        self.runtime: GateRuntime | None = None
        self.control: ControlServer | None = None
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._fps = 0.0
        self._stalled = False
        #: How often the MQTT link had to be restarted (its thread died or stalled).
        self.link_restarts = 0
        self._link_restarted_at = -float("inf")

    # --- start-up ----------------------------------------------------------------------

    def _starting(self, what: str) -> None:
        log.info("start: %s", what)
        self.notifier.status(f"starting: {what}")

    def start(self) -> None:
        """Verify and assemble every part; raises a GateError naming what is wrong."""
        cfg = self.cfg
        self.hardening = harden.harden(lock=cfg.service.lock_memory)
        self._starting("verifying model files")
        self.pipeline = FacePipeline.from_config(cfg)
        self._starting("keys and template cache")
        self.cache, self.matcher = open_templates(cfg)
        st = self.cache.load()
        if st.state == "invalid":
            log.error("start: %s; everyone goes to the staffed lane until central resyncs",
                      st)
        if cfg.sync.enabled:
            self._starting("MQTT link")
            self.link = self.entries = GateLink.from_config(cfg, cache=self.cache)
            self.link.status_health = self.health  # central sees the whole gate's health
        else:
            self.local = self.entries = LocalEntries(Path(cfg.cache.dir), cfg.gate.id)
        self._starting("camera")
        camera = self._camera or open_camera(cfg.camera.backend, cfg.camera.source,
                                             cfg.camera.mode)
        self._check_camera(camera)
        self._starting("GPIO")
        factory = self._pin_factory
        if factory is None and cfg.gpio.backend == "mock":
            factory = idle_mock_factory(cfg.gpio)
        self.io = GateIO(cfg.gpio, pin_factory=factory).open()
        self.runtime = GateRuntime(cfg, camera=camera, io=self.io, pipeline=self.pipeline,
                                   matcher=self.matcher, entries=self.entries,
                                   report=self._report)
        self.runtime.heartbeat = self.clock()
        self.control = ControlServer(cfg.service.control_socket, {
            "status": lambda _p: self.status(), "resync": lambda _p: self._resync(),
            "cache-wipe": lambda _p: self._wipe()})
        self.control.start()
        if self.link is not None:
            self.link.start()
        self.phase = "serving"

    def _check_camera(self, camera: Camera[Any]) -> None:
        """Open and close the camera once: it exists and accepts the format (no frame read)."""
        delay = 1.0
        for attempt in range(1, CAMERA_TRIES + 1):
            try:
                camera.open()
                camera.close()
                return
            except CameraError as exc:
                camera.close()
                if attempt == CAMERA_TRIES:
                    raise
                log.warning("start: camera fault (%s); retrying in %.0f s", exc, delay)
                time.sleep(delay)
                delay *= 2

    # --- running -----------------------------------------------------------------------

    def _report(self, e: dict[str, Any]) -> None:
        """A lane event: logged as key=value, kept (without ids) for ``gatectl status``."""
        self.recent.append({"at": time.time(), **{k: e.get(k) for k in
                                                   ("phase", "event", "indication")}})
        log_event(e)

    def serve(self, stop: threading.Event) -> None:
        """READY=1, then run the lane until ``stop``; the supervisor pings the watchdog."""
        assert self.runtime is not None
        self.notifier.ready(self.status_line())
        log.info("ready %s", kv(gate=self.cfg.gate.id, camera=self.cfg.camera.backend,
                                mode=self.cfg.lane.mode, cache=self._cache_state()))
        supervisor = threading.Thread(target=self._supervise, args=(stop,),
                                      name="supervisor", daemon=True)
        supervisor.start()
        try:
            self.runtime.run(stop)
        finally:
            stop.set()
            supervisor.join(5)

    def _supervise(self, stop: threading.Event) -> None:
        assert self.runtime is not None
        rt, svc = self.runtime, self.cfg.service
        wd = watchdog_interval_s()
        tick = min(svc.status_interval_s, wd / 2 if wd else svc.status_interval_s, 1.0)
        last_status, frames, t_frames = 0.0, rt.stats.frames, self.clock()
        while not stop.wait(tick):
            now = self.clock()
            age = now - rt.heartbeat
            if age < svc.stall_s:
                if self._stalled:
                    log.warning("watchdog: loop progressing again")
                    self._stalled = False
                if wd:
                    self.notifier.watchdog()
            elif not self._stalled:
                # No ping from now on: systemd kills and restarts us after WatchdogSec.
                self._stalled = True
                log.error("watchdog: decision loop stalled for %.0f s; pings withheld", age)
                self.notifier.status(f"stalled: no progress for {age:.0f} s, "
                                     "watchdog will restart the service")
            if now - last_status >= svc.status_interval_s:
                self._fps = (rt.stats.frames - frames) / max(now - t_frames, 1e-6)
                frames, t_frames, last_status = rt.stats.frames, now, now
                self._housekeeping()
                self._check_link(now)
                if not self._stalled:
                    self.notifier.status(self.status_line())

    def _housekeeping(self) -> None:
        """Delete what has expired (P7): templates past valid_until, as soon as they pass,
        not at the next restart; entry records older than the anti-passback window. Write
        what waited for disk space (cache changes, outbox messages)."""
        steps: list[Callable[[], object]] = []
        if self.cache is not None:
            cache = self.cache
            steps.append(cache.flush_pending)
            steps.append(lambda: cache.purge_expired()
                         if (due := cache.next_expiry()) is not None and due <= time.time()
                         else 0)
        if self.entries is not None:
            entries = self.entries
            steps.append(lambda: entries.forget_before(
                time.time() - self.cfg.lane.entry_window_h * 3600))
        if self.link is not None:
            steps += [self.link.retry_backlog, self.link.state.remember]
        for step in steps:
            try:
                step()
            except Exception as exc:  # the supervisor must keep pinging; try next time
                log.error("housekeeping: %s (%s)", type(exc).__name__,
                          str(exc).splitlines()[0][:200] if str(exc) else "")

    def _check_link(self, now: float) -> None:
        """Probe the MQTT link; restart it when its thread died or stopped answering."""
        link = self.link
        if link is None or self.phase != "serving":
            return
        try:
            if link.stalled(after_s=max(3 * self.cfg.service.status_interval_s, 15.0)):
                if now - self._link_restarted_at >= 30.0:
                    self.link_restarts += 1
                    self._link_restarted_at = now
                    log.error("watchdog: MQTT link not answering; restarting it (%d)",
                              self.link_restarts)
                    link.restart()
            else:
                link.heartbeat()
        except Exception as exc:
            log.error("watchdog: link check failed (%s)", type(exc).__name__)

    def health(self) -> list[str]:
        """Everything that is not as it should be, one line each (empty: all well)."""
        out = list(self.link.health()) if self.link is not None else []
        if self.cache is not None:
            st = self.cache.status()
            if st.storage:
                out.append(st.storage)
        if self.runtime is not None and self.runtime.stats.degraded:
            out.append(self.runtime.stats.degraded_reason)
        if self.link_restarts:
            out.append(f"MQTT link restarted {self.link_restarts} times")
        return out

    # --- status and requests -----------------------------------------------------------

    def _cache_state(self) -> str:
        return self.cache.status().state if self.cache is not None else "none"

    def status_line(self) -> str:
        """The ``systemctl status`` line: state, cache, link, outbox (counts only)."""
        parts = [self.runtime.policy.phase.value if self.runtime else self.phase]
        if self.cache is not None:
            st = self.cache.status()
            parts.append(f"cache invalid ({st.reason})" if st.state == "invalid" else
                         f"cache v{st.version} {st.templates} templates")
        if self.link is not None:
            parts.append("broker connected" if self.link.wait_connected(0) else
                         "broker disconnected")
            parts.append(f"outbox {self.link.outbox_depth()}")
        if self.runtime is not None:
            parts.append(f"entries {self.runtime.stats.entries}")
        health = self.health()
        if health:
            more = f" (+{len(health) - 1} more)" if len(health) > 1 else ""
            parts.append(f"degraded: {health[0]}{more}")
        return " · ".join(parts)

    def status(self) -> dict[str, Any]:
        """Everything ``gatectl status`` shows; counts, versions and timings, no ids."""
        rt = self.runtime
        out: dict[str, Any] = {
            "gate": self.cfg.gate.id, "venue": self.cfg.gate.venue,
            "event": self.cfg.gate.event, "pid": os.getpid(),
            "state": rt.policy.phase.value if rt else self.phase,
            "uptime_s": round(self.clock() - self.started, 1),
            "mode": self.cfg.lane.mode, "stalled": self._stalled, "health": self.health(),
            "models": {"embedder": self.cfg.models.embedder,
                       "files": {role: pin.sha256 for role, pin in manifest().items()}},
            "hardening": {"core_dumps_off": not self.hardening.core_dumps,
                          "memory_locked": self.hardening.memory_locked,
                          "detail": self.hardening.detail} if self.hardening else None,
        }
        if self.cache is not None and self.matcher is not None:
            st = self.cache.status()
            out["cache"] = {"state": st.state, "valid": st.state != "invalid",
                            "reason": st.reason or None, "version": st.version,
                            "templates": st.templates, "attendees": st.attendees,
                            "tombstones": st.tombstones,
                            "valid_until_max": st.valid_until,
                            "next_expiry": self.cache.next_expiry(),
                            "threshold": round(self.matcher.threshold, 4)}
        link = self.link
        out["broker"] = {"enabled": link is not None,
                         "connected": link is not None and link.wait_connected(0),
                         "resync_needed": link is not None and link.resync_needed}
        # Without the link nothing is ever queued: entries stay in the local log only.
        out["outbox"] = link.outbox_depth() if link is not None else 0
        if rt is not None:
            s = rt.stats
            lat = sorted(s.latencies_ms[-100:])
            out["camera"] = {"backend": self.cfg.camera.backend, "open": rt.camera.is_open,
                             "fps": round(self._fps, 1), "errors": s.camera_errors,
                             "frames": s.frames}
            out["decisions"] = {"counts": dict(s.decisions), "entries": s.entries,
                                "denials": s.denials,
                                "open_ms_p50": round(lat[len(lat) // 2], 1) if lat else None,
                                "open_ms_max": round(lat[-1], 1) if lat else None,
                                "recent": list(self.recent)}
        return out

    def _resync(self) -> dict[str, Any]:
        if self.link is None:
            raise ValueError("sync is disabled in the config ([sync] enabled = false)")
        self.link.resync_needed = True
        self.link.publish_status()
        log.warning("sync: full resync requested by a technician")
        return {"requested": True, "connected": self.link.wait_connected(0)}

    def _wipe(self) -> dict[str, Any]:
        assert self.cache is not None
        self.cache.wipe()
        if self.link is not None:
            self.link.resync_needed = True
            self.link.recheck()
        log.warning("cache: crypto-erased by a technician; resync needed")
        return {"erased": True}

    # --- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        """Relay safe, camera closed, buffers and templates zeroed, outbox left durable."""
        steps: list[Callable[[], None]] = []
        if self.runtime is not None:
            steps.append(self.runtime.close)
        if self.control is not None:
            steps.append(self.control.stop)
        if self.link is not None:
            link = self.link
            steps += [lambda: link.flush(wait=False), link.stop, link.close]
        if self.local is not None:
            steps.append(self.local.close)
        if self.io is not None:
            steps.append(self.io.close)
        if self.matcher is not None:
            steps.append(self.matcher.wipe)
        if self.cache is not None:
            steps.append(self.cache.close)
        if self.pipeline is not None:
            steps.append(self.pipeline.wipe)
        for step in steps:
            try:
                step()
            except Exception:  # keep going: the rest of the shutdown matters more
                log.exception("stop: a shutdown step failed")


def main(config_path: Path | None, *, pin_factory: Any = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code.

    ``pin_factory``: gpiozero's factory to use instead of the configured one (tests).
    """
    notifier = Notifier()
    setup("info")
    try:
        if config_path is None:
            raise ConfigError("", "no config file: pass --config FILE or install "
                                  "/etc/gate/gate.toml")
        cfg = config_mod.load_for_service(config_path)
    except ConfigError as exc:
        log.error("config invalid: %s", exc)
        notifier.status(f"config invalid: {exc}")
        return EXIT_CONFIG
    setup(cfg.service.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        notifier.stopping(f"stopping ({signal.Signals(signum).name})")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = GateService(cfg, notifier=notifier, pin_factory=pin_factory)
    try:
        try:
            service.start()
        except ModelError as exc:
            log.error("models: %s", exc)
            notifier.status(f"model files: {exc}")
            return EXIT_MODELS
        except KeyMaterialError as exc:
            # A missing or unsafe key is provisioning, like the config: no restart fixes it.
            log.error("keys: %s", exc)
            notifier.status(f"keys: {exc}")
            return EXIT_CONFIG
        except GateError as exc:
            log.error("start failed: %s", exc)
            notifier.status(f"start failed: {exc}")
            return EXIT_FAIL
        if not stop.is_set():
            service.serve(stop)
    finally:
        service.close()
        log.info("stopped %s", kv(entries=service.runtime.stats.entries
                                  if service.runtime else 0))
        notifier.close()
    return EXIT_OK
