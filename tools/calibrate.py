"""Write the shipped threshold calibrations (``gate/match/calibrations.json``).

``make calibrate`` runs ``gatectl eval DIR --threshold-table --json`` once per embedder on
the calibration set (lfw-dev: thousands of people) and hands the reports to this script.
For each embedder it keeps the quality-gated calibration (what the gate meets) and, for
the record, the table cells with their held-out check and the model's own (gate-off)
cells. Nothing here measures anything: it only copies measured figures into the file the
firmware reads, so the numbers in the file and in the reports are the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FORMAT = 1


def entry(report: dict[str, Any]) -> dict[str, Any]:
    """The calibration file's entry for one embedder's ``--threshold-table`` report."""
    on, off = report["gate_on"], report["gate_off"]
    return {
        "calibration": on["calibration"],
        "dataset": report["dataset"],
        "images": on["images"],
        "quality_gate_refused": on["unusable"],
        "calibration_half": on["calibration_half"],
        "check_half": on["check_half"],
        "cells": on["cells"],
        "direct_check": on["direct_check"],
        "gate_off": {"calibration_half": off["calibration_half"],
                     "check_half": off["check_half"], "cells": off["cells"],
                     "direct_check": off["direct_check"]},
    }


def main(argv: list[str] | None = None) -> int:
    """Merge reports into the calibration file; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, help="gatectl eval --threshold-table --json")
    p.add_argument("--out", type=Path, default=Path("gate/match/calibrations.json"))
    args = p.parse_args(argv)
    models: dict[str, Any] = {}
    for path in args.reports:
        report = json.loads(path.read_text(encoding="utf-8"))
        if report.get("mode") != "calibration":
            print(f"calibrate: {path}: not a --threshold-table report", file=sys.stderr)
            return 1
        models[report["model"]] = entry(report)
    data = {"format": FORMAT, "models": dict(sorted(models.items()))}
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"calibrate: {len(models)} embedders written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
