"""Embedding on a second thread while the next frame is analysed.

The embedder is the largest model of the frame and needs only the aligned 112×112 crop,
so once a frame's face is aligned the loop can hand the crop to a worker thread and
detect, mesh and align the next frame meanwhile. Two models running side by side on one
thread each keep more cores busy than one model on two threads (XNNPACK scales poorly
on these small graphs); ``gatectl bench`` measures the gain on the machine at hand.

The crop is copied into a slot of its own (the aligner's buffer is overwritten by the
next frame); the slot, like every pixel buffer, is zero-filled by :meth:`wipe` (P2).
At most one embedding is in flight. LiteRT releases the GIL while a model runs.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from gate.match.embedder import Embedder
from gate.types import Array


class EmbedAhead:
    """Runs :meth:`Embedder.embed` on one worker thread, one crop at a time."""

    def __init__(self, embedder: Embedder) -> None:
        size = embedder.spec.input_size
        self.embedder = embedder
        self.slot = np.zeros((size, size, 3), np.uint8)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate-embed")
        self._job: Future[Array] | None = None

    @property
    def busy(self) -> bool:
        """True while an embedding has been submitted and not collected."""
        return self._job is not None

    def submit(self, crop: Array) -> None:
        """Copy ``crop`` into the slot and start embedding it."""
        if self._job is not None:
            raise RuntimeError("an embedding is already in flight")
        np.copyto(self.slot, crop)
        self._job = self._pool.submit(self.embedder.embed, self.slot)

    def result(self) -> Array:
        """The embedding of the submitted crop (the embedder's buffer: copy to keep it);
        re-raises what the embedder raised."""
        job, self._job = self._job, None
        if job is None:
            raise RuntimeError("no embedding was submitted")
        return job.result()

    def settle(self) -> None:
        """Wait until no embedding runs; whatever it produced or raised is dropped."""
        job, self._job = self._job, None
        if job is not None:
            wait([job])

    def wipe(self) -> None:
        """Wait for a running embedding, then zero-fill the slot and the embedder (P2)."""
        self.settle()
        self.slot.fill(0)
        self.embedder.wipe()

    def close(self) -> None:
        """Wipe and stop the worker thread."""
        self.wipe()
        self._pool.shutdown(wait=True)
