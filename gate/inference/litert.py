"""Backend: ``ai_edge_litert`` (Google's maintained LiteRT runtime)."""

from __future__ import annotations

from typing import Any


def make_interpreter(content: bytes, threads: int) -> Any:
    """Return an ``ai_edge_litert`` interpreter for the model bytes."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=threads)
