"""One bad frame never ends the gate loop: whatever a stage raises (camera, pipeline,
presentation-attack check, ticket reader, matcher, entry log), the frame is counted by its
exception's class, dropped and wiped, the relay stays closed, nobody is let in under
someone else's name, and the loop goes on; failures in a row make the lane "degraded"."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gate.camera.base import CameraError, Mode
from gate.camera.replay import ReplayCamera, ReplayOptions
from gate.detect import ticket
from gate.errors import CacheError, TemplateError
from gate.policy import Phase
from gate.runtime import DEGRADED_AFTER, Stats
from gate.sim.lane import SimulatedLane, at_lane_distance, compose
from sync.templates import Enrolment
from tests import support
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "bad frames"
PROTECTOR = support.protector()
FIXTURE_OK = [HealthCheck.function_scoped_fixture]
SECRET = "att-obama 0.8123 secret"  # what a message could carry: never counted or logged

#: What a stage might raise: bugs, library errors, the gate's own errors.
ERRORS: list[Callable[[], BaseException]] = [
    lambda: ZeroDivisionError(SECRET), lambda: ValueError(SECRET), lambda: RuntimeError(SECRET),
    lambda: KeyError(SECRET), MemoryError, lambda: AssertionError(SECRET),
    lambda: IndexError(SECRET), lambda: OSError(5, SECRET), lambda: TemplateError(SECRET),
    lambda: CacheError(SECRET), lambda: cv2.error(SECRET), lambda: RecursionError(SECRET)]


class Entries:
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


class Clock:
    """The runtime's clock, moved by the test (back-off and timeouts without waiting)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Flaky:
    """Stands in for a method: raises the next planned error, else calls the real one."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.plan: list[BaseException | None] = []
        self.raised: list[str] = []

    def __call__(self, *a: Any, **kw: Any) -> Any:
        exc = self.plan.pop(0) if self.plan else None
        if exc is not None:
            self.raised.append(type(exc).__name__)
            raise exc
        return self.real(*a, **kw)


@pytest.fixture(scope="module")
def faces(photo, pipeline):
    return {n: at_lane_distance(photo(f"{n}.jpg"), pipeline) for n in ("obama", "obama3",
                                                                       "biden")}


@pytest.fixture
def matcher(make_store, faces, pipeline):
    cfg = support.store_config(venue="v", event="e", gate="g", threshold=0.0,
                               match={"target_fpir": 1e-3, "margin": 0.05})
    t = make_store(clock=time.time, cfg=cfg)
    t.cache.load()
    emb = pipeline.process(faces["obama"]).embedding.copy()
    pipeline.wipe()
    t.cache.upsert([Enrolment("att-obama", 1, int(time.time()) + support.DAY,
                              PROTECTOR.protect(emb)[None])])
    return t.matcher


def make_lane(config, pipeline, matcher, entries, **lane):
    cfg = dataclasses.replace(
        config, lane=dataclasses.replace(config.lane, **lane),
        camera=dataclasses.replace(config.camera, retry_max_s=1.0),
        gpio=dataclasses.replace(config.gpio, backend="mock", presence_debounce_s=0.0))
    sim = SimulatedLane(cfg, pipeline=pipeline, matcher=matcher, entries=entries, fps=240)
    clock = Clock()
    sim.runtime.clock = clock
    return sim, clock


def relay_closed(lane: SimulatedLane) -> bool:
    """The relay pin, read even after the lane released its devices."""
    return not lane.factory.pin(lane.cfg.gpio.relay_pin).state


def buffers(lane: SimulatedLane, pipeline, matcher, *, fused: bool = True
            ) -> list[np.ndarray]:
    """What holds pixels or an embedding after a frame; with fusion, the judge collects
    embeddings between frames on purpose, and zeroes them after a dropped frame. With
    overlap, a frame read ahead keeps its pixels for the next step, the face before it
    must be gone."""
    rt = lane.runtime
    face = [pipeline.embedder.embedding, matcher._probe,
            *([rt.overlap.slot] if rt.overlap is not None else []),
            *([rt.judge._fused] if fused else [])]
    if rt._ahead is not None:
        return face
    return [lane.camera.frame, pipeline.aligner.crop, pipeline.detector._canvas,
            pipeline._gray, *face]


def inject(lane: SimulatedLane, pipeline, matcher, entries, monkeypatch) -> dict[str, Flaky]:
    """Every stage of one frame's analysis, made to fail on demand."""
    rt = lane.runtime
    stages = {"camera": (lane.camera, "_grab"), "pipeline": (pipeline, "process"),
              "embed": (pipeline.embedder, "embed"),
              "pad": (rt.pad, "check"), "matcher": (matcher, "identify"),
              "verify": (matcher, "verify"), "entries": (entries, "entered_since")}
    if rt.tickets is not None:
        stages["tickets"] = (rt.tickets, "read")
    out = {}
    for name, (obj, attr) in stages.items():
        out[name] = Flaky(getattr(obj, attr))
        monkeypatch.setattr(obj, attr, out[name])
    return out


