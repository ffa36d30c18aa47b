"""gatectl: diagnose, evaluate and benchmark a face-pass gate.

Human output by default, ``--json`` for machines. Errors print one line; set DEBUG=1
for the full traceback. Exit codes: 0 ok, 1 a check or target failed, 2 bad usage,
3 invalid configuration, 4 model files missing or not the pinned ones, 5 bad input data,
6 the gate service is not running or refused the request, 7 cancelled at a confirmation
prompt (anything that moves hardware or deletes data asks first unless ``-y``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from gate import config as config_mod
from gate.cli import (
    bench,
    cache,
    camera,
    config_cmd,
    doctor,
    evaluate,
    events,
    gpio,
    install,
    keys,
    models,
    service,
    status,
)
from gate.cli.configfile import DEFAULT_CONFIG, config_path
from gate.errors import (
    ConfigError,
    EvalError,
    GateError,
    ImageError,
    ModelError,
    ServiceError,
)
from gate.exitcodes import (
    EXIT_CONFIG,
    EXIT_DATA,
    EXIT_FAIL,
    EXIT_MODELS,
    EXIT_SERVICE,
    EXIT_USAGE,
)

_COMMANDS = (service, status, doctor, config_cmd, camera, gpio, cache, events, keys, evaluate,
             bench, models, install)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"gatectl: {message} (see gatectl --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = _Parser(prog="gatectl", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="gate config file (TOML); default $GATE_CONFIG, else "
                             f"{DEFAULT_CONFIG} when it exists, else built-in defaults")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run gatectl with ``argv``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        # Commands that read the config file themselves (``run``, ``config check``) set
        # ``own_config``: a broken file is theirs to report, in their own way.
        cfg = config_mod.from_dict({}) if getattr(args, "own_config", False) else \
            config_mod.load(config_path(args.config))
        code: int = args.run(args, cfg)
        return code
    except ConfigError as exc:
        return _fail(exc, EXIT_CONFIG, "config: ")
    except ModelError as exc:
        return _fail(exc, EXIT_MODELS)
    except (EvalError, ImageError) as exc:
        return _fail(exc, EXIT_DATA)
    except ServiceError as exc:
        return _fail(exc, EXIT_SERVICE)
    except GateError as exc:
        return _fail(exc, EXIT_FAIL)
    except KeyboardInterrupt:
        print("gatectl: interrupted", file=sys.stderr)
        return 130


def _fail(exc: Exception, code: int, prefix: str = "") -> int:
    if os.environ.get("DEBUG") == "1":
        traceback.print_exc()
    print(f"gatectl: {prefix}{exc}", file=sys.stderr)
    return code


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
