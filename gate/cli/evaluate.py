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
from gate.eval import degrade, det, occlusion, pose, runner
from gate.eval.datasets import load_folder, parse_pairs
from gate.match.embedders import NAMES as EMBEDDER_NAMES
from gate.pipeline import FacePipeline
from gate.types import Image


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("eval", help="measure accuracy on a labelled face set",
                       description=__doc__)
    p.add_argument("dir", type=Path, metavar="DIR", help="dataset root")
    p.add_argument("--pairs", type=Path, help="LFW-style pairs file (names under DIR)")
    p.add_argument("--model", choices=EMBEDDER_NAMES, help="embedder (default: config)")
    p.add_argument("--align", choices=("mesh", "blazeface"), default=None,
                   help="alignment points: face-mesh refined (default) or BlazeFace's own")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average the embeddings of the face and its mirror image")
    p.add_argument("--quality-gate", action=argparse.BooleanOptionalAction, default=True,
                   help="leave out faces that fail a quality check (default on)")
    p.add_argument("--openset", action="store_true", help="open-set 1:N identification")
    p.add_argument("--pose", action="store_true",
                   help="calibrate the BlazeFace-only yaw estimate against the face mesh")
    p.add_argument("--threshold-table", action="store_true",
                   help="calibrate the match threshold from this set's impostor pairs")
    p.add_argument("--gallery-size", type=int, nargs="+", metavar="N",
                   help="enrolled people per gallery (default: up to 1,000, leaving a "
                        "quarter of the people with two images out)")
    p.add_argument("--margin", type=float, default=0.05,
                   help="best − second-best margin rule reported beside no margin")
    p.add_argument("--splits", type=int, default=10, help="random galleries pooled per size")
    p.add_argument("--fuse", type=int, nargs="+", default=[1], metavar="K",
                   help="with --openset: each probe averages K images of one person (several K: "
                        "one report each, same galleries)")
    p.add_argument("--occlude", choices=occlusion.KINDS, metavar="KIND",
                   help="with --openset: enrol the clean images, search with this occluder "
                        f"drawn on ({', '.join(occlusion.KINDS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA",
                   help="blur every image first (Gaussian sigma in image pixels)")
    p.add_argument("--json", action="store_true", help="machine-readable output, no progress")
    p.add_argument("--plot", type=Path, metavar="FILE",
                   help="write the DET curve (log axes, PNG; needs the dev extra)")
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
    if min(args.fuse) < 1 or not 0 <= args.blur <= 50:
        raise EvalError("--fuse must be ≥ 1 and --blur between 0 and 50")
    if args.occlude and not args.openset:
        raise EvalError("--occlude measures open-set searches: add --openset")
    # Checked before minutes of embedding, not after.
    if args.plot is not None and not args.plot.absolute().parent.is_dir():
        raise EvalError(f"--plot: {args.plot.parent} is not a directory")
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
    elif args.pose:
        if not cfg.detect.landmarks:
            raise EvalError("--pose compares with the face mesh: leave --align at mesh")
        folder = load_folder(args.dir)
        mesh, raw, who = pose.measure(pipeline, folder.images, folder.labels)
        report = pose.fit(mesh, raw, who, max_yaw=cfg.quality.max_yaw_deg)
        print(json.dumps({**setup, **report}, indent=2) if args.json else
              format_pose(report))
        return 0
    else:
        folder = load_folder(args.dir)
        emb = runner.embed_all(pipeline, folder.images, progress=progress,
                               quality_gate=args.quality_gate and not args.threshold_table,
                               transform=transform)
        if args.threshold_table:
            # One pass, both tables: the model's own tail (gate off) and the one the gate
            # meets (only faces that pass the quality checks; the shipped calibration).
            source = str(args.dir)
            report = {"mode": "calibration",
                      "gate_off": runner.calibrate(emb, folder.labels, model=model,
                                                   source=f"{source} (quality gate off)"),
                      "gate_on": runner.calibrate(runner.gated(emb), folder.labels,
                                                  model=model, source=source)}
            report.update({k: report["gate_on"][k] for k in
                           ("images", "unusable", "unusable_rate", "unusable_reasons",
                            "no_face", "quality_refused", "ms_per_image_p50",
                            "ms_per_image_mean")})
            setup["quality_gate"] = "both"
        elif args.openset:
            probes = None
            if args.occlude:
                probes = runner.embed_all(pipeline, folder.images, progress=progress,
                                          quality_gate=args.quality_gate,
                                          transform=occlusion.Occluder(pipeline.detector,
                                                                       args.occlude))
                setup["occlude"] = args.occlude
            # One pass over the images, every fusion depth asked for (same galleries).
            parts = [runner.openset_folder(emb, folder.labels,
                                           gallery_sizes=args.gallery_size or (),
                                           margin=args.margin, splits=args.splits,
                                           seed=args.seed, fuse=k, probes=probes)
                     for k in args.fuse]
            report = {**parts[0], "results": [r for p in parts for r in p["results"]]}
            if probes is not None:
                report["probe_unusable"] = int((~probes.usable).sum())
                report["probe_unusable_reasons"] = dict(probes.reasons.most_common())
                probes.wipe()
        else:
            report = runner.verify_folder(emb, folder.labels, seed=args.seed)
    report = {**setup, **report, "stage_ms_p50": runner.stage_summary(emb)}
    emb.wipe()
    if args.plot is not None:
        _plot(report, args.plot)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _plot(report: dict[str, Any], path: Path) -> None:
    curves = det.curves_of(report)
    if not curves:
        raise EvalError("--plot: this kind of evaluation has no DET curve (use --openset "
                        "or --pairs)")
    openset = report["mode"] == "openset"
    try:
        det.plot(curves, path, title=f"{Path(report['dataset']).name}: "
                 f"{'open-set 1:N' if openset else '1:1 pairs'}, quality gate "
                 f"{'on' if report['quality_gate'] else 'off'}",
                 xlabel="FPIR" if openset else "FMR", ylabel="FNIR" if openset else "FNMR")
    except OSError as exc:
        raise EvalError(f"--plot: cannot write {path} ({exc.strerror})") from None


