"""Central's templates at rest: each attendee's protected templates encrypted in central.db.

The reference central keeps the protected templates (to send snapshots) in SQLite. They
are encrypted there as the gate encrypts its cache: AES-256-GCM under a 32-byte *central
data key*, a fresh 96-bit nonce per blob, and associated data binding the venue, the event
and the attendee id, so a blob copied into another row, venue or event does not decrypt.
A blob is ``version (1) | nonce (12) | ciphertext ‖ tag (16)``.

The data key, named ``central-db-key``, is looked for in order:

1. the systemd credential ``$CREDENTIALS_DIRECTORY/central-db-key``
   (``LoadCredentialEncrypted=central-db-key`` keeps it encrypted at rest, e.g. with the
   TPM; the production setting);
2. the key file ``central/db.key`` of the venue directory (written 0600 by
   ``init-venue``), which must be a regular file, not open to group or others, owned by
   the user central runs as.

Either holds 32 raw bytes or 64 hex digits. Anything else (no key, a loose or foreign key
file, a wrong key, a tampered blob) raises :class:`~central.errors.DataKeyError` or
:class:`~central.errors.StoreError` with one line that quotes neither key nor attendee.
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from central.errors import DataKeyError, StoreError

#: The systemd credential name of the data key, and the key file in ``central/``.
KEY_NAME = "central-db-key"
KEY_FILE = "db.key"
KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE = 12
_TAG = 16
_LABEL = b"facepass-central/template/v1"
_CHECK_LABEL = b"facepass-central/key-check/v1"
_CHECK_PLAIN = b"central.db data key check"


def key_path(venue_dir: Path) -> Path:
    """The key file of a venue directory (``central/db.key``)."""
    return Path(venue_dir) / "central" / KEY_FILE


def parse_key(raw: bytes) -> bytes | None:
    """The 32 key bytes of ``raw`` (raw bytes or 64 hex digits), or None."""
    if len(raw) == KEY_BYTES:
        return bytes(raw)
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataKeyError(f"no {KEY_NAME}: provide the systemd credential {KEY_NAME} or the "
                           f"key file {path} (init-venue writes one)") from None
    except OSError as exc:  # ELOOP: a symbolic link; EACCES: not ours to read
        raise DataKeyError(f"{path}: cannot open the key file ({exc.strerror}); it must be "
                           "a regular file, not a link") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataKeyError(f"{path}: the key file must be a regular file")
        if st.st_mode & 0o077:
            raise DataKeyError(f"{path}: key file mode {stat.S_IMODE(st.st_mode):04o} is open "
                               "to others; chmod 0600")
        if st.st_uid != os.geteuid():
            raise DataKeyError(f"{path}: key file owned by uid {st.st_uid}, not central's uid "
                               f"{os.geteuid()}")
        return os.read(fd, 4 * KEY_BYTES + 1)
    finally:
        os.close(fd)


def load_key(venue_dir: Path, *, credentials_dir: str | None = None) -> tuple[bytes, str]:
    """``(key, source)``: the data key and where it came from (the source may be logged).

    ``credentials_dir`` defaults to ``$CREDENTIALS_DIRECTORY``.
    """
    creds = credentials_dir if credentials_dir is not None else \
        os.environ.get("CREDENTIALS_DIRECTORY") or None
    cred = Path(creds) / KEY_NAME if creds else None
    if cred is not None and cred.is_file():
        raw, where, source = cred.read_bytes(), str(cred), f"credential {KEY_NAME}"
    else:
        path = key_path(venue_dir)
        raw, where, source = _read_key_file(path), str(path), f"file {path}"
    key = parse_key(raw)
    if key is None:
        raise DataKeyError(f"{where}: the {KEY_NAME} must be {KEY_BYTES} raw bytes or "
                           f"{2 * KEY_BYTES} hex digits")
    return key, source


def new_key() -> bytes:
    """A fresh data key (what ``init-venue`` writes to ``central/db.key``)."""
    return secrets.token_bytes(KEY_BYTES)


def _field(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


class TemplateBox:
    """Encrypts and decrypts one venue's and event's template blobs."""

    def __init__(self, key: bytes, *, venue: str, event: str) -> None:
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"the {KEY_NAME} must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self._scope = _field(venue) + _field(event)

    def _aad(self, attendee: str) -> bytes:
        return _LABEL + self._scope + _field(attendee)

    def seal(self, attendee: str, plain: bytes | bytearray | memoryview) -> bytes:
        """The stored form of ``attendee``'s protected templates."""
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, self._aad(attendee))

    def open_into(self, attendee: str, blob: bytes, out: bytearray | memoryview) -> None:
        """Decrypt ``attendee``'s blob into ``out`` (exactly its size; the caller zeroes it
        after use). StoreError, naming no one, when the blob is not this attendee's under
        this key (tampered, moved from another row, or another key)."""
        if not isinstance(blob, bytes) or len(blob) != len(_VERSION) + _NONCE + len(out) + _TAG \
                or blob[:1] != _VERSION:
            raise StoreError("central.db: a stored template has the wrong size or format "
                             "(tampered with, or written before encryption at rest)")
        try:
            self._aead.decrypt_into(blob[1:1 + _NONCE], blob[1 + _NONCE:], self._aad(attendee),
                                    out)
        except InvalidTag:
            raise StoreError("central.db: a stored template does not decrypt (tampered "
                             f"with, moved to another row, or a different {KEY_NAME})") from None

    def sealed_size(self, plain_size: int) -> int:
        """The size of a blob holding ``plain_size`` bytes."""
        return len(_VERSION) + _NONCE + plain_size + _TAG

    def check_value(self) -> bytes:
        """A blob that proves, at open, that the database was written under this key."""
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, _CHECK_PLAIN,
                                                     _CHECK_LABEL + self._scope)

    def verify(self, check: bytes) -> None:
        """DataKeyError unless ``check`` came from :meth:`check_value` under this key."""
        try:
            ok = isinstance(check, bytes) and check[:1] == _VERSION and self._aead.decrypt(
                check[1:1 + _NONCE], check[1 + _NONCE:], _CHECK_LABEL + self._scope
            ) == _CHECK_PLAIN
        except InvalidTag:
            ok = False
        if not ok:
            raise DataKeyError(f"central.db was written under another {KEY_NAME} (or for "
                               "another venue or event): wrong key")
