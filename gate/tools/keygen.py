"""A gate's own keys, generated on the gate: private keys never leave it.

``generate`` writes into one directory (0700, every key 0600):

* ``cache-key`` — 32 random bytes: wraps the template cache's data key;
* ``sign-key`` — Ed25519 private key (raw 32 bytes): signs entry events and receipts;
* ``seal-key`` — X25519 private key (raw 32 bytes): opens templates sealed to this gate;
* ``mqtt-key.pem`` — the TLS client key (EC P-256, PKCS#8 PEM, as :mod:`central.pki` makes);
* ``gate.csr`` — a certificate request for that key, CN = gate id, O = venue.

Central gets only public things: the CSR, the two public keys and a proof (``GateKeys``):
the signing key's signature over :func:`enrolment_message`, which binds the gate id, the
venue, the sealing key and the CSR together and shows that whoever sends them holds the
signing key (the CSR's own signature shows the same for the TLS key). It answers with the
venue CA, the gate's certificate and the event's ``template-key``.
The names are the systemd credential names the service loads.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from gate.errors import KeyMaterialError
from gate.match.atomic import destroy
from sync.enrolment import enrolment_message

KEY_FILES = ("cache-key", "sign-key", "seal-key", "mqtt-key.pem")
CSR_FILE = "gate.csr"
_RAW = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())


@dataclass(frozen=True)
class GateKeys:
    """What was written, and the public half central needs."""

    directory: Path
    gate: str
    venue: str
    sign_pub: str  # base64 of the raw Ed25519 public key
    seal_pub: str  # base64 of the raw X25519 public key
    csr: Path
    proof: str  # base64 of the signing key's signature over enrolment_message()

    @property
    def sign_pin(self) -> str:
        """``<gate>=<base64>``: how configs and central pin this gate's signing key."""
        return f"{self.gate}={self.sign_pub}"

    @property
    def files(self) -> list[Path]:
        """The private key files (to encrypt as credentials, then shred)."""
        return [self.directory / name for name in KEY_FILES]


def existing(directory: Path) -> list[Path]:
    """Key files already in ``directory`` (replacing them loses the cache they protect)."""
    return [Path(directory) / n for n in (*KEY_FILES, CSR_FILE)
            if (Path(directory) / n).exists()]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write_new(path: Path, data: bytes, mode: int) -> Path:
    """Write a fresh temporary file beside ``path`` (the caller renames it into place)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask must not loosen or tighten it
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def generate(directory: Path, *, gate: str, venue: str, replace: bool = False) -> GateKeys:
    """Make the gate's keys and CSR in ``directory``; see the module docstring.

    Refuses (KeyMaterialError) when keys are already there unless ``replace``; replaced
    keys are overwritten before removal, since the old cache-key is what kept the old
    cache readable.
    """
    directory = Path(directory)
    old = existing(directory)
    if old and not replace:
        raise KeyMaterialError(f"{directory} already holds gate keys "
                               f"({', '.join(p.name for p in old)}); refusing to replace them")
    tls = ec.generate_private_key(ec.SECP256R1())
    sign = ed25519.Ed25519PrivateKey.generate()
    seal = x25519.X25519PrivateKey.generate()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gate),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, venue)]))
           .sign(tls, hashes.SHA256()))
    contents = {
        "cache-key": (secrets.token_bytes(32), 0o600),
        "sign-key": (sign.private_bytes(*_RAW), 0o600),
        "seal-key": (seal.private_bytes(*_RAW), 0o600),
        "mqtt-key.pem": (tls.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600),
        CSR_FILE: (csr.public_bytes(serialization.Encoding.PEM), 0o644),  # public
    }
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    # Everything is written before anything is replaced: a failure leaves the old set.
    temps: dict[str, Path] = {}
    try:
        for name, (data, mode) in contents.items():
            temps[name] = _write_new(directory / name, data, mode)
    except BaseException:
        for tmp in temps.values():
            destroy(tmp)
        raise
    for name, tmp in temps.items():
        final = directory / name
        if final.is_symlink():
            final.unlink()  # never write through a link someone planted
        elif final.exists():
            destroy(final)
        os.replace(tmp, final)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    seal_pub = seal.public_key().public_bytes_raw()
    proof = sign.sign(enrolment_message(gate=gate, venue=venue, seal_pub=seal_pub,
                                        csr_der=csr.public_bytes(serialization.Encoding.DER)))
    return GateKeys(directory, gate, venue, _b64(sign.public_key().public_bytes_raw()),
                    _b64(seal_pub), directory / CSR_FILE, _b64(proof))
