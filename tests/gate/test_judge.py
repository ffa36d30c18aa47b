"""The judge alone, with plain values: screening a frame, fusing embeddings over frames,
the anti-passback window and the verdict of a decision (no camera, pin, model or file)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.detect.quality import Issue, Reason
from gate.judge import LOOK_AT_CAMERA, SHOW_TICKET, Judge
from gate.match.decision import Decision, Outcome
from gate.policy import Indication, Inputs, LanePolicy, Phase, Verdict
from tests.support import DIM, random_unit, unit

RNG = np.random.default_rng(11)
BLUR = Issue(Reason.BLUR, "sharpness 0.1 < 0.5")


def judge(k: int | None = None, window_h: float = 12.0) -> Judge:
    return Judge(dim=DIM, entry_window_h=window_h, fusion_k=k)


# --- screen --------------------------------------------------------------------------------


def test_a_single_usable_face_without_issues_is_decided_on():
    assert judge().screen(faces=1, sizeable=1, issue=None, usable=True) is None
    # Small faces far behind the person in the lane do not count as a second person.
    assert judge().screen(faces=3, sizeable=1, issue=None, usable=True) is None


@pytest.mark.parametrize("sizeable", [2, 3])
def test_two_sizeable_faces_are_one_at_a_time_and_never_decided(sizeable):
    for issue, usable in ((None, True), (BLUR, True), (None, False)):
        v = judge().screen(faces=sizeable + 1, sizeable=sizeable, issue=issue, usable=usable)
        assert v == Verdict(faces=sizeable)
        assert v.outcome is None and v.attendee is None and v.issue is None


def test_a_quality_issue_gives_its_reason_and_prompt():
    v = judge().screen(faces=1, sizeable=1, issue=BLUR, usable=True)
    assert v == Verdict(faces=1, issue="blur", prompt=Reason.BLUR.prompt)
    assert v.outcome is None and v.prompt
    small = Issue(Reason.TOO_SMALL, "eyes 12 px apart")
    v = judge().screen(faces=1, sizeable=0, issue=small, usable=False)
    assert v is not None
    assert (v.issue, v.prompt) == ("too_small", Reason.TOO_SMALL.prompt)


def test_no_usable_face_asks_to_look_at_the_camera():
    v = judge().screen(faces=0, sizeable=0, issue=None, usable=False)
    assert v == Verdict(faces=0, issue="no_face", prompt=LOOK_AT_CAMERA)
    # A face was found but gave no embedding, and no check says why.
    v = judge().screen(faces=1, sizeable=1, issue=None, usable=False)
    assert v == Verdict(faces=1, issue="no_face", prompt=LOOK_AT_CAMERA)


def test_screened_verdicts_steer_the_policy_without_voting():
    lane = LanePolicy(k=1, n=1, max_attempts=1)
    t = 100.0
    lane.tick(Inputs(True, False, False, t))
    two = judge().screen(faces=2, sizeable=2, issue=None, usable=True)
    blur = judge().screen(faces=1, sizeable=1, issue=BLUR, usable=True)
    for v, light in ((two, Indication.ONE_AT_A_TIME), (blur, Indication.GUIDANCE),
                     (judge(k=3).pending(), None)):
        t += 0.1
        cmd = lane.tick(Inputs(True, False, False, t), v)
        # k = n = max_attempts = 1: a single vote would have opened or denied.
        assert cmd.phase is Phase.PRESENT and not cmd.relay_open
        assert light is None or cmd.indication is light


# --- fuse ----------------------------------------------------------------------------------


def test_without_fusion_the_embedding_itself_is_decided_on():
    j = judge()
    e = random_unit(RNG)
    assert j.fuse(e) is e
    assert j.fuse(e) is e  # every frame, not only the first


def test_fusion_averages_k_frames_and_normalises():
    j = judge(k=3)
    frames = random_unit(RNG, 3)
    assert j.fuse(frames[0]) is None
    assert j.fuse(frames[1]) is None  # nothing before the k-th usable frame
    fused = j.fuse(frames[2])
    assert fused is not None and fused.shape == (DIM,) and fused.dtype == np.float32
    assert float(np.linalg.norm(fused)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(fused, unit(frames.sum(axis=0)), atol=1e-6)
    # Not one of the frames: a real mean of all three.
    assert all(float(fused @ f) < 0.99 for f in frames)


def test_fusion_starts_over_after_each_decision():
    j = judge(k=2)
    a, b, c, d = random_unit(RNG, 4)
    assert j.fuse(a) is None
    first = j.fuse(b)
    assert first is not None
    assert j.fuse(c) is None  # the next decision waits for k new frames
    second = j.fuse(d)
    assert second is not None
    np.testing.assert_allclose(second, unit(c + d), atol=1e-6)


def test_fusing_opposite_frames_gives_finite_values():
    j = judge(k=2)
    e = random_unit(RNG)
    assert j.fuse(e) is None
    fused = j.fuse(-e)
    assert fused is not None and np.all(np.isfinite(fused))


def test_reset_zeroes_the_buffer_and_forgets_what_was_collected():
    j = judge(k=3)
    old = random_unit(RNG, 2)
    for e in old:
        assert j.fuse(e) is None
    assert j._fused.any()
    j.reset()
    assert not j._fused.any()  # P2: no embedding left behind when capture stops
    new = random_unit(RNG, 3)
    assert j.fuse(new[0]) is None
    assert j.fuse(new[1]) is None  # the count started again
    fused = j.fuse(new[2])
    assert fused is not None
    np.testing.assert_allclose(fused, unit(new.sum(axis=0)), atol=1e-6)  # old frames gone
    j.reset()
    assert not j._fused.any()


# --- the anti-passback window and the verdict ---------------------------------------------


def test_since_looks_back_the_entry_window():
    now = 1_800_000_000.0
    assert judge(window_h=12).since(now) == now - 12 * 3600
    assert judge(window_h=0.5).since(now) == now - 1800
    assert judge(window_h=0).since(now) == now


def test_the_verdict_of_a_decision_carries_its_outcome_and_attendee():
    match = Decision(Outcome.MATCH, "a1", 0.81, 0.2)
    v = Judge.verdict(match, live=True, already_entered=False)
    assert v == Verdict(faces=1, outcome=Outcome.MATCH, attendee="a1", already_entered=False,
                        live=True)
    v = judge().verdict(match, live=False, already_entered=True)
    assert (v.outcome, v.attendee, v.live, v.already_entered) == \
        (Outcome.MATCH, "a1", False, True)
    assert v.issue is None and v.prompt is None


@pytest.mark.parametrize("outcome", [Outcome.BELOW_THRESHOLD, Outcome.AMBIGUOUS, Outcome.EMPTY,
                                     Outcome.CACHE_INVALID, Outcome.EXPIRED])
def test_a_refusal_names_nobody(outcome):
    v = Judge.verdict(Decision(outcome, None, 0.3, -math.inf), live=True,
                      already_entered=False)
    assert v.outcome is outcome and v.attendee is None and v.faces == 1


def test_pending_and_no_ticket_are_not_decisions():
    assert judge(k=3).pending() == Verdict(faces=1)
    assert Judge.no_ticket() == Verdict(faces=1, issue="no_ticket", prompt=SHOW_TICKET)
