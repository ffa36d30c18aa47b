"""``[lane] overlap``: the face of one frame is embedded on a worker thread while the next
frame is read and analysed; decisions are the same, every face is wiped after its
decision (P2), a frame read ahead is wiped when it is not analysed, the thread stops
with the lane."""

from __future__ import annotations

import threading

import pytest

from gate.policy import Phase
from gate.sim.lane import compose
from tests.gate.test_runtime import Entries, faces, make_lane, matcher, run_until

__all__ = ["faces", "matcher"]  # fixtures shared with the sequential loop's tests


@pytest.fixture
def lane(config, pipeline, matcher):
    entries = Entries()
    lane = make_lane(config, pipeline, matcher, entries, overlap=True)
    lane.entries = entries
    yield lane
    lane.stop()


def test_enrolled_person_enters_and_stranger_is_refused(lane, faces):
    lane.scene = compose((faces["obama3"],))
    lane.presence(True)
    run_until(lane, {Phase.OPEN})
    lane.presence(False)
    lane.passage(True)
    run_until(lane, {Phase.PASSED})
    lane.passage(False)
    run_until(lane, {Phase.IDLE})
    assert lane.entries.sent == ["att-obama"]
    lane.scene = compose((faces["biden"],))
    lane.presence(True)
    run_until(lane, {Phase.DENIED})
    assert not lane.io.flapper_open and lane.entries.sent == ["att-obama"]


def test_next_frame_is_analysed_while_the_face_is_embedded(lane, pipeline, matcher, faces,
                                                          monkeypatch):
    threads: list[str] = []
    real = pipeline.embedder.embed

    def embed(crop):
        threads.append(threading.current_thread().name)
        return real(crop)

    monkeypatch.setattr(pipeline.embedder, "embed", embed)
    rt = lane.runtime
    lane.scene = compose((faces["biden"],))
    lane.presence(True)
    ahead = 0
    for _ in range(12):
        rt.step()
        if rt._ahead is not None:
            ahead += 1
            # The next frame is held, analysed; the face before it is gone (P2).
            assert lane.camera.frame.any() and pipeline.aligner.crop.any()
            assert not rt.overlap.slot.any() and not pipeline.embedder.embedding.any()
            assert not matcher._probe.any()
        if rt.policy.phase is Phase.DENIED:
            break
    assert ahead >= 2 and threads and all(t.startswith("gate-embed") for t in threads)


def test_a_frame_read_ahead_is_wiped_when_the_lane_stops_capturing(lane, pipeline, faces):
    rt = lane.runtime
    lane.scene = compose((faces["obama3"],))
    lane.presence(True)
    run_until(lane, {Phase.OPEN})
    assert rt._ahead is None and not lane.camera.is_open
    held = [lane.camera.frame, pipeline.aligner.crop, pipeline.detector._canvas,
            pipeline._gray, rt.overlap.slot, pipeline.embedder.embedding]
    assert not any(b.any() for b in held)


def test_leaving_the_lane_wipes_a_frame_read_ahead(lane, pipeline, faces):
    rt = lane.runtime
    lane.scene = compose((faces["biden"],))
    lane.presence(True)
    for _ in range(10):
        rt.step()
        if rt._ahead is not None:
            break
    assert rt._ahead is not None
    lane.presence(False)
    run_until(lane, {Phase.IDLE})
    assert rt._ahead is None
    assert not any(b.any() for b in (lane.camera.frame, pipeline.aligner.crop,
                                     pipeline.detector._canvas))


def test_the_worker_thread_stops_with_the_lane(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher, overlap=True)
    lane.scene = compose((faces["biden"],))
    lane.presence(True)
    for _ in range(4):
        lane.runtime.step()
    assert any(t.name.startswith("gate-embed") for t in threading.enumerate())
    lane.stop()
    assert not any(t.name.startswith("gate-embed") for t in threading.enumerate())
    assert not lane.runtime.overlap.slot.any()
