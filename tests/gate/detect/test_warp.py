"""The 2× box pyramid that keeps warps from aliasing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.detect.warp import BoxPyramid, halvings


@settings(max_examples=60, deadline=None)
@given(h=st.integers(2, 90), w=st.integers(2, 90), seed=st.integers(0, 2**32 - 1),
       times=st.integers(1, 4))
def test_each_level_is_the_exact_2x2_box_mean(h, w, seed, times):
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    small, factor = BoxPyramid().halve(image, times)
    ref: np.ndarray = image
    for _ in range(times):
        rh, rw = ref.shape[0] // 2, ref.shape[1] // 2
        if rh == 0 or rw == 0:
            break
        ref = cv2.resize(ref[:2 * rh, :2 * rw], (rw, rh), interpolation=cv2.INTER_AREA)
    assert factor == 2 ** round(np.log2(factor))
    np.testing.assert_array_equal(small, ref)


@pytest.mark.parametrize(("scale", "n"), [(1.0, 0), (0.5, 0), (0.49, 1), (0.25, 1),
                                          (0.24, 2), (0.1, 3)])
def test_halvings_leave_at_most_a_2x_shrink(scale, n):
    assert halvings(scale) == n
    assert scale * 2 ** n >= 0.5


def test_wipe_zeroes_every_level():
    pyramid = BoxPyramid()
    pyramid.halve(np.full((64, 64, 3), 200, np.uint8), 3)
    assert all(level.any() for level in pyramid.levels)
    pyramid.wipe()
    assert not any(level.any() for level in pyramid.levels)
