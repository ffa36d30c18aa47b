"""Binary contents of sealed template payloads (upsert batches and snapshot chunks).

``"SNC2" | records u32 | tombstones u32 | model id 16 bytes (ASCII, NUL-padded)`` then the
records (:data:`~sync.templates.RECORD`: id 64 bytes, seq u64, valid_until i64, count u8),
their protected templates as float32 rows of the model's dimension, then the tombstones
(:data:`~sync.templates.TOMBSTONE`). Only ever seen decrypted, on central and on the one
gate it was sealed to. The model id is inside the sealed (authenticated) contents, so a
gate configured for another embedder refuses the payload with one line instead of
matching faces against templates of a space its model does not produce.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from sync.errors import ModelMismatchError, ProtocolError
from sync.templates import (
    MAX_TEMPLATES,
    RECORD,
    TOMBSTONE,
    Array,
    Enrolment,
    TemplateModel,
    Tombstone,
)

_HEAD = struct.Struct("<4sII16s")
_MAGIC = b"SNC2"


def encode(enrolments: Sequence[Enrolment], tombstones: Sequence[tuple[str, int, int]] = (),
           *, model: TemplateModel) -> bytearray:
    """Serialise enrolments (and tombstones) for sealing (zero the result after use)."""
    dim = model.dim
    records = np.zeros(len(enrolments), RECORD)
    rows = [np.asarray(e.templates, np.float32).reshape(-1, dim) for e in enrolments]
    if enrolments:
        records["id"] = [e.attendee.encode() for e in enrolments]
        records["seq"] = [e.seq for e in enrolments]
        records["valid_until"] = [e.valid_until for e in enrolments]
        records["count"] = [r.shape[0] for r in rows]
    tombs = np.zeros(len(tombstones), TOMBSTONE)
    for k, t in enumerate(tombstones):
        tombs[k] = (t[0].encode(), t[1], t[2])
    vectors = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
    out = bytearray(_HEAD.size + records.nbytes + vectors.nbytes + tombs.nbytes)
    _HEAD.pack_into(out, 0, _MAGIC, records.size, tombs.size, model.id.encode("ascii"))
    view = np.frombuffer(out, np.uint8)
    at = _HEAD.size
    for arr in (records, vectors, tombs):
        view[at:at + arr.nbytes] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        at += arr.nbytes
    return out


def decode_arrays(buf: bytes | bytearray, *, copy: bool = False,
                  model: TemplateModel) -> tuple[Array, Array, Array]:
    """(records, vectors, tombstones) arrays of a decrypted payload.

    Views of ``buf`` unless ``copy``; malformed contents raise ProtocolError.
    """
    dim = model.dim
    try:
        magic, n_rec, n_tomb, raw_model = _HEAD.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise ProtocolError("sealed contents: unknown format")
        sent = raw_model.rstrip(b"\0").decode("ascii", "replace")
        if sent != model.id:
            raise ModelMismatchError(sent, model.id)
        at = _HEAD.size
        records = np.frombuffer(buf, RECORD, n_rec, at)
        at += records.nbytes
        total = int(records["count"].sum(dtype=np.int64))
        if records.size and (records["count"].min() < 1 or
                             records["count"].max() > MAX_TEMPLATES):
            raise ProtocolError("sealed contents: bad template count")
        vectors: Array = np.frombuffer(buf, "<f4", total * dim, at).reshape(total, dim)
        at += vectors.nbytes
        tombs = np.frombuffer(buf, TOMBSTONE, n_tomb, at)
    except (ValueError, struct.error) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError("sealed contents: truncated or malformed") from None
    if at + tombs.nbytes != len(buf):
        raise ProtocolError("sealed contents: length does not add up")
    if copy:
        return records.copy(), vectors.astype(np.float32), tombs.copy()
    return records, vectors, tombs


def decode(buf: bytes | bytearray, *, model: TemplateModel
           ) -> tuple[list[Enrolment], list[Tombstone]]:
    """Enrolments and tombstones of a decrypted payload (templates are copies)."""
    records, vectors, tombs = decode_arrays(buf, model=model)
    enrolments, row = [], 0
    for r in records:
        k = int(r["count"])
        enrolments.append(Enrolment(_id(r["id"]), int(r["seq"]), int(r["valid_until"]),
                                    vectors[row:row + k].astype(np.float32)))
        row += k
    return enrolments, [Tombstone(_id(t["id"]), int(t["seq"]), int(t["valid_until"]))
                        for t in tombs]


def _id(raw: bytes) -> str:
    try:
        return bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("sealed contents: attendee id is not ASCII") from None
