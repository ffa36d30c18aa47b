"""From what the pipeline and the matcher say about frames to the policy's verdicts.

Pure: plain values and numpy arrays in, :class:`~gate.policy.Verdict` out; no camera,
pin, model or file. The runtime (:mod:`gate.runtime`) moves the data: it runs the
pipeline on a frame, asks the judge whether the frame can be decided on at all
(:meth:`Judge.screen`), lets it fuse embeddings over frames (:meth:`Judge.fuse`), asks
the matcher and the entry log, and turns their answers into a verdict with
:meth:`Judge.verdict`. The rules:

* two or more sizeable faces: no decision ("one at a time");
* a face with a quality problem: its prompt, no decision;
* with fusion, the embeddings of ``k`` usable frames are averaged and decided once;
* anti-passback looks back ``entry_window_h`` hours from now (:meth:`Judge.since`).

The fusion buffer holds embeddings: :meth:`Judge.reset` zero-fills it when capture
stops and after every fused decision (promise P2).
"""

from __future__ import annotations

import numpy as np

from gate.detect.quality import Issue
from gate.match.decision import Decision
from gate.policy import Verdict
from gate.types import Array

#: What the lane says when a frame shows no usable face and no quality check explains it.
LOOK_AT_CAMERA = "Please look at the camera"
SHOW_TICKET = "Please show your ticket's QR code"


class Judge:
    """Verdicts for one lane; ``fusion_k`` frames are averaged when it is set."""

    def __init__(self, *, dim: int, entry_window_h: float, fusion_k: int | None = None
                 ) -> None:
        self.entry_window_s = entry_window_h * 3600
        self.fusion_k = fusion_k
        self._fused = np.zeros((fusion_k or 1, dim), np.float32)
        self._fused_n = 0

    def screen(self, *, faces: int, sizeable: int, issue: Issue | None,
               usable: bool) -> Verdict | None:
        """The verdict of a frame that cannot be decided on, or None when it can.

        ``faces``: faces detected; ``sizeable``: those big enough to be in the lane;
        ``issue``: the first quality problem of the chosen face; ``usable``: the face has
        an embedding.
        """
        if sizeable >= 2:
            return Verdict(faces=sizeable)
        if issue is not None or not usable:
            return Verdict(faces=faces, issue=issue.reason.value if issue else "no_face",
                           prompt=issue.reason.prompt if issue else LOOK_AT_CAMERA)
        return None

    def fuse(self, embedding: Array) -> Array | None:
        """Without fusion, ``embedding`` itself. With it, the normalised mean of the last
        ``k`` usable frames' embeddings, or None until there are ``k``."""
        if self.fusion_k is None:
            return embedding
        self._fused[self._fused_n] = embedding
        self._fused_n += 1
        if self._fused_n < len(self._fused):
            return None
        self._fused_n = 0
        mean: Array = self._fused.sum(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return mean

    def pending(self) -> Verdict:
        """A good frame that is not a decision yet (fusion is still collecting)."""
        return Verdict(faces=1)

    @staticmethod
    def no_ticket() -> Verdict:
        """Verify mode without a readable ticket in the frame."""
        return Verdict(faces=1, issue="no_ticket", prompt=SHOW_TICKET)

    def since(self, now: float) -> float:
        """Start of the anti-passback window (wall-clock seconds) at ``now``."""
        return now - self.entry_window_s

    @staticmethod
    def verdict(decision: Decision, *, live: bool, already_entered: bool) -> Verdict:
        """The verdict of a decided frame."""
        return Verdict(faces=1, outcome=decision.outcome, attendee=decision.attendee,
                       already_entered=already_entered, live=live)

    def reset(self) -> None:
        """Forget (and zero) the embeddings collected for fusion."""
        self._fused.fill(0)
        self._fused_n = 0
