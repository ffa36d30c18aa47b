"""Which config file gatectl reads: ``--config``, ``$GATE_CONFIG``, or the installed one."""

from __future__ import annotations

import os
from pathlib import Path

#: Where an installed gate keeps its config (`make install` puts it there).
DEFAULT_CONFIG = Path("/etc/gate/gate.toml")


def config_path(given: Path | None) -> Path | None:
    """The config file gatectl reads: ``--config``, ``$GATE_CONFIG``, or the installed one
    (None: there is none, and the built-in defaults apply)."""
    if given is not None:
        return given
    env = os.environ.get("GATE_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