def format_pose(r: dict[str, Any]) -> str:
    """Human-readable pose calibration."""
    return "\n".join([
        f"faces {r['faces']}: fit on {r['fit_faces']} (calibration half, mesh yaw within "
        f"±45°), checked on {r['check_faces']} (other people)",
        f"scale {r['scale']} (gate/detect/measure.py KEYPOINT_YAW_SCALE)",
        f"check half: median |yaw| mesh {r['median_mesh_yaw']:.1f}°, keypoints "
        f"{r['median_keypoint_yaw']:.1f}°; median |error| {r['median_abs_error_raw']:.1f}° "
        f"raw, {r['median_abs_error_scaled']:.1f}° scaled",
        f"refused for yaw > {r['max_yaw_deg']:g}°: mesh {r['refused_by_mesh']}, keypoints "
        f"raw {r['refused_by_raw']}, scaled {r['refused_by_scaled']}",
    ])


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def format_report(r: dict[str, Any]) -> str:
    """Human-readable report."""
    lines = [f"{r['dataset']} · model {r['model']} ({r['model_file']}, {r['runtime']}, "
             f"{r['threads']} threads) · align {r['align']} · flip "
             f"{'on' if r['flip_average'] else 'off'} · quality gate "
             f"{'on' if r['quality_gate'] else 'off'}"]
    reasons = ", ".join(f"{k} {v}" for k, v in r["unusable_reasons"].items()) or "none"
    lines.append(f"images {r['images']}; left out {r['unusable']} "
                 f"({_pct(r['unusable_rate'])}): no face {r['no_face']}, refused by a "
                 f"quality check {r['quality_refused']} ({reasons})")
    if r["mode"] == "openset":
        lines += _format_openset(r)
    elif r["mode"] == "calibration":
        lines += _format_calibration(r)
    else:
        pairs = r["pairs"]
        extra = (f"; {pairs['with_unusable_image']} with an unusable image scored as "
                 f"non-matches ({pairs['genuine_with_unusable_image']} genuine, "
                 f"{pairs['impostor_with_unusable_image']} impostor)"
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
    if "occlude" in r:
        lines.append(f"probes occluded with {r['occlude']} (gallery clean): "
                     f"{r['probe_unusable']} probe images unusable "
                     f"({', '.join(f'{k} {v}' for k, v in r['probe_unusable_reasons'].items())})")
    for res in r["results"]:
        rule = f"margin {res['margin']:.2f}" if res["margin"] else "no margin"
        fused = f", probes fuse {res['fuse']} images" if res.get("fuse", 1) > 1 else ""
        head = (f"gallery {res['gallery_size']} people + {res['distractors']} one-image "
                f"distractors{fused} ({res['splits']} random galleries pooled, {rule}): "
                f"rank-1 {_pct(res['rank1'])}; {res['mated_searches']} mated, "
                f"{res['nonmated_searches']} non-mated searches of "
                f"{res['distinct_nonmated']} distinct stranger probes")
        lines.append(head)
        lines += [_operating_point(f"  FNIR at FPIR {p['fpir']:g}", p["fnir"], p["threshold"],
                                   f"{res['distinct_nonmated']} distinct stranger probes "
                                   f"(needs {10 / p['fpir']:.0f})")
                  for p in res["fnir_at_fpir"]]
    return lines


def _format_calibration(r: dict[str, Any]) -> list[str]:
    lines = []
    for key, title in (("gate_off", "model (quality gate off)"),
                       ("gate_on", "gate (quality gate on; shipped)")):
        part = r[key]
        cal, chk = part["calibration_half"], part["check_half"]
        lines += [f"{title}: {part['unusable']} of {part['images']} images unusable",
                  f"  calibration half: {cal['people']} people, {cal['images']} images, "
                  f"{cal['impostor_pairs']} impostor pairs (highest {cal['highest_impostor']:.3f})",
                  f"  check half:       {chk['people']} people, {chk['images']} images, "
                  f"{chk['impostor_pairs']} impostor pairs (highest {chk['highest_impostor']:.3f})",
                  f"  {'FPIR':>6}{'enrolled':>9}{'FMR':>9}{'threshold':>10}"
                  f"{'FMR (check)':>13}{'events':>8}{'FPIR (check)':>14}"]
        for c in part["cells"]:
            head = f"  {c['fpir']:>6g}{c['enrolled']:>9}{c['fmr']:>9.1e}"
            if c["resolvable"]:
                lines.append(f"{head}{c['threshold']:>10.4f}{c['check_fmr']:>13.2e}"
                             f"{c['check_events']:>8}{c['check_fpir']:>14.2e}")
            else:
                lines.append(f"{head}  unresolvable: needs {c['comparisons_needed']:.2g} "
                             f"comparisons, has {c['comparisons']}")
        d = part["direct_check"]
        if d:
            pts = ", ".join(f"{t:.4f} → {f:.2%} ({n})" for t, f, n in
                            zip(d["thresholds"], d["fpir"], d["false_matches"], strict=True))
            lines.append(f"  direct check, {d['gallery']} enrolled × {d['splits']} galleries, "
                         f"{d['searches']} searches of {d['distinct_probes']} distinct probes: "
                         f"{pts}")
    c = r["gate_on"]["calibration"]
    lines.append("shipped calibration (gate/match/threshold.py CALIBRATIONS):")
    lines.append(f"    {r['model']!r}: Calibration(**{json.dumps(c)}),")
    return lines


def _operating_point(label: str, rate: float | None, threshold: float | None,
                     sample: str) -> str:
    """One operating point, or why the sample is too small to show it."""
    if rate is None or threshold is None:
        return f"{label}: not resolvable with {sample}"
    return f"{label}: {_pct(rate)} (threshold {threshold:.3f})"
