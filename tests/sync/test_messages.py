"""Wire format: signatures, sealing, payload layout — and garbage of every kind."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import messages, payloads
from sync.errors import ModelMismatchError, ProtocolError
from sync.messages import uuid7
from sync.seal import open_sealed, seal
from sync.templates import MOBILEFACENET, SFACE, Enrolment
from tests.support import DIM, MODEL, unit

KEY = Ed25519PrivateKey.generate()
KEYS = {"central-1": KEY.public_key()}
TOPIC = "gate/v1/arena/lane-1/revocations"
GATE_KEY = X25519PrivateKey.generate()


def signed(body=None, *, topic=TOPIC, mtype="revoke", seq=5, kid="central-1", key=KEY):
    return messages.sign(topic, mtype=mtype, seq=seq, ts_ms=1_795_000_000_000, kid=kid,
                         body=body or {"items": [{"attendee": "a1", "seq": 2}]}, key=key)


def test_round_trip():
    env = messages.open_envelope(TOPIC, signed(), KEYS)
    assert (env.kind, env.type, env.seq, env.kid) == ("revocations", "revoke", 5, "central-1")
    assert env.body["items"][0]["attendee"] == "a1"


def test_signature_binds_the_topic_gate_and_venue():
    payload = signed()
    for other in ("gate/v1/arena/lane-2/revocations", "gate/v1/stadium/lane-1/revocations"):
        with pytest.raises(ProtocolError, match="bad signature"):
            messages.open_envelope(other, payload, KEYS)


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda e: e.update(seq=6), "bad signature"),
    (lambda e: e["body"]["items"].append({"attendee": "a2", "seq": 1}), "bad signature"),
    (lambda e: e.update(kid="central-9"), "unknown key"),
    (lambda e: e.update(kid="bad kid!"), "bad key id"),
    (lambda e: e.update(v=2), "version"),
    (lambda e: e.update(type="upsert"), "not allowed"),
    (lambda e: e.update(seq=-1), "seq"),
    (lambda e: e.update(seq=True), "seq"),
    (lambda e: e.update(seq=1.5), "seq"),
    (lambda e: e.update(body=[1, 2]), "not an object"),
    (lambda e: e.update(sig="!!!"), "base64"),
    (lambda e: e.update(sig=messages.b64(b"x" * 10)), "expected 64"),
    (lambda e: e.pop("ts"), "wrong fields"),
    (lambda e: e.update(extra=1), "wrong fields"),
])
def test_tampered_envelopes_are_refused(mutate, reason):
    env = json.loads(signed())
    mutate(env)
    with pytest.raises(ProtocolError, match=reason):
        messages.open_envelope(TOPIC, json.dumps(env).encode(), KEYS)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "not JSON"), (b"\xff\xfe", "not JSON"), (b"[1,2]", "wrong fields"),
    (b'{"v": NaN}', "not JSON"), (b"{" * 100_000, "not JSON"),
    (b" " * (messages.MAX_PAYLOAD + 1), "exceeds"),
])
def test_garbage_payloads_are_refused(payload, reason):
    with pytest.raises(ProtocolError, match=reason):
        messages.open_envelope(TOPIC, payload, KEYS)


@pytest.mark.parametrize("name", ["gate/v1/arena/lane-1/frobnicate", "gate/v2/a/b/events",
                                  "gate/v1/a b/c/events", "gate/v1/a/events", "#", ""])
def test_unknown_topics_are_refused(name):
    with pytest.raises(ProtocolError, match="topic"):
        messages.parse_topic(name)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_envelope_parser_never_crashes(data):
    with contextlib.suppress(ProtocolError):
        messages.open_envelope(TOPIC, data, KEYS)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                        max_size=4),
                    max_leaves=20))
def test_fuzz_json_shapes_are_refused_cleanly(value):
    with contextlib.suppress(ProtocolError):
        messages.open_envelope(TOPIC, json.dumps(value).encode(), KEYS)


def _enrolments(n: int) -> list[Enrolment]:
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        v = rng.standard_normal((1 + i % 3, DIM)).astype(np.float32)
        out.append(Enrolment(f"a{i}", i + 1, 1_900_000_000, unit(v)))
    return out


def test_payload_round_trip_with_tombstones():
    es = _enrolments(7)
    buf = payloads.encode(es, [("gone-1", 4, 1_900_000_000)], model=MODEL)
    back, tombs = payloads.decode(buf, model=MODEL)
    assert [e.attendee for e in back] == [e.attendee for e in es]
    for a, b in zip(back, es, strict=True):
        np.testing.assert_array_equal(a.templates, b.templates)
    assert tombs == [("gone-1", 4, 1_900_000_000)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_fuzz_payload_decoder(data):
    with contextlib.suppress(ProtocolError):
        payloads.decode(b"SNC2" + data, model=MODEL)
    with contextlib.suppress(ProtocolError):
        payloads.decode(b"SNC2" + data[:8] + MODEL.id.encode().ljust(16, b"\0") + data[8:],
                        model=MODEL)


def test_a_payload_names_its_model_and_another_model_refuses_it_in_one_line():
    es = [Enrolment("a1", 1, 1_900_000_000, unit(np.ones(SFACE.dim, np.float32)))]
    buf = payloads.encode(es, model=SFACE)
    assert payloads.decode(buf, model=SFACE)[0][0].attendee == "a1"
    with pytest.raises(ModelMismatchError) as err:
        payloads.decode(buf, model=MOBILEFACENET)
    assert str(err.value) == ("templates are for model 'sface', this end runs 'mobilefacenet': "
                              "configure the same embedder at both ends")
    with pytest.raises(ProtocolError, match="unknown format"):
        payloads.decode(b"SNC1" + bytes(buf[4:]), model=SFACE)  # the format before model ids


def test_truncated_payload_is_refused():
    buf = payloads.encode(_enrolments(3), model=MODEL)
    for cut in (3, 12, 50, len(buf) - 1):
        with pytest.raises(ProtocolError):
            payloads.decode(buf[:cut], model=MODEL)


def test_sealed_only_opens_for_its_gate_topic_and_seq():
    plain = payloads.encode(_enrolments(2), model=MODEL)
    box = seal(plain, GATE_KEY.public_key(), topic=TOPIC, seq=3, gate="lane-1")
    assert bytes(open_sealed(box, GATE_KEY, topic=TOPIC, seq=3, gate="lane-1")) == bytes(plain)
    assert plain[-64:] not in json.dumps(box).encode()
    other = X25519PrivateKey.generate()
    for t, q, g in ((TOPIC, 4, "lane-1"), (TOPIC, 3, "lane-2"),
                    ("gate/v1/arena/lane-2/revocations", 3, "lane-1")):
        with pytest.raises(ProtocolError, match="does not open"):
            open_sealed(box, GATE_KEY, topic=t, seq=q, gate=g)
    with pytest.raises(ProtocolError, match="does not open"):
        open_sealed(box, other, topic=TOPIC, seq=3, gate="lane-1")
    altered = dict(box, ct=messages.b64(b"\x00" * 40))
    with pytest.raises(ProtocolError):
        open_sealed(altered, GATE_KEY, topic=TOPIC, seq=3, gate="lane-1")


@pytest.mark.parametrize("box", [None, [], {}, {"epk": "", "nonce": "", "ct": ""},
                                 {"epk": "AA==", "nonce": "AA==", "ct": "AA=="}])
def test_malformed_sealed_objects(box):
    with pytest.raises(ProtocolError):
        open_sealed(box, GATE_KEY, topic=TOPIC, seq=1, gate="lane-1")


def test_uuid7_is_unique_time_ordered_and_versioned():
    ids = [uuid7(1_795_000_000_000 + i) for i in range(100)]
    assert len(set(ids)) == 100 and ids == sorted(ids)
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)
