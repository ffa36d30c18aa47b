"""A gate's link handler on a real cache and SQLite state, with central played by the
protocol's own functions (sign, seal, payloads): no broker, no transport. Shared by the
handler tests and the hostile suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.link.handler import MessageHandler
from gate.link.state import STATE_FILE, SyncState
from gate.templates import Templates
from sync import messages, payloads
from sync.seal import seal
from sync.templates import Enrolment
from tests.support import MODEL, Clock

VENUE, GATE, PEER = "venue-1", "gate-1", "gate-2"


class Central:
    """Signs (and seals) central's messages as the reference central would."""

    def __init__(self, seal_pub: Any) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.seal_pub = seal_pub
        self.seqs: dict[str, int] = {}

    @property
    def pin(self) -> dict[str, str]:
        return {"central-1": messages.b64(self.key.public_key().public_bytes_raw())}

    def message(self, kind: str, mtype: str, body: dict[str, Any], *,
                seq: int | None = None) -> tuple[str, bytes]:
        topic = messages.topic(VENUE, GATE, kind)
        if seq is None:
            seq = self.seqs.get(kind, -1) + 1
        self.seqs[kind] = seq
        return topic, messages.sign(topic, mtype=mtype, seq=seq, ts_ms=0, kid="central-1",
                                    body=body, key=self.key)

    def sealed(self, kind: str, plain: bytearray) -> tuple[int, dict[str, Any]]:
        seq = self.seqs.get(kind, -1) + 1
        return seq, seal(plain, self.seal_pub, topic=messages.topic(VENUE, GATE, kind),
                         seq=seq, gate=GATE)


class Rig:
    """A handler over a real cache and SQLite state; receipts collected as queued."""

    def __init__(self, templates: Templates, state_dir: Path, clock: Clock) -> None:
        self.cache, self.matcher = templates
        self.cache.load()
        self.state = SyncState(state_dir / STATE_FILE)
        self.seal_key = X25519PrivateKey.generate()
        self.central = Central(self.seal_key.public_key())
        self.state.replace_central_keys(self.central.pin)
        self.peer = Ed25519PrivateKey.generate()
        self.receipts: list[dict[str, Any]] = []
        self.changes = 0
        self.handler = MessageHandler(
            venue=VENUE, gate=GATE, cache=self.cache, state=self.state,
            seal_key=self.seal_key,
            peer_keys={PEER: messages.b64(self.peer.public_key().public_bytes_raw())},
            queue=self._queue, changed=self._changed)
        self.clock = clock

    def _queue(self, kind: str, mtype: str, body: dict[str, Any]) -> str:
        assert (kind, mtype) == ("receipts", "receipt")
        self.receipts.append(body)
        return f"m{len(self.receipts)}"

    def _changed(self) -> None:
        self.changes += 1

    def send(self, topic: str, payload: bytes) -> None:
        self.handler.message(topic, payload)

    def upsert(self, enrolments: list[Enrolment]) -> None:
        plain = payloads.encode(enrolments, model=MODEL)
        seq, sealed = self.central.sealed("templates", plain)
        self.send(*self.central.message("templates", "upsert", {"sealed": sealed}, seq=seq))
