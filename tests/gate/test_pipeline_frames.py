"""Frames the pipeline cannot analyse are refused in one line, up front; frames it can
analyse, of any shape and memory layout, never crash it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gate.errors import ImageError
from gate.images import MAX_PIXELS, MIN_SIDE
from gate.pipeline import check_frame
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "bad frames"
FIXTURE_OK = [HealthCheck.function_scoped_fixture]
_DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.float32, np.float64, np.bool_,
                           np.int64])


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(shape=st.lists(st.integers(0, 48), min_size=0, max_size=4).map(tuple), dtype=_DTYPES)
@example(shape=(0, 0, 3), dtype=np.uint8)
@example(shape=(1, 1, 3), dtype=np.uint8)
@example(shape=(MIN_SIDE - 1, 640, 3), dtype=np.uint8)
@example(shape=(480, 640, 4), dtype=np.uint8)
@example(shape=(480, 640), dtype=np.uint8)
@example(shape=(MIN_SIDE, MIN_SIDE, 3), dtype=np.uint8)
def test_any_array_is_analysed_or_refused_in_one_line(pipeline, ledger: Ledger, shape, dtype):
    frame = np.full(shape, 90, dtype)
    usable = (len(shape) == 3 and shape[2] == 3 and dtype is np.uint8 and
              min(shape[0], shape[1]) >= MIN_SIDE)
    with ledger.case(CLASS):
        try:
            res = pipeline.process(frame)
        except ImageError as err:
            assert not usable, shape
            text = str(err)
            assert text.startswith("frame: ") and "\n" not in text
        else:
            assert usable, shape
            assert res.embedding is None and [i.reason.value for i in res.issues] == ["no_face"]
        finally:
            pipeline.wipe()


@pytest.mark.parametrize("thing", [None, [[1, 2, 3]], "frame", 3.5, b"\xff\xd8"])
def test_things_that_are_not_arrays(pipeline, ledger: Ledger, thing):
    with ledger.case(CLASS), \
            pytest.raises(ImageError, match=r"^frame: expected an H×W×3 uint8 RGB image, got "):
        pipeline.process(thing)


def test_the_pixel_limit_is_checked_without_touching_the_pixels(ledger: Ledger):
    huge = np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), (8000, 5001, 3), (0, 0, 1))
    assert huge.shape[0] * huge.shape[1] > MAX_PIXELS
    with ledger.case(CLASS), pytest.raises(ImageError, match="exceeds"):
        check_frame(huge)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(h=st.integers(MIN_SIDE, 700), w=st.integers(MIN_SIDE, 700),
       layout=st.sampled_from(["c", "fortran", "flipped", "strided", "readonly", "broadcast"]),
       x=st.floats(-0.5, 1.0), y=st.floats(-0.5, 1.0), scale=st.floats(0.05, 2.0))
def test_a_face_anywhere_in_a_frame_of_any_shape_and_layout(pipeline, photo, *, ledger: Ledger,
                                                            h, w, layout, x, y, scale):
    face = photo("obama.jpg")
    fh, fw = max(1, int(face.shape[0] * scale)), max(1, int(face.shape[1] * scale))
    small = cv2.resize(face, (fw, fh))
    frame = np.full((h, w, 3), 60, np.uint8)
    x0, y0 = int(x * w), int(y * h)
    xs, ys, xe, ye = max(0, x0), max(0, y0), min(w, x0 + fw), min(h, y0 + fh)
    if xe > xs and ye > ys:
        frame[ys:ye, xs:xe] = small[ys - y0:ye - y0, xs - x0:xe - x0]
    view = {"c": frame, "fortran": np.asfortranarray(frame), "flipped": frame[::-1, ::-1],
            "strided": np.repeat(frame, 2, axis=1)[:, ::2], "readonly": frame,
            "broadcast": np.broadcast_to(frame[:1], frame.shape)}[layout]
    if layout == "readonly":
        view.setflags(write=False)
    with ledger.case(CLASS):
        try:
            res = pipeline.process(view)
            assert res.embedding is None or res.embedding.shape == (pipeline.embedder.dim,)
        finally:
            pipeline.wipe()
