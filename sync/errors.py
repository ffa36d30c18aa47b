"""The protocol's exception tree.

The protocol is a library of its own (the firmware and the reference central both build
on it), so it raises its own exceptions rather than the firmware's. Each also derives
from the built-in it is closest to, so callers may catch either. Messages are one line
and never quote a payload, a key or an attendee id.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error the protocol raises on purpose."""


class ProtocolError(SyncError, ValueError):
    """An MQTT message is malformed, unsigned, stale or not meant for its receiver.

    Receivers drop the message (one log line without its content, a counter in status);
    nothing they hold is touched.
    """


class SignedInvalidError(ProtocolError):
    """A message with a valid signature whose contents are invalid: evidence against its
    signer (``signer`` names the key), counted against it by the receiver."""

    def __init__(self, signer: str, reason: str) -> None:
        self.signer = signer
        super().__init__(reason)


class ModelMismatchError(ProtocolError):
    """Templates of one embedding model sent to an end that runs another (the model id
    travels inside the sealed payload and in ``snapshot_begin``)."""

    def __init__(self, sent: str, expected: str) -> None:
        super().__init__(f"templates are for model {sent[:16]!r}, this end runs "
                         f"{expected!r}: configure the same embedder at both ends")
        self.sent = sent
        self.expected = expected


class TemplateKeyError(SyncError, ValueError):
    """A template-protection key or protection secret has the wrong size."""
