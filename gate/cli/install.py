"""gatectl subcommand module (being written)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    """Register the subcommand (not yet)."""
