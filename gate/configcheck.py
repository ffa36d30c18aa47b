"""The machinery behind :mod:`gate.config`: reading a config file, and checking TOML
values against typed, bounded dataclass fields.

Nothing here knows the gate's tables; :mod:`gate.config` declares them (with
:func:`option`) and its cross-field rules, and re-exports what callers use. Every problem
is a :class:`~gate.errors.ConfigError` with the key path and a one-line reason: values
and key names are shown escaped and shortened, so a hostile or broken file cannot make a
message span lines or pages.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import posixpath
import re
import tomllib
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from gate.errors import ConfigError
from gate.safefile import kind, read_regular, shown

#: Largest config file read (a full config is a few KiB).
MAX_CONFIG_BYTES = 1024 * 1024
#: Longest value shown in a message, in characters.
_SHOWN = 60
#: ``sun_path`` of ``struct sockaddr_un`` holds 108 bytes, the last one a NUL.
MAX_SOCKET_PATH = 107
#: Kernel trees where the gate must never create files.
SYSTEM_TREES = ("/proc", "/sys", "/dev")

#: Bounds of fields declared elsewhere, by dataclass: ``{cls: {field: (lo, hi)}}``.
Overrides = Mapping[type[Any], Mapping[str, tuple[float, float]]]


def option(default: Any, *, lo: float | None = None, hi: float | None = None,
           choices: tuple[Any, ...] | None = None, pattern: str | None = None,
           doc: str = "") -> Any:
    """A config field with bounds (inclusive), allowed values or a full-match pattern."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices,
                                            "pattern": pattern, "doc": doc})


def value_repr(value: Any) -> str:
    """``repr(value)`` on one line, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 1] + "…"


def key_name(name: str) -> str:
    """A TOML key as it would be written: bare when plain, else quoted and escaped."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        return name
    quoted = json.dumps(name)
    return quoted if len(quoted) <= _SHOWN else quoted[:_SHOWN - 2] + "…\""


def type_name(tp: Any) -> str:
    """How a field's type is named in messages."""
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def check_value(path: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` checked against the field type ``tp`` and its bounds ``meta``."""
    origin = get_origin(tp)
    if origin is tuple:  # tuple[str, ...]: a TOML array of strings
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list of strings, got {value_repr(value)}")
        item_meta = {"pattern": meta.get("pattern")}
        return tuple(check_value(f"{path}[{k}]", v, str, item_meta)
                     for k, v in enumerate(value))
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        tp = options[0]
    # bool is an int in Python; a config that says `threads = true` is a mistake.
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, int | float) and not isinstance(value, bool) if tp is float else
          isinstance(value, str) if tp is str else False)
    if not ok:
        raise ConfigError(path, f"must be {type_name(tp)}, got {value_repr(value)}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            raise ConfigError(path, f"must be a finite number, got {value_repr(value)}"
                              ) from None
        if not math.isfinite(value):
            raise ConfigError(path, f"must be a finite number, got {value!r}")
    if tp is str and "\x00" in value:
        raise ConfigError(path, "must not contain a NUL character")
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ConfigError(path, f"must match {pattern}, got {value_repr(value)}")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(path, f"must be one of {allowed}, got {value_repr(value)}")
    if lo is not None and value < lo:
        raise ConfigError(path, f"must be ≥ {lo:g}, got {value_repr(value)}")
    if hi is not None and value > hi:
        raise ConfigError(path, f"must be ≤ {hi:g}, got {value_repr(value)}")
    return value


def build(cls: type[Any], table: Any, path: str, errors: list[ConfigError],
          overrides: Overrides | None = None) -> Any:
    """The dataclass ``cls`` from ``table``; every problem is appended to ``errors`` and
    the offending key keeps its default, so one pass finds them all. ``overrides`` gives
    bounds to fields of dataclasses declared without :func:`option`."""
    if not isinstance(table, dict):
        errors.append(ConfigError(path, f"must be a table, got {value_repr(table)}"))
        return cls()
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(table) - set(fields)):
        where = f"{path}.{key_name(name)}" if path else key_name(name)
        errors.append(ConfigError(where, f"unknown key (known: {', '.join(sorted(fields))})"))
    values = {}
    bounds = (overrides or {}).get(cls, {})
    for name, value in table.items():
        if name not in fields:
            continue
        key = f"{path}.{name}" if path else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = build(tp, value, key, errors, overrides)
            continue
        meta = dict(fields[name].metadata)
        if name in bounds:
            meta["lo"], meta["hi"] = bounds[name]
        try:
            values[name] = check_value(key, value, tp, meta)
        except ConfigError as exc:
            errors.append(exc)
    return cls(**values)


def involves_bad(keys: tuple[str, ...], bad: Collection[str]) -> bool:
    """True when a key (or a table holding it) already failed: a cross-field rule would
    compare against a stand-in default and report nonsense."""
    for key in keys:
        parts = key.split(".")
        if any(".".join(parts[:n]) in bad for n in range(1, len(parts) + 1)):
            return True
    return False


def resolve(path: str, base_dir: Path) -> str:
    """``path`` made absolute against ``base_dir`` (unset stays unset)."""
    if not path or Path(path).is_absolute():
        return path
    try:
        return str((base_dir / path).resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop: keep the plain join
        return posixpath.normpath(os.path.join(os.path.abspath(base_dir), path))


def in_system_tree(path: str) -> str | None:
    """The kernel tree (``/proc``, ``/sys``, ``/dev``) ``path`` lies in, by its spelling."""
    if not path.startswith("/"):
        return None
    norm = posixpath.normpath(path)
    for tree in SYSTEM_TREES:
        if norm == tree or norm.startswith(tree + "/"):
            return tree
    return None


def socket_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be bound as a Unix socket, by its spelling (None: it can)."""
    if not path:
        return "must not be empty"
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        return (f"is {size} bytes long; a Unix socket path holds at most "
                f"{MAX_SOCKET_PATH} (choose a shorter directory, e.g. /run/gate)")
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document of a config file; one-line ConfigError if it is not a
    readable regular file of at most :data:`MAX_CONFIG_BYTES`, not UTF-8 or not TOML."""
    where = shown(path)

    def fail(reason: str) -> ConfigError:
        return ConfigError("", f"{where}: {reason}")

    data = read_regular(path, limit=MAX_CONFIG_BYTES, what="config", fail=fail)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"not valid TOML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise fail("not valid TOML (nested too deeply)") from None


def map_fields(cfg: Any, keys: Collection[str], fn: Callable[[Any], Any]) -> Any:
    """``cfg`` (nested frozen dataclasses) with ``fn`` applied to each ``table.field``."""
    for key in keys:
        table, name = key.split(".")
        sub = getattr(cfg, table)
        cfg = dataclasses.replace(cfg, **{table: dataclasses.replace(
            sub, **{name: fn(getattr(sub, name))})})
    return cfg


def existing_problem(key: str, path: str, want: str, test: Callable[[int], bool]
                     ) -> ConfigError | None:
    """One ``os.stat`` of ``path`` (links followed): a problem when something that is not
    ``want`` (as ``test`` of its mode says) is there, or a component of the path is not a
    directory. Nothing there, or nothing we may look at, is no problem of the config."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return ConfigError(key, f"{path!r}: a component of the path is not a directory")
        return None
    except ValueError:  # a NUL byte: refused by the value check already
        return None
    if test(mode):
        return None
    return ConfigError(key, f"{path!r} exists and is {kind(mode)}, not {want}")
