"""``gatectl eval``: accuracy of the pipeline on a labelled face set.

DIR is folder-per-person (``DIR/<person>/<image>``) or, with ``--pairs``, an LFW-style
tree and pairs file. ``--openset`` measures 1:N identification instead of 1:1
verification. Images are read, processed and dropped; nothing about them is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from gate.config import Config
from gate.errors import EvalError
from gate.eval import degrade, runner
from gate.eval.datasets import load_folder, parse_pairs
from gate.pipeline import FacePipeline
from gate.types import Image


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("eval", help="measure accuracy on a labelled face set",
                       description=__doc__)
    p.add_argument("dir", type=Path, metavar="DIR", help="dataset root")
    p.add_argument("--pairs", type=Path, help="LFW-style pairs file (names under DIR)")
    p.add_argument("--model", choices=("int8", "float"), help="embedder (default: config)")
    p.add_argument("--align", choices=("mesh", "blazeface"), default=None,
                   help="alignment points: face-mesh refined (default) or BlazeFace's own")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average the embeddings of the face and its mirror image")
    p.add_argument("--quality-gate", action=argparse.BooleanOptionalAction, default=True,
                   help="leave out faces that fail a quality check (default on)")
    p.add_argument("--openset", action="store_true", help="open-set 1:N identification")
    p.add_argument("--threshold-table", action="store_true",
                   help="calibrate the match threshold from this set's impostor pairs")
    p.add_argument("--gallery-size", type=int, nargs="+", metavar="N",
                   help="enrolled people per gallery (default: half the people)")
    p.add_argument("--margin", type=float, default=0.05,
                   help="best − second-best margin rule reported beside no margin")
    p.add_argument("--splits", type=int, default=10, help="random galleries pooled per size")
    p.add_argument("--fuse", type=int, default=1,
                   help="with --openset: each probe averages this many images of one person")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA",
                   help="blur every image first (Gaussian sigma in image pixels)")
    p.add_argument("--json", action="store_true", help="machine-readable output, no progress")
    p.set_defaults(run=run)


def _configured(cfg: Config, args: argparse.Namespace) -> Config:
    detect = cfg.detect
    if args.align is not None:
        detect = dataclasses.replace(detect, landmarks=args.align == "mesh")
    embed = cfg.embed
    if args.flip is not None:
        embed = dataclasses.replace(embed, flip_average=args.flip)
    return dataclasses.replace(cfg, detect=detect, embed=embed)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Evaluate and print the report."""
    cfg = _configured(cfg, args)
    if args.fuse < 1 or not 0 <= args.blur <= 50:
        raise EvalError("--fuse must be ≥ 1 and --blur between 0 and 50")
    transform = None
    if args.blur > 0:
        def transform(image: Image) -> Image:
            return degrade.blur(image, args.blur)
    model = args.model or cfg.models.embedder
    pipeline = FacePipeline.from_config(cfg, embedder=model)
    setup = {"dataset": str(args.dir), "model": model,
             "model_file": pipeline.embedder.model.name,
             "runtime": pipeline.embedder.model.backend, "threads": cfg.models.threads,
             "align": "mesh" if cfg.detect.landmarks else "blazeface",
             "flip_average": cfg.embed.flip_average, "quality_gate": args.quality_gate,
             "blur": args.blur}
    progress = not args.json
    if args.pairs is not None:
        ds = parse_pairs(args.pairs, args.dir)
        paths = sorted({p for a, b, _ in ds.pairs for p in (a, b)})
        index = {p: k for k, p in enumerate(paths)}
        emb = runner.embed_all(pipeline, paths, progress=progress, quality_gate=args.quality_gate)
        pairs = [(index[a], index[b], same) for a, b, same in ds.pairs]
        report = runner.verify_pairs(emb, pairs, ds.folds, len(paths))
    else:
        folder = load_folder(args.dir)
        emb = runner.embed_all(pipeline, folder.images, progress=progress,
                               quality_gate=args.quality_gate, transform=transform)
        if args.threshold_table:
            report = runner.calibrate(emb, folder.labels, model=model, source=str(args.dir))
        elif args.openset:
            people = len(set(folder.labels))
            sizes = args.gallery_size or [max(2, people // 2)]
            report = runner.openset_folder(emb, folder.labels, gallery_sizes=sizes,
                                           margin=args.margin, splits=args.splits,
                                           seed=args.seed, fuse=args.fuse)
        else:
            report = runner.verify_folder(emb, folder.labels, seed=args.seed)
    report = {**setup, **report, "stage_ms_p50": runner.stage_summary(emb)}
    emb.wipe()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def format_report(r: dict[str, Any]) -> str:
    """Human-readable report."""
    lines = [f"{r['dataset']} · model {r['model']} ({r['model_file']}, {r['runtime']}, "
             f"{r['threads']} threads) · align {r['align']} · flip "
             f"{'on' if r['flip_average'] else 'off'} · quality gate "
             f"{'on' if r['quality_gate'] else 'off'}"]
    reasons = ", ".join(f"{k} {v}" for k, v in r["unusable_reasons"].items()) or "none"
    lines.append(f"images {r['images']}; no usable face {r['unusable']} "
                 f"({_pct(r['unusable_rate'])}): {reasons}")
    if r["mode"] == "openset":
        lines += _format_openset(r)
    elif r["mode"] == "calibration":
        lines += _format_calibration(r)
    else:
        pairs = r["pairs"]
        extra = (f"; {pairs['with_unusable_image']} with an unusable image scored as non-matches"
                 if "with_unusable_image" in pairs else "")
        lines.append(f"pairs {pairs['genuine']} genuine, {pairs['impostor']} impostor{extra}")
        std = f" ± {100 * r['accuracy_std']:.2f}" if "accuracy_std" in r else ""
        lines.append(f"accuracy {_pct(r['accuracy'])}{std} ({r['accuracy_protocol']})")
        if "best_threshold_accuracy" in r:
            lines.append(f"  best-threshold accuracy {_pct(r['best_threshold_accuracy'])} at "
                         f"{r['best_threshold']:.3f} (optimistic: chosen on the same pairs)")
        lines.append(f"ROC AUC {r['auc']:.5f}")
        lines += [_operating_point(f"TAR at FAR {t['far']:g}", t["tar"], t["threshold"],
                                   f"{t['impostors']} impostor pairs") for t in r["tar_at_far"]]
        if "genuine_min" in r:
            lines.append(f"lowest genuine score {r['genuine_min']:.3f}, highest impostor "
                         f"{r['impostor_max']:.3f}")
    lines.append(f"time per image {r['ms_per_image_p50']:.1f} ms p50 (pipeline; decoding "
                 "excluded); stages p50: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms_p50"].items()))
    return "\n".join(lines)


