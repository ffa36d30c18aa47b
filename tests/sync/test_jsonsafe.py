"""Deeply nested JSON, the class: every parser of untrusted bytes refuses it in one line
before the C parser recurses (at the interpreter's limit a garbage collection inside the
parser ran finalizers that failed: an unraisable RecursionError in central's listener)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.link import recovery
from sync import jsonsafe
from sync.errors import ProtocolError
from sync.messages import open_envelope, topic

DEEP = [b"[" * 100_000, b'{"a":' * 50_000, b"[" * 65 + b"]" * 65,
        b'{"v":' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}", b"[{" * 40_000,
        b'[1,"x",' * 30_000, b"[" * 65]


@pytest.fixture
def no_parser(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("json.loads saw a payload nested too deep")
    monkeypatch.setattr("sync.jsonsafe.json.loads", refuse)


@pytest.mark.parametrize("payload", DEEP)
def test_deep_payloads_never_reach_the_parser(payload, no_parser):
    with pytest.raises(ValueError, match="nested deeper than 64"):
        jsonsafe.loads(payload)
    with pytest.raises(ProtocolError, match="payload is not JSON"):
        open_envelope(topic("venue", "gate-1", "events"), payload, {})


@pytest.mark.parametrize("payload", DEEP)
def test_a_deep_numbering_note_reads_as_nothing(payload, no_parser, tmp_path):
    path = tmp_path / "sync.db.expect"
    path.write_bytes(payload[:65536])
    assert recovery.read_numbering(path) == {}


def test_brackets_inside_strings_do_not_count_and_shallow_json_parses():
    text = json.dumps({"s": "[" * 5000 + '\\"{' * 100, "a": [[[[1]]]]})
    assert jsonsafe.loads(text)["a"] == [[[[1]]]]
    nested = "[" * 64 + "]" * 64
    assert not jsonsafe.nesting_exceeds(nested)
    assert jsonsafe.nesting_exceeds("[" + nested + "]")
    with pytest.raises(UnicodeDecodeError):  # a ValueError, as the parser's own errors
        jsonsafe.loads(b"\xff\xfe")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c,
                                                                         max_size=3),
                    max_leaves=30))
def test_whatever_the_parser_reads_at_a_sane_depth_reads_the_same(value):
    text = json.dumps(value)
    assert jsonsafe.loads(text) == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(65, 5000), st.sampled_from(["[", "{\"k\":"]))
def test_garbage_around_a_deep_core_is_refused_in_one_line(prefix, depth, opener):
    payload = prefix + opener.encode() * depth
    with pytest.raises(ValueError) as exc:  # noqa: PT011 (not UTF-8 or too deep: both)
        jsonsafe.loads(payload)
    assert "\n" not in str(exc.value)
