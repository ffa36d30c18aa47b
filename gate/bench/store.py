"""Template cache and matcher benchmark (``gatectl bench --store``): each phase runs in a
child process with BLAS limited to one thread, so the figures are for one core.

Synthetic unit-length templates (1-3 per attendee) in a temporary state directory with
in-RAM keys: 1:N search per probe at several gallery sizes (half mated probes, half
strangers), load + decrypt + verify of the largest cache, resident memory with it
loaded, and upsert/revoke throughput one by one and in batches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gate.config import from_dict
from gate.credentials import Key
from gate.errors import EvalError
from gate.templates import TemplateKeys, Templates, open_templates
from gate.types import Array
from sync.protect import Protector
from sync.templates import MOBILEFACENET, Enrolment

DAY = 86400
DIM = MOBILEFACENET.dim
_CONFIG = from_dict({"gate": {"venue": "bench-venue", "event": "bench-event",
                              "id": "bench-gate"}})


def _unit(x: Array) -> Array:
    out: Array = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _store(directory: Path, kek: Key, tkey: bytes,
           protector: Protector | None = None) -> Templates:
    return open_templates(_CONFIG, keys=TemplateKeys(kek, Key(tkey, "bench")),
                          directory=directory, protector=protector)


def _population(templates: int, rng: np.random.Generator,
                protector: Protector) -> tuple[list[Enrolment], Array]:
    counts: list[int] = []
    while sum(counts) < templates:
        counts.append(int(min(rng.integers(1, 4), templates - sum(counts))))
    raw = _unit(rng.standard_normal((len(counts), DIM)).astype(np.float32))
    until = int(time.time()) + 30 * DAY
    batch, at = [], 0
    for i, c in enumerate(counts):
        rows = _unit(raw[i] + rng.standard_normal((c, DIM)).astype(np.float32) * 0.02)
        batch.append(Enrolment(f"a{i:07d}", 1, until, protector.protect(rows)))
        at += c
    return batch, raw


def _search_times(store: Templates, raw: Array, rng: np.random.Generator,
                  probes: int) -> dict[str, Any]:
    picks = rng.integers(0, len(raw), probes // 2)
    mated = _unit(raw[picks] + rng.standard_normal((len(picks), DIM)).astype(np.float32) * 0.03)
    strangers = _unit(rng.standard_normal((probes - len(picks), DIM)).astype(np.float32))
    for p in mated[:5]:
        store.matcher.identify(p)
    out: dict[str, Any] = {}
    for name, batch in (("mated", mated), ("strangers", strangers)):
        times, hits = [], 0
        for p in batch:
            t = time.perf_counter()
            d = store.matcher.identify(p)
            times.append((time.perf_counter() - t) * 1000)
            hits += d.accepted
        out[name] = {"p50": float(np.percentile(times, 50)),
                     "p95": float(np.percentile(times, 95)), "accepted": hits / len(batch)}
    with store.cache.searching() as gallery:
        assert gallery is not None
        out["fallbacks"] = gallery.fallbacks
        out["indexed"] = gallery.indexed
    return out


def run(sizes: Sequence[int], probes: int, directory: Path, kek: Key,
        tkey: bytes) -> dict[str, Any]:
    """Search times at each size; leaves the largest cache in ``directory``."""
    rng = np.random.default_rng(0)
    protector = Protector(tkey, dim=DIM)
    rows = []
    for n in sizes:
        here = directory if n == max(sizes) else directory.with_name(f"{directory.name}-{n}")
        store = _store(here, kek, tkey, protector)
        batch, raw = _population(n, rng, protector)
        t = time.perf_counter()
        store.cache.upsert(batch)
        enrol_s = time.perf_counter() - t
        del batch
        row = {"templates": store.cache.status().templates, "attendees": len(raw),
               "enrol_s": enrol_s, **_search_times(store, raw, rng, probes)}
        if n == max(sizes):
            row["exact_float32"] = _exact_times(store, raw, rng, probes)
            np.save(directory.with_name("raw.npy"), raw)
        rows.append(row)
        store.close()
    return {"search": rows}


def load_and_change(directory: Path, kek: Key, tkey: bytes, ops: int) -> dict[str, Any]:
    """In a fresh process: load time and memory of the cache, then change throughput."""
    rss_before = _rss_mb()
    store = _store(directory, kek, tkey)
    t = time.perf_counter()
    status = store.cache.load()
    seconds = time.perf_counter() - t
    report: dict[str, Any] = {"load": {
        "templates": status.templates, "seconds": seconds, "rss_before_mb": rss_before,
        "rss_mb": _rss_mb(),
        "file_mb": (directory / "templates.cache").stat().st_size / 2**20}}
    raw = np.load(directory.with_name("raw.npy"))
    report["changes"] = _changes(store, raw, np.random.default_rng(1),
                                 Protector(tkey, dim=DIM), ops)
    report["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _exact_times(store: Templates, raw: Array, rng: np.random.Generator,
                 probes: int) -> dict[str, float]:
    with store.cache.searching() as gallery:
        assert gallery is not None
        with gallery.exhaustive():
            out = _search_times(store, raw, rng, probes)
    return {"mated_p50": out["mated"]["p50"], "mated_p95": out["mated"]["p95"],
            "strangers_p95": out["strangers"]["p95"]}


def _changes(store: Templates, raw: Array, rng: np.random.Generator,
             protector: Protector, ops: int) -> dict[str, float]:
    until = int(time.time()) + 30 * DAY
    ops = min(ops, len(raw) // 4)
    batch = min(1000, len(raw) - 2 * ops)
    ids = [f"a{i:07d}" for i in rng.choice(len(raw), 2 * ops + batch, replace=False)]
    store.matcher.identify(_unit(rng.standard_normal(DIM).astype(np.float32)))

    def new(i: str) -> Enrolment:
        return Enrolment(i, 5, until, protector.protect(_unit(rng.standard_normal(DIM)))[None])

    t = time.perf_counter()
    for i in ids[:ops]:
        store.cache.upsert([new(i)])
    single_up = ops / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in ids[ops:2 * ops]:
        store.cache.revoke(i, 9)
    single_rev = ops / (time.perf_counter() - t)
    rest = ids[2 * ops:]
    t = time.perf_counter()
    store.cache.upsert([new(i) for i in rest])
    batch_up = len(rest) / (time.perf_counter() - t)
    t = time.perf_counter()
    store.cache.revoke_many([(i, 10, None) for i in rest])
    batch_rev = len(rest) / (time.perf_counter() - t)
    return {"upsert_per_s": single_up, "revoke_per_s": single_rev,
            "upsert_batch_per_s": batch_up, "revoke_batch_per_s": batch_rev,
            "batch": len(rest)}


def run_children(sizes: Sequence[int]) -> dict[str, Any]:
    """Both phases, each in a child process pinned to one BLAS thread; the report."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "GATE_BENCH_KEYS": secrets.token_bytes(64).hex()}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase in ("search", "load"):
            cmd = [sys.executable, "-m", "gate.bench.store", phase, str(Path(tmp) / "cache"),
                   "--sizes", *map(str, sizes)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise EvalError(f"store benchmark ({phase}) failed: {last}")
            report.update(json.loads(done.stdout))
    return report


def format_report(r: dict[str, Any]) -> str:
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


def main(argv: list[str] | None = None) -> int:
    """Print one phase's report as JSON (``gatectl bench --store`` runs both phases)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("search", "load"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--ops", type=int, default=50)
    args = parser.parse_args(argv)
    keys = bytes.fromhex(os.environ["GATE_BENCH_KEYS"])  # random per run, from the parent
    kek, tkey = Key(keys[:32], "bench"), keys[32:]
    if args.phase == "search":
        report = run(args.sizes, args.probes, args.directory, kek, tkey)
    else:
        report = load_and_change(args.directory, kek, tkey, args.ops)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
