"""`gatectl keys init` on the gate, `add-gate` at central, and the gate working with both.

The gate's private keys are made on the gate; central sees a CSR and two public keys. End
to end: the issued certificate chains to the venue CA, the gate connects to a real
Mosquitto with mutual TLS under the updated ACL, central seals templates the gate opens
with its own seal key, and central verifies the deletion receipt the gate signs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from central import cli as central_cli
from central.core import Central
from central.pki import init_venue
from gate.cli import keys as keys_cli
from gate.cli.main import main
from gate.config import KEY_PIN, from_dict, load
from gate.doctor import broker as broker_check
from gate.doctor.result import Status
from gate.exitcodes import EXIT_CANCELLED, EXIT_CONFIG, EXIT_OK
from gate.link.link import GateLink
from gate.templates import open_templates
from sync.enrolment import enrolment_message
from tests import broker as tb
from tests.support import DAY, random_unit

VENUE, EVENT = "arena", "final"
PRIVATE = ("cache-key", "sign-key", "seal-key", "mqtt-key.pem")


def lane_config(tmp_path: Path, gate: str = "lane-2", extra: str = "") -> Path:
    f = tmp_path / f"{gate}.toml"
    f.write_text(f'[gate]\nid = "{gate}"\nvenue = "{VENUE}"\nevent = "{EVENT}"\n{extra}')
    return f


def keys_init(cfg: Path, out: Path, *extra: str) -> int:
    return main(["--config", str(cfg), "keys", "init", "--out", str(out), *extra])


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root with its mode and bytes (to prove nothing changed)."""
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def made(tmp_path, capsys):
    """keys init for lane-2: (out dir, its JSON report)."""
    out = tmp_path / "gate-keys"
    assert keys_init(lane_config(tmp_path), out, "--json") == EXIT_OK
    return out, json.loads(capsys.readouterr().out)


def test_keys_are_made_private_and_match_what_is_printed(made):
    out, report = made
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in PRIVATE:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in out.iterdir()) == sorted([*PRIVATE, "gate.csr"])
    assert len((out / "cache-key").read_bytes()) == 32
    sign = ed25519.Ed25519PrivateKey.from_private_bytes((out / "sign-key").read_bytes())
    seal = x25519.X25519PrivateKey.from_private_bytes((out / "seal-key").read_bytes())
    b64 = base64.b64encode
    assert report["sign_pub"] == "lane-2=" + b64(sign.public_key().public_bytes_raw()).decode()
    assert report["seal_pub"] == b64(seal.public_key().public_bytes_raw()).decode()
    # The pin is in the form configs and central use, e.g. another gate's peer_keys.
    assert re.fullmatch(KEY_PIN, report["sign_pub"])
    assert from_dict({"sync": {"peer_keys": [report["sign_pub"]]}}).sync.peer_keys
    tls = serialization.load_pem_private_key((out / "mqtt-key.pem").read_bytes(), None)
    assert isinstance(tls, ec.EllipticCurvePrivateKey) and tls.curve.name == "secp256r1"
    csr = x509.load_pem_x509_csr((out / "gate.csr").read_bytes())
    assert csr.is_signature_valid and csr.public_key() == tls.public_key()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lane-2"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == VENUE
    assert report["csr"] == str(out / "gate.csr")
    assert report["next"][0] == (f"systemd-creds encrypt --name=cache-key {out}/cache-key "
                                 "/etc/credstore.encrypted/cache-key")
    assert report["next"][-1].startswith("shred -u ")
    # Nothing secret is printed: no private key material in the report.
    text = json.dumps(report)
    for name in ("cache-key", "sign-key", "seal-key"):
        assert b64((out / name).read_bytes()).decode() not in text


def test_human_output_says_what_central_needs_and_what_comes_next(tmp_path, capsys):
    assert keys_init(lane_config(tmp_path), tmp_path / "k") == EXIT_OK
    out = capsys.readouterr().out
    assert "  signing key  lane-2=" in out and "  sealing key  " in out
    assert f"  CSR          {tmp_path}/k/gate.csr  (CN=lane-2, O={VENUE})" in out
    assert "facepass-central add-gate --venue-dir VENUE_DIR --gate lane-2" in out
    assert "systemd-creds encrypt --name=mqtt-key.pem" in out and "template-key" in out


