"""One DET plot from several ``gatectl eval --openset --json`` reports (e.g. both models).

``python tools/det_plot.py a.json b.json --out det.png`` (or ``det.txt`` for the text
plot the README carries). The curves are the ones the reports measured; nothing is
recomputed here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gate.eval import det


def main(argv: list[str] | None = None) -> int:
    """Draw the curves of every report into one file; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help=".png, or .txt for a text plot")
    p.add_argument("--title", default="lfw-dev open set (quality gate on)")
    p.add_argument("--fuse", type=int, help="only the curves of this fusion depth")
    args = p.parse_args(argv)
    curves = []
    for path in args.reports:
        report = json.loads(path.read_text(encoding="utf-8"))
        curves += [c for c in det.curves_of(report)
                   if args.fuse is None or ("fused" in c.label) == (args.fuse > 1)]
    if not curves:
        print("det_plot: no DET curve in these reports", file=sys.stderr)
        return 1
    det.plot(curves, args.out, title=args.title)
    print(f"det_plot: {len(curves)} curves written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