_PLAN = st.lists(st.tuples(st.sampled_from(["camera", "pipeline", "embed", "pad", "matcher",
                                            "verify", "entries", "tickets", None]),
                           st.integers(0, len(ERRORS) - 1)), min_size=4, max_size=14)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
# Found in a clean Debian root: with overlap and fusion, a failed frame read ahead must end
# the fusion run like any dropped frame.
@example(plan=[("camera", 0), ("matcher", 0), ("verify", 0), ("camera", 0)], who="biden",
         mode="identify", fusion=True, overlap=True)
@given(plan=_PLAN, who=st.sampled_from(["biden", "obama3"]),
       mode=st.sampled_from(["identify", "verify"]), fusion=st.booleans(),
       overlap=st.booleans())
def test_any_failure_of_any_stage_is_contained(config, pipeline, matcher, faces, monkeypatch,
                                               *, caplog, plan, who, mode, fusion, overlap,
                                               ledger: Ledger):
    caplog.set_level(logging.INFO, logger="gate.runtime")  # the message may show at DEBUG
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, mode=mode, fusion=fusion,
                            overlap=overlap, decide_timeout_s=120.0)
    events: list[dict[str, Any]] = []
    lane.runtime.report = events.append
    with ledger.case(CLASS):
        with monkeypatch.context() as mp:
            flaky = inject(lane, pipeline, matcher, entries, mp)
            try:
                shown = (faces[who], ticket.encode("att-obama")) if mode == "verify" else \
                    (faces[who],)
                lane.scene = compose(shown)
                lane.presence(True)
                for stage, k in plan:
                    if stage in flaky:
                        flaky[stage].plan = [ERRORS[k]()]
                    before = lane.runtime.stats.frame_errors.total
                    lane.runtime.step()  # never raises
                    clock.t += 1.1  # past any camera back-off
                    dropped = lane.runtime.stats.frame_errors.total > before
                    assert not any(b.any() for b in buffers(lane, pipeline, matcher,
                                                            fused=dropped or not fusion))
                    if who == "biden":  # a stranger: never let in, under any name
                        assert not lane.io.flapper_open
                    for f in flaky.values():
                        f.plan.clear()
                raised = [k for f in flaky.values() for k in f.raised]
                errors = lane.runtime.stats.frame_errors
                assert errors.total == len(raised)
                assert errors.by_kind == {k: raised.count(k) for k in set(raised)}
                assert entries.sent == []  # nobody passed the beam
                if lane.io.flapper_open:
                    assert who == "obama3" and lane.runtime.policy._attendee == "att-obama"
            finally:
                lane.stop()
        assert relay_closed(lane)  # left in its safe state
        assert SECRET not in caplog.text + repr(events) + repr(lane.runtime.stats)


def test_a_frame_error_keeps_the_relay_closed_and_the_loop_running(config, pipeline, matcher,
                                                                  faces, monkeypatch, *,
                                                                  ledger: Ledger):
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, decide_timeout_s=5.0)
    flaky = inject(lane, pipeline, matcher, entries, monkeypatch)
    with ledger.case(CLASS):
        try:
            lane.scene = compose((faces["obama3"],))  # enrolled: would open without the fault
            lane.presence(True)
            lane.runtime.step()  # IDLE -> PRESENT
            for _ in range(6):
                flaky["pipeline"].plan = [ZeroDivisionError(SECRET)]
                cmd = lane.runtime.step()
                clock.t += 1.0
                assert cmd.phase is Phase.PRESENT and not lane.io.flapper_open
            stats = lane.runtime.stats
            assert stats.frame_errors.by_kind == {"ZeroDivisionError": 6}
            assert stats.degraded and "ZeroDivisionError" in stats.degraded_reason
            assert SECRET not in stats.degraded_reason
            flaky["pipeline"].plan = [ZeroDivisionError(SECRET)]
            cmd = lane.runtime.step()  # past decide_timeout_s: the staffed lane (P9)
            assert cmd.phase is Phase.DENIED and not lane.io.flapper_open
            assert stats.frame_errors.consecutive == 7 and stats.decisions == {}
        finally:
            lane.stop()


