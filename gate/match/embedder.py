"""MobileFaceNet embeddings: 112×112 aligned RGB face in, L2-normalised 192-d vector out.

Pixel convention of the model (from its source package): RGB, ``(x − 127.5) / 128``.
With ``flip_average`` the face and its mirror image go through the model as one batch
of two and the two embeddings are summed before normalising; it costs one more face
through the network and gives a steadier embedding (measured by ``gatectl eval``).
"""

from __future__ import annotations

import numpy as np

from gate.inference import Model
from gate.types import Array

EMBEDDING_SIZE = 192
CROP_SIZE = 112

#: Cosine similarity above which two embeddings are taken as the same person until the
#: matcher's calibrated threshold replaces it. Measured with ``gatectl eval`` on
#: faces94-female (int8): FAR 1e-3 is reached at 0.52, genuine pairs score ≥ 0.76 and
#: impostors ≤ 0.60. Not derived from the face_recognition photos the tests match.
DEFAULT_THRESHOLD = 0.5


class Embedder:
    """Computes embeddings into a preallocated buffer that :meth:`wipe` zero-fills."""

    def __init__(self, model: Model, *, flip_average: bool = False) -> None:
        self.model = model
        self.flip_average = flip_average
        batch = 2 if flip_average else 1
        model.resize_batch(batch)
        if model.input_shape != (batch, CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(f"{model.name}: not a 112×112 embedding model")
        self._tensor = np.zeros((batch, CROP_SIZE, CROP_SIZE, 3), np.float32)
        self.embedding = np.zeros(EMBEDDING_SIZE, np.float32)

    def embed(self, crop: Array) -> Array:
        """Embedding of an aligned 112×112×3 RGB uint8 crop.

        Returns the internal buffer (overwritten by the next call, zeroed by
        :meth:`wipe`); copy it to keep it.
        """
        np.subtract(crop, 127.5, out=self._tensor[0], casting="unsafe")
        self._tensor[0] *= 1.0 / 128.0
        if self.flip_average:
            self._tensor[1] = self._tensor[0, :, ::-1]
        out = self.model.run(self._tensor)
        raw = next(iter(out.values()))
        np.sum(raw, axis=0, out=self.embedding)
        raw.fill(0)
        norm = float(np.linalg.norm(self.embedding))
        if not np.isfinite(norm) or norm < 1e-6:
            self.embedding.fill(0)
            raise ValueError(f"{self.model.name}: degenerate embedding")
        self.embedding /= norm
        return self.embedding

    def wipe(self) -> None:
        """Zero-fill the input tensor, the embedding and the interpreter's tensors (P2)."""
        self._tensor.fill(0)
        self.embedding.fill(0)
        self.model.wipe()
