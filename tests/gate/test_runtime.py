"""The gate loop on real photos and models with mock pins: P2, P3, P9, faults, modes."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from gate.camera.base import CameraError
from gate.detect import ticket
from gate.detect.pad import NoDetector, make
from gate.errors import StateError
from gate.policy import Indication, Phase
from gate.sim.lane import SimulatedLane, at_lane_distance, compose
from sync.templates import Enrolment
from tests import support

PROTECTOR = support.protector()


class Entries:
    """The entry sink: what would go to the outbox, and earlier entries."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish_event(self, attendee: str, at: float | None = None) -> str:
        del at
        self.sent.append(attendee)
        return f"e{len(self.sent)}"

    def entered_since(self, attendee: str, since: float) -> list[tuple[str, int]]:
        del since
        return [("lane-1", 0)] if attendee in self.sent else []

    def forget_before(self, before: float) -> int:
        del before
        return 0


@pytest.fixture(scope="module")
def faces(photo, pipeline):
    return {n: at_lane_distance(photo(f"{n}.jpg"), pipeline)
            for n in ("obama", "obama3", "biden")}


@pytest.fixture
def matcher(make_store, faces, pipeline):
    """The gate's matcher, over a cache with obama enrolled."""
    # The calibrated threshold (target FPIR 1e-3, int8 embedder) and a 0.05 margin.
    cfg = support.store_config(venue="v", event="e", gate="g", threshold=0.0,
                               match={"target_fpir": 1e-3, "margin": 0.05})
    t = make_store(clock=time.time, cfg=cfg)
    t.cache.load()
    emb = pipeline.process(faces["obama"]).embedding.copy()
    pipeline.wipe()
    t.cache.upsert([Enrolment("att-obama", 1, int(time.time()) + support.DAY,
                              PROTECTOR.protect(emb)[None])])
    return t.matcher


def make_lane(config, pipeline, matcher, entries=None, **lane):
    # Stepped by hand, without waiting: no presence debounce (tested in test_gpio.py).
    cfg = dataclasses.replace(config, lane=dataclasses.replace(config.lane, **lane),
                              gpio=dataclasses.replace(config.gpio, backend="mock",
                                                       presence_debounce_s=0.0))
    return SimulatedLane(cfg, pipeline=pipeline, matcher=matcher,
                         entries=entries or Entries(), fps=240)


def run_until(lane, phases, steps=200):
    for _ in range(steps):
        cmd = lane.runtime.step()
        if cmd.phase in phases:
            return cmd
    raise AssertionError(f"never reached {phases}; at {lane.runtime.policy.phase}")


def test_enrolled_person_enters_once_after_passage(config, pipeline, matcher, faces):
    entries = Entries()
    lane = make_lane(config, pipeline, matcher, entries)
    try:
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        run_until(lane, {Phase.OPEN})
        assert lane.io.flapper_open and lane.io.indication is Indication.WELCOME
        assert entries.sent == []  # not before the passage sensor says so
        lane.presence(False)
        lane.passage(True)
        run_until(lane, {Phase.PASSED})
        lane.passage(False)
        run_until(lane, {Phase.IDLE})
        assert entries.sent == ["att-obama"] and not lane.io.flapper_open
        assert lane.runtime.stats.latencies_ms
    finally:
        lane.stop()


def test_p2_buffers_are_zero_after_every_decision(config, pipeline, matcher, faces):
    """Frame, crop, probe and embedding buffers hold zeros after each analysed frame."""
    lane = make_lane(config, pipeline, matcher)
    try:
        held = [lane.camera.frame, pipeline.aligner.crop, pipeline.embedder.embedding,
                pipeline.detector._canvas, matcher._probe]
        lane.scene = compose((faces["biden"],))
        lane.presence(True)
        analysed = 0
        for _ in range(40):
            before = lane.runtime.stats.frames
            lane.runtime.step()
            if lane.runtime.stats.frames > before:
                analysed += 1
                assert not any(b.any() for b in held)
        assert analysed >= 5
        assert sum(lane.runtime.stats.decisions.values()) >= 3  # decisions really ran
    finally:
        lane.stop()


