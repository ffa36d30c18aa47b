"""Array type aliases shared by the pipeline."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: An H×W×3 RGB (or H×W gray) uint8 picture.
Image: TypeAlias = npt.NDArray[np.uint8]
#: Any float array: coordinates, scores, embeddings.
Floats: TypeAlias = npt.NDArray[np.floating[Any]]
#: An array whose dtype varies (model tensors).
Array: TypeAlias = npt.NDArray[Any]
