"""``gatectl doctor``: check everything this gate needs and say how to fix what fails.

Each line is ✓ (fine), ✗ (fails, with the fix on the next line) or – (skipped, or not
applicable here). Exit 0 when nothing failed, 1 otherwise. The checks live in
:mod:`gate.doctor`; this module only prints.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gate import config as config_mod
from gate import doctor
from gate.cli.configfile import config_path
from gate.config import Config
from gate.doctor import files
from gate.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "doctor", help="check everything the gate needs, with a fix for each failure",
        description="Check config, models, keys, cache, disk, memory/swap, clock, GPIO, "
                    "camera and the broker link. While the service runs, the camera and "
                    "the cache are reported by the service, not opened again.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--skip", nargs="+", default=[], metavar="CHECK",
                   choices=sorted(doctor.CHECKS),
                   help=f"leave out checks ({', '.join(doctor.CHECKS)})")
    # own_config: an invalid file is one of the things the doctor reports, not a crash.
    p.set_defaults(run=run, own_config=True)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Run every check; exit 1 if any failed."""
    path = config_path(args.config)
    try:
        cfg = config_mod.load(path)
    except ConfigError:
        # Every other check reads the config: report the file's problems and stop.
        results = files.check_config(path)
        if args.json:
            print(json.dumps({"ok": False, "checks": [r.as_dict() for r in results]},
                             indent=2))
        else:
            for r in results:
                print(f"{r.status.mark} {r.name}  {r.detail}")
                if r.fix:
                    print(f"  → {r.fix}")
            print("the other checks need a valid config")
        return 1
    service, unknown = doctor.service_status(cfg.service.control_socket)
    ctx = doctor.Context(cfg=cfg, config_file=config_path(args.config), service=service,
                         service_unknown=unknown)
    results = doctor.run(ctx, skip_checks=args.skip)
    failed = sum(r.failed for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "gate": cfg.gate.id,
                          "service": "running" if service else
                          "unknown" if unknown else "stopped",
                          "checks": [r.as_dict() for r in results]}, indent=2))
        return 1 if failed else 0
    state = f"service running (pid {service.get('pid')})" if service else \
        "service: cannot tell (no permission on its socket)" if unknown else \
        "service not running"
    print(f"gate {cfg.gate.id} ({cfg.gate.venue} / {cfg.gate.event}) · {state}")
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{r.status.mark} {r.name:<{width}}  {r.detail}")
        if r.fix:
            print(f"  {'':<{width}}  → {r.fix}")
    print(f"{failed} check{'s' if failed != 1 else ''} failed" if failed else
          "all checks passed")
    return 1 if failed else 0
