"""Backend: ``tflite_runtime`` (the standalone TF Lite wheel; numpy < 2 only)."""

from __future__ import annotations

from typing import Any


def make_interpreter(content: bytes, threads: int) -> Any:
    """Return a ``tflite_runtime`` interpreter for the model bytes."""
    from tflite_runtime.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=threads)
