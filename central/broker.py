"""Run a local Mosquitto for a venue made by :mod:`central.pki` (tests, benchmarks, demos).

``Broker`` runs ``mosquitto -c`` with the venue's mutual-TLS config on a free loopback
port and can stop, crash (SIGKILL) and restart it on the same port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from central.errors import BrokerError
from central.pki import write_broker_config

_FALLBACK = "/usr/sbin/mosquitto"  # Debian's path; /usr/sbin is not on every user's PATH
START_TIMEOUT = 10.0


def mosquitto_binary() -> str:
    """Path of the mosquitto executable (BrokerError when it is not installed)."""
    found = shutil.which("mosquitto")
    if found is None and os.access(_FALLBACK, os.X_OK):
        found = _FALLBACK
    if found is None:
        raise BrokerError("mosquitto is not installed: apt-get install mosquitto "
                          "(tools/sysdeps.sh, which make test runs, does)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listener(conf: Path) -> tuple[str, int]:
    """``(bind address, port)`` of the ``listener`` line in a mosquitto.conf."""
    for line in conf.read_text().splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            return (words[2] if len(words) > 2 else "127.0.0.1"), int(words[1])
    raise BrokerError(f"{conf} has no listener line")


class Broker:
    """One mosquitto process for the venue in ``venue_dir``; a context manager."""

    def __init__(self, venue_dir: Path, port: int | None = None) -> None:
        self.venue_dir = Path(venue_dir)
        self.port = port if port is not None else free_port()
        self.binary = mosquitto_binary()
        self.log_path = self.venue_dir / "broker" / "mosquitto.log"
        self.conf = self._write_conf()
        self.host = listener(self.conf)[0]
        self.url = f"mqtts://{self.host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _write_conf(self) -> Path:
        # As root (CI containers), mosquitto would drop to the `mosquitto` user, which can
        # read neither the 0600 keys nor pytest's 0700 tmp directories.
        user = "root" if os.geteuid() == 0 else None
        return write_broker_config(self.venue_dir, self.port, user=user)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines mosquitto wrote to stderr (all runs of this broker)."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> Broker:
        """Start mosquitto and wait until its TLS port accepts TCP connections."""
        if self.running:
            raise BrokerError(f"broker on port {self.port} is already running")
        self.conf = self._write_conf()
        # Appended, not truncated: after a kill and restart the first run's log still helps.
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}:\n"
                                  f"{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on {self.port} within "
                          f"{START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait: mosquitto writes its persistence file on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL and wait: a crash, so the persistence file is whatever was last saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def restart(self) -> Broker:
        """Start again on the same port (stopping first if it is still running)."""
        self.stop()
        return self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
