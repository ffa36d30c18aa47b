"""``gatectl models``: list the pinned model files and check them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gate.config import Config
from gate.errors import ModelError
from gate.models import manifest, read_verified


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("models", help="list the pinned model files and verify them",
                       description="List every model file in the committed manifest and "
                                   "verify its sha256 on disk.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Verify every pinned file; exit 4 if any is missing or differs."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for role, pin in manifest().items():
        try:
            read_verified(cfg.models_dir, role)
            status = "ok"
        except ModelError as exc:
            status = str(exc)
            bad += 1
        rows.append({"role": role, "file": pin.name, "sha256": pin.sha256, "bytes": pin.size,
                     "license": pin.license, "source": pin.source, "status": status})
    if args.json:
        print(json.dumps({"models_dir": str(cfg.models_dir), "files": rows}, indent=2))
    else:
        print(f"models in {cfg.models_dir}")
        for r in rows:
            mark = "✓" if r["status"] == "ok" else "✗"
            print(f"  {mark} {r['file']:<36} {r['bytes']:>9} B  {r['sha256'][:12]}  "
                  f"{r['license']:<10} {r['role']}")
            if r["status"] != "ok":
                print(f"      {r['status']}")
    return 4 if bad else 0
