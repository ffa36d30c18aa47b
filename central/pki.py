"""Keys and certificates for one venue: a private CA, the broker, central and every gate.

``init_venue`` writes everything a test venue needs into one directory (layout in its
docstring); ``instructions`` says which file goes where. A gate can also make its own
keys (``gatectl keys init``): ``enrol_gate`` then issues its certificate from a CSR and
records its public keys, so its private keys never leave it. Nothing here talks to a network
or to systemd: the output is plain files, private ones 0600 in 0700 directories.

Trust model. The broker accepts only TLS clients holding a certificate of the venue's CA
and takes the certificate's CN as the MQTT username (``use_identity_as_username``), so
the ACL file is keyed by gate id and nobody can claim another gate's topics with a
password; the CN is the client id as well (``use_username_as_clientid``), so a client
cannot take another gate's id, which would disconnect that gate and end its session. One
certificate therefore holds one connection at a time: a second one with the same
certificate replaces the first. Signing (Ed25519) and sealing (X25519) keys are separate
from the TLS keys: TLS protects the link to the broker, the application keys protect
messages end to end. Central's own secrets: ``sign.key``, ``protection.secret`` (the
event's template transform) and ``db.key``, the data key of central.db
(:mod:`central.atrest`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from central import atrest
from central.errors import EnrolmentError, VenueExistsError, VenueNameError
from sync.enrolment import enrolment_message
from sync.protect import event_key
from sync.templates import SFACE
from sync.templates import model as template_model

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = frozenset({"admin", "central"})
#: The gates' default ``[models] embedder`` and the template model it produces.
DEFAULT_EMBEDDER = "sface-int8"
DEFAULT_MODEL = SFACE.id
_SKEW = dt.timedelta(minutes=5)  # not-before in the past: a gate's clock may lag a little
_RAW = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())


def _check_name(kind: str, name: str) -> None:
    # The names become MQTT topic levels, ACL lines and certificate CNs: no wildcards,
    # slashes, spaces or newlines can reach any of them.
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise VenueNameError(f"{kind} name {name!r} must match {NAME_RE.pattern}")


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask must not loosen (or tighten) the mode
        f.write(data)


def _mkdir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _cert(cn: str, pub: ec.EllipticCurvePublicKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, days: int, *,
          eku: x509.ObjectIdentifier | None = None,
          san: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    """A certificate for the public key ``pub``; self-signed CA when ``issuer`` is None."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    is_ca = issuer is None
    b = (x509.CertificateBuilder()
         .subject_name(name)
         .issuer_name(name if issuer is None else issuer.subject)
         .public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - _SKEW)
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None),
                        critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=not is_ca, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=is_ca,
             crl_sign=is_ca, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _client_san(venue: str, cn: str) -> list[x509.GeneralName]:
    # Mosquitto reads the CN; the URI SAN names the client for RFC 5280 verifiers, which
    # require a SAN on every leaf.
    return [x509.UniformResourceIdentifier(f"facepass://{venue}/{cn}")]


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _bind_address(host: str) -> str:
    # A test venue listens on loopback only; a named broker host is bound explicitly so a
    # venue broker is never exposed on interfaces nobody asked for.
    return "127.0.0.1" if host in ("localhost", "127.0.0.1") else host


def _conf_text(venue_dir: Path, port: int, host: str, user: str | None) -> str:
    d = venue_dir.resolve()
    lines = [
        "# Written by central.pki: mutual-TLS broker for one venue (Mosquitto 2).",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {d / 'broker' / 'acl'}",
        "persistence true",
        # Mosquitto appends the file name to this string: the trailing slash matters.
        f"persistence_location {d / 'broker' / 'data'}/",
        # Room for a full gallery push queued for an offline gate (one message each).
        "max_queued_messages 200000",
        "max_inflight_messages 100",
        # Small QoS 1 messages (revocations, receipts) would otherwise wait on Nagle +
        # delayed ACK for tens of milliseconds at each hop.
        "set_tcp_nodelay true",
        "message_size_limit 8388608",
        "log_type error",
        "log_type warning",
        "log_dest stderr",
    ]
    if user is not None:
        lines.append(f"user {user}")
    lines += [
        "",
        f"listener {port} {_bind_address(host)}",
        f"cafile {d / 'ca' / 'ca.crt'}",
        f"certfile {d / 'broker' / 'broker.crt'}",
        f"keyfile {d / 'broker' / 'broker.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        # The client id is the certificate's CN too: a client cannot take another's id
        # (Mosquitto disconnects the older of two connections with one id, so a stolen id
        # would kick that gate off the broker and lose what was sent to it meanwhile).
        "use_username_as_clientid true",
        "tls_version tlsv1.2",  # the minimum since Mosquitto 2.0; 1.3 is negotiated too
    ]
    return "\n".join(lines) + "\n"