def test_p3_no_capture_while_nobody_is_present(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher)
    try:
        lane.scene = compose((faces["obama3"],))  # a face in view, but nobody in the lane
        for _ in range(50):
            lane.runtime.step()
        assert lane.camera.captures == 0 and not lane.camera.is_open
        lane.presence(True)
        run_until(lane, {Phase.OPEN})
        captured = lane.camera.captures
        assert captured > 0
        lane.presence(False)
        lane.passage(True)
        run_until(lane, {Phase.PASSED})
        lane.passage(False)
        for _ in range(50):
            lane.runtime.step()
        assert lane.camera.captures == captured and not lane.camera.is_open
    finally:
        lane.stop()


def test_p9_a_stranger_always_gets_the_staffed_lane_sign(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher, max_attempts=2)
    try:
        lane.scene = compose((faces["biden"],))
        lane.presence(True)
        run_until(lane, {Phase.DENIED})
        red = lane.factory.pin(config.gpio.red_pin)
        for _ in range(20):  # held there: the sign stays, the flapper stays closed
            lane.runtime.step()
            assert red.state and not lane.io.flapper_open
        lane.presence(False)
        run_until(lane, {Phase.IDLE})
        assert not red.state
    finally:
        lane.stop()


def test_invalid_cache_sends_everyone_to_the_staffed_lane(config, pipeline, matcher, faces):
    matcher.cache._invalid = "tampered (test)"
    lane = make_lane(config, pipeline, matcher)
    try:
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        cmd = run_until(lane, {Phase.DENIED, Phase.OPEN})
        assert cmd.phase is Phase.DENIED and "invalid" in (cmd.event or "")
    finally:
        lane.stop()


def test_anti_passback_refuses_a_second_entry(config, pipeline, matcher, faces):
    entries = Entries()
    entries.sent.append("att-obama")  # already entered at another gate
    lane = make_lane(config, pipeline, matcher, entries)
    try:
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        cmd = run_until(lane, {Phase.DENIED, Phase.OPEN})
        assert cmd.phase is Phase.DENIED and cmd.event == "denied: already entered"
    finally:
        lane.stop()


def test_emergency_opens_and_stops_capture(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher)
    try:
        lane.scene = compose((faces["biden"],))
        lane.presence(True)
        lane.runtime.step()
        lane.emergency(True)
        cmd = lane.runtime.step()
        captured = lane.camera.captures
        for _ in range(10):
            cmd = lane.runtime.step()
        assert cmd.phase is Phase.EMERGENCY and lane.io.flapper_open
        assert lane.camera.captures == captured and not lane.camera.is_open
        lane.emergency(False)
        lane.presence(False)
        run_until(lane, {Phase.IDLE})
        assert not lane.io.flapper_open
    finally:
        lane.stop()


def test_camera_fault_keeps_the_gate_closed_and_retries_with_back_off(config, pipeline,
                                                                     matcher, faces):
    lane = make_lane(config, pipeline, matcher, decide_timeout_s=1.0)
    try:
        def unplugged(out):
            raise CameraError("camera: unplugged (test)")

        lane.camera._grab = unplugged
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        t = time.monotonic()
        while time.monotonic() - t < 3 and lane.runtime.policy.phase is not Phase.DENIED:
            cmd = lane.runtime.step()
            time.sleep(0.005)
        assert cmd.phase is Phase.DENIED and not lane.io.flapper_open
        errors = lane.runtime.stats.camera_errors
        assert 1 <= errors <= 2  # back-off: not retried on every loop
        assert time.monotonic() - t >= 1.0
    finally:
        lane.stop()


