"""Peer benchmark worker: face_recognition 1.3.0 (dlib) over a folder of face photos.

Runs INSIDE ``.venv-peer`` (see ``tools/requirements-peer.txt``); it never imports ``gate``.

    .venv-peer/bin/python gate/bench/peer_worker.py ROOT --out FILE.json \
        [--upsample 1] [--model hog]

ROOT is either a folder-per-person tree (``ROOT/<person>/<image>``) or a flat folder of
images (``ROOT/<image>``, each file's stem its own person). For each image the worker times
(``time.perf_counter``) face detection plus the 128-d encoding of the largest face, with the
library defaults (1 jitter, the 5-point "small" landmark model), and writes only numbers:
person, relative path, ms, whether a face was found and the encoding (or null). Image
decoding is not timed, and one untimed warm-up pass runs on the first image.

face_recognition's convention: same person if the euclidean distance between two encodings
is <= 0.6 (its documented default tolerance); a caller scores a pair as ``-distance``
(higher = more similar).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".pgm"})
TOLERANCE = 0.6
PROGRESS_EVERY = 50


def load_library() -> ModuleType:
    """Import face_recognition, hiding the pkg_resources deprecation its models package trips."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        return importlib.import_module("face_recognition")


def _is_image(path: Path) -> bool:
    """True for a visible regular file with one of the supported image suffixes."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def list_images(root: Path) -> list[tuple[str, Path]]:
    """Return ``(person, path)`` pairs sorted by person then file name.

    Sub-folders of ``root`` are people; image files directly in ``root`` are each their own
    person, named by the file's stem. Hidden files and folders are skipped.
    """
    items: list[tuple[str, Path]] = []
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            items.extend((entry.name, p) for p in entry.iterdir() if _is_image(p))
        elif _is_image(entry):
            items.append((entry.stem, entry))
    return sorted(items, key=lambda item: (item[0], item[1].name))


def encode_largest(fr: ModuleType, image: Any, upsample: int, model: str) -> list[float] | None:
    """Detect faces and return the 128-d encoding of the largest one, or None if none found."""
    boxes = fr.face_locations(image, number_of_times_to_upsample=upsample, model=model)
    if not boxes:
        return None
    # face_recognition boxes are (top, right, bottom, left).
    largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    encodings = fr.face_encodings(image, known_face_locations=[largest], num_jitters=1)
    return [float(x) for x in encodings[0]]


def run(root: Path, upsample: int, model: str) -> dict[str, Any]:
    """Process every image under ``root`` and return the JSON-ready result document."""
    fr = load_library()
    items = list_images(root)
    if not items:
        raise SystemExit(f"peer_worker: no images under {root}")
    encode_largest(fr, fr.load_image_file(str(items[0][1])), upsample, model)  # warm-up

    records: list[dict[str, Any]] = []
    found = 0
    for index, (person, path) in enumerate(items, start=1):
        image = fr.load_image_file(str(path))
        start = time.perf_counter()
        encoding = encode_largest(fr, image, upsample, model)
        ms = (time.perf_counter() - start) * 1000.0
        found += encoding is not None
        records.append(
            {
                "person": person,
                "path": path.relative_to(root).as_posix(),
                "ms": round(ms, 3),
                "face_found": encoding is not None,
                "encoding": encoding,
            }
        )
        if index % PROGRESS_EVERY == 0 or index == len(items):
            print(
                f"peer_worker: {index}/{len(items)} images, {found} with a face, last {ms:.1f} ms",
                file=sys.stderr,
            )

    return {
        "tool": "face_recognition",
        "version": importlib.metadata.version("face_recognition"),
        "dlib_version": str(importlib.import_module("dlib").__version__),
        "model": model,
        "upsample": upsample,
        "num_jitters": 1,
        "landmark_model": "small",
        "tolerance": TOLERANCE,
        "score": "-euclidean_distance",
        "images": records,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description="face_recognition peer benchmark worker")
    parser.add_argument("root", type=Path, help="folder-per-person tree or flat image folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--upsample", type=int, default=1, help="detector upsampling (default 1)")
    parser.add_argument("--model", choices=("hog", "cnn"), default="hog", help="face detector")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"not a directory: {args.root}")

    result = run(args.root, args.upsample, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
