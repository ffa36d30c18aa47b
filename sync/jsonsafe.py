"""JSON from untrusted bytes without deep recursion.

``json.loads`` recurses once per level of nesting, in C, up to the interpreter's recursion
limit. A payload of a hundred thousand ``[`` reaches it: the parser raises RecursionError,
and a garbage collection that runs at that depth calls finalizers that fail too (an
unraisable RecursionError in the listener's thread). No message, state file or request
of ours nests deeper than a few levels, so anything deeper than :data:`MAX_NESTING` is
refused before the parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_NESTING = 64

# A JSON string (escapes included) and anything that is not a bracket: neither counts.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_exceeds(text: str, limit: int = MAX_NESTING) -> bool:
    """True when brackets outside strings open more than ``limit`` levels at some point."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case: too few brackets to nest that deep
    depth = 0
    for ch in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False


def loads(data: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` for untrusted input: ValueError (as the parser's own errors are)
    for text that is not UTF-8, not JSON, or nested deeper than :data:`MAX_NESTING`."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if nesting_exceeds(text):
        raise ValueError(f"JSON nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text, **kwargs)
    except RecursionError:  # unreachable below MAX_NESTING; kept as the parser's own error
        raise ValueError("JSON nested too deep") from None
