"""What a template is, for central and the gates alike: the one leaf both sides build on.

A *template* is an attendee's protected embedding (:mod:`sync.protect`): a unit vector of
the embedding model's dimension. An attendee has 1-3 of them, an opaque pseudonym chosen
by central, a per-attendee sequence number (newer wins, so a late upsert cannot undo a
revocation) and a ``valid_until`` after which every gate deletes them (promise P7).

Everything that stores or moves templates takes its types from here: the wire payloads
(:mod:`sync.payloads`), the gate's encrypted cache file and journal, and the reference
central. The record layouts below are the packed form of that metadata; the wire format
and the cache file each frame them in their own way, with their own magic and header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["ID_PATTERN", "MAX_SEQ", "MAX_TEMPLATES", "MOBILEFACENET", "MODELS", "RECORD", "SFACE",
           "TOMBSTONE", "Array", "Enrolment", "TemplateModel", "Tombstone", "model"]

#: Any numpy array (templates are float32 rows; records are structured arrays).
Array: TypeAlias = npt.NDArray[Any]

#: Opaque pseudonyms: printable, log-safe, at most 64 bytes.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
#: Sequence numbers are unsigned 63-bit (they travel as JSON integers).
MAX_SEQ = 2**63 - 1
#: Templates per attendee (e.g. enrolment photos with and without glasses).
MAX_TEMPLATES = 3

#: One attendee's metadata: id, sequence number, expiry (Unix seconds), template count.
RECORD = np.dtype([("id", "S64"), ("seq", "<u8"), ("valid_until", "<i8"), ("count", "u1")])
#: A revoked attendee, kept until ``valid_until`` so an older upsert cannot revive them.
TOMBSTONE = np.dtype([("id", "S64"), ("seq", "<u8"), ("valid_until", "<i8")])


@dataclass(frozen=True)
class TemplateModel:
    """An embedding model whose templates central and the gates exchange.

    Templates of two models are not comparable: both ends must use the same one.
    """

    id: str
    dim: int


#: MobileFaceNet (int8 and float variants give the same 192-d space).
MOBILEFACENET = TemplateModel("mobilefacenet", 192)
#: SFace (OpenCV Zoo, 2021dec; int8 and float variants give the same 128-d space).
SFACE = TemplateModel("sface", 128)
#: Every model the protocol knows, by id.
MODELS: dict[str, TemplateModel] = {m.id: m for m in (MOBILEFACENET, SFACE)}


def model(model_id: str) -> TemplateModel:
    """The model called ``model_id``; ValueError naming the known ones otherwise."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise ValueError(f"unknown template model {model_id!r} (known: "
                         f"{', '.join(sorted(MODELS))})") from None


@dataclass(frozen=True)
class Enrolment:
    """One attendee's protected templates (1-3 rows of the model's dimension)."""

    attendee: str
    seq: int
    valid_until: int
    templates: Array


class Tombstone(NamedTuple):
    """A revocation kept on record: who, at which sequence number, until when."""

    attendee: str
    seq: int
    valid_until: int
