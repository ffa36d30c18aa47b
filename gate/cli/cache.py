"""``gatectl cache info|wipe``: the encrypted template cache, in counts; crypto-erase.

``info`` asks the running service when there is one (it holds the key and the cache in
RAM), else reads the files in the state directory without changing them. It shows counts,
versions, dates, sizes and where the key comes from, never an attendee id (P10).

``wipe`` crypto-erases the cache after asking: through the service when it runs (it also
drops its RAM copy and asks central for a new snapshot), else directly on the files.
Afterwards every attendee goes to the staffed lane until central sends a new snapshot.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from gate.cli.guard import service_status
from gate.config import Config
from gate.credentials import Key, load_key
from gate.errors import CacheError, GateError, KeyMaterialError, ServiceError
from gate.exitcodes import EXIT_CANCELLED
from gate.match import offline
from gate.match.erase import erase
from gate.service.control import request
from gate.templates import binding, threshold_policy
from gate.tools.ask import confirm


def add_parser(sub: Any) -> None:
    """Register ``cache info`` and ``cache wipe``."""
    p = sub.add_parser("cache", help="the encrypted template cache: info, wipe",
                       description="The encrypted template cache in the state directory.")
    cs = p.add_subparsers(dest="cache_command", metavar="ACTION")
    cs.required = True
    i = cs.add_parser("info", help="version, counts, validity, size and key source (no ids)",
                      description="Show the cache's state, version, attendee and template "
                                  "counts, validity dates, size on disk and key source. Asks "
                                  "the running service, or reads the files (read-only) when "
                                  "it is stopped. Exit 1 when the cache is invalid or cannot "
                                  "be opened here.")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(run=run_info)
    w = cs.add_parser("wipe", help="crypto-erase the cache (asks first)",
                      description="Destroy the cache's data key, then the cache and its "
                                  "journal: nothing the gate holds can decrypt them "
                                  "afterwards. Through the service when it runs. Everyone "
                                  "goes to the staffed lane until central resends the "
                                  "templates.")
    w.add_argument("-y", "--yes", action="store_true", help="do not ask")
    w.add_argument("--json", action="store_true", help="machine-readable output")
    w.set_defaults(run=run_wipe)


# --- info ----------------------------------------------------------------------------------


def run_info(args: argparse.Namespace, cfg: Config) -> int:
    """Print the cache's state; exit 1 when it is invalid or locked."""
    directory = Path(cfg.cache.dir)
    status = service_status(cfg)
    if status is not None:
        info, source = _from_service(status.get("cache"), directory), "service"
        threshold = _number(status.get("cache") or {}, "threshold")
        basis = None
    else:
        if not directory.is_dir():
            raise GateError(f"cache: state directory {directory} does not exist (check "
                            "[cache] dir; the service creates it when it first starts)")
        kek, key_source, why = _cache_key(cfg)
        info = offline.inspect(directory, kek, binding(cfg), now=time.time(),
                               key_source=key_source, locked_reason=why)
        source = "files"
        policy = threshold_policy(cfg)
        threshold = None if info.templates is None else policy.for_size(info.templates)
        basis = None if info.templates is None else policy.basis(info.templates)
    report = {"source": source, "directory": str(directory), "state": info.state,
              "reason": info.reason or None, "version": info.version,
              "attendees": info.attendees, "templates": info.templates,
              "tombstones": info.tombstones, "expired": info.expired,
              "valid_until_min": info.valid_until_min, "valid_until_max": info.valid_until_max,
              "next_expiry": info.next_expiry,
              "threshold": None if threshold is None else round(threshold, 4),
              "threshold_basis": basis,
              "key_source": info.key_source or None, "files": info.files,
              "bytes": sum(info.files.values())}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_info(report)
    if info.state in ("invalid", "locked"):
        raise CacheError(f"cache {info.state}: {info.reason}")
    return 0


def _cache_key(cfg: Config) -> tuple[Key | None, str, str]:
    """(key or None, where it comes from, why it is unavailable)."""
    c = cfg.cache
    try:
        key = load_key("cache-key", key_file=Path(c.key_file) if c.key_file else None)
    except KeyMaterialError as exc:
        if c.allow_ephemeral_keys and not c.key_file:
            return None, "ephemeral", ("the cache key is ephemeral and lives only in the "
                                       "running service's RAM")
        return None, "unavailable", str(exc)
    return key, key.source, ""


