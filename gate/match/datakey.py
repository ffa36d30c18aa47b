"""The template cache's random data key, stored only wrapped by the credential key.

The cache is encrypted with a random *data key* that lives on disk only wrapped
(AES-256-GCM) by the ``cache-key`` credential, in its own small file. Crypto-erase
destroys that file: the credential (read-only, owned by systemd) survives, but nothing it
can unwrap is left, so the old cache cannot be decrypted by anything the gate holds. The
limit: the flash may keep the old blocks of the wrapped data key, so an attacker who later
obtains both the credential key and a raw image of the flash could recover it; a TPM-held
data key would close that.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gate.credentials import KEY_BYTES, Key
from gate.errors import CacheError
from gate.match.atomic import atomic_write, destroy
from gate.match.files import read_regular

_DEK_MAGIC = b"FPDK\x01"
_DEK_AAD = b"facepass cache data key v1|"
_SIZE = len(_DEK_MAGIC) + 12 + KEY_BYTES + 16


class DataKey:
    """The wrapped data key file. ``binding`` (venue, event, gate) is authenticated with
    the wrapped key, so a data key file copied to another gate or event does not unwrap
    there."""

    def __init__(self, path: Path, kek: Key, binding: bytes) -> None:
        self.path = path
        self._kek = kek
        self._aad = _DEK_AAD + binding

    def load(self) -> bytes | None:
        """The data key, or None when there is none yet. Raises CacheError if unusable
        (including a link, directory or FIFO in its place)."""
        try:
            blob = read_regular(self.path, 4096)
        except FileNotFoundError:
            return None
        if not blob.startswith(_DEK_MAGIC) or len(blob) != _SIZE:
            raise CacheError("data key file is malformed")
        nonce = blob[len(_DEK_MAGIC):len(_DEK_MAGIC) + 12]
        try:
            return AESGCM(self._kek.material).decrypt(nonce, blob[len(_DEK_MAGIC) + 12:],
                                                      self._aad)
        except InvalidTag:
            raise CacheError("data key does not unwrap: wrong cache key or tampered") from None

    def create(self) -> bytes:
        """A fresh data key, written wrapped (atomically) and returned."""
        dek = secrets.token_bytes(KEY_BYTES)
        nonce = secrets.token_bytes(12)
        wrapped = AESGCM(self._kek.material).encrypt(nonce, dek, self._aad)
        atomic_write(self.path, [_DEK_MAGIC, nonce, wrapped])
        return dek

    def destroy(self) -> None:
        """Crypto-erase: overwrite and remove the wrapped data key."""
        destroy(self.path)
