"""``make bench-peer``: this project against face_recognition 1.3.0 (dlib), same images, same run.

Runs our pipeline (configured embedder, 2 threads) over DIR, then the peer in its own
venv (``gate/bench/peer_worker.py`` in ``.venv-peer``), then ours again; prints both
projects' usable-face rate, accuracy, AUC and per-image time side by side, and the speed
ratio. Times exclude image decoding on both sides. The peer's encodings pass through a
temporary file that is deleted at the end; nothing else is written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gate.config import from_dict
from gate.eval import runner
from gate.eval.datasets import all_pairs, load_folder
from gate.match.embedder import DEFAULT_THRESHOLD
from gate.match.embedders import NAMES as EMBEDDER_NAMES
from gate.pipeline import FacePipeline
from gate.types import Array

PEER_TOLERANCE = 0.6  # face_recognition's documented default distance


def ours(folder_root: Path, model: str) -> tuple[dict[str, Any], list[float]]:
    """Our report and per-image times (two passes, both timed)."""
    folder = load_folder(folder_root)
    pipe = FacePipeline.from_config(from_dict({}), embedder=model)
    pipe.process(np.zeros((480, 640, 3), np.uint8))  # warm-up
    emb = runner.embed_all(pipe, folder.images)
    report = runner.verify_folder(emb, folder.labels)
    keep = np.flatnonzero(emb.usable)
    labels = [folder.labels[k] for k in keep]
    vecs = emb.embeddings[emb.row[keep]]
    i, j, same = all_pairs(labels)
    scores = np.einsum("ij,ij->i", vecs[i], vecs[j])
    report["fixed_threshold"] = DEFAULT_THRESHOLD
    report["fixed_threshold_accuracy"] = _balanced(scores >= DEFAULT_THRESHOLD, same)
    emb.wipe()
    vecs.fill(0)
    return report, emb.ms


def peer(folder_root: Path, python: str, tmp: Path) -> tuple[dict[str, Any], list[float]]:
    """The peer's report and per-image times, from its worker's JSON."""
    out = tmp / "peer.json"
    worker = Path(__file__).resolve().parent / "peer_worker.py"
    subprocess.run([python, str(worker), str(folder_root), "--out", str(out)], check=True)
    data = json.loads(out.read_text())
    out.unlink()
    images = data["images"]
    found = [im for im in images if im["encoding"] is not None]
    enc = np.array([im["encoding"] for im in found], np.float64)
    labels = [im["person"] for im in found]
    i, j, same = all_pairs(labels)
    dist = np.linalg.norm(enc[i] - enc[j], axis=1)
    report = runner.pair_metrics(-dist, labels)
    report.update(images=len(images), unusable=len(images) - len(found),
                  unusable_rate=(len(images) - len(found)) / len(images),
                  fixed_threshold=PEER_TOLERANCE,
                  fixed_threshold_accuracy=_balanced(dist <= PEER_TOLERANCE, same),
                  version=data.get("version"), dlib=data.get("dlib_version"))
    enc.fill(0)
    return report, [float(im["ms"]) for im in images]


def _balanced(accept: Array, same: Array) -> float:
    return float((accept[same].mean() + (~accept[~same]).mean()) / 2)


def main(argv: list[str] | None = None) -> int:
    """Run both sides and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--peer-python", required=True)
    parser.add_argument("--model", default="mobilefacenet-int8", choices=EMBEDDER_NAMES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        mine, ms_a = ours(args.dir, args.model)
        theirs, ms_peer = peer(args.dir, args.peer_python, Path(tmp))
        _, ms_b = ours(args.dir, args.model)
    ours_ms = float(np.median(ms_a + ms_b))
    peer_ms = float(np.median(ms_peer))
    result = {"dataset": str(args.dir), "ours": {**mine, "ms_p50": ours_ms},
              "peer": {**theirs, "ms_p50": peer_ms}, "speed_ratio": peer_ms / ours_ms,
              "seconds": time.time() - start}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [("", f"this gate ({args.model})", f"face_recognition {theirs['version']}"),
            ("images / no usable face", f"{mine['images']} / {mine['unusable']}",
             f"{theirs['images']} / {theirs['unusable']}"),
            ("accuracy (balanced, CV threshold)", f"{100 * mine['accuracy']:.2f} %",
             f"{100 * theirs['accuracy']:.2f} %"),
            ("accuracy at fixed threshold", f"{100 * mine['fixed_threshold_accuracy']:.2f} % "
             f"(cos ≥ {DEFAULT_THRESHOLD})", f"{100 * theirs['fixed_threshold_accuracy']:.2f} % "
             f"(dist ≤ {PEER_TOLERANCE})"),
            ("ROC AUC", f"{mine['auc']:.5f}", f"{theirs['auc']:.5f}"),
            ("TAR at FAR 1e-3", _tar(mine), _tar(theirs)),
            ("ms per image p50 (decode excluded)", f"{ours_ms:.1f}", f"{peer_ms:.1f}")]
    print(f"{args.dir}: both projects in one run ({result['seconds']:.0f} s)")
    for label, a, b in rows:
        print(f"  {label:<36}{a:<28}{b}")
    print(f"  speed ratio: face_recognition takes {result['speed_ratio']:.1f}× as long per image")
    return 0


def _tar(r: dict[str, Any]) -> str:
    t = r["tar_at_far"][0]
    return f"{100 * t['tar']:.2f} %" if t["resolvable"] else "not resolvable"


if __name__ == "__main__":
    sys.exit(main())
