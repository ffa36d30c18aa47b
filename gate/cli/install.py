"""``gatectl install`` / ``gatectl uninstall``: the gate as a systemd service.

Both are :mod:`gate.tools.install` (which ``make install`` runs with the system python3 before
any dependency exists); see its docstring for what goes where. ``install`` runs from a
source checkout; ``uninstall`` crypto-erases the template cache and asks first unless
``-y``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gate.config import Config
from gate.exitcodes import EXIT_CANCELLED
from gate.tools import install


def add_parser(sub: Any) -> None:
    """Register ``install`` and ``uninstall``."""
    p = sub.add_parser("install", help="install or upgrade the gate as a systemd service",
                       description=install.__doc__.split("\n\n")[0] if install.__doc__
                       else None)
    install.add_arguments(p, "install")
    p.set_defaults(run=run, own_config=True)  # works with a broken /etc/gate/gate.toml
    p = sub.add_parser("uninstall", help="remove the gate service, crypto-erasing its cache",
                       description="Stop and disable the service, crypto-erase "
                                   "/var/lib/gate, remove the venv, models and unit; "
                                   "/etc/gate and the credentials stay unless --purge.")
    install.add_arguments(p, "uninstall")
    p.set_defaults(run=run, own_config=True)  # works with a broken /etc/gate/gate.toml


def run(args: argparse.Namespace, cfg: Config) -> int:  # noqa: ARG001 (the config is unused)
    """Install or uninstall; 7 when the technician declines the prompt."""
    try:
        install.run(args)
    except install.NotConfirmedError as exc:
        print(f"gatectl: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    return 0