def _number(d: dict[str, Any], key: str) -> Any:
    """A count or time from the service's answer; anything else is shown as unknown."""
    value = d.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _from_service(c: Any, directory: Path) -> offline.CacheInfo:
    """The service's view of its cache (it holds the key), plus sizes from the disk."""
    if not isinstance(c, dict):
        raise ServiceError("the gate service's status has no cache section")
    try:
        files = offline.disk_usage(directory)
    except PermissionError:
        files = {}
    state = c.get("state") if isinstance(c.get("state"), str) else "unknown"
    reason = c.get("reason") if isinstance(c.get("reason"), str) else ""
    key = c.get("key_source") if isinstance(c.get("key_source"), str) else "held by the service"
    return offline.CacheInfo(
        str(state), str(reason), _number(c, "version"), _number(c, "attendees"),
        _number(c, "templates"), _number(c, "tombstones"), _number(c, "expired"),
        _number(c, "valid_until_min"), _number(c, "valid_until_max"),
        _number(c, "next_expiry"), str(key), files)


def _when(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "—"
    text = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if now is not None:
        left = ts - now
        text += f" (in {_span(left)})" if left >= 0 else f" ({_span(-left)} ago)"
    return text


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _size(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _print_info(r: dict[str, Any]) -> None:
    where = "from the running service" if r["source"] == "service" else \
        "read from the files; the service is not running"
    print(f"template cache in {r['directory']} ({where})")
    state = r["state"] + (f" ({r['reason']})" if r["reason"] else "")
    print(f"  state        {state}")
    if r["attendees"] is not None:
        tombs = f"; {r['tombstones']} revoked, kept as tombstones" \
            if r["tombstones"] else ""
        print(f"  version      {r['version']}")
        print(f"  attendees    {r['attendees']} ({r['templates']} templates{tombs})")
        first = r["valid_until_min"]
        span = _when(r["valid_until_max"]) if first is None else \
            f"{_when(first)} … {_when(r['valid_until_max'])}"
        print(f"  valid until  {span}")
        # The store's next expiry counts tombstones too: it is when the purge runs next.
        print(f"  next purge   {_when(r['next_expiry'], time.time())}")
        if r["expired"]:
            print(f"  expired      {r['expired']} (purged when the gate next loads the cache)")
        if r["threshold"] is not None:
            basis = {"extrapolated": " (extrapolated: the target FPIR at this size lies "
                                     "beyond what the calibration set resolves)",
                     "fixed": " (fixed in [match] threshold)"}.get(r["threshold_basis"], "")
            print(f"  threshold    {r['threshold']}{basis}")
    parts = ", ".join(f"{name} {_size(n)}" for name, n in r["files"].items())
    print(f"  on disk      {_size(r['bytes'])}" + (f" ({parts})" if parts else ""))
    print(f"  key          {r['key_source'] or '—'}")


# --- wipe ----------------------------------------------------------------------------------


def run_wipe(args: argparse.Namespace, cfg: Config) -> int:
    """Crypto-erase after confirmation; exit 7 when not confirmed."""
    directory = Path(cfg.cache.dir)
    running = service_status(cfg) is not None
    if not running:
        if not directory.is_dir():
            raise GateError(f"cache: state directory {directory} does not exist; nothing to "
                            "erase (check [cache] dir)")
        if not offline.disk_usage(directory):
            _done(args, {"erased": False, "by": None, "files": []},
                  f"nothing to erase: no template cache in {directory}")
            return 0
    if not confirm("Crypto-erase the template cache? Every attendee goes to the staffed "
                   "lane until central sends a new snapshot.", assume_yes=args.yes):
        print("cancelled: nothing was erased")
        return EXIT_CANCELLED
    # Ask again: the service may have been started while the question was open.
    if service_status(cfg) is not None:
        answer = request(cfg.service.control_socket, "cache-wipe")
        if answer.get("erased") is not True:
            raise ServiceError("the gate service did not confirm the erase")
        _done(args, {"erased": True, "by": "service", "files": []},
              "cache crypto-erased by the gate service (data key destroyed); everyone goes "
              "to the staffed lane until central sends a new snapshot")
        return 0
    gone = erase(directory)
    _done(args, {"erased": True, "by": "gatectl", "files": gone},
          f"cache crypto-erased: {', '.join(gone)} overwritten and removed (data key first); "
          "central must send a new snapshot")
    return 0


def _done(args: argparse.Namespace, record: dict[str, Any], line: str) -> None:
    print(json.dumps(record, sort_keys=True) if args.json else line)
