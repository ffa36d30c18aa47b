"""``gatectl bench``: speed and memory of the pipeline, or of the template store.

The measurements live in :mod:`gate.bench` (``pipeline`` and ``store``); this module
only reads the arguments and prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gate.bench import pipeline, store
from gate.config import Config
from gate.errors import EvalError
from gate.match.embedders import EMBEDDERS, NAMES


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("bench", help="per-stage latency and memory",
                       description=pipeline.__doc__)
    p.add_argument("--photos", type=Path,
                   help="folder of face photos (searched recursively)")
    p.add_argument("--store", action="store_true",
                   help="benchmark the template store instead (1:N search, cache load, "
                        "upsert/revoke), on one core")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000],
                   help="with --store: gallery sizes in templates")
    p.add_argument("--frame", default="1280x720", help="camera frame size WxH to fit into")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per photo")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--models", nargs="+", choices=NAMES, default=list(EMBEDDERS))
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Time every stage (or the store); print p50/p95 and memory."""
    if args.store:
        if any(n < 100 or n > 2_000_000 for n in args.sizes):
            raise EvalError("--sizes must be between 100 and 2,000,000 templates")
        report = store.run_children(args.sizes)
        print(json.dumps(report, indent=2) if args.json else store.format_report(report))
        return 0
    if args.photos is None:
        raise EvalError("--photos DIR is required (or --store)")
    try:
        w, h = (int(v) for v in args.frame.lower().split("x"))
    except ValueError:
        raise EvalError(f"--frame {args.frame!r}: expected WxH, e.g. 1280x720") from None
    if args.repeat < 1 or any(t < 1 for t in args.threads):
        raise EvalError("--repeat and --threads must be at least 1")
    report = pipeline.run(cfg, args.photos, frame=(w, h), repeat=args.repeat,
                          threads=args.threads, models=args.models)
    print(json.dumps(report, indent=2) if args.json else pipeline.format_report(report))
    return 0
