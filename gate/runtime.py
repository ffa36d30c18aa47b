"""The gate loop: sensors → policy → camera → pipeline → judge → matcher → relay and lights.

One :meth:`GateRuntime.step` reads the inputs, captures and analyses one frame only while
the policy is in ``present`` (the camera is closed otherwise: promise P3), lets the pure
:class:`~gate.judge.Judge` turn what the pipeline and the matcher said into a verdict and
the pure :class:`~gate.policy.LanePolicy` decide, and carries out its command. The
runtime itself only moves data between the devices, the models and those two. After
every analysed frame the camera buffer, the pipeline's buffers and the probe are
zero-filled (P2).
With ``[lane] overlap`` the embedder runs on a second thread (:class:`~gate.overlap.EmbedAhead`):
once a frame's face is aligned, the next frame is read and analysed while that face is
embedded, and the analysed frame waits for the next step (it is wiped if that step does
not analyse). Verdicts stay in frame order and each step still decides one frame.
Events it reports carry no attendee id (P10); entries go to the outbox only when the
passage sensor confirms them. On any exit from :meth:`run` the relay goes to its safe
state, the camera closes and the buffers are wiped.

One frame never ends the loop. Whatever analysing a frame raises (the camera read, the
pipeline, the presentation-attack stage, the ticket reader, the matcher, the entry log's
look-up) is contained in :meth:`GateRuntime.step`: the frame is dropped and counted by
the exception's class name only (a message may carry data), every buffer is wiped, the
policy sees no verdict for that frame (so the relay stays as it was: closed while
someone is being identified, and the person goes to the staffed lane when
``decide_timeout_s`` runs out), and the loop goes on. :class:`Stats` keeps the counts,
and after :data:`DEGRADED_AFTER` failed frames in a row says the lane is degraded, for
the service's status and watchdog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gate.camera.base import Camera, CameraError
from gate.config import Config
from gate.detect.pad import AttackDetector, NoDetector
from gate.detect.ticket import TicketReader
from gate.io.devices import GateIO
from gate.judge import Judge
from gate.logs import kv
from gate.match.matcher import Matcher
from gate.overlap import EmbedAhead
from gate.pipeline import FacePipeline, FaceResult
from gate.policy import Command, Inputs, LanePolicy, Phase, Verdict
from gate.types import Array, Image

log = logging.getLogger(__name__)

#: How often the idle loop looks at the sensors (camera off: near-zero CPU).
IDLE_POLL_S = 0.02
#: Frames failing in a row before the lane reports itself degraded.
DEGRADED_AFTER = 5


def log_event(e: dict[str, Any]) -> None:
    """Log a lane event as ``key=value`` at INFO (it carries no attendee id)."""
    log.info("lane %s", kv(phase=e.get("phase"), event=e.get("event"),
                           light=e.get("indication"), prompt=e.get("prompt")))


class EntryLog(Protocol):
    """Where confirmed entries go and where earlier ones are looked up (anti-passback)."""

    def publish_event(self, attendee: str, at: float | None = None) -> str: ...

    def entered_since(self, attendee: str, since: float) -> list[tuple[str, int]]: ...

    def forget_before(self, before: float) -> int: ...


@dataclass
class FrameErrors:
    """Frames dropped because analysing them raised, by the exception's class name.

    Written by the loop thread only; :meth:`as_dict` is a copy another thread can read.
    """

    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    #: Failed frames since the last frame analysed without an error.
    consecutive: int = 0
    last_kind: str = ""

    def count(self, kind: str) -> None:
        """One more dropped frame of ``kind``."""
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.total += 1
        self.consecutive += 1
        self.last_kind = kind

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain values (a copy)."""
        return {"total": self.total, "by_kind": dict(self.by_kind),
                "consecutive": self.consecutive, "last_kind": self.last_kind}


