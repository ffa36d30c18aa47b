"""``gatectl run``: the gate service itself (what ``systemd/gate.service`` starts)."""

from __future__ import annotations

import argparse
from typing import Any

from gate.cli.configfile import config_path
from gate.config import Config
from gate.service.daemon import main


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("run", help="run the gate (the systemd service's command)",
                       description="Verify config, models, keys, cache and camera, tell "
                                   "systemd READY=1, and run the lane until SIGTERM. "
                                   "Exit 3: invalid config; 4: model files not the pinned "
                                   "ones; 1: another start-up failure.")
    p.set_defaults(run=run, own_config=True)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Run the service in the foreground."""
    del cfg  # defaults only: the service loads (and checks) its config file itself
    return main(config_path(args.config))
