"""Per-stage latency and memory of the face pipeline (``gatectl bench``, ``make bench``).

Each photo is first resized to fit a camera frame (default 1280×720, what a Pi camera
delivers at gate distance) and decoded once; then every stage is timed over repeated
runs, for each embedder and thread count, interleaved so that load on a shared machine
hits every configuration alike. Figures are p50/p95 in milliseconds.

Besides the stages: the time inside the models' ``invoke`` and the rest of the frame's
work (Python, image work, the wipe), and a stream of frames analysed one after another
against the same stream with ``[lane] overlap`` (the face embedded on a second thread
while the next frame is analysed): milliseconds per frame, i.e. the frame rate the
models allow.
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
from gate.overlap import EmbedAhead
from gate.pipeline import MODELS, STAGES, FacePipeline
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
    for row, stream in zip(rows, _streams(pipes, fitted, repeat), strict=True):
        row["stream"] = stream
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
    inside: list[list[float]] = [[] for _ in pipes]
    outside: list[list[float]] = [[] for _ in pipes]
    for _, _, pipe in pipes:  # warm-up: first invocations allocate and pack weights
        for frame in frames:
            pipe.process(frame, embed_rejected=True)
            pipe.wipe()
    for _ in range(repeat):
        for frame in frames:
            for k, (_, _, pipe) in enumerate(pipes):
                t = time.perf_counter()
                res = pipe.process(frame, embed_rejected=True)
                t1 = time.perf_counter()
                pipe.wipe()
                wiped = time.perf_counter()
                totals[k].append((t1 - t) * 1000)
                models = res.times_ms.pop(MODELS)
                inside[k].append(models)
                outside[k].append((wiped - t) * 1000 - models)
                for s, v in res.times_ms.items():
                    per_stage[k][s].append(v)
    rows = []
    for k, (model, threads, pipe) in enumerate(pipes):
        stats = {s: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                 for s, v in per_stage[k].items() if v}
        rows.append({"model": model, "threads": threads, "runtime": pipe.embedder.model.backend,
                     "flip_average": pipe.embedder.flip_average,
                     "align": "mesh" if pipe.mesh is not None else "blazeface",
                     "stages": stats,
                     "total": {"p50": float(np.percentile(totals[k], 50)),
                               "p95": float(np.percentile(totals[k], 95))},
                     "models": {"p50": float(np.percentile(inside[k], 50)),
                                "p95": float(np.percentile(inside[k], 95))},
                     "non_model": {"p50": float(np.percentile(outside[k], 50)),
                                   "p95": float(np.percentile(outside[k], 95))}})
    return rows


def _streams(pipes: list[tuple[str, int, FacePipeline]], frames: list[Array],
             repeat: int) -> list[dict[str, float]]:
    """Milliseconds per frame over a stream of frames, one after another and overlapped;
    the configurations and the two ways take turns, a stream at a time."""
    stream = frames * max(1, repeat // 2)
    seq: list[list[float]] = [[] for _ in pipes]
    ovl: list[list[float]] = [[] for _ in pipes]
    outside: list[list[float]] = [[] for _ in pipes]
    aheads = [EmbedAhead(pipe.embedder) for _, _, pipe in pipes]
    try:
        for _ in range(3):
            for k, (_, _, pipe) in enumerate(pipes):
                seq[k].append(_sequential(pipe, stream, outside[k]))
                ovl[k].append(_overlapped(pipe, aheads[k], stream))
    finally:
        for ahead in aheads:
            ahead.close()
    return [{"frames": len(stream), "sequential_ms": float(np.median(a)),
             "overlapped_ms": float(np.median(b)),
             "non_model_p50": float(np.percentile(o, 50)),
             "non_model_p95": float(np.percentile(o, 95))}
            for a, b, o in zip(seq, ovl, outside, strict=True)]


def _sequential(pipe: FacePipeline, stream: list[Array],
                outside: list[float] | None = None) -> float:
    """Milliseconds per frame; the work outside the models per frame goes to ``outside``."""
    t = time.perf_counter()
    for frame in stream:
        t0 = time.perf_counter()
        res = pipe.process(frame, embed_rejected=True)
        pipe.wipe()
        if outside is not None:
            outside.append((time.perf_counter() - t0) * 1000 - res.times_ms[MODELS])
    return (time.perf_counter() - t) * 1000 / len(stream)


def _overlapped(pipe: FacePipeline, ahead: EmbedAhead, stream: list[Array]) -> float:
    """What the lane does with ``[lane] overlap``: the face of frame n is embedded on the
    worker while frame n + 1 is analysed."""
    t = time.perf_counter()
    res = pipe.process(stream[0], embed=False)
    for k in range(len(stream)):
        face = res.face is not None
        if face:
            ahead.submit(pipe.aligner.crop)
        pipe.wipe_analysis()
        if k + 1 < len(stream):
            res = pipe.process(stream[k + 1], embed=False)
        if face:
            ahead.result()
        ahead.wipe()
    pipe.wipe()
    return (time.perf_counter() - t) * 1000 / len(stream)


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
    lines.append("p50 / p95 ms inside the models and outside them (Python, image work, "
                 "the wipe), above; outside them in a stream of frames through one pipeline "
                 "(as the gate runs); the stream's ms per frame one after another / with "
                 "[lane] overlap:")
    for row in r["rows"]:
        m, o, st = row["models"], row["non_model"], row.get("stream")
        stream = ""
        if st:
            stream = (f"   stream: non-model {st['non_model_p50']:5.2f} / "
                      f"{st['non_model_p95']:<5.2f} per frame {st['sequential_ms']:6.2f} / "
                      f"{st['overlapped_ms']:6.2f} "
                      f"({st['sequential_ms'] / st['overlapped_ms']:.2f}×)")
        lines.append(f"{row['model']:<{width}}{row['threads']:>4}  models {m['p50']:6.2f} / "
                     f"{m['p95']:<6.2f} non-model {o['p50']:5.2f} / {o['p95']:<5.2f}{stream}")
    flip = r["rows"][0]["flip_average"] if r["rows"] else False
    lines.append(f"runtime {r['rows'][0]['runtime'] if r['rows'] else '?'}; flip averaging "
                 f"{'on (2 faces per embed)' if flip else 'off'}; RSS {r['rss_mb']:.0f} MB "
                 f"(peak {r['max_rss_mb']:.0f} MB)")
    return "\n".join(lines)