def test_verify_mode_needs_the_ticket_and_the_face(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher, mode="verify", k=1, n=1, max_attempts=2)
    try:
        qr = ticket.encode("att-obama")
        face = faces["obama3"]
        lane.scene = compose((face,))
        lane.presence(True)
        cmd = run_until(lane, {Phase.PRESENT})
        for _ in range(3):
            cmd = lane.runtime.step()
        assert cmd.phase is Phase.PRESENT and cmd.prompt == "Please show your ticket's QR code"
        both = compose((face, qr))
        lane.scene = both
        cmd = run_until(lane, {Phase.OPEN, Phase.DENIED})
        assert cmd.phase is Phase.OPEN
        lane.presence(False)
        lane.passage(True)
        run_until(lane, {Phase.PASSED})
        lane.passage(False)
        run_until(lane, {Phase.IDLE})
        # Someone else holding that ticket: the 1:1 comparison fails.
        lane.scene = compose((faces["biden"], qr))
        lane.presence(True)
        cmd = run_until(lane, {Phase.OPEN, Phase.DENIED})
        assert cmd.phase is Phase.DENIED
    finally:
        lane.stop()


def test_fusion_mode_decides_on_the_average_of_k_frames(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher, fusion=True, k=3, n=3)
    try:
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        run_until(lane, {Phase.OPEN})
        assert lane.runtime.stats.decisions == {"match": 1}  # one decision from 3 frames
        assert lane.runtime.stats.frames >= 3
        assert not lane.runtime.judge._fused.any()
    finally:
        lane.stop()


def test_a_crash_in_the_loop_leaves_the_relay_safe(config, pipeline, matcher, faces):
    lane = make_lane(config, pipeline, matcher)
    lane.io.open_flapper()

    def boom():
        raise RuntimeError("bug")

    lane.runtime.step = boom
    with pytest.raises(RuntimeError):
        lane.runtime.run(threading.Event())
    assert not lane.io.flapper_open and not lane.camera.frame.any()
    lane.io.close()


def test_unverified_pad_is_labelled_and_passes_everyone():
    pad = make("off")
    assert isinstance(pad, NoDetector) and not pad.validated
    assert pad.check(np.zeros((4, 4, 3), np.uint8), None).live  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        make("deep-liveness-9000")


def test_relay_pin_timing_when_nobody_walks_through(config, pipeline, matcher, faces):
    """Relay pin: off → on at the decision → off again ``open_timeout_s`` later, no event."""
    entries = Entries()
    lane = make_lane(config, pipeline, matcher, entries, open_timeout_s=1.0)
    relay = lane.factory.pin(lane.cfg.gpio.relay_pin)
    try:
        relay.clear_states()
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        run_until(lane, {Phase.OPEN})
        deadline = time.monotonic() + 3
        while lane.io.flapper_open and time.monotonic() < deadline:
            lane.runtime.step()
            time.sleep(0.005)
        assert [s.state for s in relay.states] == [False, True, False]
        assert relay.states[-1].timestamp == pytest.approx(1.0, abs=0.15)
        assert entries.sent == []
    finally:
        lane.stop()


class RefusingEntries(Entries):
    """An entry log whose disk is full for the first ``refusals`` writes."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def publish_event(self, attendee: str, at: float | None = None) -> str:
        if self.refusals > 0:
            self.refusals -= 1
            raise StateError("link state: database or disk is full")
        return super().publish_event(attendee, at)


def test_an_entry_the_log_refuses_waits_and_is_recorded_later(config, pipeline, matcher,
                                                               faces):
    entries = RefusingEntries(refusals=3)
    lane = make_lane(config, pipeline, matcher, entries)
    try:
        lane.scene = compose((faces["obama3"],))
        lane.presence(True)
        run_until(lane, {Phase.OPEN})
        lane.presence(False)
        lane.passage(True)
        run_until(lane, {Phase.PASSED})  # the log refuses: the loop goes on regardless
        stats = lane.runtime.stats
        assert entries.sent == [] and stats.entries_waiting == 1 and stats.degraded
        assert "confirmed entries wait" in stats.degraded_reason
        lane.passage(False)
        run_until(lane, {Phase.IDLE})
        for _ in range(5):
            lane.runtime.step()
        assert entries.sent == ["att-obama"] and stats.entries_waiting == 0
        assert not stats.degraded and stats.entries == 1
    finally:
        lane.stop()
