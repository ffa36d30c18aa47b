"""Venue provisioning (central.pki) and the broker it configures, checked with a real Mosquitto.

The first half reads the files: modes, certificate chains, names, keys. The second half
starts mosquitto with the generated config and checks what the ACLs and mutual TLS
actually enforce, from the clients' side: no systemd and no network beyond loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import queue
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from central.errors import VenueExistsError
from central.pki import (
    DEFAULT_EMBEDDER,
    DEFAULT_MODEL,
    init_venue,
    instructions,
    write_broker_config,
)
from gate.config import from_dict
from gate.match.embedders import embedder_spec
from sync.protect import event_key
from tests.broker import (
    Broker,
    BrokerError,
    close,
    connect,
    identity_files,
    inbox,
    open_client,
    publish,
    subscribe,
)

VENUE, EVENT, GATES = "arena", "final-2026", ("gate-1", "gate-2")
T = f"gate/v1/{VENUE}"
PRIVATE = ["ca/ca.key", "broker/broker.key", "admin/client.key", "central/client.key",
           "central/sign.key", "central/protection.secret", "central/db.key"]
PUBLIC = ["venue.json", "ca/ca.crt", "broker/broker.crt", "broker/mosquitto.conf",
          "broker/acl", "admin/client.crt", "central/client.crt"]
GATE_PRIVATE = ["client.key", "credentials/cache-key", "credentials/template-key",
                "credentials/sign-key", "credentials/seal-key", "credentials/mqtt-key.pem"]


@pytest.fixture
def venue(tmp_path) -> Path:
    out = tmp_path / "venue"
    init_venue(out, venue=VENUE, event=EVENT, gates=GATES)
    return out


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- files -------------------------------------------------------------------------------

def test_layout_and_modes(tmp_path):
    out = tmp_path / "venue"
    paths = init_venue(out, venue=VENUE, event=EVENT, gates=GATES)
    assert paths["gates"] == {g: out / "gates" / g for g in GATES}
    assert paths["broker_conf"] == out / "broker" / "mosquitto.conf"
    private = PRIVATE + [f"gates/{g}/{f}" for g in GATES for f in GATE_PRIVATE]
    public = PUBLIC + [f"gates/{g}/{f}" for g in GATES for f in ("client.crt", "ca.crt")]
    for rel in private:
        assert mode(out / rel) == 0o600, rel
    for rel in public:
        assert (out / rel).is_file(), rel
    dirs = [p for p in out.rglob("*") if p.is_dir()] + [out]
    assert out / "broker" / "data" in dirs
    assert all(mode(d) == 0o700 for d in dirs), [d for d in dirs if mode(d) != 0o700]
    # Nothing beyond the documented layout (and no temporary build directory left over).
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(
        private + public)
    assert [p.name for p in tmp_path.iterdir()] == ["venue"]
    for g in GATES:
        gd = out / "gates" / g
        assert (gd / "credentials" / "mqtt-key.pem").read_bytes() == (
            gd / "client.key").read_bytes()
        assert (gd / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
        for name in ("cache-key", "template-key", "sign-key", "seal-key"):
            assert len((gd / "credentials" / name).read_bytes()) == 32


def test_venue_json_publishes_the_matching_public_keys(venue):
    facts = json.loads((venue / "venue.json").read_text())
    assert facts["venue"] == VENUE and facts["event"] == EVENT
    assert facts["broker"] == {"host": "localhost", "port": 8883}
    assert facts["central"]["kid"] == "central-1"
    assert facts["embedder"] == {"name": DEFAULT_EMBEDDER, "model": DEFAULT_MODEL}
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw

    def pub(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey) -> str:
        return base64.b64encode(key.public_key().public_bytes(*raw)).decode()

    central = ed25519.Ed25519PrivateKey.from_private_bytes(
        (venue / "central" / "sign.key").read_bytes())
    assert facts["central"]["sign_pub"] == pub(central)
    assert sorted(facts["gates"]) == sorted(GATES)
    for g in GATES:
        creds = venue / "gates" / g / "credentials"
        sign = ed25519.Ed25519PrivateKey.from_private_bytes((creds / "sign-key").read_bytes())
        seal = x25519.X25519PrivateKey.from_private_bytes((creds / "seal-key").read_bytes())
        assert facts["gates"][g] == {"sign_pub": pub(sign), "seal_pub": pub(seal)}
    # Secrets never reach the public file.
    secret = (venue / "central" / "protection.secret").read_bytes()
    assert base64.b64encode(secret).decode() not in (venue / "venue.json").read_text()


def test_certificates_chain_to_the_ca_with_the_right_names(venue):
    ca = cert(venue / "ca" / "ca.crt")
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    store = PolicyBuilder().store(Store([ca]))

    broker = cert(venue / "broker" / "broker.crt")
    broker.verify_directly_issued_by(ca)
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        store.build_server_verifier(name).verify(broker, [])
    assert broker.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "broker"
    eku = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    for who in ("admin", "central", *GATES):
        crt = cert(identity_files(venue, who)[0])
        crt.verify_directly_issued_by(ca)
        store.build_client_verifier().verify(crt, [])  # also checks EKU clientAuth
        assert crt.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == who
        eku = crt.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not crt.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        lifetime = crt.not_valid_after_utc - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30)
        # The certificate's key is the one handed to the client.
        key = serialization.load_pem_private_key(identity_files(venue, who)[1].read_bytes(),
                                                 None)
        assert key.public_key() == crt.public_key()
    # A server certificate is no client certificate (and the other way round).
    with pytest.raises(x509.verification.VerificationError):
        store.build_client_verifier().verify(broker, [])


@pytest.mark.parametrize(("host", "name"), [
    ("broker.arena.lan", x509.DNSName("broker.arena.lan")),
    ("10.20.0.5", x509.IPAddress(ipaddress.ip_address("10.20.0.5")))])
def test_a_named_host_is_in_the_san_and_the_listener(tmp_path, host, name):
    init_venue(tmp_path / "v", venue=VENUE, event=EVENT, gates=["g"], host=host, port=9883)
    san = cert(tmp_path / "v" / "broker" / "broker.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert name in san and x509.DNSName("localhost") in san
    assert f"listener 9883 {host}\n" in (tmp_path / "v" / "broker" / "mosquitto.conf").read_text()


def test_template_key_is_the_event_key_of_the_protection_secret(venue):
    secret = (venue / "central" / "protection.secret").read_bytes()
    assert len(secret) == 32
    for g in GATES:
        key = (venue / "gates" / g / "credentials" / "template-key").read_bytes()
        assert key == event_key(secret, VENUE, EVENT)
    # The cache keys, by contrast, are per gate.
    assert len({(venue / "gates" / g / "credentials" / "cache-key").read_bytes()
                for g in GATES}) == len(GATES)
    # central.db's data key is central's alone: no gate holds it, no public file names it.
    db_key = (venue / "central" / "db.key").read_bytes()
    assert len(db_key) == 32 and db_key not in (secret, event_key(secret, VENUE, EVENT))
    for path in venue.rglob("*"):
        if path.is_file() and path != venue / "central" / "db.key":
            assert db_key not in path.read_bytes(), path
    assert base64.b64encode(db_key).decode() not in (venue / "venue.json").read_text()


def test_broker_config_and_acl(venue):
    conf = (venue / "broker" / "mosquitto.conf").read_text().splitlines()
    for line in ["per_listener_settings false", "allow_anonymous false",
                 "listener 8883 127.0.0.1", f"cafile {venue}/ca/ca.crt",
                 f"certfile {venue}/broker/broker.crt", f"keyfile {venue}/broker/broker.key",
                 "require_certificate true", "use_identity_as_username true",
                 "use_username_as_clientid true", "tls_version tlsv1.2",
                 f"acl_file {venue}/broker/acl", "persistence true",
                 f"persistence_location {venue}/broker/data/", "max_queued_messages 200000",
                 "max_inflight_messages 100", "message_size_limit 8388608",
                 "log_type error", "log_type warning", "log_dest stderr"]:
        assert line in conf, line
    assert not any(x.startswith(("pid_file", "user ")) for x in conf)
    acl = (venue / "broker" / "acl").read_text()
    assert f"user central\ntopic readwrite {T}/#\n" in acl
    assert "user admin\ntopic read #\n" in acl
    assert (f"user gate-2\ntopic read {T}/gate-2/templates\ntopic read {T}/gate-2/revocations\n"
            f"topic read {T}/gate-2/commands\ntopic read {T}/gate-2/head\n"
            f"topic write {T}/gate-2/events\n"
            f"topic write {T}/gate-2/receipts\ntopic write {T}/gate-2/status\n"
            f"topic read {T}/+/events\n") in acl

    path = write_broker_config(venue, 12345)
    assert path == venue / "broker" / "mosquitto.conf"
    new = path.read_text().splitlines()
    assert "listener 12345 127.0.0.1" in new
    assert [x for x in new if x not in conf] == ["listener 12345 127.0.0.1"]
    with pytest.raises(ValueError, match="port"):
        write_broker_config(venue, 0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"venue": ""}, "venue name"), ({"venue": "a/b"}, "venue name"),
    ({"venue": "a+b"}, "venue name"), ({"venue": "#"}, "venue name"),
    ({"venue": "-x"}, "venue name"), ({"venue": "x" * 65}, "venue name"),
    ({"venue": "a b"}, "venue name"), ({"event": "e\nuser admin"}, "event name"),
    ({"gates": []}, "at least one gate"), ({"gates": ["g1", "g1"]}, "unique"),
    ({"gates": ["admin"]}, "reserved"), ({"gates": ["g1", "central"]}, "reserved"),
    ({"gates": ["g/1"]}, "gate name"), ({"gates": ["+"]}, "gate name"),
    ({"days": 0}, "days"), ({"port": 70000}, "port"),
    ({"model": "arcface"}, "unknown template model 'arcface'")])
def test_refuses_bad_input(tmp_path, kwargs, match):
    args = {"venue": VENUE, "event": EVENT, "gates": GATES, **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        init_venue(tmp_path / "v", **args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "v").exists()


def test_refuses_a_non_empty_directory_and_accepts_an_empty_one(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError) as err:
        init_venue(tmp_path / "used", venue=VENUE, event=EVENT, gates=GATES)
    assert isinstance(err.value, VenueExistsError)
    assert "\n" not in str(err.value) and "used" in str(err.value)
    assert os.listdir(tmp_path / "used") == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    init_venue(tmp_path / "empty", venue=VENUE, event=EVENT, gates=GATES)
    assert (tmp_path / "empty" / "venue.json").is_file()
    assert mode(tmp_path / "empty") == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "used"]


def test_needs_no_systemd_or_other_programs(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"init_venue ran a program: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setenv("PATH", "")
    out = tmp_path / "v"
    init_venue(out, venue=VENUE, event=EVENT, gates=GATES)
    text = instructions(out)
    for needle in ("/etc/mosquitto/conf.d/", "systemd-creds encrypt", "/etc/gate/",
                   "Central", *GATES):
        assert needle in text, needle


# --- a real broker -----------------------------------------------------------------------

@pytest.fixture
def broker(venue):
    b = Broker(venue).start()
    yield b
    b.stop()


@pytest.fixture
def clients(venue, broker):
    """``clients(who)`` connects as ``who``; every client is closed at teardown."""
    made = []

    def make(who: str, client_id: str | None = None, **kwargs):
        c = connect(venue, who, client_id=client_id or f"{who}-test", **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        close(c)


def test_central_publishes_templates_and_the_gate_receives_them(clients):
    gate = clients("gate-1")
    inbox, code = subscribe(gate, f"{T}/gate-1/templates")
    assert not code.is_failure
    central = clients("central")
    assert not publish(central, f"{T}/gate-1/templates", b"template batch 1").is_failure
    msg = inbox.get(timeout=5)
    assert (msg.topic, msg.payload) == (f"{T}/gate-1/templates", b"template batch 1")


def test_a_gate_does_not_receive_another_gates_templates(clients):
    gate1, gate2 = clients("gate-1"), clients("gate-2")
    # Mosquitto 2.0 grants the subscription (its ACL check does not cover SUBSCRIBE) and
    # filters each message on delivery instead: the code says nothing, the inbox does.
    stolen, _ = subscribe(gate1, f"{T}/gate-2/templates")
    wildcard, _ = subscribe(gate1, f"{T}/+/templates")
    own, _ = subscribe(gate2, f"{T}/gate-2/templates")
    assert not publish(clients("central"), f"{T}/gate-2/templates", b"for gate-2").is_failure
    assert own.get(timeout=5).payload == b"for gate-2"
    with pytest.raises(queue.Empty):
        stolen.get(timeout=1)
    assert wildcard.empty()


def test_a_gate_cannot_publish_on_another_gates_topics(clients):
    admin = clients("admin")
    seen, _ = subscribe(admin, "#")
    gate1 = clients("gate-1")
    # MQTT v5 tells the publisher: PUBACK "Not authorized" (0x87), and the message is dropped.
    assert publish(gate1, f"{T}/gate-2/events", b"forged entry").value == 0x87
    assert publish(gate1, f"{T}/gate-1/templates", b"forged template").value == 0x87
    assert not publish(gate1, f"{T}/gate-1/events", b"real entry").is_failure
    # Same connection, so the broker handled the forged ones first: once the real event
    # is through, anything forged would already be in the queue.
    msg = seen.get(timeout=5)
    assert (msg.topic, msg.payload) == (f"{T}/gate-1/events", b"real entry")
    assert seen.empty()


def _a_gate_with_its_certificate_connects(venue, broker) -> None:
    """The control: the same broker, the same moment, a proper certificate gets in, so a
    refusal beside it is the certificate's doing (with TLS 1.3 the client sees only a
    disconnect, and Mosquitto does not always log the reason under load)."""
    crt, key = identity_files(venue, "gate-1")
    close(open_client(broker.host, broker.port, client_id="gate-1",
                      ca_certs=venue / "ca" / "ca.crt", certfile=crt, keyfile=key))


def test_a_client_without_a_certificate_cannot_connect(venue, broker):
    with pytest.raises(BrokerError):
        open_client(broker.host, broker.port, client_id="nocert",
                    ca_certs=venue / "ca" / "ca.crt")
    _a_gate_with_its_certificate_connects(venue, broker)


def test_a_certificate_of_another_ca_cannot_connect(venue, broker, tmp_path):
    # The other venue's gate has the same CN: only the CA tells them apart.
    other = tmp_path / "other"
    init_venue(other, venue=VENUE, event=EVENT, gates=GATES)
    crt, key = identity_files(other, "gate-1")
    with pytest.raises(BrokerError):
        open_client(broker.host, broker.port, client_id="impostor",
                    ca_certs=venue / "ca" / "ca.crt", certfile=crt, keyfile=key)
    _a_gate_with_its_certificate_connects(venue, broker)


def test_an_anonymous_plain_tcp_client_is_refused(broker):
    with pytest.raises(BrokerError):
        open_client(broker.host, broker.port, client_id="anon", ca_certs=None, timeout=3)


def test_queued_templates_survive_a_broker_restart(venue, broker):
    # An offline gate with a persistent session gets what central sent meanwhile, even
    # across a clean broker restart (persistence file written on SIGTERM).
    gate = connect(venue, "gate-1", client_id="gate-1", clean_start=False)
    subscribe(gate, f"{T}/gate-1/templates")
    close(gate)
    central = connect(venue, "central", client_id="central")
    assert not publish(central, f"{T}/gate-1/templates", b"while offline").is_failure
    close(central)
    broker.restart()
    gate = connect(venue, "gate-1", client_id="gate-1", clean_start=False)
    try:
        assert inbox(gate).get(timeout=5).payload == b"while offline"
    finally:
        close(gate)


def test_the_broker_comes_back_after_a_crash(venue, broker):
    port = broker.port
    broker.kill()
    assert not broker.running
    with pytest.raises(BrokerError):
        connect(venue, "central", client_id="central", timeout=2)
    broker.restart()
    assert broker.running and broker.port == port
    close(connect(venue, "central", client_id="central"))


def test_a_new_venue_names_the_gates_default_embedder_and_its_model():
    """init-venue's default is the gate's: a venue made with defaults and a gate left at
    its default agree on the template model."""
    spec = embedder_spec(from_dict({}).models.embedder)
    assert (spec.name, spec.model.id) == (DEFAULT_EMBEDDER, DEFAULT_MODEL)
