"""The service's control socket: one JSON request per connection, one JSON answer.

A client connects to the unix stream socket (``[service] control_socket``; under systemd
``/run/gate/control.sock``, mode 0660, group ``gate``), sends one line
``{"cmd": "status", ...}`` and reads one line back: ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "one line"}``. Answers carry counts, versions and timings, never
an attendee id, an image or an embedding (P4, P10). The socket file's permissions are the
access control: only root and members of the service's group can connect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gate.errors import GateError, ServiceError, ServiceNotRunningError
from sync import jsonsafe

log = logging.getLogger(__name__)

#: Largest request or answer accepted, in bytes.
MAX_MESSAGE = 64 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def request(path: str | Path, cmd: str, *, timeout: float = 5.0,
            **params: Any) -> dict[str, Any]:
    """Send ``cmd`` to the running service and return its result.

    Raises :class:`ServiceNotRunningError` when nothing listens on ``path`` and
    :class:`ServiceError` when the service refuses the request.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ServiceNotRunningError(
                f"the gate service is not running (no answer on {path}); "
                "start it with `sudo systemctl start gate`") from None
        except PermissionError:
            raise ServiceError(f"not allowed to talk to the gate service ({path}); "
                               "run as root or as a member of group gate") from None
        sock.sendall(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
        data = _read_line(sock)
    except TimeoutError:
        raise ServiceError(f"the gate service did not answer within {timeout:g} s") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise ServiceError("the gate service sent an unreadable answer") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ServiceError("the gate service sent an unreadable answer")
    if not answer["ok"]:
        raise ServiceError(str(answer.get("error", "request refused")))
    result = answer.get("result", {})
    if not isinstance(result, dict):
        raise ServiceError("the gate service sent an unreadable answer")
    return result


def probe(path: str | Path, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running service's ``status``, or None when no service runs.

    A stale socket file left by a crash refuses connections and counts as not running.
    Raises :class:`ServiceError` when something holds the socket but cannot be asked (no
    permission, no answer): the caller must not assume the service is stopped.
    """
    try:
        return request(path, "status", timeout=timeout)
    except ServiceNotRunningError:
        return None


def _read_line(sock: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_MESSAGE:
            raise ServiceError("message too long")
    return bytes(buf.split(b"\n", 1)[0])


class ControlServer:
    """Answers control requests in a background thread.

    ``handlers`` maps a command name to a function of the request's parameters that
    returns a JSON-able dict. A handler raising :class:`~gate.errors.GateError` (or
    ``ValueError``) becomes ``{"ok": false, "error": ...}``; anything else is logged and
    answered with a generic error, and the server keeps running.
    """

    def __init__(self, path: str | Path, handlers: dict[str, Handler], *,
                 mode: int = 0o660) -> None:
        self.path = Path(path)
        self.handlers = handlers
        self.mode = mode
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start answering."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a tight umask so the socket is never briefly world-connectable.
        old = os.umask(0o777 & ~self.mode)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        sock.listen(8)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with conn:
                conn.settimeout(2.0)
                try:
                    conn.sendall(self._answer(conn) + b"\n")
                except OSError:
                    continue

    def _answer(self, conn: socket.socket) -> bytes:
        try:
            req = jsonsafe.loads(_read_line(conn))
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError("a request is a JSON object with a string 'cmd'")
            handler = self.handlers.get(req["cmd"])
            if handler is None:
                raise ValueError(f"unknown command {req['cmd'][:40]!r} "
                                 f"(known: {', '.join(sorted(self.handlers))})")
            params = {k: v for k, v in req.items() if k != "cmd"}
            return json.dumps({"ok": True, "result": handler(params)}).encode()
        except (ValueError, ServiceError, TimeoutError) as exc:
            return json.dumps({"ok": False, "error": str(exc)}).encode()
        except Exception as exc:  # the control socket must never take the lane down
            if isinstance(exc, GateError):
                return json.dumps({"ok": False, "error": str(exc)}).encode()
            log.exception("control: request failed")
            return json.dumps({"ok": False, "error": "internal error (see the journal)"}).encode()

    def stop(self) -> None:
        """Stop answering and remove the socket file."""
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
