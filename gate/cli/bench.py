"""``gatectl bench``: per-stage latency and memory of the face pipeline.

Each photo is first resized to fit a camera frame (default 1280×720, what a Pi camera
delivers at gate distance) and decoded once; then every stage is timed over repeated
runs, for each embedder and thread count. Figures are p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from gate.config import Config
from gate.errors import EvalError
from gate.eval.datasets import IMAGE_SUFFIXES
from gate.images import load_image
from gate.pipeline import STAGES, FacePipeline
from gate.types import Array


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("bench", help="per-stage latency and memory", description=__doc__)
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
    p.add_argument("--models", nargs="+", choices=("int8", "float"), default=["int8", "float"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def _frames(root: Path, size: tuple[int, int]) -> list[Array]:
    import cv2

    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EvalError(f"{root}: no images to benchmark on")
    frames = []
    for p in paths:
        img = load_image(p)
        h, w = img.shape[:2]
        s = min(size[0] / w, size[1] / h)
        if s < 1:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        frames.append(img)
    return frames


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Time every stage; print p50/p95 and memory."""
    if args.store:
        return run_store(args)
    if args.photos is None:
        raise EvalError("--photos DIR is required (or --store)")
    try:
        w, h = (int(v) for v in args.frame.lower().split("x"))
    except ValueError:
        raise EvalError(f"--frame {args.frame!r}: expected WxH, e.g. 1280x720") from None
    if args.repeat < 1 or any(t < 1 for t in args.threads):
        raise EvalError("--repeat and --threads must be at least 1")
    frames = _frames(args.photos, (w, h))
    decode_ms = _time_decode(args.photos)
    pipes = []
    for model in args.models:
        for threads in args.threads:
            c = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, threads=threads))
            pipes.append((model, threads, FacePipeline.from_config(c, embedder=model)))
    rows = _bench(pipes, frames, args.repeat)
    report = {"frames": len(frames), "frame_fit": f"{w}x{h}", "repeat": args.repeat,
              "decode_ms_p50": decode_ms, "rows": rows,
              "rss_mb": _rss_mb(),
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(report, indent=2) if args.json else _format(report))
    return 0


def _time_decode(root: Path) -> float:
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    times = []
    for p in paths:
        t = time.perf_counter()
        load_image(p).fill(0)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def _bench(pipes: list[tuple[str, int, FacePipeline]], frames: list[Array],
           repeat: int) -> list[dict[str, Any]]:
    """Time every configuration in turn on each frame (interleaved, so load on a shared
    machine hits all of them alike and their ratios stay meaningful)."""
    per_stage: list[dict[str, list[float]]] = [{s: [] for s in STAGES} for _ in pipes]
    totals: list[list[float]] = [[] for _ in pipes]
    for _, _, pipe in pipes:  # warm-up: first invocations allocate and pack weights
        for frame in frames:
            pipe.process(frame, embed_rejected=True)
            pipe.wipe()
    for _ in range(repeat):
        for frame in frames:
            for k, (_, _, pipe) in enumerate(pipes):
                t = time.perf_counter()
                res = pipe.process(frame, embed_rejected=True)
                totals[k].append((time.perf_counter() - t) * 1000)
                for s, v in res.times_ms.items():
                    per_stage[k][s].append(v)
                pipe.wipe()
    rows = []
    for k, (model, threads, pipe) in enumerate(pipes):
        stats = {s: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                 for s, v in per_stage[k].items() if v}
        rows.append({"model": model, "threads": threads, "runtime": pipe.embedder.model.backend,
                     "flip_average": pipe.embedder.flip_average,
                     "align": "mesh" if pipe.mesh is not None else "blazeface",
                     "stages": stats,
                     "total": {"p50": float(np.percentile(totals[k], 50)),
                               "p95": float(np.percentile(totals[k], 95))}})
    return rows


