"""1:N identification and 1:1 verification against the template cache.

A raw probe embedding is protected with the event's transform (:mod:`sync.protect`) into
a preallocated buffer, searched in the cache's gallery under the cache's lock (so a
revocation applied by the link is seen by every later decision), decided by the
threshold-and-margin rule (:mod:`gate.match.decision`) and wiped (promise P2). The
threshold is the calibrated one for the cache's size (:mod:`gate.match.threshold`), or
the fixed one from the config. An attendee whose templates expired since the last purge
never opens the gate: the match is refused and the purge runs on the spot (P7).
"""

from __future__ import annotations

import math

import numpy as np

from gate.errors import TemplateError
from gate.match.cache import TemplateCache
from gate.match.decision import Decision, Outcome, decide
from gate.match.threshold import ThresholdPolicy
from gate.types import Array
from sync.protect import Protector


class Matcher:
    """Decisions for probes of one gate; built with its cache by
    :func:`gate.templates.open_templates`."""

    def __init__(self, cache: TemplateCache, *, protector: Protector, policy: ThresholdPolicy,
                 margin: float) -> None:
        self.cache = cache
        self.protector = protector
        self.policy = policy
        self.margin = margin
        self._probe = np.zeros(cache.model.dim, np.float32)
        self._threshold: tuple[int, float] | None = None  # (templates, threshold)

    @property
    def dim(self) -> int:
        """Length of the embeddings this matcher takes."""
        return self.cache.model.dim

    @property
    def threshold(self) -> float:
        """The cosine threshold in force for the cache's current size."""
        size = self.cache.templates
        if self._threshold is None or self._threshold[0] != size:
            self._threshold = (size, self.policy.for_size(size))
        return self._threshold[1]

    def _check(self, embedding: Array) -> Array:
        embedding = np.asarray(embedding)
        if embedding.shape != (self.dim,) or not np.all(np.isfinite(embedding)):
            raise TemplateError(f"probe must be {self.dim} finite values, got shape "
                                f"{embedding.shape}")
        return embedding

    def identify(self, embedding: Array) -> Decision:
        """1:N decision for a raw probe embedding (protected here, then wiped)."""
        with self.cache.searching() as gallery:
            if gallery is None:
                return Decision(Outcome.CACHE_INVALID, None, -math.inf, -math.inf)
            embedding = self._check(embedding)
            threshold = self.threshold
            probe = self.protector.protect(embedding, out=self._probe)
            try:
                found = gallery.search(probe, threshold=threshold, margin=self.margin)
                decision = decide(found, threshold=threshold, margin=self.margin)
            finally:
                self._probe.fill(0)
            return self._unless_expired(decision)

    def verify(self, attendee: str, embedding: Array) -> Decision:
        """1:1: does the probe match ``attendee`` (named by their ticket)? The threshold
        is the one for a single comparison at the target rate (``policy.for_size(1)``)."""
        with self.cache.searching() as gallery:
            if gallery is None:
                return Decision(Outcome.CACHE_INVALID, None, -math.inf, -math.inf)
            embedding = self._check(embedding)
            if attendee not in self.cache:
                return Decision(Outcome.EMPTY, None, -math.inf, -math.inf)
            probe = self.protector.protect(embedding, out=self._probe)
            rows, copied = gallery.export([attendee])
            try:
                best = float((rows @ probe).max())
            finally:
                if copied:
                    rows.fill(0)
                self._probe.fill(0)
            threshold = self.policy.for_size(1)
            outcome = Outcome.MATCH if best >= threshold else Outcome.BELOW_THRESHOLD
            return self._unless_expired(
                Decision(outcome, attendee if outcome is Outcome.MATCH else None, best,
                         -math.inf))

    def _unless_expired(self, decision: Decision) -> Decision:
        # Purges run at open, on central's command and on the service's timer; between
        # two of them an attendee can expire, and must not open the gate (promise P7).
        if decision.attendee is None:
            return decision
        until = self.cache.expires_at(decision.attendee)
        if until is not None and until > self.cache.clock():
            return decision
        self.cache.purge_expired()
        return Decision(Outcome.EXPIRED, None, decision.best, decision.second)

    def wipe(self) -> None:
        """Zero the probe buffer."""
        self._probe.fill(0)
