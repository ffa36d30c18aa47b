"""Enrolment from photos: photo → embedding with the gate's own face pipeline → template.

Central and the gates must compute embeddings with the same model, so the reference
central runs the firmware's face pipeline (:class:`gate.pipeline.FacePipeline`) as a
library: this module is the only one of central that imports the gate, and it takes
only the pipeline, never the gate's store or link. Each photo is decoded, embedded and
dropped (nothing of it is kept); :meth:`central.core.Central.enrol_embeddings` then
protects the embeddings and publishes the templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from central.core import Central
from central.errors import EnrolmentError
from gate.config import Config, from_dict
from gate.errors import GateError
from gate.images import load_image
from gate.match.embedders import NAMES as EMBEDDER_NAMES
from gate.match.embedders import embedder_spec
from gate.pipeline import FacePipeline
from sync.templates import Array


def pipeline(cfg: Config | None = None, *, embedder: str | None = None) -> FacePipeline:
    """The face pipeline with the gate's defaults (or ``cfg``) and the venue's embedder:
    verified model files."""
    try:
        return FacePipeline.from_config(cfg or from_dict({}), embedder=embedder)
    except GateError as exc:  # model files missing or not the pinned ones
        raise EnrolmentError(f"face pipeline: {exc}") from None


def template_model(embedder: str) -> str:
    """The template model id the gates' embedder ``embedder`` produces."""
    try:
        return embedder_spec(embedder).model.id
    except KeyError:
        raise EnrolmentError(f"unknown embedder {embedder!r} (known: "
                             f"{', '.join(EMBEDDER_NAMES)})") from None


def embed_photos(photos: Sequence[Path], pipe: FacePipeline) -> Array:
    """One embedding per photo (rows); a photo without a usable face is refused.

    The caller zeroes the result once it is protected.
    """
    rows = []
    try:
        for path in photos:
            try:
                image = load_image(path)
            except GateError as exc:
                raise EnrolmentError(str(exc)) from None
            result = pipe.process(image)
            image.fill(0)
            if not result.usable or result.embedding is None:
                reason = result.issues[0] if result.issues else "no face"
                raise EnrolmentError(f"{Path(path).name}: not usable for enrolment ({reason})")
            rows.append(result.embedding.copy())
            pipe.wipe()
        return np.stack(rows)
    finally:
        pipe.wipe()
        for r in rows:
            r.fill(0)


def enrol_photos(central: Central, attendee: str, photos: Sequence[Path], *,
                 valid_until: int, pipe: FacePipeline) -> int:
    """Enrol ``attendee`` from 1-3 photos on every gate; returns the attendee's seq."""
    embeddings = embed_photos(photos, pipe)
    try:
        return central.enrol_embeddings(attendee, embeddings, valid_until=valid_until)
    finally:
        embeddings.fill(0)
