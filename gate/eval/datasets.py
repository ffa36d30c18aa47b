"""Finding evaluation images on disk: per-person folders and LFW-style pairs files.

Nothing here decodes an image; it only names files, so discovery stays fast and the
evaluator can report unreadable or missing pictures itself, with context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gate.errors import EvalError
from gate.safefile import read_regular

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"})


@dataclass(frozen=True)
class FolderDataset:
    """Images with the name of the person in each; ``labels[k]`` belongs to ``images[k]``."""

    images: tuple[Path, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class PairsDataset:
    """Verification pairs ``(image_a, image_b, same_person)`` and, if known, their folds.

    ``folds[k]`` is the fold of ``pairs[k]``; it is None when the pairs file does not say
    how its pairs are split into folds.
    """

    pairs: tuple[tuple[Path, Path, bool], ...]
    folds: tuple[int, ...] | None


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def load_folder(root: Path) -> FolderDataset:
    """Collect ``root/<person>/<image>`` files, sorted by person and then file name.

    Images are recognised by extension (case-insensitive); hidden files and folders are
    skipped, and so are sub-folders of a person's folder. A person folder without images
    does not count as a person. Images directly in ``root`` are each a person of their
    own, named by the file (a set of single portraits: impostor pairs only).
    """
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise EvalError(f"dataset root {root} {state}")
    images: list[Path] = []
    labels: list[str] = []
    people = 0
    for person in sorted((p for p in root.iterdir() if p.is_dir() and _visible(p)),
                         key=lambda p: p.name):
        files = sorted((f for f in person.iterdir()
                        if _visible(f) and f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=lambda f: f.name)
        if files:
            people += 1
            images.extend(files)
            labels.extend(person.name for _ in files)
    for single in sorted((f for f in root.iterdir()
                          if _visible(f) and f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                         key=lambda f: f.name):
        people += 1
        images.append(single)
        labels.append(f"./{single.name}")
    if not images:
        raise EvalError(f"dataset root {root} has no images in <person>/<image> folders")
    if people < 2:
        raise EvalError(f"dataset root {root} has images of {people} person; need at least 2")
    return FolderDataset(images=tuple(images), labels=tuple(labels))


def all_pairs(labels: tuple[str, ...] | list[str],
              ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Return ``(i, j, same)`` for every unordered pair of images, with ``i < j``.

    The pair count grows as n²/2: 10 000 images give ~50 million pairs.
    """
    if len(labels) < 2:
        raise EvalError(f"need at least 2 labelled images to form pairs, got {len(labels)}")
    names = np.asarray(labels, dtype=str)
    i, j = np.triu_indices(len(names), k=1)
    return i.astype(np.intp), j.astype(np.intp), names[i] == names[j]


def _is_count(token: str) -> bool:
    # int() would also take "+3", "1_000" and non-ASCII digits; a pairs file has none.
    return token.isascii() and token.isdigit()


def _image(root: Path, name: str, number: str, where: str) -> Path:
    if name in (".", "..") or "/" in name or "\\" in name:
        raise EvalError(f"{where}: person name {name!r} is not a plain folder name")
    if not _is_count(number) or int(number) < 1:
        raise EvalError(f"{where}: image number must be a positive integer, got {number!r}")
    return root / name / f"{name}_{int(number):04d}.jpg"


#: Largest pairs file read (LFW's is 160 kB).
MAX_PAIRS_BYTES = 64 << 20


def _read(pairs_file: Path) -> str:
    data = read_regular(pairs_file, limit=MAX_PAIRS_BYTES, what=f"pairs file {pairs_file}",
                        fail=EvalError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EvalError(f"pairs file {pairs_file}: not UTF-8 text") from None


def parse_pairs(pairs_file: Path, root: Path) -> PairsDataset:
    """Read an LFW-style pairs file whose images live under ``root``.

    Lines are ``name n1 n2`` (two images of one person) or ``name1 n1 name2 n2`` (two
    people), naming ``root/<name>/<name>_<nnnn>.jpg``. An optional first line of one or
    two integers is a header: ``10 300`` means 10 folds, each listing 300 genuine and
    300 impostor pairs, so pairs are assigned to folds by position and the counts are
    checked. A lone integer (as in ``pairsDevTrain.txt``) says nothing usable about
    folds, so ``folds`` is None. Image files are not checked for existence here.
    """
    header: tuple[int, ...] | None = None
    pairs: list[tuple[Path, Path, bool]] = []
    seen_content = False
    for lineno, line in enumerate(_read(pairs_file).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"pairs file {pairs_file} line {lineno}"
        first, seen_content = not seen_content, True
        if first and len(tokens) <= 2 and all(_is_count(t) for t in tokens):
            header = tuple(int(t) for t in tokens)
            if min(header) < 1:
                raise EvalError(f"{where}: header numbers must be positive, got {line.strip()!r}")
            continue
        if len(tokens) == 3:
            name, n1, n2 = tokens
            pairs.append((_image(root, name, n1, where), _image(root, name, n2, where), True))
        elif len(tokens) == 4:
            name1, n1, name2, n2 = tokens
            if name1 == name2:
                raise EvalError(f"{where}: impostor pair names the same person {name1!r} twice")
            pairs.append((_image(root, name1, n1, where), _image(root, name2, n2, where), False))
        else:
            raise EvalError(f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                            f"got {len(tokens)} field{'' if len(tokens) == 1 else 's'}")
    if not pairs:
        raise EvalError(f"pairs file {pairs_file}: no pairs")
    if header is None or len(header) == 1:
        return PairsDataset(pairs=tuple(pairs), folds=None)
    return PairsDataset(pairs=tuple(pairs), folds=_folds(pairs_file, pairs, *header))


def _folds(pairs_file: Path, pairs: list[tuple[Path, Path, bool]],
           n_folds: int, per_class: int) -> tuple[int, ...]:
    per_fold = 2 * per_class
    if len(pairs) != n_folds * per_fold:
        raise EvalError(f"pairs file {pairs_file}: header declares {n_folds} folds of "
                        f"{per_class}+{per_class} pairs ({n_folds * per_fold}) "
                        f"but the file lists {len(pairs)}")
    folds = tuple(k // per_fold for k in range(len(pairs)))
    # Position alone decides the fold, so a fold with the wrong mix means the file is
    # not laid out the way its header claims and every fold would be mislabelled.
    for fold in range(n_folds):
        genuine = sum(same for (_, _, same) in pairs[fold * per_fold:(fold + 1) * per_fold])
        if genuine != per_class:
            raise EvalError(f"pairs file {pairs_file}: fold {fold} has {genuine} genuine pairs, "
                            f"header says {per_class}")
    return folds