def _format(r: dict[str, Any]) -> str:
    lines = [f"{r['frames']} photos fitted into {r['frame_fit']} frames, {r['repeat']} runs "
             f"each; JPEG decode of the original files {r['decode_ms_p50']:.1f} ms p50 "
             "(a camera delivers raw frames: not part of the gate's path)"]
    head = f"{'model':<6}{'thr':>4}  " + "".join(f"{s:>16}" for s in (*STAGES, "total"))
    lines += [head, " " * 12 + "".join(f"{'p50 / p95 ms':>16}" for _ in (*STAGES, "total"))]
    for row in r["rows"]:
        cells = [row["stages"].get(s) for s in STAGES] + [row["total"]]
        lines.append(f"{row['model']:<6}{row['threads']:>4}  " + "".join(
            f"{c['p50']:>8.2f} / {c['p95']:<5.2f}" if c else f"{'-':>16}" for c in cells))
    flip = r["rows"][0]["flip_average"] if r["rows"] else False
    lines.append(f"runtime {r['rows'][0]['runtime'] if r['rows'] else '?'}; flip averaging "
                 f"{'on (2 faces per embed)' if flip else 'off'}; RSS {r['rss_mb']:.0f} MB "
                 f"(peak {r['max_rss_mb']:.0f} MB)")
    return "\n".join(lines)


def run_store(args: argparse.Namespace) -> int:
    """Template-store benchmark in child processes pinned to one BLAS thread."""
    import os
    import secrets
    import subprocess
    import sys
    import tempfile

    if any(n < 100 or n > 2_000_000 for n in args.sizes):
        raise EvalError("--sizes must be between 100 and 2,000,000 templates")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "GATE_BENCH_KEYS": secrets.token_bytes(64).hex()}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("search", "load"):
            cmd = [sys.executable, "-m", "gate.match.bench", phase, str(Path(tmp) / "cache"),
                   "--sizes", *map(str, args.sizes)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise EvalError(f"store benchmark ({phase}) failed: {last}")
            report.update(json.loads(done.stdout))
    print(json.dumps(report, indent=2) if args.json else _format_store(report))
    return 0


def _format_store(r: dict[str, Any]) -> str:
    lines = ["1:N search, one core (half mated probes, half strangers), ms per probe:",
             f"{'templates':>10}{'attendees':>10}{'mated p50/p95':>17}{'strangers p50/p95':>20}"
             f"{'index':>8}{'rescans':>9}"]
    for row in r["search"]:
        m, s = row["mated"], row["strangers"]
        lines.append(f"{row['templates']:>10}{row['attendees']:>10}"
                     f"{m['p50']:>9.2f} / {m['p95']:<5.2f}{s['p50']:>12.2f} / {s['p95']:<5.2f}"
                     f"{'int8' if row['indexed'] else 'exact':>8}{row['fallbacks']:>9}")
        if "exact_float32" in row:
            e = row["exact_float32"]
            lines.append(f"{'':>20}exact float32 only: mated {e['mated_p50']:.2f} / "
                         f"{e['mated_p95']:.2f}")
    load, ch = r["load"], r["changes"]
    lines.append(f"load + decrypt + verify {load['templates']} templates "
                 f"({load['file_mb']:.0f} MB): {load['seconds']:.2f} s; RSS "
                 f"{load['rss_mb']:.0f} MB loaded (process before load {load['rss_before_mb']:.0f}"
                 f" MB, peak {r['max_rss_mb']:.0f} MB)")
    lines.append(f"changes at {load['templates']} templates: upsert {ch['upsert_per_s']:.0f}/s, "
                 f"revoke {ch['revoke_per_s']:.0f}/s one at a time (journal + fsync each); "
                 f"batches of {ch['batch']}: upsert {ch['upsert_batch_per_s']:.0f}/s, revoke "
                 f"{ch['revoke_batch_per_s']:.0f}/s")
    return "\n".join(lines)
