"""Dataset discovery on throw-away folders: empty files stand in for images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gate.errors import EvalError
from gate.eval.datasets import all_pairs, load_folder, parse_pairs


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


# ---------------------------------------------------------------- load_folder


def test_load_folder_sorts_and_filters(tmp_path: Path) -> None:
    _touch(tmp_path, "bob/b.jpg", "bob/a.PNG", "bob/notes.txt", "bob/.hidden.jpg",
           "bob/nested/c.jpg", "alice/x.jpeg", "alice/y.WebP", "alice/z.pgm",
           ".git/objects.png", "carol/readme.md", "stray.jpg")
    (tmp_path / "dave").mkdir()
    dataset = load_folder(tmp_path)
    assert dataset.images == (
        tmp_path / "alice/x.jpeg", tmp_path / "alice/y.WebP", tmp_path / "alice/z.pgm",
        tmp_path / "bob/a.PNG", tmp_path / "bob/b.jpg", tmp_path / "stray.jpg",
    )
    # An image directly in the root is a person of its own.
    assert dataset.labels == ("alice", "alice", "alice", "bob", "bob", "./stray.jpg")


def test_load_folder_of_single_portraits(tmp_path: Path) -> None:
    _touch(tmp_path, "Ana Souza.jpg", "Bruno.jpg", "Carla.png")
    dataset = load_folder(tmp_path)
    assert len(dataset.images) == 3 and len(set(dataset.labels)) == 3


def test_load_folder_accepts_every_listed_extension(tmp_path: Path) -> None:
    suffixes = [".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"]
    _touch(tmp_path, *(f"p{k}/img{s.upper()}" for k, s in enumerate(suffixes)))
    assert len(load_folder(tmp_path).images) == len(suffixes)


def test_load_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="does not exist"):
        load_folder(tmp_path / "nope")


def test_load_folder_root_is_a_file(tmp_path: Path) -> None:
    _touch(tmp_path, "file.jpg")
    with pytest.raises(EvalError, match="not a directory"):
        load_folder(tmp_path / "file.jpg")


def test_load_folder_one_person(tmp_path: Path) -> None:
    _touch(tmp_path, "alice/1.jpg", "alice/2.jpg", "bob/readme.txt")
    with pytest.raises(EvalError, match="at least 2"):
        load_folder(tmp_path)


def test_load_folder_no_images(tmp_path: Path) -> None:
    _touch(tmp_path, "alice/notes.txt", "bob/.x.jpg")
    with pytest.raises(EvalError, match="no images"):
        load_folder(tmp_path)


# ---------------------------------------------------------------- all_pairs


def test_all_pairs_hand_computed() -> None:
    i, j, same = all_pairs(["a", "a", "b"])
    np.testing.assert_array_equal(i, [0, 0, 1])
    np.testing.assert_array_equal(j, [1, 2, 2])
    np.testing.assert_array_equal(same, [True, False, False])


def test_all_pairs_covers_every_unordered_pair_once() -> None:
    labels = ["a", "b", "a", "c", "b", "a"]
    i, j, same = all_pairs(labels)
    assert len(i) == 6 * 5 // 2
    assert np.all(i < j)
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == len(i)
    assert same.sum() == 3 + 1  # C(3,2) pairs of a, C(2,2) of b
    assert same.dtype == np.bool_


def test_all_pairs_needs_two_images() -> None:
    with pytest.raises(EvalError):
        all_pairs(["a"])


# ---------------------------------------------------------------- parse_pairs


def _pairs_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_pairs_genuine_and_impostor(tmp_path: Path) -> None:
    root = tmp_path / "lfw"
    path = _pairs_file(tmp_path, "\n  Abel_Pacheco\t1 4 \n\nAbel_Pacheco 2 Zico   13\n")
    dataset = parse_pairs(path, root)
    assert dataset.folds is None
    assert dataset.pairs == (
        (root / "Abel_Pacheco/Abel_Pacheco_0001.jpg",
         root / "Abel_Pacheco/Abel_Pacheco_0004.jpg", True),
        (root / "Abel_Pacheco/Abel_Pacheco_0002.jpg", root / "Zico/Zico_0013.jpg", False),
    )


def test_parse_pairs_does_not_check_files(tmp_path: Path) -> None:
    dataset = parse_pairs(_pairs_file(tmp_path, "X 1 2\n"), tmp_path / "absent")
    assert not dataset.pairs[0][0].exists()


def test_parse_pairs_header_assigns_folds(tmp_path: Path) -> None:
    text = "2 1\nA 1 2\nA 1 B 1\nC 3 4\nC 1 D 2\n"
    dataset = parse_pairs(_pairs_file(tmp_path, text), tmp_path)
    assert dataset.folds == (0, 0, 1, 1)
    assert [same for (_, _, same) in dataset.pairs] == [True, False, True, False]


def test_parse_pairs_lone_header_has_no_folds(tmp_path: Path) -> None:
    dataset = parse_pairs(_pairs_file(tmp_path, "10\nA 1 2\nA 1 B 1\nC 1 2\n"), tmp_path)
    assert dataset.folds is None
    assert len(dataset.pairs) == 3


def test_parse_pairs_header_count_mismatch(tmp_path: Path) -> None:
    path = _pairs_file(tmp_path, "2 1\nA 1 2\nA 1 B 1\nC 3 4\n")
    with pytest.raises(EvalError, match=r"declares 2 folds.*lists 3"):
        parse_pairs(path, tmp_path)


def test_parse_pairs_header_fold_mix_mismatch(tmp_path: Path) -> None:
    path = _pairs_file(tmp_path, "2 1\nA 1 2\nC 3 4\nA 1 B 1\nC 1 D 2\n")
    with pytest.raises(EvalError, match="fold 0 has 2 genuine"):
        parse_pairs(path, tmp_path)


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("A 1 2\nA 1 2 3 4 5\n", 2, "got 6 fields"),
    ("A 1 2\n\n\nB x 2\n", 4, "positive integer, got 'x'"),
    ("A 0 2\n", 1, "positive integer, got '0'"),
    ("A 1 -2\n", 1, "positive integer"),
    ("A 1 A 2\n", 1, "same person"),
    ("A 1 2\n10 300\n", 2, "got 2 fields"),
    ("A\n", 1, "got 1 field"),
    ("0 300\nA 1 2\n", 1, "header numbers must be positive"),
    ("../etc 1 2\n", 1, "plain folder name"),
    ("A 1 x/y 2\n", 1, "plain folder name"),
])
def test_parse_pairs_malformed_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = _pairs_file(tmp_path, text)
    with pytest.raises(EvalError) as info:
        parse_pairs(path, tmp_path)
    message = str(info.value)
    assert message.startswith(f"pairs file {path} line {line}: ")
    assert reason in message
    assert "\n" not in message


def test_parse_pairs_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="no pairs"):
        parse_pairs(_pairs_file(tmp_path, "10 300\n\n"), tmp_path)
    with pytest.raises(EvalError, match="cannot read"):
        parse_pairs(tmp_path / "missing.txt", tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"Jos\xe9 1 2\n")
    with pytest.raises(EvalError, match="UTF-8"):
        parse_pairs(bad, tmp_path)
