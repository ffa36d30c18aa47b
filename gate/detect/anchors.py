"""SSD anchors for BlazeFace short range, as MediaPipe's SsdAnchorsCalculator makes them.

Options of ``face_detection_short_range``: 4 layers, strides 8/16/16/16, input 128×128,
anchor offset 0.5, one aspect ratio (1.0) plus the interpolated scale, fixed anchor
size. Layers that share a stride share one feature map, so the 16×16 map gets 2
anchors per cell and the 8×8 map 6: 512 + 384 = 896 anchors. With a fixed anchor
size every anchor is 1.0 wide and high, so only centres matter; they are returned in
normalised [0, 1] image coordinates of the 128×128 input.
"""

from __future__ import annotations

import numpy as np

from gate.types import Array

STRIDES = (8, 16, 16, 16)
INPUT_SIZE = 128
ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 and the interpolated-scale anchor


def ssd_anchor_centres(strides: tuple[int, ...] = STRIDES,
                       input_size: int = INPUT_SIZE) -> Array:
    """Return anchor centres as a float32 array of shape (N, 2) with columns (x, y)."""
    centres: list[Array] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 0
        # Consecutive layers with the same stride are merged onto one feature map.
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        cells = int(np.ceil(input_size / stride))
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        per_cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(per_cell, ANCHORS_PER_LAYER * same, axis=0))
        layer += same
    return np.concatenate(centres).astype(np.float32)
