"""Where should the quality limits sit? Degrade clean photos and watch the embedding.

For each clean photo in DIR (default: the face_recognition test photos), blur it,
darken it, over-expose it and cover its eyes by known amounts, and print the quality
measure next to the cosine between the degraded and the clean embedding. A limit
belongs where that cosine falls below 0.8 (below it the degraded face is as different
from the clean one as another photo of the same person, so matching is at risk). This is
how the defaults in ``gate/detect/quality.py`` were chosen; it never looks at the data
accuracy is reported on. Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gate.config import from_dict
from gate.eval import degrade
from gate.eval.datasets import IMAGE_SUFFIXES
from gate.images import load_image
from gate.pipeline import FacePipeline
from gate.types import Array, Image

HARM = 0.8


def _probe(pipe: FacePipeline, image: Image, clean: Array) -> tuple[str, float | None]:
    res = pipe.process(image, embed_rejected=True)
    cos = None if res.embedding is None else float(res.embedding @ clean)
    m = res.measures
    pipe.wipe()
    if m is None or cos is None:
        return "no face", None
    return (f"sharp {m.sharpness:5.2f} bright {m.brightness:5.1f} dark {m.dark_fraction:.2f} "
            f"clip {m.bright_fraction:.2f} eyes {m.eye_visibility:.2f}"), cos


def main(argv: list[str] | None = None) -> int:
    """Print the degradation table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, nargs="?",
                        default=Path("build/testdata/face_recognition"))
    args = parser.parse_args(argv)
    pipe = FacePipeline.from_config(from_dict({}), embedder="float")
    pipe.measure_eyes = True
    photos = sorted(p for p in args.dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in photos:
        image = load_image(path)
        res = pipe.process(image)
        if not res.usable or res.embedding is None or res.measures is None:
            print(f"{path.name}: skipped ({res.issues[0] if res.issues else 'no face'})")
            continue
        clean = res.embedding.copy()
        per_px = res.measures.interocular_px / 35.0  # image pixels per aligned-crop pixel
        assert pipe.mesh is not None
        assert res.face is not None
        eyes = pipe.mesh.run(image, res.face).five()[:2]
        pipe.wipe()
        print(f"{path.name} (eyes {res.measures.interocular_px:.0f} px apart)")
        cases: list[tuple[str, Image]] = []
        cases += [(f"blur σ={s} crop px", degrade.blur(image, s * per_px))
                  for s in (1.0, 2.0, 2.5, 3.0, 4.0)]
        cases += [(f"gain ×{g}", degrade.exposure(image, g))
                  for g in (0.05, 0.1, 0.2, 0.35, 2.0, 3.0, 4.0)]
        cases += [(f"eyes: {k}", degrade.occlude_eyes(image, eyes, k))
                  for k in degrade.OCCLUDERS]
        for label, degraded in cases:
            text, cos = _probe(pipe, degraded, clean)
            mark = "" if cos is None else ("  harmful" if cos < HARM else "")
            cos_text = "   -" if cos is None else f"{cos:5.2f}"
            print(f"  {label:<22} cos {cos_text}  {text}{mark}")
            degraded.fill(0)
        clean.fill(0)
        image.fill(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
