"""The service: systemd's notify protocol over a real datagram socket, the watchdog that
stops while the loop is stuck, SIGTERM handling, hardening, and the control socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from central.core import Central
from central.pki import init_venue
from gate.camera.base import Mode
from gate.camera.replay import ReplayCamera, ReplayOptions
from gate.cli.main import main as gatectl
from gate.config import from_dict
from gate.errors import ServiceError, ServiceNotRunningError
from gate.exitcodes import EXIT_CONFIG, EXIT_SERVICE, EXIT_USAGE
from gate.io.devices import idle_mock_factory
from gate.service import daemon
from gate.service.control import ControlServer, request
from gate.service.daemon import GateService
from gate.service.harden import may_lock
from gate.service.notify import Notifier, watchdog_interval_s
from sync.templates import Enrolment
from tests import broker as tb
from tests.support import DIM, ROOT, unit


class NotifyListener:
    """What systemd would receive on ``$NOTIFY_SOCKET``: a real unix datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float, value: str | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, m in list(self.messages):
                if key in m and (value is None or m[key] == value):
                    return m
            time.sleep(0.02)
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def count(self, key: str, since: float = 0.0) -> int:
        return sum(1 for t, m in list(self.messages) if key in m and t >= since)

    def has_status(self, pred, timeout: float = 2.0) -> bool:
        """A STATUS line matching ``pred`` arrived (waiting a moment for the reader)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pred(s) for s in self.statuses()):
                return True
            time.sleep(0.02)
        return False

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in list(self.messages) if "STATUS" in m]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    lst = NotifyListener(tmp_path / "notify.sock")
    yield lst
    lst.close()


# --- notify protocol -----------------------------------------------------------------


def test_notifier_sends_fields_and_cannot_be_forged_by_newlines(listener):
    n = Notifier(str(listener.path))
    assert n.ready("idle") and n.watchdog()
    assert n.status("cache invalid\nREADY=1")  # a newline must not become a field
    m = listener.wait_for("MAINPID", 2)
    assert m["READY"] == "1" and m["MAINPID"] == str(os.getpid())
    listener.wait_for("WATCHDOG", 2)
    bad = listener.wait_for("STATUS", 2, "cache invalid READY=1")
    assert set(bad) == {"STATUS"}
    n.close()


def test_notifier_abstract_socket_and_no_manager(monkeypatch):
    name = f"gate-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind("\0" + name)
    srv.settimeout(2)
    assert Notifier("@" + name).stopping()
    assert srv.recv(100) == b"STOPPING=1\nSTATUS=stopping"
    srv.close()
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled and not Notifier().watchdog()


def test_watchdog_interval_is_for_this_process_only(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval_s() is None


# --- control socket ------------------------------------------------------------------


def test_control_socket_answers_refuses_garbage_and_keeps_running(tmp_path):
    path = tmp_path / "run" / "control.sock"

    def boom(_p):
        raise RuntimeError("secret internals")

    srv = ControlServer(path, {"status": lambda p: {"state": "idle", "echo": p},
                               "boom": boom})
    srv.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert request(path, "status", x=1) == {"state": "idle", "echo": {"x": 1}}
        with pytest.raises(ServiceError, match="unknown command"):
            request(path, "reboot")
        with pytest.raises(ServiceError, match=r"internal error \(see the journal\)"):
            request(path, "boom")
        for garbage in (b"\xff\xfe\n", b"[1,2]\n", b"{\"cmd\": 5}\n", b"x" * 70000,
                        b"[" * 60000 + b"\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect(str(path))
                s.sendall(garbage)
                s.shutdown(socket.SHUT_WR)
                answer = json.loads(s.recv(4096))
                assert answer["ok"] is False and "\n" not in answer["error"]
        assert request(path, "status")["state"] == "idle"  # still serving
    finally:
        srv.stop()
    assert not path.exists()
    with pytest.raises(ServiceNotRunningError, match="not running"):
        request(path, "status")


# --- the service in-process: watchdog withheld while the loop is stuck --------------


class StuckCamera(ReplayCamera):
    """A replay camera whose reads hang until released, like a wedged driver."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.release = threading.Event()
        self.reading = threading.Event()

    def _grab(self, out) -> None:
        self.reading.set()
        self.release.wait(30)
        super()._grab(out)


