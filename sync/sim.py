"""A venue on one machine: the gates of an ``init-venue`` directory, wired to a local
broker. Used by the tests, the sync benchmark and the demo; a real gate is configured
from ``[sync]`` instead (:meth:`sync.gate_client.GateSync.from_config`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.match.cachefile import Binding
from gate.match.keys import Key
from gate.match.protect import Protector
from gate.match.store import TemplateStore
from gate.match.threshold import CALIBRATIONS, ThresholdPolicy
from sync.db import SyncDB
from sync.gate_client import GateSync, Link


def open_gate(venue_dir: Path, gate: str, state_dir: Path, *, host: str, port: int,
              clock: Callable[[], float] = time.time, fixed_threshold: float = 0.0,
              coarse_min: int = 20_000) -> tuple[TemplateStore, GateSync]:
    """The template store and sync client of ``gate``, with its provisioned keys."""
    venue_dir = Path(venue_dir)
    info = json.loads((venue_dir / "venue.json").read_text())
    gdir = venue_dir / "gates" / gate
    creds = gdir / "credentials"
    store = TemplateStore(
        state_dir, kek=Key((creds / "cache-key").read_bytes(), "venue credential"),
        protector=Protector((creds / "template-key").read_bytes()),
        binding=Binding(info["venue"], info["event"], gate),
        policy=ThresholdPolicy(1e-3, CALIBRATIONS["int8"], fixed=fixed_threshold),
        margin=0.05, clock=clock, coarse_min=coarse_min)
    store.load()
    central = info["central"]
    peers = {g: k["sign_pub"] for g, k in info["gates"].items() if g != gate}
    sync = GateSync(venue=info["venue"], gate=gate,
                    link=Link(host, port, str(gdir / "ca.crt"), str(gdir / "client.crt"),
                              str(gdir / "client.key"), keepalive_s=5, session_expiry_s=3600),
                    store=store, db=SyncDB(Path(state_dir) / "sync.db"),
                    sign_key=Ed25519PrivateKey.from_private_bytes(
                        (creds / "sign-key").read_bytes()),
                    seal_key=X25519PrivateKey.from_private_bytes(
                        (creds / "seal-key").read_bytes()),
                    central_keys={central["kid"]: central["sign_pub"]}, peer_keys=peers,
                    clock=clock)
    return store, sync