def _acl_text(venue: str, gates: Sequence[str]) -> str:
    base = f"gate/v1/{venue}"
    lines = ["# Written by central.pki. Users are certificate CNs (use_identity_as_username).",
             "user admin", "topic read #", "",
             "user central", f"topic readwrite {base}/#"]
    for g in gates:
        lines += ["", f"user {g}"]
        lines += [f"topic read {base}/{g}/{t}"
                  for t in ("templates", "revocations", "commands", "head")]
        lines += [f"topic write {base}/{g}/{t}" for t in ("events", "receipts", "status")]
        lines.append(f"topic read {base}/+/events")
    return "\n".join(lines) + "\n"


def write_broker_config(venue_dir: Path, port: int, *, user: str | None = None) -> Path:
    """Rewrite ``venue_dir/broker/mosquitto.conf`` to listen on ``port``; return its path.

    ``user`` adds Mosquitto's ``user`` option: tests running as root pass ``"root"``, as
    Mosquitto would otherwise drop to the ``mosquitto`` user, which cannot read 0600 keys.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not in 1..65535")
    venue_dir = Path(venue_dir)
    host = json.loads((venue_dir / "venue.json").read_text())["broker"]["host"]
    path = venue_dir / "broker" / "mosquitto.conf"
    tmp = path.with_name(f".mosquitto.conf.{secrets.token_hex(4)}")
    _write(tmp, _conf_text(venue_dir, port, host, user).encode(), 0o644)
    os.replace(tmp, path)
    return path


def init_venue(out: Path, *, venue: str, event: str, gates: Sequence[str],
               host: str = "localhost", port: int = 8883, days: int = 30,
               embedder: str = DEFAULT_EMBEDDER, model: str = DEFAULT_MODEL
               ) -> dict[str, Any]:
    """Create a venue's CA, certificates, keys and broker config in the new directory ``out``.

    ``embedder`` (the gates' ``[models] embedder``) and its template ``model`` id are
    recorded in ``venue.json``: central enrols with that embedder and names the model in
    every payload, and a gate running another one refuses them.

    Returns the paths written: ``venue_json``, ``ca_cert``, ``broker_conf``, ``acl``,
    ``central``, ``admin`` (directories) and ``gates`` (gate id -> directory).
    """
    _check_name("venue", venue)
    _check_name("event", event)
    gates = list(gates)
    if not gates:
        raise VenueNameError("at least one gate is needed")
    for g in gates:
        _check_name("gate", g)
        if g in RESERVED:
            raise VenueNameError(f"gate name {g!r} is reserved (admin and central are)")
    if len(set(gates)) != len(gates):
        raise VenueNameError("gate names must be unique")
    if not 0 < port < 65536 or days < 1 or not host or any(c.isspace() for c in host):
        raise ValueError("port must be 1..65535, days at least 1 and host one word")
    template_model(model)  # ValueError naming the known ones
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VenueExistsError(f"{out} exists and is not empty: choose a new directory")

    # Built in a private sibling and renamed into place: a failure halfway leaves no
    # half-provisioned venue behind, and the paths written into configs are final.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _build(tmp, out, venue=venue, event=event, gates=gates, host=host, port=port, days=days,
               embedder={"name": embedder, "model": model})
        os.rename(tmp, out)  # replaces an empty directory, fails on a non-empty one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"venue_json": out / "venue.json", "ca_cert": out / "ca" / "ca.crt",
            "broker_conf": out / "broker" / "mosquitto.conf", "acl": out / "broker" / "acl",
            "central": out / "central", "admin": out / "admin",
            "gates": {g: out / "gates" / g for g in gates}}


def _build(d: Path, final: Path, *, venue: str, event: str, gates: list[str], host: str,
           port: int, days: int, embedder: dict[str, str]) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"facepass {venue} CA", ca_key.public_key(), None, ca_key, days)
    _write(_mkdir(d / "ca") / "ca.key", _pem_key(ca_key))
    _write(d / "ca" / "ca.crt", _pem_cert(ca), 0o644)

    def tls(dirpath: Path, cn: str, eku: x509.ObjectIdentifier,
            san: Sequence[x509.GeneralName] = ()) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        stem = "broker" if eku == ExtendedKeyUsageOID.SERVER_AUTH else "client"
        san = san or _client_san(venue, cn)
        _write(_mkdir(dirpath) / f"{stem}.key", _pem_key(key))
        _write(dirpath / f"{stem}.crt", _pem_cert(_cert(cn, key.public_key(), ca, ca_key, days,
                                                        eku=eku, san=san)), 0o644)
        return _pem_key(key)

    broker_san: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if _host_name(host) not in broker_san:
        broker_san.append(_host_name(host))
    tls(d / "broker", "broker", ExtendedKeyUsageOID.SERVER_AUTH, broker_san)
    _mkdir(d / "broker" / "data")
    _write(d / "broker" / "acl", _acl_text(venue, gates).encode(), 0o644)
    tls(d / "admin", "admin", ExtendedKeyUsageOID.CLIENT_AUTH)
    tls(d / "central", "central", ExtendedKeyUsageOID.CLIENT_AUTH)
    central_sign = ed25519.Ed25519PrivateKey.generate()
    _write(d / "central" / "sign.key", central_sign.private_bytes(*_RAW))
    secret = secrets.token_bytes(32)
    _write(d / "central" / "protection.secret", secret)
    _write(d / "central" / atrest.KEY_FILE, atrest.new_key())
    template_key = event_key(secret, venue, event)

    facts: dict[str, Any] = {
        "venue": venue, "event": event, "broker": {"host": host, "port": port},
        "embedder": embedder,
        "central": {"kid": "central-1", "sign_pub": _b64(
            central_sign.public_key().public_bytes_raw())},
        "gates": {}}
    _mkdir(d / "gates")
    for g in gates:
        gd = _mkdir(d / "gates" / g)
        creds = _mkdir(gd / "credentials")
        tls_key = tls(gd, g, ExtendedKeyUsageOID.CLIENT_AUTH)
        _write(gd / "ca.crt", _pem_cert(ca), 0o644)
        sign = ed25519.Ed25519PrivateKey.generate()
        seal = x25519.X25519PrivateKey.generate()
        _write(creds / "cache-key", secrets.token_bytes(32))
        _write(creds / "template-key", template_key)
        _write(creds / "sign-key", sign.private_bytes(*_RAW))
        _write(creds / "seal-key", seal.private_bytes(*_RAW))
        _write(creds / "mqtt-key.pem", tls_key)
        facts["gates"][g] = {"sign_pub": _b64(sign.public_key().public_bytes_raw()),
                             "seal_pub": _b64(seal.public_key().public_bytes_raw())}
    _write(d / "venue.json", (json.dumps(facts, indent=2) + "\n").encode(), 0o644)
    _write(d / "broker" / "mosquitto.conf",
           _conf_text(final, port, host, None).encode(), 0o644)
    d.chmod(0o700)


def instructions(out: Path) -> str:
    """What to copy where, for the venue in ``out`` (plain text for the technician)."""
    out = Path(out).absolute()
    facts = json.loads((out / "venue.json").read_text())
    b, etc = out / "broker", "/etc/mosquitto/conf.d"
    return "\n".join([
        f"Venue {facts['venue']}, event {facts['event']}: files in {out}",
        f"Broker ({facts['broker']['host']}:{facts['broker']['port']}, Debian mosquitto):",
        f"  install -o mosquitto -m 0600 {b}/broker.key {etc}/",
        f"  cp {out}/ca/ca.crt {b}/broker.crt {b}/acl {etc}/",
        f"  cp {b}/mosquitto.conf {etc}/{facts['venue']}.conf  (include_dir reads *.conf only)",
        f"  in that copy: paths -> {etc}/, delete the two persistence lines (Debian's",
        "  mosquitto.conf sets them and Mosquitto refuses duplicates); restart mosquitto.",
        f"Central server: {out}/central/* and ca/ca.crt, 0600, readable by central only.",
        "  In production the data key is a credential: systemd-creds encrypt",
        f"  --name={atrest.KEY_NAME} central/db.key /etc/credstore.encrypted/{atrest.KEY_NAME},",
        f"  LoadCredentialEncrypted={atrest.KEY_NAME} in central's unit, then shred db.key.",
        "  protection.secret (it derives every gate's template key) belongs in a credential",
        "  too on a production central; this reference reads it from the file.",
        f"Each gate ({', '.join(facts['gates'])}): gates/<gate>/ca.crt and client.crt ->",
        "  /etc/gate/; each file of gates/<gate>/credentials/, on that gate:",
        "  systemd-creds encrypt --name=<file> <file> /etc/credstore.encrypted/<file>,",
        "  then shred the plaintext copies.",
        f"Keep {out}/ca/ca.key offline: it can mint a certificate for any gate.",
    ]) + "\n"


# --- a gate that made its own keys (gatectl keys init) ----------------------------------

def _public_key(text: str, gate: str, what: str) -> bytes:
    """32 raw bytes from ``B64`` or ``<gate>=B64`` (the pin form keys init prints)."""
    value = text.strip()
    head, sep, tail = value.partition("=")
    if sep and head and tail.rstrip("="):
        # "<kid>=<base64>": base64 itself only ends in '=', so a '=' inside names a kid.
        if head != gate:
            raise EnrolmentError(f"{what}: pinned for gate {head!r}, not {gate!r}")
        value = tail
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise EnrolmentError(f"{what}: not base64") from None
    if len(raw) != 32:
        raise EnrolmentError(f"{what}: {len(raw)} bytes, expected a 32-byte public key")
    return raw


def _check_csr(csr_pem: bytes, *, gate: str, venue: str) -> ec.EllipticCurvePublicKey:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise EnrolmentError("CSR: not a PEM certificate request") from None
    try:
        valid = csr.is_signature_valid
        pub = csr.public_key()
    except (ValueError, TypeError):
        raise EnrolmentError("CSR: unreadable key or signature") from None
    if not valid:
        raise EnrolmentError("CSR: signature does not verify (corrupted, or not made with "
                             "the key it carries)")
    cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [gate]:
        raise EnrolmentError(f"CSR is for CN {', '.join(map(repr, cns)) or 'none'}, not for "
                             f"gate {gate!r}")
    orgs = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if orgs and orgs != [venue]:
        raise EnrolmentError(f"CSR is for venue {orgs[0]!r}, not {venue!r}")
    if not isinstance(pub, ec.EllipticCurvePublicKey) or \
            not isinstance(pub.curve, ec.SECP256R1):
        raise EnrolmentError("CSR: the key must be EC P-256 (gatectl keys init makes one)")
    return pub


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    _write(tmp, data, mode)
    os.replace(tmp, path)


def _check_proof(signer: ed25519.Ed25519PublicKey, proof: str, *, gate: str, venue: str,
                 seal_raw: bytes, csr_pem: bytes) -> None:
    try:
        sig = base64.b64decode(proof, validate=True)
    except (ValueError, binascii.Error):
        raise EnrolmentError("proof: not base64") from None
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    try:
        signer.verify(sig, enrolment_message(gate=gate, venue=venue, seal_pub=seal_raw,
                                             csr_der=der))
    except InvalidSignature:
        raise EnrolmentError("proof: not signed by sign-pub over this gate, venue, "
                             "seal-pub and CSR (keys from another keys init?)") from None


def enrol_gate(venue_dir: Path, gate: str, *, csr_pem: bytes, sign_pub: str, seal_pub: str,
               proof: str, days: int = 30, replace: bool = False) -> dict[str, Path]:
    """Enrol a gate that generated its own keys (``gatectl keys init``).

    Checks everything first (the CSR's signature, CN = ``gate``, O = the venue if given,
    an EC P-256 key; both public keys; ``proof``: the signing key's signature over
    :func:`sync.enrolment.enrolment_message`, so the sender holds that key and vouches for
    the sealing key and the CSR), then: issues the gate's client certificate from
    the venue CA into ``gates/<gate>/client.crt`` with ``ca.crt`` beside it, writes the
    event's ``credentials/template-key`` for the gate to pick up, records the public keys
    in ``venue.json`` (central seals templates to the sealing key and verifies receipts
    and events with the signing key) and rewrites the broker ACL; reload the broker after.
    Raises :class:`EnrolmentError` or :class:`VenueNameError` with nothing written.
    Returns the paths written.
    """
    d = Path(venue_dir).absolute()
    facts = json.loads((d / "venue.json").read_text())
    venue, event = facts["venue"], facts["event"]
    _check_name("gate", gate)
    if gate in RESERVED:
        raise VenueNameError(f"gate name {gate!r} is reserved (admin and central are)")
    if gate in facts["gates"] and not replace:
        raise VenueNameError(f"gate {gate!r} is already enrolled (replace it to re-key it)")
    pub = _check_csr(csr_pem, gate=gate, venue=venue)
    sign_raw = _public_key(sign_pub, gate, "sign-pub")
    seal_raw = _public_key(seal_pub, gate, "seal-pub")
    try:
        signer = ed25519.Ed25519PublicKey.from_public_bytes(sign_raw)
    except ValueError:
        raise EnrolmentError("sign-pub: not an Ed25519 public key") from None
    _check_proof(signer, proof, gate=gate, venue=venue, seal_raw=seal_raw, csr_pem=csr_pem)
    if sign_raw == seal_raw:
        raise EnrolmentError("sign-pub and seal-pub are the same key: swapped arguments?")
    for other, keys in facts["gates"].items():
        if other != gate and _b64(sign_raw) in (keys["sign_pub"], keys["seal_pub"]):
            raise EnrolmentError(f"sign-pub already belongs to gate {other!r}")
    try:
        ca_key = serialization.load_pem_private_key((d / "ca" / "ca.key").read_bytes(), None)
    except FileNotFoundError:
        raise EnrolmentError("the venue CA key (ca/ca.key) is not here: enrol the gate where "
                             "the CA key is kept") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise EnrolmentError("ca/ca.key is not the venue's EC CA key")
    ca_pem = (d / "ca" / "ca.crt").read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = _cert(gate, pub, ca, ca_key, days, eku=ExtendedKeyUsageOID.CLIENT_AUTH,
                 san=_client_san(venue, gate))
    secret = (d / "central" / "protection.secret").read_bytes()

    # Built beside its final place and renamed in: no half-enrolled gate directory.
    gates_dir = _mkdir(d / "gates")
    tmp = Path(tempfile.mkdtemp(prefix=f".{gate}.", dir=gates_dir))
    try:
        _write(tmp / "ca.crt", ca_pem, 0o644)
        _write(tmp / "client.crt", _pem_cert(cert), 0o644)
        _write(_mkdir(tmp / "credentials") / "template-key", event_key(secret, venue, event))
        tmp.chmod(0o700)
        final = gates_dir / gate
        if final.exists():  # replace: the old directory may hold central-made private keys
            old = final.with_name(f".{gate}.old.{secrets.token_hex(4)}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    facts["gates"][gate] = {"sign_pub": _b64(sign_raw), "seal_pub": _b64(seal_raw)}
    _replace_file(d / "venue.json", (json.dumps(facts, indent=2) + "\n").encode(), 0o644)
    _replace_file(d / "broker" / "acl", _acl_text(venue, list(facts["gates"])).encode(), 0o644)
    return {"gate_dir": final, "ca_cert": final / "ca.crt", "cert": final / "client.crt",
            "template_key": final / "credentials" / "template-key", "acl": d / "broker" / "acl"}


def gate_instructions(out: Path, gate: str) -> str:
    """What to do after :func:`enrol_gate` (plain text for the integrator)."""
    out = Path(out).absolute()
    facts = json.loads((out / "venue.json").read_text())
    g = out / "gates" / gate
    return "\n".join([
        f"Gate {gate} enrolled at venue {facts['venue']} (event {facts['event']}).",
        "Broker: the ACL now has the gate; copy broker/acl to the broker and reload it "
        "(systemctl reload mosquitto, or kill -HUP its pid).",
        f"To the gate: {g}/ca.crt -> /etc/gate/ca.crt, {g}/client.crt -> /etc/gate/gate.crt",
        f"  and {g}/credentials/template-key -> on the gate: systemd-creds encrypt "
        "--name=template-key FILE /etc/credstore.encrypted/template-key, then shred it.",
        f"Other gates of the venue: add \"{gate}={facts['gates'][gate]['sign_pub']}\" to their "
        "[sync] peer_keys (anti-passback).",
        f"Gate config: [sync] central_keys = [\"{facts['central']['kid']}="
        f"{facts['central']['sign_pub']}\"].",
    ]) + "\n"
