"""The lane policy alone, with plain values: no hardware, camera or model."""

from __future__ import annotations

import pytest

from gate.match.decision import Outcome
from gate.policy import Indication, Inputs, LanePolicy, Phase, Verdict

MATCH = Verdict(faces=1, outcome=Outcome.MATCH, attendee="a1")
OTHER = Verdict(faces=1, outcome=Outcome.MATCH, attendee="a2")
MISS = Verdict(faces=1, outcome=Outcome.BELOW_THRESHOLD)


class Lane:
    """Drives a policy through time."""

    def __init__(self, **kw) -> None:
        self.p = LanePolicy(**kw)
        self.t = 100.0

    def tick(self, *, presence=True, passage=False, emergency=False, v=None, dt=0.033):
        self.t += dt
        return self.p.tick(Inputs(presence, passage, emergency, self.t), v)


def arrive(lane: Lane):
    cmd = lane.tick()
    assert cmd.phase is Phase.PRESENT and cmd.capture
    return cmd


def test_idle_lane_captures_nothing_and_stays_closed():
    lane = Lane()
    for _ in range(5):
        cmd = lane.tick(presence=False)
        assert (cmd.phase, cmd.capture, cmd.relay_open, cmd.indication) == \
            (Phase.IDLE, False, False, Indication.OFF)


def test_k_of_n_then_passage_gives_exactly_one_entry():
    lane = Lane(k=2, n=3)
    arrive(lane)
    assert lane.tick(v=MATCH).phase is Phase.PRESENT  # one vote is not enough
    cmd = lane.tick(v=MATCH)
    assert cmd.phase is Phase.OPEN and cmd.relay_open and cmd.indication is Indication.WELCOME
    assert not cmd.capture and cmd.entry is None  # no entry before the passage
    cmd = lane.tick(v=None)
    assert cmd.entry is None
    cmd = lane.tick(presence=False, passage=True)
    assert cmd.entry == "a1" and cmd.phase is Phase.PASSED and cmd.relay_open
    cmd = lane.tick(presence=False, passage=True)
    assert cmd.entry is None  # still in the beam: not counted twice
    cmd = lane.tick(presence=False, passage=False)
    assert cmd.phase is Phase.IDLE and not cmd.relay_open


def test_votes_for_different_people_do_not_add_up():
    lane = Lane(k=2, n=3, max_attempts=1)
    arrive(lane)
    lane.tick(v=MATCH)
    lane.tick(v=OTHER)
    cmd = lane.tick(v=MISS)  # three decided frames, no two agree: the only attempt fails
    assert cmd.phase is Phase.DENIED and cmd.indication is Indication.STAFFED


def test_two_faces_never_decide_and_ask_for_one_at_a_time():
    lane = Lane(k=1, n=1, decide_timeout_s=1.0)
    arrive(lane)
    cmd = lane.tick(v=Verdict(faces=2))
    assert cmd.indication is Indication.ONE_AT_A_TIME and cmd.prompt and not cmd.relay_open
    for _ in range(10):
        cmd = lane.tick(v=Verdict(faces=2))
        assert not cmd.relay_open
    cmd = lane.tick(v=Verdict(faces=2), dt=1.0)
    assert cmd.phase is Phase.DENIED and cmd.indication is Indication.STAFFED


def test_quality_problems_show_the_prompt_and_do_not_vote():
    lane = Lane(k=1, n=1, max_attempts=1)
    arrive(lane)
    for _ in range(5):
        cmd = lane.tick(v=Verdict(faces=1, issue="too_small", prompt="Please step closer"))
        assert cmd.indication is Indication.GUIDANCE and cmd.prompt == "Please step closer"
        assert cmd.phase is Phase.PRESENT
    assert lane.tick(v=MATCH).phase is Phase.OPEN


def test_attempts_limit_sends_to_the_staffed_lane_until_the_person_leaves():
    lane = Lane(k=2, n=2, max_attempts=2)
    arrive(lane)
    for _ in range(3):
        assert lane.tick(v=MISS).phase is Phase.PRESENT
    cmd = lane.tick(v=MISS)
    assert cmd.phase is Phase.DENIED and cmd.prompt == "Please use the staffed lane"
    for _ in range(5):  # P9: the sign stays on while they are still there
        cmd = lane.tick(v=MATCH)
        assert cmd.indication is Indication.STAFFED and not cmd.relay_open
    assert lane.tick(presence=False).phase is Phase.IDLE


def test_anti_passback_and_reentry():
    entered = Verdict(faces=1, outcome=Outcome.MATCH, attendee="a1", already_entered=True)
    lane = Lane(k=1, n=1)
    arrive(lane)
    cmd = lane.tick(v=entered)
    assert cmd.phase is Phase.DENIED and cmd.event == "denied: already entered"
    lane = Lane(k=1, n=1, reentry=True)
    arrive(lane)
    assert lane.tick(v=entered).phase is Phase.OPEN


@pytest.mark.parametrize("outcome", [Outcome.CACHE_INVALID])
def test_an_invalid_cache_sends_everyone_to_the_staffed_lane(outcome):
    lane = Lane()
    arrive(lane)
    cmd = lane.tick(v=Verdict(faces=1, outcome=outcome))
    assert cmd.phase is Phase.DENIED and cmd.indication is Indication.STAFFED


def test_a_spoofed_face_votes_for_nobody():
    lane = Lane(k=1, n=1, max_attempts=1)
    arrive(lane)
    cmd = lane.tick(v=Verdict(faces=1, outcome=Outcome.MATCH, attendee="a1", live=False))
    assert cmd.phase is Phase.DENIED


def test_passage_timeout_closes_without_an_entry():
    lane = Lane(k=1, n=1, open_timeout_s=2.0)
    arrive(lane)
    assert lane.tick(v=MATCH).phase is Phase.OPEN
    cmd = lane.tick(dt=2.5)
    assert cmd.phase is Phase.IDLE and not cmd.relay_open and cmd.entry is None
    assert "no entry" in (cmd.event or "")


def test_emergency_wins_over_everything_and_pauses_capture():
    lane = Lane(k=1, n=1)
    arrive(lane)
    for state in ({"v": MATCH}, {"presence": False}, {"passage": True}):
        cmd = lane.tick(emergency=True, **state)
        assert cmd.phase is Phase.EMERGENCY and cmd.relay_open and not cmd.capture
        assert cmd.entry is None and cmd.indication is Indication.EMERGENCY
    assert lane.tick(emergency=False).phase is Phase.IDLE


def test_leaving_before_a_decision_resets():
    lane = Lane(k=2, n=3)
    arrive(lane)
    lane.tick(v=MATCH)
    assert lane.tick(presence=False).phase is Phase.IDLE
    arrive(lane)
    assert lane.tick(v=MATCH).phase is Phase.PRESENT  # the old vote is gone
