"""Sealing template payloads to one gate: ephemeral X25519 + HKDF-SHA256 + AES-256-GCM.

Central draws a fresh X25519 key pair per message, agrees a secret with the gate's static
X25519 public key, derives an AES-256 key with HKDF (salt: both public keys; info: the
protocol label) and encrypts with AES-GCM, the associated data binding topic, sequence
number and gate id. Only that gate's private key opens it: the broker, other gates and
anyone with broker access see ciphertext. Decryption writes into a caller-zeroable buffer.
"""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sync.errors import ProtocolError
from sync.messages import b64, unb64

_INFO = b"facepass/v1/seal"


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key(shared: bytes, epk: bytes, gate_pub: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + gate_pub,
                info=_INFO).derive(shared)


def _aad(topic: str, seq: int, gate: str) -> bytes:
    return f"{topic}\x00{seq}\x00{gate}".encode()


def seal(plaintext: bytes | bytearray | memoryview, gate_pub: X25519PublicKey, *, topic: str,
         seq: int, gate: str) -> dict[str, Any]:
    """``{"epk", "nonce", "ct"}`` (base64) that only ``gate`` can open."""
    eph = X25519PrivateKey.generate()
    epk = _raw(eph.public_key())
    key = _key(eph.exchange(gate_pub), epk, _raw(gate_pub))
    nonce = secrets.token_bytes(12)
    ct = AESGCM(key).encrypt(nonce, plaintext, _aad(topic, seq, gate))
    return {"epk": b64(epk), "nonce": b64(nonce), "ct": b64(ct)}


def open_sealed(sealed: object, gate_key: X25519PrivateKey, *, topic: str, seq: int,
                gate: str) -> bytearray:
    """The plaintext of a sealed object; ProtocolError if it is not for us or altered."""
    if not isinstance(sealed, dict) or set(sealed) != {"epk", "nonce", "ct"}:
        raise ProtocolError("sealed payload has the wrong fields")
    epk = unb64(sealed["epk"], "sealed epk", size=32)
    nonce = unb64(sealed["nonce"], "sealed nonce", size=12)
    ct = unb64(sealed["ct"], "sealed ct")
    if len(ct) < 16:
        raise ProtocolError("sealed ct too short")
    try:
        shared = gate_key.exchange(X25519PublicKey.from_public_bytes(epk))
    except ValueError:
        raise ProtocolError("sealed epk is not a usable key") from None
    key = _key(shared, epk, _raw(gate_key.public_key()))
    out = bytearray(len(ct) - 16)
    try:
        AESGCM(key).decrypt_into(nonce, ct, _aad(topic, seq, gate), out)
    except InvalidTag:
        raise ProtocolError("sealed payload does not open (another gate's, or "
                            "altered)") from None
    return out
