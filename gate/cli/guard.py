"""Is the gate service running? Commands that need the camera or the pins ask first.

The running service holds the camera and the GPIO lines; a second user would fight it for
them (or, on the pins, move the flapper under its feet). The control socket is the one
reliable sign of life: a stale socket file left by a crash refuses connections and counts
as "not running".
"""

from __future__ import annotations

from typing import Any

from gate.config import Config
from gate.errors import ServiceError
from gate.service.control import probe


def service_status(cfg: Config) -> dict[str, Any] | None:
    """The running service's ``status`` answer, or None when no service runs (see
    :func:`gate.service.control.probe`)."""
    return probe(cfg.service.control_socket)


def ensure_stopped(cfg: Config, holds: str) -> None:
    """Raise :class:`ServiceError` unless the gate service is stopped.

    ``holds`` names what the service would be holding ("the camera", "the GPIO pins").
    """
    try:
        running = service_status(cfg) is not None
    except ServiceError as exc:
        raise ServiceError(f"cannot tell whether the gate service is running ({exc}); it "
                           f"may hold {holds}: stop it first with `sudo systemctl stop gate`"
                           ) from None
    if running:
        raise ServiceError(f"the gate service is running and holds {holds}; stop it first "
                           "with `sudo systemctl stop gate`")
