"""Per-stage latency and memory of the face pipeline (``gatectl bench``, ``make bench``).

Each photo is first resized to fit a camera frame (default 1280×720, what a Pi camera
delivers at gate distance) and decoded once; then every stage is timed over repeated
runs, for each embedder and thread count, interleaved so that load on a shared machine
hits every configuration alike. Figures are p50/p95 in milliseconds.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gate.config import Config
from gate.errors import EvalError
from gate.eval.datasets import IMAGE_SUFFIXES
from gate.images import load_image
from gate.pipeline import STAGES, FacePipeline
from gate.types import Array


def frames(root: Path, size: tuple[int, int]) -> list[Array]:
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


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(cfg: Config, photos: Path, *, frame: tuple[int, int], repeat: int,
        threads: Sequence[int], models: Sequence[str]) -> dict[str, Any]:
    """Time every stage for every (embedder, threads); the report as a dict."""
    fitted = frames(photos, frame)
    decode_ms = _time_decode(photos)
    pipes = []
    for model in models:
        for n in threads:
            c = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, threads=n))
            pipes.append((model, n, FacePipeline.from_config(c, embedder=model)))
    rows = _bench(pipes, fitted, repeat)
    return {"frames": len(fitted), "frame_fit": f"{frame[0]}x{frame[1]}", "repeat": repeat,
            "decode_ms_p50": decode_ms, "rows": rows, "rss_mb": rss_mb(),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['frames']} photos fitted into {r['frame_fit']} frames, {r['repeat']} runs "
             f"each; JPEG decode of the original files {r['decode_ms_p50']:.1f} ms p50 "
             "(a camera delivers raw frames: not part of the gate's path)"]
    width = max([5, *(len(row["model"]) for row in r["rows"])])
    head = f"{'model':<{width}}{'thr':>4}  " + "".join(f"{s:>16}" for s in (*STAGES, "total"))
    lines += [head, " " * (width + 6) + "".join(f"{'p50 / p95 ms':>16}"
                                                for _ in (*STAGES, "total"))]
    for row in r["rows"]:
        cells = [row["stages"].get(s) for s in STAGES] + [row["total"]]
        lines.append(f"{row['model']:<{width}}{row['threads']:>4}  " + "".join(
            f"{c['p50']:>8.2f} / {c['p95']:<5.2f}" if c else f"{'-':>16}" for c in cells))
    flip = r["rows"][0]["flip_average"] if r["rows"] else False
    lines.append(f"runtime {r['rows'][0]['runtime'] if r['rows'] else '?'}; flip averaging "
                 f"{'on (2 faces per embed)' if flip else 'off'}; RSS {r['rss_mb']:.0f} MB "
                 f"(peak {r['max_rss_mb']:.0f} MB)")
    return "\n".join(lines)