def test_degraded_after_failures_in_a_row_and_recovered_by_one_good_frame(
        config, pipeline, matcher, faces, monkeypatch, *, caplog, ledger: Ledger):
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, decide_timeout_s=120.0)
    events: list[dict[str, Any]] = []
    lane.runtime.report = events.append
    flaky = inject(lane, pipeline, matcher, entries, monkeypatch)
    caplog.set_level(logging.WARNING, logger="gate.runtime")
    with ledger.case(CLASS):
        try:
            lane.scene = compose((faces["biden"],))
            lane.presence(True)
            lane.runtime.step()
            stats = lane.runtime.stats
            for n in range(1, 3 * DEGRADED_AFTER + 1):
                flaky["matcher"].plan = [RuntimeError(SECRET)]
                lane.runtime.step()
                clock.t += 0.1
                assert stats.frame_errors.consecutive == n
                assert stats.degraded is (n >= DEGRADED_AFTER)
                assert bool(stats.degraded_reason) is stats.degraded
            # One line per power of two, not one per frame.
            assert len([r for r in caplog.records if "frame dropped" in r.getMessage()]) == \
                len([n for n in range(1, 3 * DEGRADED_AFTER + 1) if n & (n - 1) == 0])
            assert [e["event"] for e in events if "degraded" in (e["event"] or "")] == [
                f"degraded: {DEGRADED_AFTER} frames in a row failed (RuntimeError)"]
            lane.runtime.step()  # a frame analysed without an error
            assert not stats.degraded and stats.degraded_reason == ""
            assert stats.frame_errors.as_dict() == {
                "total": 3 * DEGRADED_AFTER, "by_kind": {"RuntimeError": 3 * DEGRADED_AFTER},
                "consecutive": 0, "last_kind": "RuntimeError"}
            assert events[-1]["event"] == f"frames analysed again after {3 * DEGRADED_AFTER} failed"
        finally:
            lane.stop()


def test_the_loop_thread_survives_a_pipeline_that_always_fails(config, pipeline, matcher,
                                                               faces, monkeypatch, *,
                                                               ledger: Ledger):
    def broken(frame, **kw):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(pipeline, "process", broken)
    entries = Entries()
    lane, _ = make_lane(config, pipeline, matcher, entries)
    lane.runtime.clock = time.monotonic
    lane.scene = compose((faces["obama3"],))
    with ledger.case(CLASS):
        lane.start()
        try:
            lane.presence(True)
            deadline = time.monotonic() + 10
            while not lane.runtime.stats.degraded and time.monotonic() < deadline:
                time.sleep(0.01)
            assert lane.runtime.stats.degraded and lane._thread.is_alive()
            assert not lane.io.flapper_open
            beat = lane.runtime.heartbeat
            time.sleep(0.1)
            assert lane.runtime.heartbeat > beat  # still stepping: the watchdog sees progress
        finally:
            lane.stop()
        assert not lane._thread.is_alive() and relay_closed(lane)


def test_an_unexpected_camera_error_is_a_dropped_frame_with_back_off(config, pipeline,
                                                                    matcher, faces,
                                                                    monkeypatch, *, ledger: Ledger):
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, decide_timeout_s=120.0)
    flaky = inject(lane, pipeline, matcher, entries, monkeypatch)
    with ledger.case(CLASS):
        try:
            lane.scene = compose((faces["obama3"],))
            lane.presence(True)
            lane.runtime.step()
            flaky["camera"].plan = [cv2.error("driver"), cv2.error("driver")]
            lane.runtime.step()
            assert not lane.camera.is_open  # closed, reopened after the back-off
            captures = lane.camera.captures
            for _ in range(5):  # within the back-off: no retry
                lane.runtime.step()
            assert lane.runtime.stats.frame_errors.by_kind == {"error": 1}
            assert lane.camera.captures == captures
            clock.t += 1.01
            lane.runtime.step()
            assert lane.runtime.stats.frame_errors.by_kind == {"error": 2}
            assert lane.runtime.stats.camera_errors == 0
        finally:
            lane.stop()


def test_a_failing_reporter_or_wipe_does_not_end_the_loop(config, pipeline, matcher, faces,
                                                          monkeypatch, *, ledger: Ledger):
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, decide_timeout_s=120.0)
    flaky = inject(lane, pipeline, matcher, entries, monkeypatch)

    def bad_report(e):
        raise RuntimeError("reporter down")

    def bad_wipe():
        raise RuntimeError("wipe failed")
    with ledger.case(CLASS):
        try:
            lane.scene = compose((faces["biden"],))
            lane.presence(True)
            lane.runtime.step()
            lane.runtime.report = bad_report
            monkeypatch.setattr(matcher, "wipe", bad_wipe)
            for _ in range(DEGRADED_AFTER + 1):
                flaky["pad"].plan = [ValueError(SECRET)]
                lane.runtime.step()
                clock.t += 0.1
            assert lane.runtime.stats.frame_errors.total == DEGRADED_AFTER + 1
            assert not lane.camera.frame.any() and not pipeline.aligner.crop.any()
        finally:
            lane.stop()


# --- a replay folder of junk and a face, through the whole loop ---------------------------