def _service_config(tmp_path: Path, models_dir: Path, photos: Path, **service):
    for name in ("ck", "tk"):
        (tmp_path / name).write_bytes(os.urandom(32))
        (tmp_path / name).chmod(0o600)
    return {
        "gate": {"id": "lane-7", "venue": "test-venue", "event": "test-event"},
        "models": {"dir": str(models_dir)},
        "cache": {"dir": str(tmp_path / "state"), "key_file": str(tmp_path / "ck"),
                  "template_key_file": str(tmp_path / "tk")},
        "camera": {"backend": "replay", "source": str(photos)},
        "gpio": {"backend": "mock", "presence_debounce_s": 0.0},
        "service": {"control_socket": str(tmp_path / "run" / "control.sock"),
                    "status_interval_s": 0.5, "lock_memory": False, **service},
    }


def test_watchdog_pings_only_while_the_loop_progresses(tmp_path, models_dir, photos,
                                                       listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: pings every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = from_dict(_service_config(tmp_path, models_dir, photos, stall_s=1.0))
    factory = idle_mock_factory(cfg.gpio)
    camera = StuckCamera(Mode(640, 480, 30), ReplayOptions(photos))
    svc = GateService(cfg, notifier=Notifier(str(listener.path)), pin_factory=factory,
                      camera=camera)
    svc.start()
    stop = threading.Event()
    loop = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    loop.start()
    relay = factory.pin(cfg.gpio.relay_pin)
    try:
        listener.wait_for("READY", 5)
        time.sleep(0.6)
        assert listener.count("WATCHDOG") >= 3, "no pings while healthy"
        factory.pin(cfg.gpio.presence_pin).drive_high()  # someone steps in: a read hangs
        assert camera.reading.wait(5)
        time.sleep(1.3)  # past stall_s
        stalled_at = time.monotonic()
        time.sleep(1.0)
        assert listener.count("WATCHDOG", since=stalled_at) == 0, "pinged while stuck"
        assert listener.has_status(lambda s: s.startswith("stalled"))
        assert request(cfg.service.control_socket, "status")["stalled"] is True
        camera.release.set()  # the driver recovers: pings resume
        time.sleep(1.0)
        assert listener.count("WATCHDOG", since=time.monotonic() - 0.6) >= 2
    finally:
        camera.release.set()
        stop.set()
        loop.join(10)
        svc.close()
    assert not loop.is_alive()
    assert relay.state == (0 if cfg.gpio.relay_active_high else 1)  # closed: safe state
    assert not camera.is_open and not camera.frame.any()


# --- the real process: READY, WATCHDOG, STATUS, SIGTERM → STOPPING ----------------------


def _write_config(tmp_path: Path, data: dict) -> Path:
    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path = tmp_path / "gate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _spawn(cfg_path: Path, listener: NotifyListener):
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000",
           "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_PID", None)

    return subprocess.Popen([sys.executable, "-m", "gate.cli.main", "--config", str(cfg_path),
                             "run"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_service_process_lifecycle(tmp_path, models_dir, photos, listener):
    data = _service_config(tmp_path, models_dir, photos, lock_memory=True)
    cfg_path = _write_config(tmp_path, data)
    proc = _spawn(cfg_path, listener)
    try:
        ready = listener.wait_for("READY", 60)
        assert ready["MAINPID"] == str(proc.pid)
        # READY comes only after models, keys/cache, camera and GPIO were checked.
        before = listener.statuses()[:listener.statuses().index(ready["STATUS"])]
        assert [s for s in before if s.startswith("starting:")] == [
            "starting: verifying model files", "starting: keys and template cache",
            "starting: camera", "starting: GPIO"]
        t = time.monotonic()
        time.sleep(1.0)
        assert listener.count("WATCHDOG", since=t) >= 3
        st = request(data["service"]["control_socket"], "status")
        assert st["state"] == "idle" and st["gate"] == "lane-7" and st["pid"] == proc.pid
        assert st["cache"]["state"] == "empty" and st["hardening"]["core_dumps_off"]
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert [ln.split()[4:6] for ln in limits.splitlines()
                if ln.startswith("Max core file size")] == [["0", "0"]]
        # Locked wherever the limit (the unit's LimitMEMLOCK=) or CAP_IPC_LOCK allows it,
        # and then really locked.
        assert st["hardening"]["memory_locked"] == may_lock(), st["hardening"]
        if may_lock():
            vmlck = [ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                     if ln.startswith("VmLck")]
            assert int(vmlck[0].split()[1]) > 10_000  # kB locked
        cli = subprocess.run([sys.executable, "-m", "gate.cli.main", "--config", str(cfg_path),
                              "status"], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
        assert cli.returncode == 0 and "gate lane-7" in cli.stdout, cli.stderr
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    listener.wait_for("STOPPING", 2)
    assert not Path(data["service"]["control_socket"]).exists()
    text = out.decode()
    assert "ready gate=lane-7" in text and "stopped" in text
    for s in listener.statuses():
        assert "\n" not in s and len(s) < 300


def test_invalid_config_is_named_and_the_loop_never_starts(tmp_path, models_dir, photos,
                                                          listener):
    data = _service_config(tmp_path, models_dir, photos)
    data["gpio"]["relay_pin"] = 99
    proc = _spawn(_write_config(tmp_path, data), listener)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "gpio.relay_pin" in out.decode()
    assert listener.count("READY") == 0
    assert listener.has_status(lambda s: "gpio.relay_pin" in s)


def test_missing_models_stop_start_up_with_exit_4(tmp_path, models_dir, photos, listener):
    data = _service_config(tmp_path, models_dir, photos)
    data["models"]["dir"] = str(tmp_path / "no-models")
    proc = _spawn(_write_config(tmp_path, data), listener)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, out.decode()[-1000:]
    assert listener.count("READY") == 0
    assert listener.has_status(lambda s: s.startswith("model files:"))


def test_camera_missing_at_start_fails_without_ready(tmp_path, models_dir, photos, listener):
    data = _service_config(tmp_path, models_dir, photos)
    data["camera"]["source"] = str(tmp_path / "unplugged")
    proc = _spawn(_write_config(tmp_path, data), listener)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "camera" in out.decode() and listener.count("READY") == 0


# --- with the MQTT link: credentials from $CREDENTIALS_DIRECTORY, a real broker --------


def test_service_with_sync_reports_the_link_and_serves_requests(tmp_path, models_dir, photos,
                                                               monkeypatch):
    venue = tmp_path / "venue"
    init_venue(venue, venue="arena", event="final", gates=["lane-1"])
    facts = json.loads((venue / "venue.json").read_text())
    broker = tb.Broker(venue).start()
    central = Central(venue, port=broker.port)
    central.connect()
    gd = venue / "gates" / "lane-1"
    # What systemd's LoadCredentialEncrypted= provides: the keys in a private directory.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(gd / "credentials"))
    data = _service_config(tmp_path, models_dir, photos)
    data["gate"] = {"id": "lane-1", "venue": "arena", "event": "final"}
    del data["cache"]["key_file"], data["cache"]["template_key_file"]
    data["sync"] = {"enabled": True, "host": "127.0.0.1", "port": broker.port,
                    "ca_file": str(gd / "ca.crt"), "cert_file": str(gd / "client.crt"),
                    "central_keys": [f"{facts['central']['kid']}="
                                     f"{facts['central']['sign_pub']}"]}
    cfg = from_dict(data)
    svc = GateService(cfg, pin_factory=idle_mock_factory(cfg.gpio))
    stop = threading.Event()
    loop = None
    sock = cfg.service.control_socket
    try:
        svc.start()
        loop = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
        loop.start()
        assert svc.link is not None and svc.link.wait_connected(10)
        st = request(sock, "status")
        assert st["broker"] == {"enabled": True, "connected": True, "resync_needed": False}
        assert "broker connected" in svc.status_line()
        vec = unit(np.random.default_rng(1).standard_normal(DIM))
        central.enrol_embeddings("someone", vec, valid_until=int(time.time()) + 86400)
        deadline = time.monotonic() + 10
        while request(sock, "status")["cache"]["templates"] != 1:
            assert time.monotonic() < deadline, "the enrolment never reached the cache"
            time.sleep(0.05)
        assert "someone" not in json.dumps(request(sock, "status"))  # counts, never ids
        cli = subprocess.run([sys.executable, "-m", "gate.cli.main", "sync", "resync"],
                             capture_output=True, text=True, cwd=ROOT, check=False,
                             env={**os.environ, "PYTHONPATH": str(ROOT),
                                  "GATE_CONFIG": str(_write_config(tmp_path, data))})
        assert cli.returncode == 0 and "resync requested" in cli.stdout, cli.stderr
        deadline = time.monotonic() + 10
        while not (central.status("lane-1") or {}).get("resync_needed"):
            assert time.monotonic() < deadline, "central never saw the resync request"
            time.sleep(0.05)
        assert request(sock, "cache-wipe") == {"erased": True}
        st = request(sock, "status")
        assert st["cache"]["templates"] == 0
        # Central's head says what it sent; the wiped cache has none of it: the status
        # says so (and the cache serves nobody) until central resends a snapshot.
        assert any("behind central" in h for h in st["health"]), st["health"]
        assert "degraded: " in svc.status_line()
        shown = subprocess.run([sys.executable, "-m", "gate.cli.main", "status"],
                               capture_output=True, text=True, cwd=ROOT, check=False,
                               env={**os.environ, "PYTHONPATH": str(ROOT),
                                    "GATE_CONFIG": str(_write_config(tmp_path, data))})
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert any(line.split()[:1] == ["DEGRADED"] for line in lines), shown.stdout
        assert any("behind central" in line for line in lines), shown.stdout
    finally:
        stop.set()
        if loop is not None:
            loop.join(10)
        svc.close()
        central.close()
        broker.stop()


def test_expired_templates_are_deleted_while_running(tmp_path, models_dir, photos):
    """P7 in the running service: a template past valid_until leaves the cache within a
    status interval, without a decision or a restart asking for it."""
    cfg = from_dict(_service_config(tmp_path, models_dir, photos))
    svc = GateService(cfg, pin_factory=idle_mock_factory(cfg.gpio))
    stop = threading.Event()
    svc.start()
    loop = threading.Thread(target=svc.serve, args=(stop,), daemon=True)
    loop.start()
    try:
        assert svc.cache is not None
        cache = svc.cache
        v = unit(np.random.default_rng(2).standard_normal((1, DIM)))
        now = int(time.time())
        cache.upsert([Enrolment("short-lived", 1, now + 2, v),
                          Enrolment("long-lived", 1, now + 3600, v)])
        assert svc.status()["cache"]["attendees"] == 2
        deadline = time.monotonic() + 6
        while svc.status()["cache"]["attendees"] != 1:
            assert time.monotonic() < deadline, "the expired template was kept"
            time.sleep(0.1)
        assert "short-lived" not in cache and "long-lived" in cache
    finally:
        stop.set()
        loop.join(10)
        svc.close()


def test_missing_cache_key_is_provisioning_exit_3(tmp_path, models_dir, photos, listener):
    data = _service_config(tmp_path, models_dir, photos)
    (tmp_path / "ck").unlink()
    proc = _spawn(_write_config(tmp_path, data), listener)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out.decode()[-1000:]
    assert listener.count("READY") == 0
    assert listener.has_status(lambda s: s.startswith("keys: cache-key:")), listener.statuses()


def test_sigterm_releases_an_open_relay_to_its_safe_state(tmp_path, models_dir, photos,
                                                          listener, monkeypatch):
    """The service's own main(), in this process's main thread so its SIGTERM handler is
    the one that runs: the fire input holds the flapper open, SIGTERM arrives, and the
    relay is back in its safe state (closed) when main() returns 0."""
    data = _service_config(tmp_path, models_dir, photos)
    cfg_path = _write_config(tmp_path, data)
    cfg = from_dict(data)
    factory = idle_mock_factory(cfg.gpio)
    relay = factory.pin(cfg.gpio.relay_pin)
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    seen: dict[str, int] = {}

    def alarm_then_term() -> None:
        listener.wait_for("READY", 30)
        factory.pin(cfg.gpio.emergency_pin).drive_low()  # fire loop opens: alarm
        deadline = time.monotonic() + 5
        while relay.state != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["relay_before"] = relay.state
        os.kill(os.getpid(), signal.SIGTERM)

    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    driver = threading.Thread(target=alarm_then_term, daemon=True)
    driver.start()
    try:
        code = daemon.main(cfg_path, pin_factory=factory)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        driver.join(5)
    assert code == 0
    assert seen["relay_before"] == 1, "the alarm never opened the flapper"
    assert relay.state == 0  # released: closed, the configured safe state
    assert listener.wait_for("STOPPING", 2)["STATUS"] == "stopping (SIGTERM)"


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["sync", "status"],
                                  ["sync", "resync"]])
def test_service_commands_without_a_service_exit_6_in_one_line(tmp_path, capsys, argv):
    cfg = tmp_path / "gate.toml"
    cfg.write_text(f'[service]\ncontrol_socket = "{tmp_path / "none.sock"}"\n')
    assert gatectl(["--config", str(cfg), *argv]) == EXIT_SERVICE
    err = capsys.readouterr().err
    assert err.startswith("gatectl: the gate service is not running") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["run", "--now"], ["sync"], ["sync", "restart"],
                                  ["status", "--id", "x"]])
def test_service_commands_refuse_garbage_arguments(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        gatectl(argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("gatectl: ") and err.count("\n") == 1


def test_run_without_any_config_file_is_refused(tmp_path, monkeypatch, listener):
    """The service never runs a real lane on built-in defaults (demo ids, no keys)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    assert daemon.main(None) == EXIT_CONFIG
    assert listener.wait_for("STATUS", 2)["STATUS"].startswith("config invalid: no config file")