def test_existing_keys_are_replaced_only_when_confirmed(made, tmp_path, capsys):
    out, _ = made
    before = tree(out)
    cfg = lane_config(tmp_path)
    assert keys_init(cfg, out) == EXIT_CANCELLED  # no terminal: not confirmed
    assert "not confirmed" in capsys.readouterr().err
    assert tree(out) == before
    assert keys_init(cfg, out, "-y") == EXIT_OK
    after = tree(out)
    assert set(after) == set(before)  # no temporaries left
    for name in PRIVATE:
        assert after[name][1] != before[name][1], name
        assert stat.S_IMODE(after[name][0]) == 0o600


def test_installed_credentials_count_as_existing_keys(tmp_path, monkeypatch, capsys):
    store = tmp_path / "credstore"
    store.mkdir()
    (store / "cache-key").write_bytes(b"encrypted")
    monkeypatch.setattr(keys_cli, "CREDSTORE", store)
    assert keys_init(lane_config(tmp_path), tmp_path / "new") == EXIT_CANCELLED
    assert f"{store}/cache-key" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_keys_init_needs_an_explicit_gate_identity(tmp_path, capsys):
    cfg = tmp_path / "gate.toml"
    cfg.write_text('[gate]\nvenue = "arena"\n')
    assert keys_init(cfg, tmp_path / "k") == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("gatectl: config: gate.id: missing") and err.count("\n") == 1
    assert not (tmp_path / "k").exists()


# --- central: add-gate ---------------------------------------------------------------------

@pytest.fixture
def venue(tmp_path) -> Path:
    d = tmp_path / "venue"
    init_venue(d, venue=VENUE, event=EVENT, gates=["lane-1"])
    return d


def add_gate(venue: Path, out: Path, report: dict, **over: str) -> int:
    args = {"--gate": "lane-2", "--csr": str(out / "gate.csr"), "--sign-pub": report["sign_pub"],
            "--seal-pub": report["seal_pub"], "--proof": report["proof"], **over}
    argv = ["add-gate", "--venue-dir", str(venue)]
    for k, v in args.items():
        argv += [k, v]
    return central_cli.main(argv)


def test_add_gate_issues_a_certificate_and_records_the_keys(venue, made, capsys):
    out, report = made
    assert add_gate(venue, out, report) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"Gate lane-2 enrolled at venue {VENUE}") and "reload" in said
    g = venue / "gates" / "lane-2"
    ca = x509.load_pem_x509_certificate((venue / "ca" / "ca.crt").read_bytes())
    crt = x509.load_pem_x509_certificate((g / "client.crt").read_bytes())
    crt.verify_directly_issued_by(ca)
    PolicyBuilder().store(Store([ca])).build_client_verifier().verify(crt, [])
    assert crt.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lane-2"
    assert crt.public_key() == x509.load_pem_x509_csr((out / "gate.csr").read_bytes()
                                                      ).public_key()
    assert (g / "ca.crt").read_bytes() == (venue / "ca" / "ca.crt").read_bytes()
    assert stat.S_IMODE((g / "credentials" / "template-key").stat().st_mode) == 0o600
    assert (g / "credentials" / "template-key").read_bytes() == \
        (venue / "gates" / "lane-1" / "credentials" / "template-key").read_bytes()
    assert not (g / "client.key").exists()  # central never had the gate's private key
    facts = json.loads((venue / "venue.json").read_text())
    assert facts["gates"]["lane-2"] == {"sign_pub": report["sign_pub"].split("=", 1)[1],
                                        "seal_pub": report["seal_pub"]}
    acl = (venue / "broker" / "acl").read_text()
    assert f"user lane-2\ntopic read gate/v1/{VENUE}/lane-2/templates\n" in acl
    assert "user lane-1\n" in acl  # the other gates keep their blocks


def _corrupt_signature(pem: bytes) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x5A  # the last byte of the ECDSA signature's s
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n" \
        .encode()


