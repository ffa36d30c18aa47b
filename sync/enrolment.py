"""A gate's enrolment at central: what the gate's signing key signs to prove possession.

A gate makes its own keys (``gatectl keys init``) and sends central only public things:
a certificate request for its TLS key, its Ed25519 signing key, its X25519 sealing key,
and a *proof*: the signing key's signature over :func:`enrolment_message`, which binds
the gate id, the venue, the sealing key and the CSR together. Central verifies it before
it issues the certificate (``facepass-central add-gate``).
"""

from __future__ import annotations

import hashlib


def enrolment_message(*, gate: str, venue: str, seal_pub: bytes, csr_der: bytes) -> bytes:
    """What the gate's signing key signs for central: domain-separated, unambiguous."""
    return b"\0".join([b"facepass-gate-enrolment-v1", gate.encode(), venue.encode(),
                       seal_pub, hashlib.sha256(csr_der).digest()])
