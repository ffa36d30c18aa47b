"""Embeddings: an aligned face crop in, an L2-normalised template-space vector out.

The model and its pixel convention come from the registry (:mod:`gate.match.embedders`).
With ``flip_average`` the face and its mirror image go through the model as one batch
of two and the two embeddings are summed before normalising; it costs one more face
through the network and gives a steadier embedding (measured by ``gatectl eval``).
"""

from __future__ import annotations

import numpy as np

from gate.inference import Model
from gate.match.embedders import MOBILEFACENET_INT8, EmbedderSpec
from gate.types import Array

#: Cosine similarity above which two embeddings are taken as the same person until the
#: matcher's calibrated threshold replaces it. Measured with ``gatectl eval`` on
#: faces94-female (int8): FAR 1e-3 is reached at 0.52, genuine pairs score ≥ 0.76 and
#: impostors ≤ 0.60. Not derived from the face_recognition photos the tests match.
DEFAULT_THRESHOLD = 0.5


class Embedder:
    """Computes embeddings into a preallocated buffer that :meth:`wipe` zero-fills."""

    def __init__(self, model: Model, *, spec: EmbedderSpec = MOBILEFACENET_INT8,
                 flip_average: bool = False) -> None:
        self.model = model
        self.spec = spec
        self.flip_average = flip_average
        size = spec.input_size
        batch = 2 if flip_average else 1
        model.resize_batch(batch)
        if model.input_shape != (batch, size, size, 3):
            raise ValueError(f"{model.name}: not a {size}×{size} embedding model")
        # float32 scalars keep numpy from computing in float64 and casting back.
        self._mean, self._scale = np.float32(spec.mean), np.float32(spec.scale)
        self._identity = spec.mean == 0.0 and spec.scale == 1.0
        self.embedding = np.zeros(spec.model.dim, np.float32)

    @property
    def dim(self) -> int:
        """Length of the embeddings."""
        return self.spec.model.dim

    def embed(self, crop: Array) -> Array:
        """Embedding of an aligned RGB uint8 crop of the model's input size.

        Returns the internal buffer (overwritten by the next call, zeroed by
        :meth:`wipe`); copy it to keep it.
        """
        def fill(tensor: Array) -> None:
            if self._identity:  # SFace normalises inside its graph: a plain conversion
                np.copyto(tensor[0], crop, casting="unsafe")
            else:
                np.subtract(crop, self._mean, out=tensor[0], casting="unsafe")
                np.multiply(tensor[0], self._scale, out=tensor[0])
            if self.flip_average:
                tensor[1] = tensor[0, :, ::-1]

        out = self.model.run_into(fill)
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
        """Zero-fill the embedding and the interpreter's tensors (P2)."""
        self.embedding.fill(0)
        self.model.wipe()
