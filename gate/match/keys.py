"""Key material for the template cache and the template transform.

Where a key comes from, in order:

1. the systemd credential ``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredentialEncrypted=``
   keeps it encrypted at rest, e.g. with the TPM);
2. a key file named in the config, which must be a regular file with mode 0600 (or 0400)
   owned by the user the gate runs as; anything else is refused with one line;
3. for demos and development only, when the config allows it, a random key that lives in
   RAM and dies with the process (logged as such: the cache cannot be read after a
   restart).

A key is 32 bytes, given raw or as 64 hex digits. Keys are never logged.

The cache itself is encrypted with a random *data key* that is stored only wrapped
(AES-256-GCM) by the credential key, in its own small file. Crypto-erase destroys that
file: the credential (read-only, owned by systemd) survives, but nothing it can unwrap is
left, so the old cache cannot be decrypted by anything the gate holds. The limit: the
flash may keep the old blocks of the wrapped data key, so an attacker who later obtains
both the credential key and a raw image of the flash could recover it; a TPM-held data
key would close that.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gate.errors import CacheError, KeyMaterialError
from gate.match.atomic import atomic_write, destroy

log = logging.getLogger(__name__)

KEY_BYTES = 32
_DEK_MAGIC = b"FPDK\x01"
_DEK_AAD = b"facepass cache data key v1|"


@dataclass(frozen=True)
class Key:
    """A 32-byte key and where it came from (the source is safe to log, the key is not)."""

    material: bytes
    source: str

    def __repr__(self) -> str:
        return f"Key(source={self.source!r})"


def _parse(raw: bytes, where: str) -> bytes:
    text = raw.strip()
    if len(raw) == KEY_BYTES:
        return raw
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise KeyMaterialError(f"{where}: a key must be {KEY_BYTES} raw bytes or "
                           f"{2 * KEY_BYTES} hex digits")


def _check_file(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise KeyMaterialError(f"{path}: key file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyMaterialError(f"{path}: key file must be a regular file, not a link or device")
    if st.st_mode & 0o077:
        raise KeyMaterialError(f"{path}: key file mode {stat.S_IMODE(st.st_mode):04o} is open "
                               "to others; chmod 0600")
    if st.st_uid != os.geteuid():
        raise KeyMaterialError(f"{path}: key file owned by uid {st.st_uid}, not the gate's "
                               f"uid {os.geteuid()}")


def load_key(name: str, *, key_file: Path | None = None, allow_ephemeral: bool = False,
             credentials_dir: str | None = None) -> Key:
    """Find the key called ``name`` (credential, key file, or ephemeral)."""
    creds = credentials_dir if credentials_dir is not None else \
        os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        cred = Path(creds) / name
        if cred.is_file():
            return Key(_parse(cred.read_bytes(), str(cred)), f"credential {name}")
    if key_file is not None:
        try:
            _check_file(key_file)
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"{name}: {exc}") from None
        return Key(_parse(key_file.read_bytes(), str(key_file)), f"file {key_file}")
    if allow_ephemeral:
        log.warning("key=%s source=ephemeral note=demo/dev only, lives in RAM, cache is "
                    "unreadable after a restart", name)
        return Key(secrets.token_bytes(KEY_BYTES), "ephemeral")
    raise KeyMaterialError(f"no {name} key: provide the systemd credential {name} or a key "
                           "file")


class DataKey:
    """The cache's random data key, stored wrapped by the credential key.

    ``binding`` (venue, event, gate) is authenticated with the wrapped key, so a data key
    file copied to another gate or event does not unwrap there.
    """

    def __init__(self, path: Path, kek: Key, binding: bytes) -> None:
        self.path = path
        self._kek = kek
        self._aad = _DEK_AAD + binding

    def load(self) -> bytes | None:
        """The data key, or None when there is none yet. Raises CacheError if unusable."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not blob.startswith(_DEK_MAGIC) or len(blob) != len(_DEK_MAGIC) + 12 + KEY_BYTES + 16:
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
