"""Reading the attendee's ticket QR code from the same camera (``verify`` mode).

The QR code only *names* whose templates to compare the face with (1:1); it grants
nothing by itself, so it needs no signature here: a forged code leads to a comparison
with someone else's face, which fails. Ticket payload: ``FACEPASS:<attendee pseudonym>``.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from gate.types import Image

PREFIX = "FACEPASS:"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class TicketReader:
    """OpenCV's QR detector, reused across frames."""

    def __init__(self) -> None:
        self._qr = cv2.QRCodeDetector()

    def read(self, frame: Image) -> str | None:
        """The attendee named by a ticket in the frame, or None."""
        try:
            text, _, _ = self._qr.detectAndDecode(frame)
        except cv2.error:
            return None
        if not text or not text.startswith(PREFIX):
            return None
        attendee = text[len(PREFIX):]
        return attendee if _ID.fullmatch(attendee) else None


def encode(attendee: str) -> Image:
    """A QR code image (RGB) for a ticket: used by the simulator and tests."""
    if not _ID.fullmatch(attendee):
        raise ValueError("not an attendee pseudonym")
    encoder = cv2.QRCodeEncoder.create()
    gray = encoder.encode(PREFIX + attendee)
    big = cv2.resize(gray, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
    big = cv2.copyMakeBorder(big, 32, 32, 32, 32, cv2.BORDER_CONSTANT, value=(255,))
    return np.ascontiguousarray(cv2.cvtColor(big, cv2.COLOR_GRAY2RGB), np.uint8)