def _folder(tmp_path: Path, face: np.ndarray, junk: list[bytes]) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for k, data in enumerate(junk):
        (folder / f"{k:02d}.jpg").write_bytes(data)
    cv2.imwrite(str(folder / "50-face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "51-face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    return folder


_JUNK = st.lists(
    st.binary(max_size=200) |
    st.sampled_from([b"", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n" + b"\x00" * 8 +
                     b"IHDR" + b"\x7f\xff\xff\xff" * 2, b"GIF89a", b"BM" + b"\xff" * 40]),
    min_size=1, max_size=5)


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURE_OK)
@given(junk=_JUNK)
def test_a_replay_folder_of_junk_and_a_face_lets_the_enrolled_person_in(
        config, pipeline, matcher, faces, tmp_path_factory, *, junk, ledger: Ledger):
    folder = _folder(tmp_path_factory.mktemp("replay"), faces["obama3"], junk)
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, decide_timeout_s=120.0)
    cam = ReplayCamera(Mode(config.camera.width, config.camera.height, 240),
                       ReplayOptions(folder, pace=False))
    lane.camera = lane.runtime.camera = cam
    with ledger.case(CLASS):
        try:
            lane.presence(True)
            for _ in range(6 * (len(junk) + 2)):
                cmd = lane.runtime.step()
                clock.t += 1.1
                if cmd.phase is Phase.OPEN:
                    break
            assert cmd.phase is Phase.OPEN and lane.runtime.policy._attendee == "att-obama"
            assert lane.runtime.stats.camera_errors >= 1  # each junk file: one camera fault
            assert lane.runtime.stats.frame_errors.total == 0
        finally:
            lane.stop()
        assert not cam.is_open and not cam.frame.any()


def test_a_replay_folder_of_only_junk_keeps_the_gate_closed(config, pipeline, matcher,
                                                           tmp_path, ledger: Ledger):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    (folder / "b.png").write_bytes(b"")
    (folder / "c.jpg").symlink_to("/dev/zero")
    entries = Entries()
    lane, clock = make_lane(config, pipeline, matcher, entries, decide_timeout_s=10.0)
    cam = ReplayCamera(Mode(640, 480, 240), ReplayOptions(folder, pace=False))
    lane.camera = lane.runtime.camera = cam
    events: list[dict[str, Any]] = []
    lane.runtime.report = events.append
    with ledger.case(CLASS):
        try:
            lane.presence(True)
            for _ in range(12):
                cmd = lane.runtime.step()
                clock.t += 1.1
                assert not lane.io.flapper_open
            assert cmd.phase is Phase.DENIED
            faults = [e["event"] for e in events if e["event"].startswith("camera fault")]
            assert len(faults) == lane.runtime.stats.camera_errors >= 3
            assert all("\n" not in f for f in faults)
        finally:
            lane.stop()


def test_stats_default_healthy():
    s = Stats()
    assert not s.degraded and s.degraded_reason == "" and s.frame_errors.as_dict() == {
        "total": 0, "by_kind": {}, "consecutive": 0, "last_kind": ""}


def test_camera_errors_still_take_their_own_path(config, pipeline, matcher, faces,
                                                 monkeypatch, *, ledger: Ledger):
    entries = Entries()
    lane, _ = make_lane(config, pipeline, matcher, entries)
    flaky = inject(lane, pipeline, matcher, entries, monkeypatch)
    with ledger.case(CLASS):
        try:
            lane.scene = compose((faces["obama3"],))
            lane.presence(True)
            lane.runtime.step()
            flaky["camera"].plan = [CameraError("camera: unplugged")]
            lane.runtime.step()
            assert lane.runtime.stats.camera_errors == 1
            assert lane.runtime.stats.frame_errors.total == 0
        finally:
            lane.stop()


def test_run_in_a_thread_with_failures_ends_safe_on_stop(config, pipeline, matcher, faces,
                                                         monkeypatch, *, ledger: Ledger):
    entries = Entries()
    lane, _ = make_lane(config, pipeline, matcher, entries)
    lane.runtime.clock = time.monotonic
    flaky = inject(lane, pipeline, matcher, entries, monkeypatch)
    flaky["pipeline"].plan = [ERRORS[k % len(ERRORS)]() for k in range(40)]
    lane.scene = compose((faces["biden"],))
    with ledger.case(CLASS):
        lane.start()
        try:
            lane.presence(True)
            deadline = time.monotonic() + 10
            while flaky["pipeline"].plan and time.monotonic() < deadline:
                assert not lane.io.flapper_open
                time.sleep(0.005)
            assert not flaky["pipeline"].plan and lane._thread.is_alive()
        finally:
            lane.stop()
        assert lane.runtime.stats.frame_errors.total == 40
        assert not lane._thread.is_alive() and relay_closed(lane)