@dataclass
class Stats:
    """Counters for status and benchmarks (no ids)."""

    frames: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    entries: int = 0
    denials: int = 0
    camera_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    last_event: str = ""
    frame_errors: FrameErrors = field(default_factory=FrameErrors)
    #: Confirmed entries the entry log could not take yet (retried every step).
    entries_waiting: int = 0

    @property
    def degraded(self) -> bool:
        """True while the last :data:`DEGRADED_AFTER` or more frames all failed, or
        confirmed entries wait because the entry log cannot take them."""
        return self.frame_errors.consecutive >= DEGRADED_AFTER or self.entries_waiting > 0

    @property
    def degraded_reason(self) -> str:
        """Why the lane is degraded, in one line without data ("" when it is not)."""
        e = self.frame_errors
        if self.entries_waiting and e.consecutive < DEGRADED_AFTER:
            return (f"{self.entries_waiting} confirmed entries wait in RAM: the entry log "
                    "cannot take them")
        if e.consecutive < DEGRADED_AFTER:
            return ""
        return (f"{e.consecutive} frames in a row could not be analysed (last: "
                f"{e.last_kind}); everyone is sent to the staffed lane")


class GateRuntime:
    """Runs one lane. Construct with the parts; call :meth:`run` (or :meth:`step`)."""

    def __init__(self, cfg: Config, *, camera: Camera[Any], io: GateIO,
                 pipeline: FacePipeline, matcher: Matcher, entries: EntryLog,
                 pad: AttackDetector | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 report: Callable[[dict[str, Any]], None] | None = None) -> None:
        lane = cfg.lane
        self.cfg, self.camera, self.io, self.pipeline = cfg, camera, io, pipeline
        self.matcher, self.entries, self.clock, self.wall = matcher, entries, clock, wall
        self.pad = pad or NoDetector()
        self.report = report or log_event
        k, n = (1, 1) if lane.fusion else (lane.k, lane.n)
        self.policy = LanePolicy(k=k, n=n, max_attempts=lane.max_attempts,
                                 open_timeout_s=lane.open_timeout_s,
                                 decide_timeout_s=lane.decide_timeout_s, reentry=lane.reentry)
        self.judge = Judge(dim=matcher.dim, entry_window_h=lane.entry_window_h,
                           fusion_k=lane.k if lane.fusion else None)
        self.tickets = TicketReader() if lane.mode == "verify" else None
        self.overlap = EmbedAhead(pipeline.embedder) if lane.overlap else None
        #: With overlap: the next frame, read and analysed while the last one was embedded.
        self._ahead: tuple[Image, FaceResult, float] | None = None
        self.stats = Stats()
        self._unrecorded: list[tuple[str, float]] = []
        self._first_face: float | None = None
        self._camera_retry_at = 0.0
        self._camera_backoff = 1.0
        self.heartbeat = 0.0  # last time a step completed (for the service watchdog)

    # --- one step ----------------------------------------------------------------------

    def step(self) -> Command:
        """Read sensors, maybe analyse a frame, apply the policy's command."""
        now = self.clock()
        inputs = Inputs(self.io.presence, self.io.passage, self.io.emergency, now)
        verdict = None
        if self.policy.phase is Phase.PRESENT and inputs.presence and not inputs.emergency:
            verdict = self._analyse(now)
        elif self._ahead is not None:  # read ahead for a step that does not analyse
            self._ahead = None
            self._wipe_frame()
        before = self.policy.phase
        cmd = self.policy.tick(inputs, verdict)
        self._apply(cmd, before)
        self.heartbeat = self.clock()
        return cmd

    def _apply(self, cmd: Command, before: Phase) -> None:
        if cmd.relay_open and not self.io.flapper_open:
            self.io.open_flapper()
            if before is Phase.PRESENT and cmd.phase is Phase.OPEN and \
                    self._first_face is not None:
                self.stats.latencies_ms.append((self.clock() - self._first_face) * 1000)
        elif not cmd.relay_open and self.io.flapper_open:
            self.io.close_flapper()
        if cmd.indication is not self.io.indication:
            self.io.show(cmd.indication)
        if not cmd.capture:
            self._stop_capture()
        if cmd.entry is not None:
            self._unrecorded.append((cmd.entry, self.wall()))
            self.stats.entries += 1
        if self._unrecorded:
            self._record_entries()
        if cmd.phase is Phase.DENIED and before is not Phase.DENIED:
            self.stats.denials += 1
        if cmd.event:
            self.stats.last_event = cmd.event
            self.report({"phase": cmd.phase.value, "event": cmd.event,
                         "indication": cmd.indication.value, "prompt": cmd.prompt})

    def _record_entries(self) -> None:
        """Hand confirmed entries to the entry log, in order; what it refuses (its disk is
        full, its file damaged) waits here and is tried again at the next step."""
        while self._unrecorded:
            attendee, at = self._unrecorded[0]
            try:
                self.entries.publish_event(attendee, at)
            except Exception as exc:  # never the loop's death; said in status
                if not self.stats.entries_waiting:
                    log.error("lane: the entry log refused an entry (%s); it waits in RAM",
                              type(exc).__name__)
                break
            self._unrecorded.pop(0)
        self.stats.entries_waiting = len(self._unrecorded)

    def _stop_capture(self) -> None:
        if self._ahead is not None:  # read ahead, not to be analysed now
            self._ahead = None
            self._wipe_frame()
        if self.camera.is_open:
            self.camera.close()
        self._first_face = None
        self.judge.reset()

    # --- analysis ----------------------------------------------------------------------

    def _analyse(self, now: float) -> Verdict | None:
        try:
            if self._ahead is not None:
                frame, result, t = self._ahead
                self._ahead = None
            else:
                fresh = self._frame(now)
                if fresh is None:
                    return None
                frame, t = fresh, self.clock()
                result = self.pipeline.process(frame, embed=self.overlap is None)
            try:
                verdict = self._judge(frame, result, t)
            finally:
                if not self.reading_ahead:
                    self._wipe_frame()
                elif self.overlap is not None:  # the next frame stays; this one's face goes
                    self.overlap.wipe()
        except Exception as exc:  # one frame must never end the loop
            self._drop_frame(exc)
            return None
        self._frame_ok()
        return verdict

    @property
    def reading_ahead(self) -> bool:
        """True while a frame read ahead waits for the next step (``[lane] overlap``)."""
        return self._ahead is not None

    def _wipe_frame(self) -> None:
        """Zero the camera's frame and every pipeline buffer (P2)."""
        self.camera.wipe()
        if self.overlap is not None:
            self.overlap.wipe()
        self.pipeline.wipe()

    def _drop_frame(self, exc: Exception, *, ahead: bool = False) -> None:
        """Count a frame whose analysis raised, wipe what it may have left, go on. A frame
        read ahead (``ahead``) leaves the face being embedded and the judge alone."""
        kind = type(exc).__name__
        errors = self.stats.frame_errors
        errors.count(kind)
        n = errors.consecutive
        self._ahead = None  # its buffers are wiped below
        wipes = (self.camera.wipe, self.pipeline.wipe_analysis) if ahead else \
            (self._wipe_frame, self.matcher.wipe, self.judge.reset)
        for wipe in wipes:
            try:
                wipe()
            except Exception as failed:  # keep wiping the others
                log.error("frame dropped, and a buffer could not be wiped %s",
                          kv(kind=type(failed).__name__))
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th… of a run: the log stays short
            log.warning("frame dropped %s", kv(kind=kind, consecutive=n, total=errors.total))
        log.debug("frame dropped", exc_info=exc)  # the message may carry data: DEBUG only
        if n == DEGRADED_AFTER:
            self._tell(f"degraded: {n} frames in a row failed ({kind})")

    def _frame_ok(self) -> None:
        errors = self.stats.frame_errors
        if errors.consecutive >= DEGRADED_AFTER:
            self._tell(f"frames analysed again after {errors.consecutive} failed")
        errors.consecutive = 0

    def _tell(self, event: str) -> None:
        """Report an event of the frame path; a failing reporter does not end the loop."""
        try:
            self.report({"phase": self.policy.phase.value, "event": event,
                         "indication": self.io.indication.value, "prompt": None})
        except Exception as failed:
            log.error("report failed %s", kv(kind=type(failed).__name__))

    def _frame(self, now: float, *, ahead: bool = False) -> Image | None:
        if now < self._camera_retry_at:
            return None
        try:
            self.camera.open()
            frame = self.camera.read()
        except Exception as exc:
            if isinstance(exc, CameraError):
                self.stats.camera_errors += 1
                event = f"camera fault: {exc}"
            else:  # a driver's own error: a dropped frame, and the camera's back-off
                self._drop_frame(exc, ahead=ahead)
                event = f"camera fault: {type(exc).__name__}"
            self._camera_retry_at = now + self._camera_backoff
            self._camera_backoff = min(self._camera_backoff * 2, self.cfg.camera.retry_max_s)
            self._tell(event)
            try:
                self.camera.close()
            except Exception as failed:  # the next open tries again
                log.error("camera close failed %s", kv(kind=type(failed).__name__))
            return None
        self._camera_backoff = 1.0
        self.stats.frames += 1
        return frame

    def _judge(self, frame: Image, result: FaceResult, t: float) -> Verdict:
        if result.faces and self._first_face is None:
            self._first_face = t
        m = result.measures
        early = self.judge.screen(
            faces=len(result.faces),
            sizeable=m.faces_sizeable if m is not None else len(result.faces),
            issue=result.issues[0] if result.issues else None,
            usable=result.face is not None and (
                result.embedding is not None or self.overlap is not None))
        if early is not None:
            return early
        assert result.face is not None
        live = self.pad.check(frame, result.face).live
        claimed = self.tickets.read(frame) if self.tickets is not None else None
        if self.overlap is None:
            assert result.embedding is not None
            probe = result.embedding
        else:
            dropped = self.stats.frame_errors.total
            probe = self._embed_while_reading_ahead()
            if self.stats.frame_errors.total > dropped and self.judge.fusion_k is not None:
                # The frame read ahead was dropped: like any dropped frame, it ends the
                # fusion run (its buffer zeroed), and this frame starts no new one.
                self.judge.reset()
                return self.judge.pending()
        embedding = self.judge.fuse(probe)
        if embedding is None:
            return self.judge.pending()
        try:
            return self._decide(claimed, embedding, live)
        finally:
            if embedding is not probe:  # the fused mean: wiped like a probe
                embedding.fill(0)
                self.judge.reset()

    def _embed_while_reading_ahead(self) -> Array:
        """Embed this frame's face on the worker while the next frame is read and analysed
        here; return this frame's embedding. A failure of the next frame is that frame's:
        it is counted and wiped, and this frame's decision stands."""
        assert self.overlap is not None
        self.overlap.submit(self.pipeline.aligner.crop)
        try:
            self.camera.wipe()  # this frame's pixels are no longer needed
            self.pipeline.wipe_analysis()
            self._read_ahead()
        finally:
            if self._ahead is None:
                self.camera.wipe()
                self.pipeline.wipe_analysis()
        try:
            return self.overlap.result()
        except BaseException:
            self._ahead = None  # _drop_frame wipes it with this frame
            raise

    def _read_ahead(self) -> None:
        if not (self.io.presence and not self.io.emergency):
            return
        now = self.clock()
        frame = self._frame(now, ahead=True)
        if frame is None:
            return
        try:
            result = self.pipeline.process(frame, embed=False)
        except Exception as exc:  # the next frame's failure, counted like any other
            self._drop_frame(exc, ahead=True)
            return
        self._ahead = (frame, result, now)

    def _decide(self, claimed: str | None, embedding: Array, live: bool) -> Verdict:
        if self.tickets is not None:
            if claimed is None:
                return self.judge.no_ticket()
            decision = self.matcher.verify(claimed, embedding)
        else:
            decision = self.matcher.identify(embedding)
        outcome = decision.outcome.value
        self.stats.decisions[outcome] = self.stats.decisions.get(outcome, 0) + 1
        entered = False
        if decision.attendee is not None:
            since = self.judge.since(self.wall())
            entered = bool(self.entries.entered_since(decision.attendee, since))
        return self.judge.verdict(decision, live=live, already_entered=entered)

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set. Whatever ends the loop, the lane is left safe."""
        try:
            while not stop.is_set():
                cmd = self.step()
                if not cmd.capture:
                    stop.wait(IDLE_POLL_S)
        finally:
            self.close()

    def close(self) -> None:
        """Relay to its safe state, camera closed, every buffer zeroed; entries that
        still wait for the entry log get one more try."""
        try:
            self.io.safe()
            if self._unrecorded:
                self._record_entries()
        finally:
            self._ahead = None
            self._stop_capture()
            self.camera.close()
            self._wipe_frame()
            if self.overlap is not None:
                self.overlap.close()
