"""Where the gate's secrets come from: one lookup for every key it loads.

A secret called NAME is looked for, in order:

1. the systemd credential ``$CREDENTIALS_DIRECTORY/NAME`` (``LoadCredentialEncrypted=``
   keeps it encrypted at rest, e.g. with the TPM, and systemd decrypts it at start);
2. for diagnostics only (:mod:`gate.doctor`), an encrypted credential that systemd would
   load, in ``/etc/credstore.encrypted`` or ``/etc/credstore``;
3. a key file named in the config, which must be a regular file with mode 0600 (or 0400)
   owned by the user the gate runs as; anything else is refused with one line;
4. for demos and development only, when the config allows it, a random key that lives in
   RAM and dies with the process (logged as such: the cache cannot be read after a
   restart).

The names are the systemd credential names: ``cache-key``, ``template-key``,
``sign-key``, ``seal-key`` (32 bytes, raw or as 64 hex digits) and ``mqtt-key.pem``
(the TLS client key). Keys are never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from gate.errors import KeyMaterialError
from gate.safefile import read_regular

log = logging.getLogger(__name__)

KEY_BYTES = 32
#: Largest secret file read (a 32-byte key, 64 hex digits, or a PEM private key).
MAX_SECRET_BYTES = 16 << 10
#: Where installed gates keep encrypted credentials (``systemd-creds encrypt``); the
#: unit's ``LoadCredentialEncrypted=NAME`` finds them here.
CREDSTORES = (Path("/etc/credstore.encrypted"), Path("/etc/credstore"))


@dataclass(frozen=True)
class Source:
    """Where a secret was found: ``credential`` (systemd handed it over decrypted),
    ``encrypted`` (a credential systemd would decrypt at start) or ``file`` (the config's
    key file, which may not exist)."""

    kind: str
    path: Path


def locate(name: str, *, key_file: str | Path = "", credentials_dir: str | None,
           credstores: tuple[Path, ...] = ()) -> Source | None:
    """Where the secret ``name`` is, in the order of the module docstring (None: nowhere).

    ``credentials_dir`` is the systemd credentials directory (None: there is none);
    ``credstores`` are searched only when given (the doctor does, the service never).
    """
    if credentials_dir and (Path(credentials_dir) / name).is_file():
        return Source("credential", Path(credentials_dir) / name)
    for store in credstores:
        if (store / name).is_file():
            return Source("encrypted", store / name)
    if key_file:
        return Source("file", Path(key_file))
    return None


def credentials_directory() -> str | None:
    """``$CREDENTIALS_DIRECTORY`` (set by systemd for the service), or None."""
    return os.environ.get("CREDENTIALS_DIRECTORY") or None


@dataclass(frozen=True)
class Key:
    """A 32-byte key and where it came from (the source is safe to log, the key is not)."""

    material: bytes
    source: str

    def __repr__(self) -> str:
        return f"Key(source={self.source!r})"


def parse_key(raw: bytes | bytearray) -> bytes | None:
    """The 32 key bytes of ``raw`` (raw bytes or 64 hex digits), or None."""
    if len(raw) == KEY_BYTES:
        return bytes(raw)
    text = bytes(raw).strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def _parse(raw: bytes, where: str) -> bytes:
    key = parse_key(raw)
    if key is None:
        raise KeyMaterialError(f"{where}: a key must be {KEY_BYTES} raw bytes or "
                               f"{2 * KEY_BYTES} hex digits")
    return key


def read_secret(path: Path) -> bytes:
    """A secret file's bytes: a regular file (not a FIFO or device), at most
    :data:`MAX_SECRET_BYTES`; anything else is one KeyMaterialError line."""
    return read_regular(path, limit=MAX_SECRET_BYTES, what=str(path), fail=KeyMaterialError)


def check_key_file(path: Path, *, owner_uid: int | None = None) -> None:
    """Refuse a key file that is not a regular file of mode 0600/0400 owned by
    ``owner_uid`` (default: the user running this process)."""
    uid = os.geteuid() if owner_uid is None else owner_uid
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise KeyMaterialError(f"{path}: key file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyMaterialError(f"{path}: key file must be a regular file, not a link or device")
    if st.st_mode & 0o077:
        raise KeyMaterialError(f"{path}: key file mode {stat.S_IMODE(st.st_mode):04o} is open "
                               "to others; chmod 0600")
    if st.st_uid != uid:
        raise KeyMaterialError(f"{path}: key file owned by uid {st.st_uid}, not the gate's "
                               f"uid {uid}")


def load_key(name: str, *, key_file: Path | None = None, allow_ephemeral: bool = False,
             credentials_dir: str | None = None) -> Key:
    """The key called ``name``: credential, then key file, then (if allowed) ephemeral.

    ``credentials_dir`` defaults to ``$CREDENTIALS_DIRECTORY``.
    """
    creds = credentials_dir if credentials_dir is not None else credentials_directory()
    found = locate(name, key_file=key_file or "", credentials_dir=creds)
    if found is not None and found.kind == "credential":
        return Key(_parse(read_secret(found.path), str(found.path)), f"credential {name}")
    if found is not None:
        try:
            check_key_file(found.path)
        except KeyMaterialError as exc:
            raise KeyMaterialError(f"{name}: {exc}") from None
        return Key(_parse(read_secret(found.path), str(found.path)), f"file {found.path}")
    if allow_ephemeral:
        log.warning("key=%s source=ephemeral note=demo/dev only, lives in RAM, cache is "
                    "unreadable after a restart", name)
        return Key(secrets.token_bytes(KEY_BYTES), "ephemeral")
    raise KeyMaterialError(f"no {name} key: provide the systemd credential {name} or a key "
                           "file")
