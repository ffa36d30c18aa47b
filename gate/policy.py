"""The lane's decision policy as a pure state machine: plain values in, commands out.

No hardware, camera or model is imported here; the runtime feeds it what the sensors and
the pipeline said and carries out what it answers, and the tests drive it with numbers.

    IDLE ──presence──▶ PRESENT ──k of n frames agree──▶ OPEN ──passage──▶ PASSED ─▶ IDLE
                         │  (capturing)                   └──timeout (no event)──▶ IDLE
                         └──no agreement after max_attempts, timeout, already entered,
                            invalid cache──▶ DENIED (staffed lane until the person leaves)
    emergency input (any state) ──▶ EMERGENCY: flapper open, nothing captured

Rules: exactly one sizeable face (two → "one at a time", no decision); a frame with a
quality problem shows its prompt and does not vote; ``k`` of the last ``n`` decided
frames must name the same attendee; a match of someone who already entered is refused
unless re-entry is allowed; an entry is reported only when the passage sensor confirms
it. Whenever the lane refuses someone it shows the staffed-lane sign (promise P9).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from gate.match.decision import Outcome


class Indication(enum.Enum):
    """What the lane shows the person in front of it."""

    OFF = "off"
    WELCOME = "welcome"  # green: the flapper is open for you
    STAFFED = "staffed"  # red: please use the staffed lane
    ONE_AT_A_TIME = "one_at_a_time"  # amber
    GUIDANCE = "guidance"  # amber: follow the prompt (look at the camera, step closer…)
    EMERGENCY = "emergency"  # evacuation: flapper open


class Phase(enum.Enum):
    """Where the lane is in its cycle."""

    IDLE = "idle"
    PRESENT = "present"
    OPEN = "open"
    PASSED = "passed"
    DENIED = "denied"
    EMERGENCY = "emergency"


@dataclass(frozen=True)
class Inputs:
    """Sensor readings at one instant (monotonic seconds)."""

    presence: bool
    passage: bool
    emergency: bool
    now: float


@dataclass(frozen=True)
class Verdict:
    """What one analysed frame (or fused set of frames) says, as plain values.

    ``outcome`` is the matcher's outcome when a decision was made, else None.
    """

    faces: int = 0
    issue: str | None = None
    prompt: str | None = None
    outcome: Outcome | None = None
    attendee: str | None = None
    already_entered: bool = False
    live: bool = True


@dataclass(frozen=True)
class Command:
    """What the runtime must do now. ``entry`` is set once per confirmed passage."""

    phase: Phase
    relay_open: bool
    indication: Indication
    capture: bool
    prompt: str | None = None
    entry: str | None = None
    event: str | None = None  # a state change worth a log line ("denied: not recognised")


@dataclass
class LanePolicy:
    """See the module docstring. ``reentry`` lets an attendee through again."""

    k: int = 2
    n: int = 3
    max_attempts: int = 3
    open_timeout_s: float = 6.0
    decide_timeout_s: float = 8.0
    reentry: bool = False
    phase: Phase = Phase.IDLE
    _since: float = 0.0
    _votes: list[str | None] = field(default_factory=list)
    _attempts: int = 0
    _attendee: str | None = None
    _prompt: str | None = None
    _indication: Indication = Indication.OFF

    def _go(self, phase: Phase, now: float) -> None:
        self.phase, self._since = phase, now

    def tick(self, inputs: Inputs, verdict: Verdict | None = None) -> Command:
        """Advance with the current sensors and, while capturing, the latest verdict."""
        now = inputs.now
        if inputs.emergency:
            if self.phase is not Phase.EMERGENCY:
                self._reset()
                self._go(Phase.EMERGENCY, now)
                return self._out(event="emergency: lane open, capture paused")
            return self._out()
        if self.phase is Phase.EMERGENCY:
            self._go(Phase.IDLE, now)
            return self._out(event="emergency over")
        if self.phase is Phase.IDLE:
            if inputs.presence:
                self._reset()
                self._go(Phase.PRESENT, now)
                return self._out(event="person in the lane: capturing")
            return self._out()
        if self.phase is Phase.PRESENT:
            return self._present(inputs, verdict)
        if self.phase is Phase.OPEN:
            if inputs.passage:
                attendee, self._attendee = self._attendee, None
                self._go(Phase.PASSED, now)
                return self._out(entry=attendee, event="passage confirmed: entry recorded")
            if now - self._since > self.open_timeout_s:
                self._attendee = None
                self._go(Phase.IDLE, now)
                return self._out(event="no passage before the timeout: closed, no entry")
            return self._out()
        if self.phase is Phase.PASSED:
            if not inputs.passage:  # through and clear of the flapper: close it
                self._go(Phase.IDLE, now)
                return self._out(event="lane clear: flapper closed")
            return self._out()
        # DENIED: the staffed-lane sign stays until the person has left the lane.
        if not inputs.presence:
            self._go(Phase.IDLE, now)
            return self._out(event="lane clear")
        return self._out()

    def _present(self, inputs: Inputs, v: Verdict | None) -> Command:
        now = inputs.now
        if not inputs.presence:
            self._go(Phase.IDLE, now)
            return self._out(event="person left before a decision")
        if now - self._since > self.decide_timeout_s:
            return self._deny(now, "no decision in time")
        if v is None:
            return self._out()
        if v.faces >= 2:
            return self._guide(Indication.ONE_AT_A_TIME, "One person at a time, please",
                               "two people in front of the camera: no decision")
        if v.outcome is Outcome.CACHE_INVALID:
            return self._deny(now, "template cache invalid")
        if v.issue is not None:
            return self._guide(Indication.GUIDANCE, v.prompt, f"quality: {v.issue}")
        if v.outcome is None:  # a good frame that is not a decision yet (fusion)
            return self._out()
        self._indication, self._prompt = Indication.OFF, None
        vote = v.attendee if v.outcome is Outcome.MATCH and v.live else None
        self._votes.append(vote)
        tally = Counter(a for a in self._votes[-self.n:] if a is not None)
        if tally:
            attendee, count = tally.most_common(1)[0]
            if count >= self.k:
                if v.already_entered and v.attendee == attendee and not self.reentry:
                    return self._deny(now, "already entered")
                self._attendee = attendee
                self._go(Phase.OPEN, now)
                return self._out(event="recognised: flapper open")
        if len(self._votes) >= self.n:
            self._attempts += 1
            self._votes.clear()
            if self._attempts >= self.max_attempts:
                return self._deny(now, "not recognised")
        return self._out()

    def _guide(self, indication: Indication, prompt: str | None, why: str) -> Command:
        changed = (indication, prompt) != (self._indication, self._prompt)
        self._indication, self._prompt = indication, prompt
        return self._out(event=why if changed else None)

    def _deny(self, now: float, why: str) -> Command:
        self._reset()
        self._go(Phase.DENIED, now)
        return self._out(event=f"denied: {why}")

    def _reset(self) -> None:
        self._votes.clear()
        self._attempts = 0
        self._attendee = None
        self._prompt = None
        self._indication = Indication.OFF

    def _out(self, *, entry: str | None = None, event: str | None = None) -> Command:
        p = self.phase
        indication = {Phase.OPEN: Indication.WELCOME, Phase.PASSED: Indication.WELCOME,
                      Phase.DENIED: Indication.STAFFED, Phase.EMERGENCY: Indication.EMERGENCY,
                      Phase.IDLE: Indication.OFF}.get(p, self._indication)
        prompt = {Phase.DENIED: "Please use the staffed lane",
                  Phase.OPEN: "Welcome"}.get(p, self._prompt if p is Phase.PRESENT else None)
        return Command(phase=p, relay_open=p in (Phase.OPEN, Phase.PASSED, Phase.EMERGENCY),
                       indication=indication, capture=p is Phase.PRESENT, prompt=prompt,
                       entry=entry, event=event)
