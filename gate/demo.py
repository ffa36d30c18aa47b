"""``make demo``: the face pipeline on real photos with the real models.

Verifies every model file against the pinned manifest, then for each photo shows what
the gate would see: faces found, the quality verdict (and what the person would be
told), the per-stage time, and finally who matches whom. Photos are read and dropped;
nothing is written. (The full simulated gate loop arrives with the gate runtime.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from gate.config import from_dict, load
from gate.errors import GateError
from gate.eval.datasets import IMAGE_SUFFIXES
from gate.images import load_image
from gate.match.embedder import DEFAULT_THRESHOLD
from gate.models import manifest, read_verified
from gate.pipeline import FacePipeline


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config) if args.config else from_dict({})
        print(f"models in {cfg.models_dir}:")
        for role, pin in manifest().items():
            read_verified(cfg.models_dir, role)
            print(f"  ✓ {pin.name:<36} sha256 {pin.sha256[:16]}…  ({pin.license})")
        pipe = FacePipeline.from_config(cfg)
        print(f"runtime {pipe.embedder.model.backend}, {cfg.models.threads} threads, embedder "
              f"{cfg.models.embedder}, alignment {'face mesh' if pipe.mesh else 'BlazeFace'}\n")
        # The first inference packs weights and allocates; keep it out of the timings.
        pipe.process(np.zeros((480, 640, 3), np.uint8))
        paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise GateError(f"{args.photos}: no photos")
        names, embs = [], []
        for path in paths:
            image = load_image(path)
            res = pipe.process(image)
            ms = sum(res.times_ms.values())
            h, w = image.shape[:2]
            head = f"{path.name:<26} {w}×{h}  faces {len(res.faces)}  {ms:5.1f} ms  "
            if res.usable and res.embedding is not None:
                m = res.measures
                assert m is not None
                print(head + f"✓ usable (eyes {m.interocular_px:.0f} px apart, yaw "
                      f"{m.yaw_deg:+.0f}°, sharpness {m.sharpness:.1f})")
                names.append(path.stem)
                embs.append(res.embedding.copy())
            else:
                issue = res.issues[0]
                print(head + f"✗ {issue}  → person sees: \"{issue.reason.prompt}\"")
            image.fill(0)
            pipe.wipe()
        if len(embs) >= 2:
            sims = np.stack(embs) @ np.stack(embs).T
            print(f"\ncosine similarity (same person at ≥ {DEFAULT_THRESHOLD}):")
            print(" " * 14 + "".join(f"{n[:9]:>10}" for n in names))
            for n, row in zip(names, sims, strict=True):
                print(f"{n[:12]:<14}" + "".join(
                    f"{v:>9.2f}{'*' if v >= DEFAULT_THRESHOLD else ' '}" for v in row))
            sims.fill(0)
        for e in embs:
            e.fill(0)
        print("\nnext: `make eval` (accuracy on faces94), `make bench` (speed), `make test`")
        return 0
    except GateError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
