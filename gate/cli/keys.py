"""``gatectl keys init``: generate this gate's keys on the gate and print what central needs.

The private keys never leave the gate: central receives a certificate request and two
public keys, and answers with the venue CA, the gate's certificate and the event's
template key (``facepass-central add-gate``). The default output directory is in
``/run`` (RAM), so the plaintext keys never reach the SD card: encrypt them as systemd
credentials from there, then shred them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gate import config as config_mod
from gate.cli.configfile import config_path
from gate.config import Config
from gate.errors import ConfigError
from gate.exitcodes import EXIT_CANCELLED
from gate.tools import keygen
from gate.tools.ask import confirm

#: RAM-backed: plaintext keys written here vanish at shutdown and never touch storage.
DEFAULT_OUT = Path("/run/gate-keys")
#: Where the installed gate's encrypted credentials live.
CREDSTORE = Path("/etc/credstore.encrypted")


def add_parser(sub: Any) -> None:
    """Register ``keys init``."""
    p = sub.add_parser("keys", help="this gate's own keys",
                       description="Generate the gate's keys on the gate.")
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True
    init = actions.add_parser(
        "init", help="generate cache, signing, sealing and TLS keys and a CSR for central",
        description="Generate cache-key, sign-key, seal-key, mqtt-key.pem and gate.csr "
                    "(CN = [gate] id, O = [gate] venue) and print the public keys and CSR "
                    "central needs to enrol this gate.")
    init.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                      help=f"where to write them (default {DEFAULT_OUT}, in RAM)")
    init.add_argument("-y", "--yes", action="store_true",
                      help="replace existing keys without asking (the cache is then lost)")
    init.add_argument("--json", action="store_true", help="machine-readable output")
    init.set_defaults(run=run)


def _identity(args: argparse.Namespace) -> None:
    """A certificate names the gate for good: its id and venue must be set on purpose."""
    path = config_path(args.config)
    if path is None:
        raise ConfigError("gate.id", "no config file: set [gate] id, venue and event in "
                                     "/etc/gate/gate.toml before generating keys")
    for e in config_mod.check(path, service=True):
        if e.path in ("gate.id", "gate.venue"):
            raise ConfigError(e.path, f"{e.reason} (in {path}) before generating keys")


def _installed(names: tuple[str, ...]) -> list[Path]:
    return [CREDSTORE / n for n in names if (CREDSTORE / n).exists()]


def next_steps(keys: keygen.GateKeys) -> list[str]:
    """Shell lines for the technician, in order."""
    d = keys.directory
    lines = [f"systemd-creds encrypt --name={n} {d / n} {CREDSTORE / n}"
             for n in keygen.KEY_FILES]
    lines.append("shred -u " + " ".join(str(d / n) for n in keygen.KEY_FILES))
    return lines


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Generate the keys; exit 7 when existing keys were not to be replaced."""
    _identity(args)
    out: Path = args.out
    old = keygen.existing(out) + _installed(keygen.KEY_FILES)
    if old:
        question = (f"this gate already has keys ({', '.join(str(p) for p in old)}); new "
                    "ones make the template cache unreadable (it is encrypted with the old "
                    "cache-key) and the gate must be enrolled at central again. Replace them?")
        if not confirm(question, assume_yes=args.yes):
            return EXIT_CANCELLED
    keys = keygen.generate(out, gate=cfg.gate.id, venue=cfg.gate.venue, replace=True)
    central_cmd = (f"facepass-central add-gate --venue-dir VENUE_DIR --gate {keys.gate} "
                   f"--csr {keys.csr.name} --sign-pub {keys.sign_pub} "
                   f"--seal-pub {keys.seal_pub} --proof {keys.proof}")
    if args.json:
        print(json.dumps({"gate": keys.gate, "venue": keys.venue, "dir": str(out),
                          "files": [str(p) for p in keys.files], "csr": str(keys.csr),
                          "sign_pub": keys.sign_pin, "seal_pub": keys.seal_pub,
                          "proof": keys.proof,
                          "central": central_cmd, "next": next_steps(keys)}, indent=2))
        return 0
    print(f"keys for gate {keys.gate} (venue {keys.venue}) in {out} (0700, keys 0600): "
          f"{', '.join(keygen.KEY_FILES)}, {keygen.CSR_FILE}")
    print("for central (public, safe to send):")
    print(f"  signing key  {keys.sign_pin}")
    print(f"  sealing key  {keys.seal_pub}")
    print(f"  proof        {keys.proof}  (the signing key's signature over all of these)")
    print(f"  CSR          {keys.csr}  (CN={keys.gate}, O={keys.venue})")
    print(f"  central runs: {central_cmd}")
    print("on this gate, now: encrypt each key as a systemd credential, then shred the "
          "plaintext:")
    for line in next_steps(keys):
        print(f"  {line}")
    print("then, from central: ca.crt and the gate's certificate -> /etc/gate/ca.crt and "
          "/etc/gate/gate.crt ([sync] ca_file, cert_file); the event's template-key -> "
          f"systemd-creds encrypt --name=template-key FILE {CREDSTORE / 'template-key'}, "
          "then shred it; finally gatectl doctor")
    return 0
