"""systemd's notify protocol: a few ``KEY=value`` lines in one datagram to ``$NOTIFY_SOCKET``.

This is the whole protocol (sd_notify(3)), so no library is needed: READY=1 once the
gate can serve, WATCHDOG=1 while its loop makes progress, STATUS= for the line shown by
``systemctl status``, STOPPING=1 on shutdown. Without ``$NOTIFY_SOCKET`` (run by hand,
in tests) every call is a no-op. STATUS text must never carry personal data (P10).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace (a leading NUL byte).
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; False (logged once per failure) when it cannot."""
        if self._sock is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:  # one field per line: a newline would forge another field
                text = text.replace("\n", " ")
            lines.append(f"{key}={text}")
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("notify: cannot reach the service manager (%s)", exc.strerror)
            return False
        return True

    def ready(self, status: str) -> bool:
        """The gate is serving."""
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def status(self, text: str) -> bool:
        """The one-line state shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """The loop made progress since the last ping."""
        return self.send(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        """Shutdown has begun."""
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """The watchdog period systemd asked for (``WatchdogSec=``), or None.

    ``$WATCHDOG_PID`` names the process meant; a child that inherited the variables must
    not ping on its parent's behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6