def _format_openset(r: dict[str, Any]) -> list[str]:
    lines = []
    for res in r["results"]:
        rule = f"margin {res['margin']:.2f}" if res["margin"] else "no margin"
        fused = f", probes fuse {res['fuse']} images" if res.get("fuse", 1) > 1 else ""
        head = (f"gallery {res['gallery_size']} people{fused} ({res['splits']} random galleries "
                f"pooled, {rule}): rank-1 {_pct(res['rank1'])}; "
                f"{res['mated_searches']} mated, {res['nonmated_searches']} non-mated searches")
        lines.append(head)
        lines += [_operating_point(f"  FNIR at FPIR {p['fpir']:g}", p["fnir"], p["threshold"],
                                   f"{res['nonmated_searches']} non-mated searches")
                  for p in res["fnir_at_fpir"]]
    return lines


def _format_calibration(r: dict[str, Any]) -> list[str]:
    c = r["calibration"]
    lines = [f"{c['pairs']} impostor pairs; tail above {c['tail_start']:.4f} (top "
             f"{100 * c['tail_rate']:.2f} %) extrapolated as exponential, scale "
             f"{c['tail_scale']:.5f}",
             f"{'target FPIR':>12}{'enrolled':>10}{'FMR':>10}{'threshold':>11}"]
    for row in r["table"]:
        note = "" if row["measured"] else "  (extrapolated)"
        lines.append(f"{row['fpir']:>12g}{row['enrolled']:>10}{row['fmr']:>10.1e}"
                     f"{row['threshold']:>11.4f}{note}")
    lines.append("paste into gate/match/threshold.py CALIBRATIONS:")
    lines.append(f"    {r['model']!r}: Calibration(**{json.dumps(c)}),")
    return lines


def _operating_point(label: str, rate: float | None, threshold: float | None,
                     sample: str) -> str:
    """One operating point, or why the sample is too small to show it."""
    if rate is None or threshold is None:
        return f"{label}: not resolvable with {sample}"
    return f"{label}: {_pct(rate)} (threshold {threshold:.3f})"
