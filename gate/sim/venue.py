"""A gate of a venue provisioned on this machine, wired to a local broker.

``facepass-central init-venue`` writes a venue directory: ``venue.json`` (names and
public keys) and, per gate, its certificate and credentials. :func:`open_gate` builds
that gate's template cache, matcher and link from those files, the way the service
builds them from ``[sync]`` and systemd credentials on a real gate. The tests, the
benchmarks and the demo use it; nothing here imports the reference central: the venue
directory is just files.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gate.config import Config, from_dict
from gate.credentials import Key
from gate.link.link import GateLink
from gate.link.mqtt import Endpoint, MqttTransport
from gate.link.state import STATE_FILE, SyncState
from gate.match.cache import TemplateCache
from gate.match.matcher import Matcher
from gate.templates import TemplateKeys, open_templates
from sync.messages import b64


@dataclass
class SimGate:
    """One gate of the venue: its cache, matcher and link (not started)."""

    config: Config
    cache: TemplateCache
    matcher: Matcher
    link: GateLink

    def close(self) -> None:
        """Stop the link (if started), close its state, zero the templates in RAM."""
        self.link.stop()
        self.link.close()
        self.matcher.wipe()
        self.cache.close()


def venue_facts(venue_dir: Path) -> dict[str, Any]:
    """``venue.json``: venue, event, broker, central's and every gate's public keys."""
    facts: dict[str, Any] = json.loads((Path(venue_dir) / "venue.json").read_text())
    return facts


def gate_config(venue_dir: Path, gate: str, state_dir: Path, *, fixed_threshold: float = 0.0,
                coarse_min: int = 20_000) -> Config:
    """The config such a gate would have (identity, the venue's embedder, cache directory,
    match settings)."""
    info = venue_facts(venue_dir)
    # Venues made before the embedder was recorded used MobileFaceNet.
    embedder = (info.get("embedder") or {}).get("name", "mobilefacenet-int8")
    return from_dict({"gate": {"id": gate, "venue": info["venue"], "event": info["event"]},
                      "models": {"embedder": embedder},
                      "cache": {"dir": str(state_dir)},
                      "match": {"threshold": fixed_threshold, "coarse_min": coarse_min}})


def open_gate(venue_dir: Path, gate: str, state_dir: Path, *, host: str, port: int,
              clock: Callable[[], float] = time.time, fixed_threshold: float = 0.0,
              coarse_min: int = 20_000) -> SimGate:
    """The cache (loaded), matcher and link of ``gate``, with its provisioned keys."""
    venue_dir = Path(venue_dir)
    info = venue_facts(venue_dir)
    gdir = venue_dir / "gates" / gate
    creds = gdir / "credentials"
    cfg = gate_config(venue_dir, gate, state_dir, fixed_threshold=fixed_threshold,
                      coarse_min=coarse_min)
    keys = TemplateKeys(Key((creds / "cache-key").read_bytes(), "venue credential"),
                        Key((creds / "template-key").read_bytes(), "venue credential"))
    cache, matcher = open_templates(cfg, keys=keys, clock=clock)
    cache.load()
    central = info["central"]
    peers = {g: k["sign_pub"] for g, k in info["gates"].items() if g != gate}
    endpoint = Endpoint(host, port, str(gdir / "ca.crt"), str(gdir / "client.crt"),
                        str(gdir / "client.key"), keepalive_s=5, session_expiry_s=3600)
    link = GateLink(venue=info["venue"], gate=gate, cache=cache,
                    state=SyncState(Path(state_dir) / STATE_FILE),
                    sign_key=Ed25519PrivateKey.from_private_bytes(
                        (creds / "sign-key").read_bytes()),
                    seal_key=X25519PrivateKey.from_private_bytes(
                        (creds / "seal-key").read_bytes()),
                    central_keys={central["kid"]: central["sign_pub"]}, peer_keys=peers,
                    transport=MqttTransport(endpoint, client_id=gate), clock=clock)
    return SimGate(cfg, cache, matcher, link)


def lone_gate(state_dir: Path, *, cfg: Config | None = None,
              clock: Callable[[], float] = time.time) -> SimGate:
    """A gate of no venue: fresh random keys, no broker. Entry events are signed and wait
    in its outbox, as on a gate whose link is down (benchmarks, simulations)."""
    cfg = cfg or from_dict({})
    cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, dir=str(state_dir)))
    keys = TemplateKeys(Key(secrets.token_bytes(32), "ephemeral"),
                        Key(secrets.token_bytes(32), "ephemeral"))
    cache, matcher = open_templates(cfg, keys=keys, clock=clock)
    cache.load()
    central = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    link = GateLink(venue=cfg.gate.venue, gate=cfg.gate.id, cache=cache,
                    state=SyncState(Path(state_dir) / STATE_FILE),
                    sign_key=Ed25519PrivateKey.generate(), seal_key=X25519PrivateKey.generate(),
                    central_keys={"central-1": b64(central)}, clock=clock)
    return SimGate(cfg, cache, matcher, link)
