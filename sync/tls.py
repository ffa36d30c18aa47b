"""Mutual TLS to the venue broker, the same on both ends of the protocol.

Every client (a gate, central) proves itself with a certificate of the venue CA and
verifies the broker against that CA; TLS 1.2 is the floor. Small QoS 1 messages
(revocations, receipts) are sent at once rather than held back by Nagle's algorithm.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path


def client_context(ca_file: str | Path, cert_file: str | Path,
                   key_file: str | Path) -> ssl.SSLContext:
    """Mutual TLS, 1.2 or newer, server verified against the venue CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def no_delay(sock: object) -> None:
    """Send small messages at once (no Nagle): a revocation should not wait 40 ms."""
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
