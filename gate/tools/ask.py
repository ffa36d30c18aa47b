"""Confirmation before anything that moves hardware or deletes data."""

from __future__ import annotations

import sys


def confirm(question: str, *, assume_yes: bool) -> bool:
    """True when the technician agrees (or passed ``-y``).

    Without a terminal to ask on, the answer is no: a script must say ``-y`` explicitly.
    """
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"gatectl: {question} — not confirmed (no terminal; pass -y to proceed)",
              file=sys.stderr)
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
