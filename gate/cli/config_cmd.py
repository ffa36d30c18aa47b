"""``gatectl config check [FILE]``: list every problem of a config file.

gatectl loads ``--config`` before any command runs and stops at its first error; this
command reads FILE itself (default: the file gatectl would read) and lists every error,
one per line with its key path, so a technician fixes them all in one go. ``--service``
adds what the gate service requires of a real lane (its own ``[gate]`` id, venue and event;
no throw-away keys on real pins).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gate import config as config_mod
from gate.cli.configfile import config_path
from gate.config import Config
from gate.exitcodes import EXIT_CONFIG, EXIT_USAGE
from gate.safefile import shown


def add_parser(sub: Any) -> None:
    """Register ``config check``."""
    p = sub.add_parser("config", help="check a config file",
                       description="Check a gate config file and list every problem.")
    actions = p.add_subparsers(dest="config_command", metavar="ACTION")
    actions.required = True
    c = actions.add_parser(
        "check", help="validate a config file, listing every error",
        description="Validate FILE (default: --config, $GATE_CONFIG or /etc/gate/gate.toml) "
                    "and print every error with its key path. Exit 3 when invalid.")
    c.add_argument("file", nargs="?", type=Path, metavar="FILE", help="config file to check")
    c.add_argument("--service", action="store_true",
                   help="also apply the service's rules for a real lane ([gate] id, venue "
                        "and event set; no ephemeral keys on real pins)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(run=run, own_config=True)


def target(args: argparse.Namespace) -> Path | None:
    """The file to check: FILE, else the one gatectl itself reads (None: there is none)."""
    if args.file is not None:
        return Path(args.file)
    return config_path(args.config)


def run(args: argparse.Namespace, cfg: Config) -> int:  # noqa: ARG001 - reads FILE itself
    """Check the file; exit 0 when valid, 3 when not, 2 when there is no file to check."""
    path = target(args)
    if path is None:
        print("gatectl: config check: no config file (give FILE, --config or $GATE_CONFIG; "
              "the service reads /etc/gate/gate.toml)", file=sys.stderr)
        return EXIT_USAGE
    errors = config_mod.check(path, service=args.service)
    if args.json:
        print(json.dumps({"file": str(path), "service": args.service, "valid": not errors,
                          "errors": [{"path": e.path, "reason": e.reason} for e in errors]},
                         indent=2))
    elif not errors:
        rules = " (service rules)" if args.service else ""
        print(f"✓ {shown(path)}: valid{rules}")
    else:
        for e in errors:
            print(f"✗ {e}")
        print(f"{shown(path)}: {len(errors)} error{'s' if len(errors) > 1 else ''}")
    return EXIT_CONFIG if errors else 0
