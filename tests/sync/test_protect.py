"""Cancelable templates: cosine kept exactly, unlinkable across events, renewable."""

from __future__ import annotations

import numpy as np
import pytest

from gate.eval import runner
from gate.eval.datasets import all_pairs, load_folder
from gate.match.embedder import DEFAULT_THRESHOLD
from sync.errors import TemplateKeyError
from sync.protect import Protector, event_key
from tests.support import DIM, unit

SECRET = bytes(range(32))


def test_event_keys_differ_per_venue_and_event_and_are_deterministic():
    a = event_key(SECRET, "venue-a", "gala-2026")
    assert a == event_key(SECRET, "venue-a", "gala-2026") and len(a) == 32
    assert a != event_key(SECRET, "venue-a", "gala-2027")
    assert a != event_key(SECRET, "venue-b", "gala-2026")
    assert a != event_key(bytes(32), "venue-a", "gala-2026")


def test_short_secret_or_key_is_refused():
    with pytest.raises(TemplateKeyError, match="at least 32 bytes"):
        event_key(b"short", "v", "e")
    with pytest.raises(TemplateKeyError, match="32 bytes"):
        Protector(b"x" * 31, dim=DIM)


def test_rotation_is_orthogonal_and_the_same_on_every_construction():
    key = event_key(SECRET, "v", "e")
    r = Protector(key, dim=DIM).matrix.astype(np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(DIM), atol=1e-5)
    np.testing.assert_array_equal(r, Protector(key, dim=DIM).matrix)
    assert np.abs(r - np.eye(DIM)).max() > 0.1  # not the identity


def test_cosine_is_preserved_to_float_precision():
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((200, DIM)))
    p = Protector(event_key(SECRET, "v", "e"), dim=DIM)
    y = p.protect(x)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    single = p.protect(x[3])
    np.testing.assert_allclose(single, y[3], atol=1e-6)


def test_renewal_reissues_templates_for_the_new_key():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((20, DIM)))
    old, new = (Protector(event_key(SECRET, "v", e), dim=DIM) for e in ("e1", "e2"))
    renewed = old.protect(x) @ old.renew_to(new).T
    np.testing.assert_allclose(renewed, new.protect(x), atol=1e-5)


def _real_embeddings(pipeline, paths):
    out = []
    for image in paths:
        res = pipeline.process(image)
        if res.usable:
            out.append(res.embedding.copy())
        pipeline.wipe()
    return np.array(out)


def test_the_same_face_under_two_events_looks_like_a_stranger(photo, pipeline):
    faces = _real_embeddings(pipeline, [photo(n) for n in
                                        ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")])
    a = Protector(event_key(SECRET, "v", "e1"), dim=DIM).protect(faces)
    b = Protector(event_key(SECRET, "v", "e2"), dim=DIM).protect(faces)
    same_key = a[0] @ a[2]  # obama vs obama3 under one key: a match
    assert same_key >= DEFAULT_THRESHOLD
    cross = np.einsum("ij,ij->i", a, b)  # each face against itself under the other key
    assert np.all(np.abs(cross) < DEFAULT_THRESHOLD - 0.2)


@pytest.mark.slow
def test_cross_key_scores_are_distributed_like_impostors(faces94, pipeline):
    folder = load_folder(faces94)
    emb = runner.embed_all(pipeline, folder.images)
    x = emb.embeddings[emb.row[emb.usable]]
    labels = [folder.labels[k] for k in np.flatnonzero(emb.usable)]
    i, j, same = all_pairs(labels)
    impostor = np.einsum("ij,ij->i", x[i[~same]], x[j[~same]])
    a = Protector(event_key(SECRET, "v", "e1"), dim=DIM).protect(x)
    b = Protector(event_key(SECRET, "v", "e2"), dim=DIM).protect(x)
    cross_same_face = np.einsum("ij,ij->i", a, b)
    emb.wipe()
    # The same face under two keys is no more similar than two different people:
    # centred lower, spread no wider, and nowhere near the match threshold.
    assert cross_same_face.mean() <= impostor.mean() + 0.01
    assert np.percentile(cross_same_face, 99) <= np.percentile(impostor, 99)
    assert cross_same_face.max() < DEFAULT_THRESHOLD
    # ...whereas under one key the same face matches itself perfectly.
    np.testing.assert_allclose(np.einsum("ij,ij->i", a, a), 1.0, atol=1e-5)