@pytest.mark.parametrize(("case", "message"), [
    ("other CN", "CSR is for CN 'lane-2', not for gate 'lane-9'"),
    ("bad signature", "CSR: signature does not verify"),
    ("not a CSR", "CSR: not a PEM certificate request"),
    ("bad base64", "sign-pub: not base64"),
    ("short key", "seal-pub: 24 bytes, expected a 32-byte public key"),
    ("key of another gate", "sign-pub: pinned for gate 'lane-1', not 'lane-2'"),
    ("already enrolled", "gate 'lane-1' is already enrolled"),
    ("proof from other keys", "proof: not signed by sign-pub"),
    ("seal key swapped in", "proof: not signed by sign-pub"),
    ("proof not base64", "proof: not base64"),
    ("missing CSR", "No such file or directory"),
])
def test_add_gate_refuses_garbage_and_writes_nothing(venue, made, capsys, case, message):
    out, report = made
    csr = out / "gate.csr"
    bad = venue.parent / "bad.csr"
    over: dict[str, str] = {}
    if case == "other CN":
        over["--gate"] = "lane-9"
    elif case == "bad signature":
        bad.write_bytes(_corrupt_signature(csr.read_bytes()))
        over["--csr"] = str(bad)
    elif case == "not a CSR":
        bad.write_bytes(csr.read_bytes().replace(b"REQUEST", b"THING"))
        over["--csr"] = str(bad)
    elif case == "bad base64":
        over["--sign-pub"] = "not*base64!"
    elif case == "short key":
        over["--seal-pub"] = base64.b64encode(os.urandom(24)).decode()
    elif case == "key of another gate":
        over["--sign-pub"] = "lane-1=" + report["sign_pub"].split("=", 1)[1]
    elif case == "already enrolled":
        over["--gate"] = "lane-1"
    elif case == "proof from other keys":
        # The right message signed by some other key: the sender does not hold
        # sign-pub's private key.
        signed = enrolment_message(
            gate="lane-2", venue=VENUE, seal_pub=base64.b64decode(report["seal_pub"]),
            csr_der=x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(
                serialization.Encoding.DER))
        other = ed25519.Ed25519PrivateKey.generate().sign(signed)
        over["--proof"] = base64.b64encode(other).decode()
    elif case == "seal key swapped in":
        # Someone swaps in their own sealing key: the gate's proof no longer covers it.
        over["--seal-pub"] = base64.b64encode(os.urandom(32)).decode()
    elif case == "proof not base64":
        over["--proof"] = "%%%"
    else:
        over["--csr"] = str(venue.parent / "nope.csr")
    before = tree(venue)
    assert add_gate(venue, out, report, **over) == 1
    err = capsys.readouterr().err
    assert err.startswith("central: ") and err.count("\n") == 1, err
    assert message in err
    assert tree(venue) == before


def test_an_enrolled_gate_works_end_to_end(venue, made, tmp_path, capsys):
    out, report = made
    broker = tb.Broker(venue).start()  # running before the gate exists, as in a venue
    templates = gate_link = central = None
    try:
        assert add_gate(venue, out, report) == 0
        capsys.readouterr()
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)  # Mosquitto rereads the ACL
        g = venue / "gates" / "lane-2"
        facts = json.loads((venue / "venue.json").read_text())
        cfg_file = lane_config(tmp_path, extra=f"""
[cache]
dir = "{tmp_path / 'state'}"
key_file = "{out / 'cache-key'}"
template_key_file = "{g / 'credentials' / 'template-key'}"
[sync]
enabled = true
host = "127.0.0.1"
port = {broker.port}
ca_file = "{g / 'ca.crt'}"
cert_file = "{g / 'client.crt'}"
key_file = "{out / 'mqtt-key.pem'}"
sign_key_file = "{out / 'sign-key'}"
seal_key_file = "{out / 'seal-key'}"
central_keys = ["{facts['central']['kid']}={facts['central']['sign_pub']}"]
""")
        cfg = load(cfg_file)
        # The doctor sees the new gate connect and the reloaded ACL hold.
        deadline = time.monotonic() + 5
        while True:
            link, acl = broker_check.check_broker(cfg, credentials_dir=None)
            if acl.status is Status.OK or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (link.status, acl.status) == (Status.OK, Status.OK), (link, acl)

        # The cache and matcher with the keys the service loads (key files here).
        templates = open_templates(cfg)
        templates.cache.load()
        gate_link = GateLink.from_config(cfg, cache=templates.cache)
        gate_link.start()
        assert gate_link.wait_connected(10)
        central = Central(venue, port=broker.port)
        central.connect()
        face = random_unit(np.random.default_rng(7))
        # Sealed to lane-2's public key from add-gate; opened with the seal-key made on it.
        central.enrol_embeddings("att-e2e", face[None], valid_until=int(time.time()) + DAY,
                                 gates=["lane-2"])
        cache = templates.cache
        wait_for(lambda: "att-e2e" in cache)
        # The template key matches too.
        assert templates.matcher.identify(face).attendee == "att-e2e"
        # Signed by the gate's own sign-key, verified by central with the recorded key.
        seq = central.revoke(["att-e2e"], gates=["lane-2"])["att-e2e"]
        wait_for(lambda: central.deletion_receipt("lane-2", "att-e2e", seq) is not None)
        assert not central.refused
    finally:
        if gate_link is not None:
            gate_link.stop()
            gate_link.close()
        if central is not None:
            central.close()
        if templates is not None:
            templates.close()
        broker.stop()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)
