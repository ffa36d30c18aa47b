"""Cancelable templates: a keyed rotation of the embedding space per venue and event.

Central and gate turn every embedding ``x`` into ``y = R x`` before it is stored, sent or
compared, where ``R`` is a d×d orthogonal matrix (d the template dimension) derived from
a per-event key:

    event_key = HKDF-SHA256(protection_secret, info = "facepass/v1/template/{venue}/{event}")
    R         = orthogonal factor of a Gaussian matrix drawn from a PRNG seeded by event_key
                (signs fixed so the factorisation is unique)

What it gives:

* **Accuracy is unchanged.** ``R`` is orthogonal, so ``cos(Rx, Ry) = cos(x, y)`` exactly
  (to float rounding); the threshold and every measured figure carry over.
* **Unlinkable across events.** The same face under two events' keys scores like two
  different people (``cos(R₁x, R₂x)`` is spread around 0 like impostor scores; tested on
  real photos), so caches of two venues or events cannot be joined on templates.
* **Renewable.** A new key re-issues every template (``y' = R₂ R₁ᵀ y``) without the
  photos or raw embeddings; the old templates become useless with the new key.
* **Not raw.** A leaked cache without the key cannot be compared with embeddings from
  this model or any other system.

What it does not give: it is not irreversible in the sense of ISO/IEC 24745. Anyone
holding the event key *and* the cache can undo the rotation (``x = Rᵀ y``) and get the
raw embeddings back. The key is therefore a secret as sensitive as the cache key, stored
only as a systemd credential; irreversibility would need a non-invertible transform
(e.g. BioHashing-style binarisation or homomorphic matching), which costs accuracy or
speed and is not done here.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sync.errors import TemplateKeyError
from sync.templates import Array

_INFO = "facepass/v1/template/{venue}/{event}"
_SALT = b"facepass template protection v1"


def event_key(protection_secret: bytes, venue: str, event: str) -> bytes:
    """The 32-byte key of one venue/event, derived from the protection secret."""
    if len(protection_secret) < 32:
        raise TemplateKeyError("template protection secret must be at least 32 bytes")
    info = _INFO.format(venue=venue, event=event).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(
        protection_secret)


class Protector:
    """Applies one event's rotation. ``protect`` on probes and enrolment alike."""

    def __init__(self, key: bytes, *, dim: int) -> None:
        if len(key) != 32:
            raise TemplateKeyError("template protection key must be 32 bytes")
        seed = np.frombuffer(hashlib.sha256(b"rotation" + key).digest(), np.uint32)
        rng = np.random.Generator(np.random.PCG64(seed))
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        # QR is unique once R's diagonal is positive: makes R the same on every machine
        # (up to last-bit rounding of the LAPACK in use) and Haar-distributed.
        q *= np.sign(np.diag(r))
        self.matrix = np.ascontiguousarray(q, dtype=np.float32)
        self.fingerprint = hashlib.sha256(b"fingerprint" + key).hexdigest()[:16]

    def protect(self, x: Array, *, out: Array | None = None) -> Array:
        """``R x`` for one embedding (or ``X Rᵀ`` for rows), renormalised."""
        x = np.asarray(x, np.float32)
        y = np.matmul(x, self.matrix.T, out=out)
        norms = np.linalg.norm(y, axis=-1, keepdims=True)
        np.divide(y, np.maximum(norms, 1e-12), out=y)
        return y

    def renew_to(self, other: Protector) -> Array:
        """The matrix that takes this event's templates to ``other``'s: ``R₂ R₁ᵀ``."""
        return np.ascontiguousarray(other.matrix @ self.matrix.T, dtype=np.float32)
