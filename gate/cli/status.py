"""``gatectl status`` and ``gatectl sync status|resync``: ask the running service.

They talk to the service over its control socket (permission-restricted: root or group
``gate``) and show counts, versions and timings, never an attendee id.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from gate.config import Config
from gate.service.control import request


def add_parser(sub: Any) -> None:
    """Register ``status`` and ``sync``."""
    p = sub.add_parser("status", help="state of the running gate service",
                       description="State, models, cache, broker link, outbox, camera and "
                                   "recent decisions of the running service (no ids).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_status)
    s = sub.add_parser("sync", help="the MQTT link to central: status, resync")
    # Nested subparsers inherit gatectl's one-line-error parser class.
    ss = s.add_subparsers(dest="sync_command", metavar="ACTION")
    ss.required = True
    st = ss.add_parser("status", help="broker connection, outbox depth, cache version")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(run=run_sync_status)
    rs = ss.add_parser("resync", help="ask central for a full snapshot of the cache")
    rs.add_argument("--json", action="store_true", help="machine-readable output")
    rs.set_defaults(run=run_resync)


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _uptime(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _cache_line(c: dict[str, Any] | None) -> str:
    if not c:
        return "none"
    if not c.get("valid", True):
        return f"INVALID ({c.get('reason')}): everyone goes to the staffed lane; resync"
    return (f"v{c['version']} · {c['templates']} templates / {c['attendees']} attendees · "
            f"valid until {_when(c.get('valid_until_max'))} · next expiry "
            f"{_when(c.get('next_expiry'))} · threshold {c.get('threshold')}")


def _broker_line(st: dict[str, Any]) -> str:
    b = st.get("broker", {})
    if not b.get("enabled"):
        return "sync disabled (entries kept locally)"
    link = "connected" if b.get("connected") else "DISCONNECTED"
    resync = "resync requested" if b.get("resync_needed") else "in step"
    return f"{link} · outbox {st.get('outbox', 0)} · {resync}"


def run_status(args: argparse.Namespace, cfg: Config) -> int:
    """Print the service's status."""
    st = request(cfg.service.control_socket, "status")
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    print(f"gate {st['gate']} ({st['venue']} / {st['event']}) · {st['state']} · "
          f"up {_uptime(st['uptime_s'])} · pid {st['pid']} · mode {st['mode']}"
          + (" · STALLED" if st.get("stalled") else ""))
    files = st.get("models", {}).get("files", {})
    print(f"  models     {st.get('models', {}).get('embedder')} embedder; " +
          ", ".join(f"{role} {sha[:12]}" for role, sha in sorted(files.items())))
    print(f"  cache      {_cache_line(st.get('cache'))}")
    print(f"  broker     {_broker_line(st)}")
    cam = st.get("camera")
    if cam:
        print(f"  camera     {cam['backend']} · {'open' if cam['open'] else 'closed'} · "
              f"{cam['fps']} fps · {cam['errors']} faults · {cam['frames']} frames")
    d = st.get("decisions")
    if d:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(d["counts"].items())) or "none"
        p50 = f" · face→open p50 {d['open_ms_p50']} ms" if d.get("open_ms_p50") else ""
        print(f"  decisions  {counts} · entries {d['entries']} · staffed lane "
              f"{d['denials']}{p50}")
        for r in d.get("recent", [])[-5:]:
            t = dt.datetime.fromtimestamp(r["at"], dt.UTC).strftime("%H:%M:%S")
            print(f"    {t}  {r['phase']:<8} {r['event']}")
    health = st.get("health")
    if isinstance(health, list) and health:
        for k, line in enumerate(health):
            print(f"  {'DEGRADED' if k == 0 else '':<10} {str(line)[:300]}")
    h = st.get("hardening")
    if h:
        print(f"  hardening  core dumps {'off' if h['core_dumps_off'] else 'POSSIBLE'} · "
              f"memory {'locked' if h['memory_locked'] else 'not locked: ' + h['detail']}")
    return 0


def run_sync_status(args: argparse.Namespace, cfg: Config) -> int:
    """Print the link's state; exit 1 when sync is on but disconnected."""
    st = request(cfg.service.control_socket, "status")
    out = {"broker": st.get("broker"), "outbox": st.get("outbox"),
           "cache_version": (st.get("cache") or {}).get("version"),
           "cache_valid": (st.get("cache") or {}).get("valid")}
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(f"broker  {_broker_line(st)}")
        print(f"cache   {_cache_line(st.get('cache'))}")
    b = st.get("broker", {})
    return 1 if b.get("enabled") and not b.get("connected") else 0


def run_resync(args: argparse.Namespace, cfg: Config) -> int:
    """Ask the service to request a full snapshot from central."""
    res = request(cfg.service.control_socket, "resync")
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        where = "sent to central" if res.get("connected") else \
            "queued; central gets it when the link is back"
        print(f"resync requested ({where})")
    return 0
